"""The lineage of one artifact back to the raw data, checked against the tree.

Every job leaves a record in the lineage store (``pipeline_lib.provenance.record``).
:func:`lineage` starts from an artifact, finds the record that produced it and follows its
inputs back, record by record, to the raw data. Every recorded hash is checked against the
file on disk (a mismatch is STALE), every recorded code file against the tree (CODE CHANGED)
and, when ``dvc.lock`` is present, against DVC's md5.

    python -m pipeline_lib lineage results/table/results.json [--json] [--check]
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .codedeps import changed_files
from ..io.errors import PipelineError
from .record import LINEAGE_DIR, hash_path


# --- reading the store back ---------------------------------------------------------------------


def load_records(store: str | os.PathLike = LINEAGE_DIR) -> dict[str, dict]:
    """Record id (file stem) → record, for every record in the store."""
    store = Path(store)
    records = {}
    for path in sorted(store.glob("*.json")) if store.is_dir() else []:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise PipelineError(f"{path}: unreadable lineage record ({exc}); rerun the rule that wrote it") from exc
        records[path.stem] = record
    return records


def _norm(path: str) -> str:
    return Path(os.path.normpath(path)).as_posix()


def producer_of(path: str, records: Mapping[str, dict]) -> tuple[str, str] | None:
    """(record id, recorded output path) of the job whose output is ``path`` or a directory holding it."""
    target = _norm(path)
    for rid, record in records.items():
        for out in record["outputs"]:
            out_n = _norm(out)
            if target == out_n or target.startswith(out_n + "/"):
                return rid, out
    return None


def load_dvc_lock(path: str | os.PathLike = "dvc.lock") -> dict[str, str]:
    """Path → md5 of every dep and out recorded in ``dvc.lock`` (empty when absent)."""
    path = Path(path)
    if not path.is_file():
        return {}
    import yaml

    lock = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    md5s: dict[str, str] = {}
    for stage in (lock.get("stages") or {}).values():
        for entry in [*(stage.get("deps") or []), *(stage.get("outs") or [])]:
            if entry.get("md5"):
                md5s[_norm(entry["path"])] = entry["md5"]
    return md5s


@dataclass
class Check:
    """One recorded artifact compared with the disk, its producer's record and dvc.lock."""

    path: str
    recorded_sha256: str | None
    current_sha256: str | None
    status: str  # ok | STALE | MISSING
    dvc: str | None = None  # agrees | DISAGREES | None (not in dvc.lock)
    notes: list[str] = field(default_factory=list)


@dataclass
class Lineage:
    artifact: str
    root: str  # record id that produced the artifact
    records: dict[str, dict]  # visited record id → record
    checks: dict[str, dict[str, Check]]  # record id → path → check (inputs and outputs)
    edges: dict[str, list[tuple[str, str | None]]]  # record id → [(input path, producer record id or None)]
    order: list[str]  # record ids, artifact first, raw data last
    code_changes: dict[str, dict[str, str]] = field(default_factory=dict)  # record id → code file → changed|missing

    @property
    def problems(self) -> list[str]:
        found = []
        for rid in self.order:
            for check in self.checks[rid].values():
                if check.status != "ok":
                    found.append(f"{check.status}: {check.path} (record {rid}: {', '.join(check.notes) or 'hash differs'})")
                if check.dvc == "DISAGREES":
                    found.append(f"DVC DISAGREES: {check.path} (record {rid}: dvc.lock md5 differs from the record)")
            changes = self.code_changes.get(rid)
            if changes:
                files = ", ".join(f"{path} ({how})" for path, how in sorted(changes.items()))
                found.append(f"CODE CHANGED: {files} (record {rid}: the code that made it is no longer the code in the tree)")
        return list(dict.fromkeys(found))

    @property
    def stale(self) -> bool:
        return bool(self.problems)

    def to_json(self) -> dict[str, Any]:
        stages = {}
        for rid in self.order:
            record = self.records[rid]
            stages[rid] = {
                "rule": record["rule"],
                "wildcards": record["wildcards"],
                "params": record["params"],
                "params_sha256": record["params_sha256"],
                "seeds": record["seeds"],
                "code": record["code"],
                "code_files": record.get("code_files", {}),
                "code_changed": self.code_changes.get(rid, {}),
                "machine": record.get("machine"),
                "device": record["device"],
                "environment": record["environment"],
                "weights": record["weights"],
                "finished_utc": record.get("finished_utc"),
                "inputs": [
                    {**_check_json(self.checks[rid][path]), "from": producer}
                    for path, producer in self.edges[rid]
                ],
                "outputs": [_check_json(self.checks[rid][path]) for path in record["outputs"]],
            }
        return {
            "artifact": self.artifact,
            "produced_by": self.root,
            "status": "STALE" if self.stale else "ok",
            "problems": self.problems,
            "stages": stages,
            "raw_data": [p for rid in self.order for p, producer in self.edges[rid] if producer is None]
            + [o for rid in self.order if not self.edges[rid] for o in self.records[rid]["outputs"]],
        }


