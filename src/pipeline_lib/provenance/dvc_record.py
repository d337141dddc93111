"""DVC's record of a Snakemake run, written by the run itself (the Snakefile's ``onsuccess``).

After a successful run every job of its DAG is up to date (run now or found up to date), so
``dvc commit`` of exactly those jobs' stages makes ``dvc.lock`` match the workspace: the study
command leaves a record to push, and ``dvc status`` agrees with ``snakemake -n``. Stages of
jobs outside the run's DAG are left as they are (their outputs may be stale; DVC says so).

Skipped, with a one-line reason:
- inside ``dvc repro`` / ``dvc exp run`` (``DVC_STAGE`` is set): DVC records the stage itself and
  holds the repository lock;
- outside a DVC repository, or when ``dvc`` is not installed;
- when the run's config is not ``params.yaml`` (``--configfile``/``--config``): DVC reads params
  from ``params.yaml``, so ``dvc.lock`` would name parameters that did not make the outputs.
DVC is never called from inside a rule.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import yaml

from .dvc_yaml import stage_name


def _dvc_executable() -> str | None:
    here = Path(sys.executable).parent
    return shutil.which("dvc", path=f"{here}{os.pathsep}{os.environ.get('PATH', '')}")


def _skip_reason(root: Path, config: Mapping[str, Any], env: Mapping[str, str]) -> str | None:
    if env.get("DVC_STAGE"):
        return "running inside a DVC stage: DVC records it"
    if not (root / ".dvc").is_dir():
        return "not a DVC repository (no .dvc/)"
    if not (root / "dvc.yaml").is_file():
        return "no dvc.yaml"
    params = root / "params.yaml"
    if not params.is_file() or (yaml.safe_load(params.read_text(encoding="utf-8")) or {}) != dict(config):
        return ("this run's config differs from params.yaml (--configfile/--config), and dvc.lock records "
                "params.yaml; commit such a run by putting its values in params.yaml")
    return None


def stages_to_commit(jobs: Iterable[tuple[str, Mapping[str, str]]], dvc_yaml: Path) -> tuple[list[str], list[str], list[str]]:
    """(stages of the run's jobs that dvc.yaml has, jobs that it lacks, ``dvc commit``'s targets).

    The targets are none when the run's stages are every stage of dvc.yaml: DVC commits each
    command-line target on its own, re-reading and rewriting the whole ``dvc.lock`` each time
    (round-trip YAML, pure Python), ~3 s per target with the default study's lock, 210 s of CPU
    for its 74 stages, against ~9 s for one commit without targets, which commits every stage
    of dvc.yaml with one lock write (bench/README.md, "The DVC record")."""
    known = set((yaml.safe_load(dvc_yaml.read_text(encoding="utf-8")) or {}).get("stages") or {})
    wanted = {stage_name(rule, dict(wildcards)) for rule, wildcards in jobs}
    stages = sorted(wanted & known)
    return stages, sorted(wanted - known), [] if set(stages) == known else stages


def commit_after_run(
    jobs: Iterable[tuple[str, Mapping[str, str]]], config: Mapping[str, Any], root: str | os.PathLike = ".",
    *, env: Mapping[str, str] | None = None, run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
) -> str:
    """``dvc commit --force --no-relink`` of the run's stages; returns a one-line summary (never raises)."""
    root = Path(root)
    reason = _skip_reason(root, config, os.environ if env is None else env)
    if reason:
        return f"dvc.lock not updated: {reason}"
    dvc = _dvc_executable()
    if dvc is None:
        return "dvc.lock not updated: dvc is not installed (make env)"
    stages, unknown, targets = stages_to_commit(jobs, root / "dvc.yaml")
    note = (f"; dvc.yaml has no stage for {', '.join(unknown)}: run `python workflow/tools/dvc_sync.py`"
            if unknown else "")
    if not stages:
        return "dvc.lock not updated: no stage of dvc.yaml ran" + note
    # --no-relink: the outputs stay the files the jobs wrote. Relinking rewrites each one from the
    # cache in stage-name order, so an input could end up newer than its job's outputs, and every
    # later `snakemake -n` would checksum it to decide that nothing changed (bench/noop_time.py).
    command = [dvc, "commit", "--force", "--quiet", "--no-relink", *targets]
    result = run(command, cwd=root, capture_output=True, text=True)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        return f"WARNING: dvc commit failed (exit {result.returncode}): {detail[-1] if detail else ''}{note}"
    return f"dvc.lock records {len(stages)} stage(s) of this run (dvc commit){note}"
