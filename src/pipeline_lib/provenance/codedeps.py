"""The code a job runs, found from the imports: its rule file, its script, and every
``pipeline_lib`` module that the script imports directly or indirectly.

Snakemake gets it as a params entry (``code``: file → sha256), so a job reruns exactly when
one of its files changes; the generated ``dvc.yaml`` lists the same files as the stage's deps;
each lineage record stores the same hashes and ``lineage --check`` names a changed file.
The set is computed from the syntax tree of each file (``import`` and ``from … import`` at any
depth, relative or absolute), so a new import is covered without a list to keep.

Every byte counts, comments and formatting included: DVC hashes the files' bytes, and the
three views (Snakemake, DVC, lineage) must agree on what "changed" means.

Plumbing, left out of every set (and not followed further): modules that cannot change a
declared output. Their lazily imported helpers are imported by the scripts that use them
(``tests/provenance/test_codedeps.py`` checks this for ``Step.device`` and ``Step.publish_figure``).
"""

from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

from ..io.atomic import write_json

PACKAGE = "pipeline_lib"
# This module's own bytes: the import-name cache is valid for the code that filled it.
_THIS_CODE = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]

# module → why it cannot change a declared output
PLUMBING = {
    "pipeline_lib.step": "the rule runner: log file, one-line errors, the Step adapter's lookups",
    "pipeline_lib.provenance.record": "writes the provenance store (results/.lineage/), not a declared output",
    "pipeline_lib.provenance.lineage": "reads the provenance store back (the lineage command), no rule's output",
    "pipeline_lib.provenance.codedeps": "this module: computes the sets",
    "pipeline_lib.provenance.machine": "describes the machine for the lineage record",
}


def package_dir() -> Path:
    """The directory of the ``pipeline_lib`` package that is imported (the code that runs)."""
    return Path(__file__).resolve().parents[1]


def _module_file(name: str, src: Path) -> Path | None:
    """The file of module ``name`` (``a.b`` → ``src/a/b.py`` or ``src/a/b/__init__.py``)."""
    base = src.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_names(path: Path, module: str, known: dict[str, list] | None = None) -> frozenset[str]:
    """Absolute names of every module that ``path`` (module ``module``) may import.

    ``known``: a persistent cache (``_known_imports``), path → [sha256 of the bytes, module,
    is_package, names]; an entry counts only while all three still match, so an edited file is
    parsed again."""
    source, is_package = path.read_bytes(), path.name == "__init__.py"
    if known is None:
        return _names_in_source(source, str(path), module, is_package)
    stamp = [hashlib.sha256(source).hexdigest(), module, is_package]
    entry = known.get(str(path))
    if entry is None or entry[:3] != stamp:
        entry = known[str(path)] = [*stamp, sorted(_names_in_source(source, str(path), module, is_package))]
    return frozenset(entry[3])


