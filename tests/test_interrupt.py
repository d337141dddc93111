"""Interrupted runs: a real ``snakemake`` process group killed in ingest, features and training.

Each test starts the real workflow (tiny configuration, throw-away copy of the project) in its
own process group and kills the whole group (SIGKILL or SIGTERM) while a rule is in flight:

* the kill is timed on a real point of the rule: ``sitecustomize.py`` (put on the jobs'
  PYTHONPATH by the test only) makes ``os.replace`` pause before renaming a chosen output into
  place, i.e. at the moment a non-atomic writer would have a half-written file under its final
  name; the test waits for the temporary (or, for training, the resume checkpoint) to appear;
* afterwards, every output that exists under its final name must be readable, and Snakemake
  must still regard the killed job as to be done (never "Nothing to be done");
* the rerun (``--unlock`` / ``--rerun-incomplete``, as Snakemake asks) runs only the killed job,
  finishes it, and leaves what was complete before the kill untouched (same mtimes).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from e2e_helpers import copy_workflow, job_counts, snakemake, workflow_env
from pipeline_lib.training.checkpoint import load_weights
from pipeline_lib.training.loop import Checkpoint

# Targets go before TINY: --configfile takes every following word as a file.
TINY = ("--configfile", ".test/params.yaml", "interrupt.yaml")
# Training long enough to be caught between epochs (each checkpoint save pauses 1 s here).
EXTRA_CONFIG = "train:\n  cnn2:\n    loop: {epochs: 5, patience: 10}\n"

HOOK = '''\
"""Test hook (tests/test_interrupt.py): pause os.replace onto chosen outputs."""
import os
import time

_match = [m for m in os.environ.get("RELIABILITY_SLOW_REPLACE", "").split(",") if m]
if _match:
    _real_replace = os.replace
    _delay = float(os.environ.get("RELIABILITY_SLOW_SECONDS", "60"))

    def _slow_replace(src, dst, *args, **kwargs):
        if any(os.fspath(dst).endswith(m) for m in _match):
            time.sleep(_delay)
        return _real_replace(src, dst, *args, **kwargs)

    os.replace = _slow_replace
'''

pytestmark = pytest.mark.e2e

MANIFEST = "results/ingest/manifest.parquet"
SPLIT = "results/split/split.parquet"
FEATURES = "results/features/pretrained.parquet"
MODEL = "results/models/cnn2/seed0/model.pt"


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    workdir = copy_workflow(tmp_path_factory.mktemp("interrupt"))
    (workdir / "interrupt.yaml").write_text(EXTRA_CONFIG)
    hook_dir = tmp_path_factory.mktemp("hook")
    (hook_dir / "sitecustomize.py").write_text(HOOK)
    workdir.joinpath(".hook").write_text(str(hook_dir))
    return workdir


def _start(workdir: Path, target: str, *, slow: str, delay: float = 60.0) -> subprocess.Popen:
    hook_dir = workdir.joinpath(".hook").read_text()
    env = workflow_env(workdir, PYTHONPATH=hook_dir, RELIABILITY_SLOW_REPLACE=slow, RELIABILITY_SLOW_SECONDS=str(delay))
    log = open(workdir / f"snakemake-{Path(target).stem}.out", "w")
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", target, *TINY]
    return subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for(proc: subprocess.Popen, ready, what: str, workdir: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            out = next(workdir.glob("snakemake-*.out")).read_text() if list(workdir.glob("snakemake-*.out")) else ""
            pytest.fail(f"snakemake ended ({proc.returncode}) before {what}:\n{out[-3000:]}")
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.02)


def _kill_group(proc: subprocess.Popen, sig: int) -> None:
    """Send ``sig`` to the run's whole process group (snakemake and its job), then reap it."""
    os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=60)
    finally:
        try:  # jobs that outlive a SIGTERM'd snakemake: this test's group only
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if proc.poll() is None:
            proc.wait()


def _mtimes(workdir: Path, *paths: str) -> dict[str, int]:
    found = {}
    for rel in paths:
        p = workdir / rel
        for f in sorted(p.rglob("*")) if p.is_dir() else [p]:
            if f.is_file():
                found[f.relative_to(workdir).as_posix()] = f.stat().st_mtime_ns
    return found


def _temps(directory: Path, name: str) -> list[Path]:
    return list(directory.glob(f".{name}.tmp-*"))


def _still_to_do(workdir: Path, target: str, rule: str) -> None:
    """Snakemake must not take the killed job's leftovers for finished work."""
    out = snakemake(workdir, target, *TINY, "--dry-run", check=False)
    text = out.stdout + out.stderr
    assert "Nothing to be done" not in text, text
    assert out.returncode != 0 and "incomplete" in text.lower() or rule in text, text


