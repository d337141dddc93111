"""Provenance records written by run_step, and `python -m pipeline_lib lineage` over them."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from snakemake.iocontainers import Namedlist

from pipeline_lib.io.errors import PipelineError
from e2e_helpers import workflow_env
from pipeline_lib.provenance.lineage import lineage, load_records
from pipeline_lib.provenance.record import LINEAGE_DIR, hash_path
from pipeline_lib.step import run_step


def _cli(workdir, *args):
    return subprocess.run([sys.executable, "-m", "pipeline_lib", *args], cwd=workdir, env=workflow_env(workdir),
                          capture_output=True, text=True, timeout=300)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_directory_hash_follows_content_not_times_or_order(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for root, names in ((a, ["x/1.jpg", "y/2.jpg", "3.csv"]), (b, ["3.csv", "y/2.jpg", "x/1.jpg"])):
        for name in names:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(name.encode())
    first = hash_path(a)
    assert first["kind"] == "dir" and first["files"] == 3 and first["md5"].endswith(".dir")
    assert hash_path(b)["sha256"] == first["sha256"]
    os.utime(a / "3.csv", (1, 1))
    (a / ".snakemake_timestamp").write_bytes(b"")  # Snakemake's marker on finished directory outputs
    assert hash_path(a)["sha256"] == first["sha256"]
    (a / "x/1.jpg").write_bytes(b"x/1.jpg!")
    assert hash_path(a)["sha256"] != first["sha256"]
    assert hash_path(tmp_path / "nope")["kind"] == "missing"


def _job(tmp_path, main, *, rule="train", wildcards=None):
    """A fake Snakemake job object as scripts receive it, run through run_step in tmp_path."""

    class Job:
        pass

    job = Job()
    job.rule = rule
    job.wildcards = Namedlist(fromdict=wildcards or {})
    job.input = Namedlist(fromdict={"split": "split.parquet"})
    job.output = Namedlist(fromdict={"model": "out/model.pt", "metrics": "out/metrics.json"})
    job.params = Namedlist(fromdict={"cfg": {"train.seed": 3, "train.cnn2": {"loop": {"epochs": 1}}}, "state_dir": ".state/x"})
    job.log = Namedlist(["logs/job.log"])
    job.threads = 1
    job.resources = Namedlist()
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        (tmp_path / "split.parquet").write_bytes(b"split")
        run_step(job, main)
    finally:
        os.chdir(cwd)


def _train_main(step):
    Path("out").mkdir(exist_ok=True)
    Path(step.output.model).write_bytes(b"weights")
    Path(step.output.metrics).write_text(json.dumps({"device": "cuda:0", "wall_time_s": 1.0}))


def test_run_step_writes_one_record_per_finished_job(tmp_path):
    _job(tmp_path, _train_main, wildcards={"model": "cnn2"})
    records = load_records(tmp_path / LINEAGE_DIR)
    assert list(records) == ["train-cnn2"]
    record = records["train-cnn2"]
    assert record["rule"] == "train" and record["wildcards"] == {"model": "cnn2"}
    assert record["inputs"]["split.parquet"]["sha256"] == hashlib.sha256(b"split").hexdigest()
    assert record["outputs"]["out/model.pt"]["sha256"] == hashlib.sha256(b"weights").hexdigest()
    assert record["weights"]["out/model.pt"]["sha256"] == hashlib.sha256(b"weights").hexdigest()
    assert record["params"] == {"train.seed": 3, "train.cnn2": {"loop": {"epochs": 1}}}
    assert record["other_params"] == {"state_dir": ".state/x"}
    assert record["seeds"] == {"train.seed": 3}
    assert record["device"] == "cuda:0"  # from the job's metrics.json
    assert record["code"]["git_commit"] == "unknown"  # tmp_path is no git work tree of its own
    packages = record["environment"]["packages"]
    assert packages["numpy"] and packages["snakemake"] and "torch" in packages


def test_a_failed_job_writes_no_record(tmp_path):
    def failing(step):
        raise PipelineError("split.parquet: broken")

    with pytest.raises(SystemExit):
        _job(tmp_path, failing)
    assert not (tmp_path / LINEAGE_DIR).exists()


def test_unknown_artifact_is_a_one_line_error(tmp_path):
    _job(tmp_path, _train_main, wildcards={"model": "cnn2"})
    result = _cli(tmp_path, "lineage", "results/nothing.csv")
    assert result.returncode == 1 and result.stderr.startswith("ERROR: results/nothing.csv")


# the stages behind the table (NAS rules may add more: the check is "at least these")
EVERY_STAGE = {"table", "classical", "train", "features_finetuned", "features", "split", "ingest", "generate"}


@pytest.mark.e2e
def test_lineage_of_the_results_table_reaches_the_raw_data(tiny_study):
    result = _cli(tiny_study, "lineage", "results/table/results.json", "--json", "--check")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "ok" and report["problems"] == []
    assert report["produced_by"] == "table"
    stages = report["stages"]
    assert EVERY_STAGE <= {s["rule"] for s in stages.values()}
    # every model in the table has its producing job in the lineage
    models = set(json.loads((tiny_study / "results/table/results.json").read_text()))
    table_inputs = {i["path"] for i in stages["table"]["inputs"]}
    assert {f"results/models/{m}/seed0/metrics.json" for m in models} <= table_inputs
    assert all(i["from"] for i in stages["table"]["inputs"])
    assert {"classical-lda-pretrained-0", "classical-svm-finetuned-0", "train-resnet_fbp-0"} <= set(stages)  # seed 0
    # every hash in the chain is the file's own, computed here independently
    for stage in stages.values():
        for entry in stage["inputs"] + stage["outputs"]:
            path = tiny_study / entry["path"]
            if path.is_file():
                assert entry["sha256"] == _sha(path), entry["path"]
            assert entry["status"] == "ok" and entry["current_sha256"] == entry["sha256"]
    # the chain: table ← classical ← features ← split ← ingest ← generate (the raw data)
    inputs_from = {rid: {i["from"] for i in s["inputs"]} for rid, s in stages.items()}
    assert "classical-lda-pretrained-0" in inputs_from["table"]
    # features, and ingest's counts (how many labelled test images were skipped)
    assert inputs_from["classical-lda-pretrained-0"] == {"features", "ingest"}
    assert inputs_from["features"] == {"split"} and inputs_from["split"] == {"ingest"}
    assert inputs_from["ingest"] == {"generate"} and stages["generate"]["inputs"] == []
    # the chain's sources: the data, and the random cells (drawn from params alone, like generate's images)
    assert sorted(report["raw_data"]) == ["data/raw/builtin", "results/nas/random/seed0/genotype.json"]
    assert stages["split"]["seeds"] == {"split.seed": 0}
    assert stages["features_finetuned-0"]["weights"]["results/features/finetuned/seed0.weights.json"]["record"]["sha256"] == _sha(
        tiny_study / "results/models/resnet_fbp/seed0/model.pt")
    text = _cli(tiny_study, "lineage", "results/table/results.json")
    assert text.returncode == 0 and "rule generate" in text.stdout and "no problems" in text.stdout


@pytest.mark.e2e
def test_a_tampered_intermediate_is_reported_stale(tiny_study, tmp_path):
    work = tmp_path / "copy"
    shutil.copytree(tiny_study, work, ignore=shutil.ignore_patterns(".snakemake", ".state", "report", "nas"))
    with open(work / "results/split/split.parquet", "ab") as handle:
        handle.write(b"\0")
    result = _cli(work, "lineage", "results/models/lda_pretrained/seed0/metrics.json", "--check")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "STALE: results/split/split.parquet" in result.stdout
    # without --check the report is printed and the exit code stays 0
    assert _cli(work, "lineage", "results/models/lda_pretrained/seed0/metrics.json").returncode == 0
    os.chdir(work)
    try:
        lin = lineage("results/models/lda_pretrained/seed0/metrics.json")
    finally:
        os.chdir(tiny_study.parent)
    stale = {check.path for checks in lin.checks.values() for check in checks.values() if check.status != "ok"}
    assert stale == {"results/split/split.parquet"}
