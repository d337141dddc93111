"""The Snakefile's onsuccess DVC record (pipeline_lib.provenance.dvc_record) on a real DVC repository."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import yaml

from pipeline_lib.provenance.dvc_record import commit_after_run

DVC = str(Path(sys.executable).parent / "dvc")

DVC_YAML = """\
stages:
  make_a:
    cmd: "true"
    params: [n]
    outs: [a.txt]
  make_b_seed0:
    cmd: "true"
    deps: [a.txt]
    outs: [b.txt]
"""


CONTENTS = {"a.txt": b"upstream\n", "b.txt": b"downstream\n"}


def _repo(tmp_path, monkeypatch):
    """A DVC repository with the two stages' outputs written, b.txt one second after a.txt."""
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    monkeypatch.delenv("DVC_STAGE", raising=False)
    subprocess.run([DVC, "init", "--no-scm", "--quiet"], cwd=tmp_path, check=True)
    (tmp_path / "params.yaml").write_text("n: 1\n")
    (tmp_path / "dvc.yaml").write_text(DVC_YAML)
    for offset, (name, data) in enumerate(CONTENTS.items()):
        (tmp_path / name).write_bytes(data)
        os.utime(tmp_path / name, ns=(1_700_000_000_000_000_000 + offset * 10**9,) * 2)


def _recording_run(commands):
    def run(command, **kwargs):
        commands.append(list(command))
        return subprocess.run(command, **kwargs)
    return run


def test_commit_records_the_run_and_leaves_the_outputs_as_written(tmp_path, monkeypatch):
    """dvc.lock gets both stages with the files' md5, `dvc status` is clean, and the outputs keep
    their times: b.txt (written after a.txt, from it) stays the newer, so `snakemake -n` has no
    input newer than its outputs to checksum (a relinking commit rewrote them in stage order).
    A run of every stage is one `dvc commit` without targets (one dvc.lock write, not one per stage)."""
    _repo(tmp_path, monkeypatch)
    before = {name: (tmp_path / name).stat().st_mtime_ns for name in CONTENTS}
    commands = []

    summary = commit_after_run([("make", {"x": "a"}), ("make", {"x": "b", "seed": "0"})], {"n": 1}, tmp_path,
                               run=_recording_run(commands))

    assert summary == "dvc.lock records 2 stage(s) of this run (dvc commit)"
    assert [c[1:] for c in commands] == [["commit", "--force", "--quiet", "--no-relink"]]
    assert {name: (tmp_path / name).stat().st_mtime_ns for name in CONTENTS} == before
    lock = yaml.safe_load((tmp_path / "dvc.lock").read_text())["stages"]
    recorded = {out["path"]: out["md5"] for stage in lock.values() for out in stage["outs"]}
    assert recorded == {name: hashlib.md5(data).hexdigest() for name, data in CONTENTS.items()}
    assert lock["make_a"]["params"] == {"params.yaml": {"n": 1}}
    status = subprocess.run([DVC, "status"], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert status.stdout.strip() == "Data and pipelines are up to date."


def test_a_partial_run_commits_only_its_own_stages(tmp_path, monkeypatch):
    """A run of some stages names them: the stage outside the run stays unrecorded."""
    _repo(tmp_path, monkeypatch)
    commands = []

    summary = commit_after_run([("make", {"x": "a"})], {"n": 1}, tmp_path, run=_recording_run(commands))

    assert summary == "dvc.lock records 1 stage(s) of this run (dvc commit)"
    assert [c[1:] for c in commands] == [["commit", "--force", "--quiet", "--no-relink", "make_a"]]
    lock = yaml.safe_load((tmp_path / "dvc.lock").read_text())["stages"]
    assert list(lock) == ["make_a"]
    assert lock["make_a"]["outs"][0]["md5"] == hashlib.md5(CONTENTS["a.txt"]).hexdigest()
