"""A content fingerprint of the raw data, cheap enough for every Snakemake start.

Snakemake sees only the data root folder's own modification time, which misses an image
edited in place, a label flipped inside ``test_labels.csv``, or a file added deep in the tree.
The ``ingest`` rule therefore takes this fingerprint as a params entry: the sha256 over every
file's relative path and content hash (the same tree hash that ``lineage`` records for a
directory). A listing of ``(path, size, mtime_ns, inode)`` decides which files must be hashed
again; the others' hashes come from a small cache, so a no-op start only stats the files, and
``dvc checkout`` or ``git clone`` (new times, same bytes) leave the fingerprint unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable

from ..io.atomic import write_json

SNAKEMAKE_MARKER = ".snakemake_timestamp"
CACHE_DIR = Path(".snakemake/data_fingerprint")
_FORMAT = 1


def _listing(root: Path) -> dict[str, os.stat_result]:
    """Relative POSIX path → stat of every regular file under ``root`` (Snakemake's marker excluded).

    Plain strings, not pathlib: at 33,000 files pathlib's parsing cost more than the stats.
    """
    found: dict[str, os.stat_result] = {}
    stack = [(str(root), "")]
    while stack:
        folder, prefix = stack.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                rel = prefix + entry.name
                if entry.is_dir():
                    stack.append((entry.path, rel + "/"))
                elif entry.is_file() and rel != SNAKEMAKE_MARKER:
                    found[rel] = entry.stat()
    return found


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _stamp(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _cache_path(cache_dir: Path, root: Path) -> Path:
    return cache_dir / (hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16] + ".json")


def _load_cache(path: Path) -> dict[str, list]:
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return cached.get("files", {}) if cached.get("format") == _FORMAT else {}


def tree_sha256(root: str | os.PathLike, cache_dir: str | os.PathLike | None = CACHE_DIR) -> tuple[str, int]:
    """(sha256 over ``"<relpath>\\0<file sha256>\\n"`` in path order, number of files) of ``root``.

    Equal to ``lineage_record.hash_path(root)["sha256"]``. With ``cache_dir``, file hashes are reused
    while a file's size, mtime and inode are unchanged; the cache is rewritten only when it changed.
    """
    root = Path(root)
    listing = _listing(root)
    cache_file = _cache_path(Path(cache_dir), root) if cache_dir else None
    cached = _load_cache(cache_file) if cache_file else {}
    fresh: dict[str, list] = {}
    lines = []
    for rel in sorted(listing):
        stamp = _stamp(listing[rel])
        hit = cached.get(rel)
        sha = hit[1] if hit and hit[0] == stamp else _sha256(root / rel)
        fresh[rel] = [stamp, sha]
        lines.append(f"{rel}\0{sha}\n")
    tree = hashlib.sha256("".join(lines).encode())
    if cache_file and fresh != cached:
        try:
            write_json(cache_file, {"format": _FORMAT, "root": str(root), "files": fresh})
        except OSError:
            pass  # a read-only checkout still gets its fingerprint, only slower next time
    return tree.hexdigest(), len(listing)


def data_fingerprint(root: str | os.PathLike, extra_files: Iterable[str | os.PathLike] = (),
                     cache_dir: str | os.PathLike | None = CACHE_DIR) -> dict[str, object]:
    """The ``ingest`` rule's ``data`` params entry: the tree hash of ``root`` (and of files outside it)."""
    root = Path(root)
    if not root.is_dir():  # ingest's own check names the params key and the fix
        return {"root": str(root), "files": 0, "sha256": None}
    sha, count = tree_sha256(root, cache_dir)
    entry: dict[str, object] = {"root": str(root), "files": count, "sha256": sha}
    for extra in extra_files:
        extra = Path(extra)
        entry[str(extra)] = _sha256(extra) if extra.is_file() else None
    return entry
