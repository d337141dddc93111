"""Which run made a figure: git commit, a hash of the rule's params, and a sidecar JSON.

Every figure rule writes ``<figure>.png`` and ``<figure>.json`` (the sidecar); the report
rule reads the sidecar for the caption and the provenance line. Outside a git checkout
(e.g. the end-to-end test's temporary copy) the commit is ``"unknown"``; a checkout with
uncommitted changes to tracked files is marked ``<sha>-dirty``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..io.atomic import write_json
from ..io.errors import PipelineError

UNKNOWN = "unknown"


def git_commit(cwd: str | os.PathLike | None = None) -> str:
    """``git rev-parse HEAD`` (``-dirty`` when tracked files changed), or ``"unknown"``."""
    cwd = Path(cwd or os.getcwd())
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--verify", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=30
        )
        if head.returncode != 0:
            return UNKNOWN
        # outside a work tree of our own (a temp copy inside some other repo) means unknown too
        top = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], cwd=cwd, capture_output=True, text=True, timeout=30
        )
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() != cwd.resolve():
            return UNKNOWN
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return UNKNOWN
    sha = head.stdout.strip()
    return f"{sha}-dirty" if status.returncode == 0 and status.stdout.strip() else sha


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def params_sha256(params: Mapping[str, Any]) -> str:
    """sha256 of the rule's params mapping as canonical JSON (sorted keys)."""
    text = json.dumps(_plain(params), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class FigureRecord:
    """The sidecar of one figure: what it shows and which run made it."""

    title: str
    caption: str
    rule: str
    git_commit: str
    params_sha256: str
    params: dict = field(default_factory=dict)
    inputs: list = field(default_factory=list)
    details: dict = field(default_factory=dict)

    def provenance(self) -> str:
        return f"made by rule {self.rule} at commit {self.git_commit}, params sha256 {self.params_sha256[:12]}"


def sidecar_path(png: str | os.PathLike) -> Path:
    return Path(png).with_suffix(".json")


def write_record(path: str | os.PathLike, record: FigureRecord) -> None:
    write_json(path, _plain(asdict(record)))


def read_record(path: str | os.PathLike) -> FigureRecord:
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise PipelineError(f"{path}: figure record not found; re-run the rule that draws this figure") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise PipelineError(f"{path}: figure record cannot be read ({exc}); re-run the rule that draws it") from exc
    try:
        return FigureRecord(**obj)
    except TypeError as exc:
        raise PipelineError(f"{path}: not a figure record ({exc}); re-run the rule that draws it") from exc


def make_record(
    *, title: str, caption: str, rule: str, params: Mapping[str, Any], inputs=(), details=None, cwd=None
) -> FigureRecord:
    return FigureRecord(
        title=title,
        caption=caption,
        rule=rule,
        git_commit=git_commit(cwd),
        params_sha256=params_sha256(params),
        params=_plain(dict(params)),
        inputs=[str(p) for p in inputs],
        details=_plain(dict(details or {})),
    )


def publish_figure(step: Any, fig: Any, *, title: str, caption: str, details: Mapping[str, Any] | None = None) -> None:
    """Save ``fig`` to the rule's ``output.png`` (at ``report.dpi``) and its provenance record
    (title, caption, rule, params, inputs, git commit) to ``output.record``."""
    from .figures import save_png

    save_png(fig, step.output.png, dpi=step.param("report.dpi"))
    record = make_record(
        title=title, caption=caption, rule=step.rule, params=step.params.cfg, inputs=list(step.input), details=details
    )
    write_record(step.output.record, record)