def _check_json(check: Check) -> dict[str, Any]:
    return {"path": check.path, "sha256": check.recorded_sha256, "current_sha256": check.current_sha256,
            "status": check.status, "dvc_lock": check.dvc, "notes": check.notes}


def lineage(artifact: str, store: str | os.PathLike = LINEAGE_DIR, dvc_lock: str | os.PathLike = "dvc.lock") -> Lineage:
    """Follow ``artifact`` back through the lineage store (paths relative to the current directory)."""
    records = load_records(store)
    if not records:
        raise PipelineError(f"{store}: no lineage records; run the workflow (records are written as jobs finish)")
    found = producer_of(artifact, records)
    if found is None:
        raise PipelineError(f"{artifact}: no lineage record names it as an output; is it a workflow output (run from the work directory)?")
    lock = load_dvc_lock(dvc_lock)
    hashes: dict[str, dict] = {}

    def current(path: str) -> dict:
        if path not in hashes:
            hashes[path] = hash_path(path)
        return hashes[path]

    def check(path: str, info: Mapping[str, Any]) -> Check:
        now = current(path)
        if now["kind"] == "missing":
            status, notes = "MISSING", ["not on disk"]
        elif now["sha256"] != info.get("sha256"):
            status, notes = "STALE", ["file changed since the record was written"]
        else:
            status, notes = "ok", []
        dvc = None
        if _norm(path) in lock:
            dvc = "agrees" if lock[_norm(path)] in {info.get("md5"), info.get("md5_marked")} else "DISAGREES"
        return Check(path, info.get("sha256"), now["sha256"], status, dvc, notes)

    root = found[0]
    visited: dict[str, dict] = {}
    checks: dict[str, dict[str, Check]] = {}
    edges: dict[str, list] = {}
    order: list[str] = []
    queue = [root]
    while queue:
        rid = queue.pop(0)
        if rid in visited:
            continue
        record = visited[rid] = records[rid]
        order.append(rid)
        checks[rid] = {p: check(p, info) for p, info in record["outputs"].items()}
        edges[rid] = []
        for path, info in record["inputs"].items():
            checks[rid][path] = check(path, info)
            producer = producer_of(path, records)
            if producer is None:
                edges[rid].append((path, None))
                continue
            pid, out = producer
            edges[rid].append((path, pid))
            produced = records[pid]["outputs"][out]
            if _norm(out) == _norm(path) and produced.get("sha256") != info.get("sha256"):
                checks[rid][path].status = "STALE"
                checks[rid][path].notes.append(f"{pid} rewrote it after this job read it")
            queue.append(pid)
    code_changes = {rid: changed for rid in order if (changed := changed_files(visited[rid].get("code_files", {})))}
    return Lineage(artifact, root, visited, checks, edges, order, code_changes)


