"""Failing disks and wrong path params (issue 14, findings 7-8): one-line errors, found
before the work, naming the file or params key and the fix.

Folders that cannot be written: ``chattr +i`` as root (root ignores permission bits; CI
runs as root), ``chmod 555`` otherwise. A full disk: a tiny tmpfs, which needs root (mount);
the same path is also taken with a simulated ENOSPC so it is covered everywhere.
"""

from __future__ import annotations

import errno
import os
import logging
import subprocess
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml

from e2e_helpers import copy_workflow, snakemake
from pipeline_lib.io import atomic
from pipeline_lib.io.atomic import check_free_space, write_parquet, write_text
from pipeline_lib.io.errors import PipelineError
from pipeline_lib.step import run_step


@contextmanager
def unwritable(folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("cannot make a folder immutable here (chattr +i)")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


@contextmanager
def tiny_disk(folder: Path, size: str = "64k"):
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def one_line_error(fn, *args, **kw) -> str:
    with pytest.raises(PipelineError) as info:
        fn(*args, **kw)
    assert "\n" not in str(info.value)
    return str(info.value)


FRAME = pd.DataFrame({"x": np.arange(50_000, dtype=np.float64)})  # ~400 kB of Parquet


# ---------------------------------------------------------------- the atomic writer


def test_full_disk_is_one_line_naming_the_file_and_leaves_nothing(tmp_path):
    disk = tmp_path / "disk"
    with tiny_disk(disk):
        target = disk / "results" / "features.parquet"
        msg = one_line_error(write_parquet, FRAME, target)
        assert msg.startswith(f"cannot write {target.as_posix()}: no space left on its device")
        assert "free space there" in msg
        assert list((disk / "results").iterdir()) == []  # the temporary is gone too


def test_enospc_from_any_writer_is_translated(tmp_path, monkeypatch):
    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    msg = one_line_error(write_text, tmp_path / "out" / "a.json", "{}")
    assert msg.startswith(f"cannot write {(tmp_path / 'out/a.json').as_posix()}: no space left")
    assert list((tmp_path / "out").iterdir()) == []


def test_folder_that_cannot_be_written_is_one_line_naming_it(tmp_path):
    folder = tmp_path / "results"
    with unwritable(folder):
        msg = one_line_error(write_text, folder / "metrics.json", "{}")
    assert msg.startswith(f"cannot write {(folder / 'metrics.json').as_posix()}:")
    assert f"make {folder.as_posix()}/ writable" in msg and "chattr -i" in msg


def test_other_errors_keep_their_type(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with atomic.atomic_path(tmp_path / "x.txt"):
            1 / 0
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- checks before the work


def test_free_space_estimate_names_what_and_where(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda p: SimpleNamespace(total=10 << 20, used=0, free=5 << 20))
    msg = one_line_error(check_free_space, {tmp_path / "features.parquet": 3 << 20}, "the features table")
    assert msg == (f"not enough free space for the features table: about 11.0 MiB needed under "
                   f"{tmp_path.as_posix()}/, 5.0 MiB free on its filesystem; free some space (or move "
                   "results/ to a larger disk) and rerun")
    check_free_space({tmp_path / "small.json": 1000}, "x", headroom=1 << 20)  # fits: no error


def test_training_checks_space_for_weights_and_checkpoints_before_fitting(tmp_path, monkeypatch):
    from pipeline_lib.models import end_to_end as deep
    from pipeline_lib.training.config import TrainConfig

    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda p: SimpleNamespace(total=1 << 30, used=0, free=1 << 20))
    monkeypatch.setattr(deep, "fit", lambda *a, **k: pytest.fail("training started"))
    split = pd.DataFrame({"id": list("abcdef"), "path": ["none.jpg"] * 6, "label": [0, 1, 0, 1, 0, 1],
                          "split": ["train"] * 2 + ["val"] * 2 + ["test"] * 2})
    out = tmp_path / "models/cnn2"
    msg = one_line_error(
        deep.train_and_evaluate, "cnn2", split,
        deep.NetworkConfig(image_size=32, seed=0, model={}, loop=TrainConfig(epochs=1, batch_size=2, lr=0.01)),
        deep.ModelOutputs(model=out / "model.pt", metrics=out / "metrics.json", predictions=out / "p.csv",
                          roc=out / "roc.csv", state_dir=tmp_path / "state"),
        progress=False,
    )
    assert msg.startswith("not enough free space for cnn2's weights and resume checkpoints")


def _fake_snakemake(tmp_path: Path, out_dir: Path, log_dir: Path):
    return SimpleNamespace(
        input=[], output=[str(out_dir / "result.json")], params=SimpleNamespace(cfg={}), wildcards=SimpleNamespace(),
        threads=1, resources=SimpleNamespace(), log=[str(log_dir / "job.log")], rule="demo",
    )


def _run(fake, capsys) -> tuple[int, list[str], list[str]]:
    calls = []
    try:
        run_step(fake, lambda step: calls.append("main"))
        code = 0
    except SystemExit as exc:
        code = exc.code
    finally:  # run_step points the "pipeline" logger at the (now closed) log file
        logging.getLogger("pipeline").handlers.clear()
    return code, calls, capsys.readouterr().err.strip().splitlines()


def test_log_folder_that_cannot_be_written_is_one_line_at_once(tmp_path, capsys):
    with unwritable(tmp_path / "logs"):
        code, calls, err = _run(_fake_snakemake(tmp_path, tmp_path / "results", tmp_path / "logs"), capsys)
    assert code == 1 and calls == []
    assert len(err) == 1 and err[0].startswith(f"ERROR: cannot write the log file {tmp_path / 'logs/job.log'}:")
    assert "writable" in err[0]


def test_output_folder_that_cannot_be_written_stops_the_job_before_main(tmp_path, capsys):
    with unwritable(tmp_path / "results"):
        code, calls, _ = _run(_fake_snakemake(tmp_path, tmp_path / "results", tmp_path / "logs"), capsys)
    log = (tmp_path / "logs/job.log").read_text().splitlines()
    assert code == 1 and calls == []
    assert "rule demo started" in log[0] and len(log) == 2
    assert f"ERROR: cannot create files in {(tmp_path / 'results').as_posix()}/" in log[1]


def _ingest_log(tmp_path: Path, fault) -> list[str]:
    """Run rule ingest on a small data set with ``fault(results/ingest)`` in force; its log."""
    from test_reliability import make_data

    (tmp_path / "wf").mkdir()
    work = copy_workflow(tmp_path / "wf")
    make_data(work / "data/raw/mine")
    (work / "mine.yaml").write_text(yaml.safe_dump({"ingest": {"root": "data/raw/mine", "test_labels": None}}))
    with fault(work / "results/ingest"):
        out = snakemake(work, "results/ingest/manifest.parquet", "--configfile", ".test/params.yaml", "mine.yaml",
                        check=False)
        assert out.returncode != 0
        return (work / "logs/ingest.log").read_text().splitlines()


@pytest.mark.e2e
def test_ingest_rule_with_an_unwritable_output_folder_fails_at_start(tmp_path):
    log = _ingest_log(tmp_path, unwritable)
    assert len(log) == 2 and "ERROR: cannot create files in" in log[1] and "results/ingest/" in log[1], log


@pytest.mark.e2e
def test_ingest_rule_on_a_full_disk_fails_at_start(tmp_path):
    log = _ingest_log(tmp_path, tiny_disk)
    assert len(log) == 2 and "ERROR: not enough free space for this job's outputs" in log[1], log


# ---------------------------------------------------------------- path params (before Snakemake)


def _dry_run(work: Path, override: dict, *targets: str):
    (work / "override.yaml").write_text(yaml.safe_dump(override))
    return snakemake(work, *targets, "-n", "--quiet", "rules", "--configfile", ".test/params.yaml", "override.yaml",
                     check=False)


@pytest.fixture(scope="module")
def workflow_copy(tmp_path_factory) -> Path:
    return copy_workflow(tmp_path_factory.mktemp("paths"))


@pytest.mark.dag
@pytest.mark.parametrize(
    "override, expected",
    [
        ({"ingest": {"root": "data/raw/nowhere", "test_labels": None}},
         "ERROR: ingest.root in params.yaml is 'data/raw/nowhere', which does not exist; put the data there"),
        ({"ingest": {"test_labels": "data/raw/labels.csv"}},
         "ERROR: ingest.test_labels in params.yaml is 'data/raw/labels.csv', which is not a file"),
        ({"features": {"weights": "imagenet", "weights_file": "data/weights/resnet18.pth"}},
         "ERROR: features.weights_file in params.yaml is 'data/weights/resnet18.pth', which is not a file; "
         "download the ImageNet weights of resnet18 from https://download.pytorch.org/models/resnet18-f37072fd.pth"),
    ],
    ids=["ingest.root", "ingest.test_labels", "features.weights_file"],
)
def test_missing_path_params_name_the_key_and_the_fix(workflow_copy, override, expected):
    out = _dry_run(workflow_copy, override)
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert expected in text, text[-2000:]
    assert "MissingInputException" not in text


@pytest.mark.dag
@pytest.mark.parametrize("root", ["./data/raw/builtin", "data/raw/builtin/", "data/raw/./builtin"])
def test_spellings_of_the_builtin_root_are_one_folder(workflow_copy, root):
    out = _dry_run(workflow_copy, {"ingest": {"root": root}}, "results/ingest/manifest.parquet")
    assert out.returncode == 0, (out.stdout + out.stderr)[-2000:]
    assert "generate" in out.stdout and "ingest" in out.stdout


def test_normalised_root_reaches_the_rule(tmp_path):
    from pipeline_lib.data.datapaths import check_data_paths

    config = {"ingest": {"root": "./data/raw/builtin/", "test_labels": "./data/raw/builtin//test_labels.csv"}}
    check_data_paths(config)
    assert config["ingest"] == {"root": "data/raw/builtin", "test_labels": "data/raw/builtin/test_labels.csv"}
