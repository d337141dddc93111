"""dvc.yaml mirrors the Snakemake DAG, and `dvc repro` really reproduces through it."""

import json
import re
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from e2e_helpers import ROOT, copy_workflow, planned_jobs, workflow_env

BIN = Path(sys.executable).parent


def _run(cmd, cwd, **kwargs):
    return subprocess.run(cmd, cwd=cwd, env=workflow_env(cwd), capture_output=True, text=True, **kwargs)


def test_dvc_yaml_matches_snakemake_dag():
    result = _run([sys.executable, "workflow/tools/dvc_sync.py", "--check"], ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_param_is_a_dvc_param_and_every_output_an_out():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    features = stages["classical_rf_pretrained"]
    assert features["params"] == ["classical.rf", "classical.seed"]
    assert "results/features/pretrained.parquet" in features["deps"]
    models = [f"{c}_{f}" for c in ("lda", "rf", "lr", "svm") for f in ("pretrained", "finetuned")]
    models += ["resnet_ll", "cnn2", "resnet_fbp", "darts", "enas"]
    assert sorted(stages["table"]["metrics"]) == sorted(f"results/metrics/{m}.json" for m in models)
    assert "results/table/results.json" in stages["table"]["outs"]
    assert not any("metrics" in st for name, st in stages.items() if name != "table")  # per-model metrics.json: plain outs
    for name, stage in stages.items():
        assert re.fullmatch(r"snakemake --cores all \S.* --allowed-rules \w+", stage["cmd"]), name


@pytest.mark.e2e
def test_dvc_repro_runs_the_snakemake_jobs(tmp_path):
    """A fresh copy with the tiny params: `dvc repro` of one classifier runs its whole chain."""
    work = copy_workflow(tmp_path)
    (work / "dvc.yaml").write_text((ROOT / "dvc.yaml").read_text())
    # DVC reads params.yaml only: fold the tiny overrides into it.
    from snakemake.utils import update_config

    params = yaml.safe_load((work / "params.yaml").read_text())
    update_config(params, yaml.safe_load((work / ".test/params.yaml").read_text()))
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert _run(["dvc", "init", "--no-scm", "-q"], work).returncode == 0

    result = _run(["dvc", "repro", "classical_lda_pretrained"], work, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    for stage in ("generate", "ingest", "split", "features", "classical_lda_pretrained"):
        assert f"Running stage '{stage}'" in result.stdout
    lock = yaml.safe_load((work / "dvc.lock").read_text())["stages"]
    assert lock["features"]["outs"][0]["md5"]
    metrics = json.loads((work / "results/models/lda_pretrained/metrics.json").read_text())
    assert metrics["model"] == "lda_pretrained"

    again = _run(["dvc", "repro", "classical_lda_pretrained"], work, timeout=300)
    assert "didn't change, skipping" in again.stdout and "Running stage" not in again.stdout
    # Snakemake agrees that what DVC produced is complete.
    assert planned_jobs(work, "results/models/lda_pretrained/metrics.json") == {}

    dag = _run(["dvc", "dag"], work)
    assert "classical_lda_pretrained" in dag.stdout and "generate" in dag.stdout
