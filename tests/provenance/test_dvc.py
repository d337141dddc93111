"""dvc.yaml mirrors the Snakemake DAG, and `dvc repro` really reproduces through it."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from e2e_helpers import ROOT, copy_workflow, listed_jobs, planned_jobs, snakemake, workflow_env

BIN = Path(sys.executable).parent


def _run(cmd, cwd, **kwargs):
    return subprocess.run(cmd, cwd=cwd, env=workflow_env(cwd), capture_output=True, text=True, **kwargs)


@pytest.mark.dag
def test_dvc_yaml_matches_snakemake_dag():
    result = _run([sys.executable, "workflow/tools/dvc_sync.py", "--check"], ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dvc_yaml_header_names_files_that_exist():
    """The generated header points readers to the generator and the test that guards it."""
    header = [line for line in (ROOT / "dvc.yaml").read_text().splitlines() if line.startswith("#")]
    named = re.findall(r"(?:tests|workflow)/[\w/]+\.py", "\n".join(header))
    assert "tests/provenance/test_dvc.py" in named and "workflow/tools/dvc_sync.py" in named
    assert [name for name in named if not (ROOT / name).is_file()] == []


def test_every_rule_param_is_a_dvc_param_and_every_output_an_out():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    features = stages["classical_rf_pretrained_seed0"]
    assert features["params"] == ["classical.rf"]  # the seed is the stage's {seed} wildcard
    assert "results/features/pretrained.parquet" in features["deps"]
    models = [f"{c}_{f}" for c in ("lda", "rf", "lr", "svm") for f in ("pretrained", "finetuned")]
    models += ["resnet_ll", "cnn2", "resnet_fbp", "darts", "enas", "random"]
    assert sorted(stages["table"]["metrics"]) == sorted(f"results/metrics/{m}.json" for m in models)
    assert "results/table/results.json" in stages["table"]["outs"]
    assert not any("metrics" in st for name, st in stages.items() if name != "table")  # per-model metrics.json: plain outs
    for name, stage in stages.items():
        assert re.fullmatch(r"snakemake --cores all \S.* --allowed-rules \w+", stage["cmd"]), name


def _stage_files(stage: dict) -> list[str]:
    return list(stage.get("outs", [])) + [m if isinstance(m, str) else next(iter(m)) for m in stage.get("metrics", [])]


def _is_code(dep: str) -> bool:
    """A code dep (pipeline_lib.provenance.codedeps): rule file, script or library module."""
    return dep.startswith(("workflow/", "src/"))


def _cmd(stage: dict) -> tuple[str, list[str]]:
    words = shlex.split(stage["cmd"])
    assert words[:3] == ["snakemake", "--cores", "all"] and words[-2] == "--allowed-rules"
    return words[-1], words[3:-2]


@pytest.fixture(scope="module")
def dvc_stages():
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def test_dvc_stages_are_consistent_in_themselves(dvc_stages):
    from pipeline_lib.params import lookup

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    owners: dict[str, list[str]] = {}
    for name, stage in dvc_stages.items():
        rule, targets = _cmd(stage)
        assert name == rule or name.startswith(rule + "_"), name  # stage name = rule + wildcard values
        assert sorted(targets) == sorted(_stage_files(stage)), name  # the command makes exactly what DVC tracks
        for path in _stage_files(stage):
            owners.setdefault(path, []).append(name)
        for key in stage.get("params", []):
            lookup(params, key)  # every params key exists in params.yaml (raises otherwise)
        code = [d for d in stage["deps"] if _is_code(d)]
        assert f"workflow/rules/{_rule_file(rule)}" in code, name
        assert all((ROOT / d).is_file() for d in code), name
    assert {p: names for p, names in owners.items() if len(names) > 1} == {}  # one producer per file
    # a closed DAG: every other dep is made by some stage (the raw data by `generate`)
    made = set(owners)
    for name, stage in dvc_stages.items():
        for dep in stage["deps"]:
            if not _is_code(dep):
                assert dep in made or any(dep.startswith(p + "/") for p in made), (name, dep)


def _rule_file(rule: str) -> str:
    """The .smk that defines ``rule``, found by reading the rule files."""
    for smk in sorted((ROOT / "workflow/rules").glob("*.smk")):
        if re.search(rf"^rule {rule}:", smk.read_text(), re.MULTILINE):
            return smk.name
    raise AssertionError(f"no workflow/rules/*.smk defines rule {rule}")


@pytest.mark.dag
def test_dvc_stages_are_the_jobs_snakemake_plans(dvc_stages, tmp_path):
    """Against Snakemake's own dry run of the default study (not the dvc_sync generator): one
    stage per job, with that job's outputs as outs and its inputs among the deps."""
    work = copy_workflow(tmp_path)
    jobs = [job for job in listed_jobs(snakemake(work, "--dry-run")) if job["output"]]  # `all` has none
    by_outputs = {frozenset(_stage_files(stage)): (name, stage) for name, stage in dvc_stages.items()}
    assert len(jobs) == len(dvc_stages) == len(by_outputs)
    for job in jobs:
        name, stage = by_outputs[frozenset(job["output"])]
        assert _cmd(stage)[0] == job["rule"], name
        assert set(job["input"]) <= set(stage["deps"]), name
        assert set(stage["deps"]) - set(job["input"]) <= {d for d in stage["deps"] if _is_code(d)}, name


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

    result = _run(["dvc", "repro", "classical_lda_pretrained_seed0"], work, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    for stage in ("generate", "ingest", "split", "features", "classical_lda_pretrained_seed0"):
        assert f"Running stage '{stage}'" in result.stdout
    lock = yaml.safe_load((work / "dvc.lock").read_text())["stages"]
    assert lock["features"]["outs"][0]["md5"]
    metrics = json.loads((work / "results/models/lda_pretrained/seed0/metrics.json").read_text())
    assert metrics["model"] == "lda_pretrained"

    again = _run(["dvc", "repro", "classical_lda_pretrained_seed0"], work, timeout=300)
    assert "didn't change, skipping" in again.stdout and "Running stage" not in again.stdout
    # Snakemake agrees that what DVC produced is complete.
    assert planned_jobs(work, "results/models/lda_pretrained/seed0/metrics.json") == {}

    dag = _run(["dvc", "dag"], work)
    assert "classical_lda_pretrained_seed0" in dag.stdout and "generate" in dag.stdout
