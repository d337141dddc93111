"""Provenance of every artifact: the record a workflow job leaves behind.

When a workflow job succeeds, ``run_step`` calls :func:`write_job_record`: one JSON record
per job in the lineage store ``results/.lineage/<rule>[-<wildcard values>].json``. The store
is not a declared output (of Snakemake or DVC), so writing it never makes anything rerun.
A record holds the rule, wildcards, the sha256 (and DVC-compatible md5) of every input as the
job found it when it started and of every output, the params used, the seeds among them, the
code version and the sha256 of every code file the job ran (``pipeline_lib.provenance.codedeps``), Python
and key package versions, the machine (CPU, kernels, BLAS, threads, CUDA: ``pipeline_lib.provenance.machine``),
the device, and the weights behind features and networks.

Reading the store back and checking it against the tree is ``pipeline_lib.provenance.lineage``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..io.atomic import write_json

LINEAGE_DIR = Path("results/.lineage")
FORMAT = 2  # 2: inputs hashed at job start, code_files, machine
PACKAGES = ("torch", "torchvision", "numpy", "scikit-learn", "pandas", "pyarrow", "pillow", "snakemake", "dvc", "nexperia-repro")
_CHUNK = 1 << 20
SNAKEMAKE_MARKER = ".snakemake_timestamp"


# --- hashing -------------------------------------------------------------------------------


def _file_digests(path: Path) -> tuple[str, str]:
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            sha.update(chunk)
            md5.update(chunk)
    return sha.hexdigest(), md5.hexdigest()


def _dvc_dir_md5(entries: list[dict]) -> str:
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode("utf-8")).hexdigest() + ".dir"


def hash_path(path: str | os.PathLike) -> dict[str, Any]:
    """``{"kind", "sha256", "md5", "bytes"[, "files"]}`` of a file or directory.

    A directory's sha256 is over its sorted relative POSIX paths and their files' sha256
    (``"<relpath>\\0<sha256>\\n"`` per file), so it does not depend on file times or listing
    order; Snakemake's ``.snakemake_timestamp`` marker is left out. Its md5 is DVC's ``<md5>.dir``
    of the tree, comparable with ``dvc.lock`` (``md5_marked``: the same once Snakemake's empty
    marker is there).
    """
    path = Path(path)
    if path.is_file():
        sha, md5 = _file_digests(path)
        return {"kind": "file", "sha256": sha, "md5": md5, "bytes": path.stat().st_size}
    if path.is_dir():
        files = sorted((p for p in path.rglob("*") if p.is_file()), key=lambda p: p.relative_to(path).as_posix())
        marked = any(f.relative_to(path).as_posix() == SNAKEMAKE_MARKER for f in files)
        files = [f for f in files if f.relative_to(path).as_posix() != SNAKEMAKE_MARKER]
        tree_sha = hashlib.sha256()
        entries, total = [], 0
        for file in files:
            rel = file.relative_to(path).as_posix()
            sha, md5 = _file_digests(file)
            tree_sha.update(f"{rel}\0{sha}\n".encode())
            entries.append({"md5": md5, "relpath": rel})
            total += file.stat().st_size
        # Snakemake marks a finished directory output with an empty marker file after the job's
        # record is written, and DVC hashes the directory with it: keep the md5 both ways.
        with_marker = sorted([*entries, {"md5": hashlib.md5(b"").hexdigest(), "relpath": SNAKEMAKE_MARKER}],
                             key=lambda e: e["relpath"])
        md5_plain, md5_marked = _dvc_dir_md5(entries), _dvc_dir_md5(with_marker)
        return {"kind": "dir", "sha256": tree_sha.hexdigest(), "md5": md5_marked if marked else md5_plain,
                "md5_marked": md5_marked, "bytes": total, "files": len(files)}
    return {"kind": "missing", "sha256": None, "md5": None, "bytes": None}


# --- the record of one job -------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def find_seeds(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Every params value whose key is (or ends in) ``seed``, by dotted path."""
    seeds: dict[str, Any] = {}
    for key, value in params.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            seeds.update(find_seeds(value, dotted))
        elif str(key).split(".")[-1] == "seed" or str(key).endswith("_seed"):
            seeds[dotted] = value
    return seeds


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str | None]:
    """Installed versions from package metadata (nothing is imported)."""
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def code_version(cwd: str | os.PathLike | None = None) -> dict[str, Any]:
    from ..report.provenance import UNKNOWN, git_commit

    commit = git_commit(cwd)
    if commit == UNKNOWN:
        return {"git_commit": UNKNOWN, "dirty": None}
    dirty = commit.endswith("-dirty")
    return {"git_commit": commit.removesuffix("-dirty"), "dirty": dirty}


