"""`python -m pipeline_lib pull` / `restore-mtimes` at unit level, on a hand-made dvc.lock.

The DAG of the lock below (ranks by hand): ``gen`` and ``other`` read only sources (rank 0),
``feat`` reads gen's file (1), ``model`` reads a file inside feat's directory and gen's file (2).
The e2e test in test_dvc_remote.py runs the real thing against a DVC remote.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from pipeline_lib import __main__ as cli
from pipeline_lib.io.errors import PipelineError

LOCK = {
    "schema": "2.0",
    "stages": {
        "model": {"cmd": "m", "deps": [{"path": "feat/x.csv"}, {"path": "gen.txt"}], "outs": [{"path": "model.pt"}]},
        "feat": {"cmd": "f", "deps": [{"path": "./gen.txt"}, {"path": "code.py"}], "outs": [{"path": "feat"}]},
        "gen": {"cmd": "g", "deps": [{"path": "raw"}], "outs": [{"path": "gen.txt"}]},
        "other": {"cmd": "o", "deps": [{"path": "raw/a.jpg"}], "outs": [{"path": "other.txt"}, {"path": "never_made.txt"}]},
    },
}
RANKS = {"gen": 0, "other": 0, "feat": 1, "model": 2}


def _tree(root: Path) -> None:
    for rel in ("raw/a.jpg", "raw/sub/b.jpg", "code.py", "gen.txt", "feat/x.csv", "feat/y/z.csv", "model.pt", "other.txt"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
    (root / "dvc.lock").write_text(yaml.safe_dump(LOCK))


def _mtime(path: str) -> float:
    return os.stat(path).st_mtime


def test_stage_order_ranks_each_stage_after_everything_it_reads():
    order = cli.stage_order(LOCK)
    assert {name: rank for rank, name, _ in order} == RANKS
    assert [name for _, name, _ in order] == ["gen", "other", "feat", "model"]  # by rank, then name
    assert dict((name, outs) for _, name, outs in order)["other"] == ["other.txt", "never_made.txt"]


def test_stage_order_refuses_a_cycle():
    cyclic = {"stages": {"a": {"deps": [{"path": "b.txt"}], "outs": [{"path": "a.txt"}]},
                         "b": {"deps": [{"path": "a.txt"}], "outs": [{"path": "b.txt"}]}}}
    with pytest.raises(PipelineError, match="depends on itself"):
        cli.stage_order(cyclic)


def test_restore_mtimes_orders_sources_then_each_rank(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _tree(tmp_path)
    # what `dvc pull` leaves: outputs older than the sources they were made from
    for i, path in enumerate(["model.pt", "feat/y/z.csv", "feat/x.csv", "gen.txt", "other.txt", "raw/a.jpg", "code.py"]):
        os.utime(path, (1_000_000 + i, 1_000_000 + i))
    before = time.time()
    touched = cli.restore_mtimes("dvc.lock", spacing=2.0)
    assert sorted(touched) == ["feat", "gen", "model", "other"]
    sources = [_mtime(p) for p in ("raw/a.jpg", "raw/sub/b.jpg", "code.py")]
    assert len(set(sources)) == 1  # every source file, directories walked, one time
    by_rank = {0: ["gen.txt", "other.txt"], 1: ["feat/x.csv", "feat/y/z.csv", "feat"], 2: ["model.pt"]}
    for rank, paths in by_rank.items():
        assert {_mtime(p) for p in paths} == {sources[0] + 2.0 * (rank + 1)}, rank
    assert _mtime("model.pt") < before  # all in the past: nothing looks newer than "now"
    assert not Path("never_made.txt").exists()  # an out that is not there is left alone


def test_restore_mtimes_names_a_missing_lock(tmp_path):
    with pytest.raises(PipelineError, match=r"nope\.lock: not found"):
        cli.restore_mtimes(tmp_path / "nope.lock")
    assert cli.main(["restore-mtimes", "--dvc-lock", str(tmp_path / "nope.lock")]) == 1


def test_restore_mtimes_command(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _tree(tmp_path)
    assert cli.main(["restore-mtimes"]) == 0
    out = capsys.readouterr().out
    assert "file times restored in DAG order for 4 stage(s): gen, other, feat, model" in out
    assert _mtime("raw/a.jpg") < _mtime("gen.txt") < _mtime("feat/x.csv") < _mtime("model.pt")


class FakeRun:
    """Stands in for subprocess.run in pipeline_lib.__main__: records commands, answers by program."""

    def __init__(self, **returncodes):
        self.calls: list[list[str]] = []
        self.returncodes = returncodes
        self.status = "{}"

    def __call__(self, cmd, *args, **kwargs):
        self.calls.append(list(cmd))
        key = "snakemake" if "snakemake" in cmd else cmd[1]
        return subprocess.CompletedProcess(cmd, self.returncodes.get(key, 0), stdout=self.status if key == "status" else "",
                                           stderr="")


def test_pull_pulls_the_locked_stages_then_orders_times_and_records_metadata(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _tree(tmp_path)
    fake = FakeRun()
    monkeypatch.setattr(cli.subprocess, "run", fake)
    assert cli.main(["pull", "-j", "2"]) == 0
    pull, status, touch = fake.calls
    assert pull == ["dvc", "pull", "-j", "2", "feat", "gen", "model", "other"]  # no target: every locked stage
    assert status[:3] == ["dvc", "status", "--json"]
    assert touch[1:] == ["-m", "snakemake", "--cores", "1", "--touch", "--forceall", "--no-hooks",
                         "gen.txt", "other.txt", "feat", "model.pt"]  # existing outs only, in DAG order
    assert _mtime("gen.txt") < _mtime("model.pt")
    assert "Snakemake metadata recorded for 4 pulled output(s)" in capsys.readouterr().out


def test_pull_with_targets_passes_them_on(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _tree(tmp_path)
    fake = FakeRun()
    monkeypatch.setattr(cli.subprocess, "run", fake)
    assert cli.main(["pull", "--no-metadata", "model"]) == 0
    assert cli.main(["pull", "--no-metadata", "-r", "store", "--jobs", "3", "gen"]) == 0
    # an option's value is no target: without targets every locked stage is pulled
    assert cli.main(["pull", "--no-metadata", "-r", "store"]) == 0
    assert fake.calls == [["dvc", "pull", "model"], ["dvc", "pull", "-r", "store", "--jobs", "3", "gen"],
                          ["dvc", "pull", "-r", "store", "feat", "gen", "model", "other"]]


def test_a_failed_dvc_pull_leaves_file_times_alone(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _tree(tmp_path)
    os.utime("model.pt", (1_000_000, 1_000_000))
    monkeypatch.setattr(cli.subprocess, "run", FakeRun(pull=3))
    assert cli.main(["pull"]) == 3
    assert _mtime("model.pt") == 1_000_000
    assert "dvc pull failed (exit 3)" in capsys.readouterr().err


def test_pull_records_no_metadata_when_the_checkout_differs_from_the_lock(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _tree(tmp_path)
    fake = FakeRun()
    fake.status = '{"model": [{"changed outs": {"model.pt": "modified"}}]}'
    monkeypatch.setattr(cli.subprocess, "run", fake)
    assert cli.main(["pull"]) == 0
    assert [c[:2] for c in fake.calls] == [["dvc", "pull"], ["dvc", "status"]]  # no snakemake --touch
    assert "model differ from dvc.lock; Snakemake metadata not recorded" in capsys.readouterr().err