def _rerun(workdir: Path, target: str) -> dict[str, int]:
    """Rerun; rule -> job count that Snakemake ran (its job-stats table)."""
    return job_counts(snakemake(workdir, target, *TINY, "--rerun-incomplete"))


def _readable(workdir: Path, rel: str) -> None:
    path = workdir / rel
    if path.suffix == ".parquet":
        pd.read_parquet(path)
    elif path.suffix == ".json":
        json.loads(path.read_text())
    elif path.suffix == ".csv":
        pd.read_csv(path)
    elif path.suffix == ".pt":
        load_weights(path)


def _unlock(workdir: Path) -> None:
    # A SIGKILLed snakemake cannot release its lock; Snakemake asks for --unlock.
    snakemake(workdir, *TINY, "--unlock")


def test_kill_during_ingest(work):
    proc = _start(work, MANIFEST, slow="manifest.parquet")
    try:
        _wait_for(proc, lambda: _temps(work / "results/ingest", "manifest.parquet"), "manifest temporary", work)
        before = _mtimes(work, "data/raw/builtin")  # generate finished before ingest started
        _kill_group(proc, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            _kill_group(proc, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert not (work / MANIFEST).exists()  # never a half-written manifest under its name
    for rel in ("results/ingest/bad_files.csv", "results/ingest/ingest_metrics.json"):
        if (work / rel).exists():
            _readable(work, rel)
    _unlock(work)
    _still_to_do(work, MANIFEST, "ingest")
    assert _rerun(work, MANIFEST) == {"ingest": 1}  # only the killed job
    assert _mtimes(work, "data/raw/builtin") == before  # generate was not rerun
    manifest = pd.read_parquet(work / MANIFEST)
    assert len(manifest) == 40 + 16
    assert json.loads((work / "results/ingest/ingest_metrics.json").read_text())["images"] == 56


def test_sigterm_during_features(work):
    snakemake(work, SPLIT, *TINY)  # its prerequisites, complete (no-op after the ingest test)
    before = _mtimes(work, "data/raw/builtin", MANIFEST, SPLIT)
    # The features job dies after writing pretrained.parquet but before its second output.
    proc = _start(work, FEATURES, slow="pretrained.weights.json")
    try:
        _wait_for(proc, lambda: _temps(work / "results/features", "pretrained.weights.json"),
                  "weights record temporary", work)
        assert (work / FEATURES).exists()  # one output complete-looking, the job not finished
        _kill_group(proc, signal.SIGTERM)
    finally:
        if proc.poll() is None:
            _kill_group(proc, signal.SIGKILL)
    assert proc.returncode != 0
    assert not (work / "results/features/pretrained.weights.json").exists()
    if (work / FEATURES).exists():
        _readable(work, FEATURES)
        _still_to_do(work, FEATURES, "features")
    if (work / ".snakemake/locks").exists() and any((work / ".snakemake/locks").iterdir()):
        _unlock(work)
    assert _rerun(work, FEATURES) == {"features": 1}  # only the killed job
    assert _mtimes(work, "data/raw/builtin", MANIFEST, SPLIT) == before
    weights = json.loads((work / "results/features/pretrained.weights.json").read_text())
    assert weights["mode"] == "none"
    assert len(pd.read_parquet(work / FEATURES)) == 56


def test_kill_during_training_resumes(work):
    snakemake(work, SPLIT, *TINY)
    before = _mtimes(work, "data/raw/builtin", MANIFEST, SPLIT)
    state = work / ".state/train/cnn2/seed0/checkpoint.pt"  # the per-seed resume state
    proc = _start(work, MODEL, slow="checkpoint.pt", delay=1.0)
    try:
        _wait_for(proc, state.exists, "training checkpoint", work)
        _kill_group(proc, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            _kill_group(proc, signal.SIGKILL)
    for name in ("model.pt", "metrics.json", "predictions.csv", "roc.csv"):
        assert not (work / "results/models/cnn2/seed0" / name).exists(), name
    killed_at = Checkpoint(state.parent, state.name).read()["epoch"]  # the kept checkpoint is complete
    assert 1 <= killed_at < 5
    if (work / "results/models/cnn2/seed0/history.csv").exists():  # written per epoch: incomplete
        _readable(work, "results/models/cnn2/seed0/history.csv")
    _unlock(work)
    _still_to_do(work, MODEL, "train")
    assert _rerun(work, MODEL) == {"train": 1}  # only the killed job
    assert _mtimes(work, "data/raw/builtin", MANIFEST, SPLIT) == before
    log = (work / "logs/train/cnn2_seed0.log").read_text()
    assert f"resumed from epoch {killed_at} of 5" in log, log
    assert len(pd.read_csv(work / "results/models/cnn2/seed0/history.csv")) == 5  # every epoch, once
    json.loads((work / "results/models/cnn2/seed0/metrics.json").read_text())
    load_weights(work / MODEL)
    assert not state.exists()  # cleared once the outputs are written