def record_name(rule: str, wildcards: Mapping[str, Any]) -> str:
    parts = [rule, *(str(v) for v in wildcards.values())]
    return "-".join(p.replace("/", "_") for p in parts) + ".json"


def _named(namedlist: Any) -> list[str]:
    return [str(p) for p in namedlist]


def _device(outputs: Mapping[str, dict]) -> str:
    for path in outputs:
        if path.endswith("metrics.json"):
            try:
                device = json.loads(Path(path).read_text(encoding="utf-8")).get("device")
            except (OSError, ValueError, AttributeError):
                continue
            if device:
                return str(device)
    return "cpu"


def _weights(inputs: Mapping[str, dict], outputs: Mapping[str, dict]) -> dict[str, Any]:
    """The weights behind this job: ``.weights.json`` records (content) and model/.pth hashes."""
    weights: dict[str, Any] = {}
    for path, info in {**inputs, **outputs}.items():
        if path.endswith(".weights.json") and path in outputs:
            try:
                weights[path] = {"sha256": info["sha256"], "record": json.loads(Path(path).read_text(encoding="utf-8"))}
            except (OSError, ValueError):
                weights[path] = {"sha256": info["sha256"]}
        elif path.endswith((".pt", ".pth")):
            weights[path] = {"sha256": info["sha256"]}
    return weights


def hash_inputs(paths: Iterable[str]) -> dict[str, dict]:
    """Hashes of a job's inputs; ``run_step`` takes them when the job starts, before it reads them."""
    return {p: hash_path(p) for p in dict.fromkeys(paths)}


def build_record(
    *, rule: str, wildcards: Mapping[str, Any], inputs: Iterable[str] | Mapping[str, dict], outputs: Iterable[str],
    params: Mapping[str, Any], other_params: Mapping[str, Any] | None = None, cwd: str | os.PathLike | None = None,
    code_files: Mapping[str, str] | None = None, threads: int | None = None,
) -> dict[str, Any]:
    """One job's record. ``inputs``: paths (hashed now) or the hashes taken at the job's start."""
    from .machine import describe
    from ..report.provenance import params_sha256

    input_hashes = dict(inputs) if isinstance(inputs, Mapping) else hash_inputs(inputs)
    output_hashes = {p: hash_path(p) for p in dict.fromkeys(outputs)}
    params = _plain(dict(params))
    return {
        "format": FORMAT,
        "rule": rule,
        "wildcards": _plain(dict(wildcards)),
        "inputs": input_hashes,
        "outputs": output_hashes,
        "params": params,
        "params_sha256": params_sha256(params),
        "other_params": _plain(dict(other_params or {})),
        # the study seed of a per-seed job is its {seed} wildcard (params.yaml study.seeds), not a params key
        "seeds": {**find_seeds(params), **({"study.seed": _plain(wildcards["seed"])} if "seed" in dict(wildcards) else {})},
        "code": code_version(cwd),
        "code_files": dict(code_files or {}),
        "environment": {
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "platform": platform.platform(),
            "packages": package_versions(),
        },
        "machine": describe(threads),
        "device": _device(output_hashes),
        "weights": _weights(input_hashes, output_hashes),
        "finished_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def write_job_record(snakemake: Any, store: str | os.PathLike = LINEAGE_DIR,
                     started_inputs: Mapping[str, dict] | None = None) -> Path:
    """The record of a finished Snakemake job (called by ``run_step``); returns its path.

    ``started_inputs``: the input hashes taken when the job started (``hash_inputs``), so the
    record never vouches for inputs that changed while the job ran.
    """
    wildcards = dict(snakemake.wildcards.items()) if hasattr(snakemake.wildcards, "items") else {}
    params_obj = snakemake.params
    cfg = getattr(params_obj, "cfg", {}) or {}
    code_files = getattr(params_obj, "code", {}) or {}
    other = {k: v for k, v in (params_obj.items() if hasattr(params_obj, "items") else []) if k not in ("cfg", "code")}
    record = build_record(
        rule=snakemake.rule, wildcards=wildcards,
        inputs=started_inputs if started_inputs is not None else _named(snakemake.input),
        outputs=_named(snakemake.output), params=cfg, other_params=other, code_files=code_files,
        threads=int(getattr(snakemake, "threads", 0) or 0) or None,
    )
    path = Path(store) / record_name(snakemake.rule, wildcards)
    write_json(path, record)
    return path