@lru_cache(maxsize=None)
def _names_in_source(source: bytes, filename: str, module: str, is_package: bool) -> frozenset[str]:
    """``_imported_names`` of these bytes. Cached by content: one Snakemake parse asks for
    the closure of ~22 scripts that share most modules, and parsing + walking each syntax
    tree again was most of the no-op ``snakemake -n`` time; a changed file has new bytes,
    so it is parsed again (a long-lived process never sees stale imports)."""
    tree = ast.parse(source, filename=filename)
    package_parts = module.split(".") if is_package else module.split(".")[:-1]
    names: set[str] = set()
    for node in _statements(tree.body):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package_parts[: len(package_parts) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            # `from pkg import sub` may name a submodule
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return frozenset(n for n in names if n == PACKAGE or n.startswith(PACKAGE + "."))


def _statements(body: list) -> Iterator[ast.AST]:
    """Every statement in ``body``, nested ones (in functions, classes, if/try/with/match
    blocks) included. Imports are statements, so expressions -- most of a syntax tree, and
    most of ``ast.walk``'s time -- are not entered."""
    for node in body:
        yield node
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            nested = getattr(node, field, None)
            if isinstance(nested, list):
                yield from _statements(nested)


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


@lru_cache(maxsize=None)
def _closure(script: Path, src: Path, cache_dir: Path | None = None) -> tuple[str, ...]:
    """Module names reachable from ``script`` (plumbing excluded and not followed)."""
    known = _known_imports(cache_dir) if cache_dir else None
    before = dict(known) if known is not None else None  # entries are replaced, never edited
    seen: set[str] = set()
    queue = [(script, "__script__")]
    while queue:
        path, module = queue.pop()
        for name in _imported_names(path, module, known):
            for candidate in _with_parents(name):
                if candidate in seen or candidate in PLUMBING:
                    continue
                file = _module_file(candidate, src)
                if file is None:  # `from pkg import function`: not a module
                    continue
                seen.add(candidate)
                queue.append((file, candidate))
    if known is not None and any(before.get(path) is not entry for path, entry in known.items()):
        try:
            write_json(_imports_file(cache_dir), known)
        except OSError:
            pass  # a read-only checkout still gets its sets, only slower next time
    return tuple(sorted(seen))


def _imports_file(cache_dir: Path) -> Path:
    """The cache of import names, one per version of this module: the names are what this
    code finds in a file, so new code starts a new cache."""
    return cache_dir / f"imports-{_THIS_CODE}.json"


@lru_cache(maxsize=None)
def _known_imports(cache_dir: Path) -> dict[str, list]:
    """The persistent cache of ``_imported_names`` under ``cache_dir``, loaded once per process.

    Parsing the ~100 files of the library and scripts was most of what ``code_of`` costs every
    Snakemake start (a no-op ``snakemake -n``, every cluster job); with the cache a start reads
    and hashes them (as ``job_code`` does anyway) and parses only what changed."""
    try:
        known = json.loads(_imports_file(cache_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) else {}


def module_files(script: str | Path, src: str | Path | None = None, cache_dir: str | Path | None = None) -> list[Path]:
    """The library files that ``script`` runs, sorted (``cache_dir``: see ``_known_imports``)."""
    src = Path(src) if src else package_dir().parent
    names = _closure(Path(script).resolve(), src.resolve(), Path(cache_dir).resolve() if cache_dir else None)
    return sorted(f for f in (_module_file(n, src) for n in names) if f is not None)


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def job_code(rule_file: str | Path, script: str | Path, root: str | Path, src: str | Path | None = None,
             cache_dir: str | Path | None = None) -> dict[str, str]:
    """``{path: sha256}`` of a job's code: rule file, script and library modules.

    Paths are relative to ``root`` (the project directory) when the file lies inside it, so the
    keys equal ``dvc.yaml``'s deps; library files elsewhere (an installed package) keep their
    path below the package's parent, e.g. ``pipeline_lib/classical/classifiers.py``.
    """
    root = Path(root).resolve()
    src = Path(src).resolve() if src else package_dir().parent

    def key(path: Path) -> str:
        path = path.resolve()
        if path.is_relative_to(root):
            return path.relative_to(root).as_posix()
        return path.relative_to(src).as_posix()

    files = [Path(rule_file), Path(script), *module_files(script, src, cache_dir)]
    return {key(f): file_sha256(f) for f in files}


def changed_files(recorded: dict[str, str], root: str | Path = ".") -> dict[str, str]:
    """``{path: "changed" | "missing"}`` for recorded code hashes that no longer hold."""
    root = Path(root)
    problems: dict[str, str] = {}
    for rel, sha in recorded.items():
        path = root / rel
        if not path.is_file():
            candidate = package_dir().parent / rel  # an installed library's key
            path = candidate if candidate.is_file() else path
        if not path.is_file():
            problems[rel] = "missing"
        elif file_sha256(path) != sha:
            problems[rel] = "changed"
    return problems