# --- text output -------------------------------------------------------------------------------


def _short(sha: str | None) -> str:
    return sha[:12] if sha else "-"


def _flag(check: Check) -> str:
    flag = "ok" if check.status == "ok" else f"{check.status}"
    if check.dvc:
        flag += f", dvc.lock {check.dvc}"
    return flag


def _machine_line(machine: Mapping[str, Any]) -> str:
    torch = machine.get("torch") or {}
    parts = [machine.get("cpu_model") or "?", f"{machine.get('job_threads') or '?'} threads"]
    if torch:
        parts.append(f"torch {torch.get('cpu_capability')} oneDNN {torch.get('onednn')} {torch.get('blas')}")
        if torch.get("cuda"):
            cuda = torch["cuda"]
            parts.append(f"CUDA {cuda.get('device')} driver {cuda.get('driver')} cuDNN {cuda.get('cudnn')}")
    blas = [f"{b.get('internal_api')} {b.get('version')} {b.get('architecture')}" for b in machine.get("blas_libraries", [])
            if b.get("user_api") == "blas"]
    if blas:
        parts.append("BLAS " + ", ".join(dict.fromkeys(blas)))
    return "; ".join(parts)


def render_text(lin: Lineage) -> str:
    lines = [f"lineage of {lin.artifact}  [{'STALE' if lin.stale else 'ok'}]"]
    shown: set[str] = set()

    def describe(rid: str, indent: str) -> None:
        record = lin.records[rid]
        code = record["code"]
        commit = code["git_commit"] + ("-dirty" if code.get("dirty") else "")
        seeds = ", ".join(f"{k}={v}" for k, v in record["seeds"].items()) or "-"
        params = json.dumps(record["params"], sort_keys=True, default=str)
        if len(params) > 160:
            params = params[:157] + "..."
        lines.append(f"{indent}rule {record['rule']} {json.dumps(record['wildcards']) if record['wildcards'] else ''}".rstrip()
                     + f"  (record {rid})")
        lines.append(f"{indent}  code {commit}; device {record['device']}; seeds {seeds}; params sha256 {_short(record['params_sha256'])}")
        if record.get("machine"):
            lines.append(f"{indent}  machine {_machine_line(record['machine'])}")
        for path, how in sorted(lin.code_changes.get(rid, {}).items()):
            lines.append(f"{indent}  code file {path}  [CODE CHANGED: {how}]")
        lines.append(f"{indent}  params {params}")
        for path, info in record["outputs"].items():
            lines.append(f"{indent}  out {path}  sha256 {_short(info.get('sha256'))}  [{_flag(lin.checks[rid][path])}]")
        for path, info in record["weights"].items():
            if "record" in info:
                rec = info["record"]
                lines.append(f"{indent}  weights {rec.get('arch', '?')} mode {rec.get('mode', '?')}"
                             f" from {rec.get('path') or '-'} sha256 {_short(rec.get('sha256'))}")
        for path, producer in lin.edges[rid]:
            info = record["inputs"][path]
            lines.append(f"{indent}  in  {path}  sha256 {_short(info.get('sha256'))}  [{_flag(lin.checks[rid][path])}]")
            if producer is None:
                lines.append(f"{indent}      <- source (no producing job recorded)")
            elif producer in shown:
                lines.append(f"{indent}      <- {producer} (shown above)")
            else:
                shown.add(producer)
                lines.append(f"{indent}      <- made by")
                describe(producer, indent + "      ")
        if not lin.edges[rid]:
            lines.append(f"{indent}  (raw data: this job has no inputs)")

    shown.add(lin.root)
    describe(lin.root, "")
    problems = lin.problems
    lines.append(f"{len(lin.order)} stages; " + ("no problems" if not problems else f"{len(problems)} problem(s):"))
    lines.extend(f"  {p}" for p in problems)
    return "\n".join(lines)
