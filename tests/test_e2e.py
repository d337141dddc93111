"""The real DAG on the tiny configuration: data → manifest → split → features → classifiers → table."""

import json

import pandas as pd
import pytest
import yaml

from e2e_helpers import planned_jobs, snakemake

pytestmark = pytest.mark.e2e
TINY = ("--configfile", ".test/params.yaml")


@pytest.fixture(scope="module")
def study(tiny_study):
    """The session's tiny run (tests/conftest.py); tests here only read it or dry-run."""
    return tiny_study


def test_table_has_every_classifier(study):
    table = pd.read_csv(study / "results/table/results.csv")
    assert set(table["model"]) >= {f"{clf}_pretrained" for clf in ("lda", "rf", "lr", "svm")}
    assert table["valid_acc"].between(0, 1).all()
    assert table["test_auc"].between(0, 1).all()  # the built-in data has test labels
    markdown = (study / "results/table/results.md").read_text()
    assert "LDA" in markdown and "SVM" in markdown


def test_every_rule_left_log_and_benchmark(study):
    for rule in ("generate", "ingest", "split", "table"):
        assert (study / f"logs/{rule}.log").stat().st_size > 0
        assert (study / f"benchmarks/{rule}.tsv").exists()
    assert (study / "benchmarks/features/pretrained.tsv").exists()
    assert "rule features finished" in (study / "logs/features/pretrained.log").read_text()


def test_metrics_follow_the_contract(study):
    metrics = json.loads((study / "results/models/lda_pretrained/metrics.json").read_text())
    assert metrics["model"] == "lda_pretrained"
    assert metrics["family"] == "classical"
    tiny = yaml.safe_load((study / ".test/params.yaml").read_text())
    assert metrics["n_val"] == tiny["split"]["val_good"] + tiny["split"]["val_bad"]
    predictions = pd.read_csv(study / "results/models/lda_pretrained/predictions.csv")
    assert list(predictions.columns) == ["id", "prob_bad"]
    assert len(predictions) == tiny["generate"]["n_test"]


def test_finished_jobs_leave_no_resume_state(study):
    # every training and search rule removes its checkpoint once its outputs are in place
    leftovers = [p.relative_to(study) for p in (study / ".state").rglob("*") if p.is_file()]
    assert (study / ".state").is_dir() and leftovers == []


def test_complete_run_has_nothing_to_do(study):
    assert planned_jobs(study, *TINY) == {}


def test_changing_one_classifier_param_reruns_only_it(study):
    override = study / "rf_change.yaml"
    override.write_text("classical:\n  rf:\n    n_estimators: 7\n")
    assert planned_jobs(study, "--configfile", ".test/params.yaml", str(override)) == {
        "classical": 2,  # rf on pretrained and on fine-tuned features
        "table": 1,
        "report_roc": 1,
        "report": 1,
        "all": 1,
    }


def test_wrong_param_type_fails_before_any_rule(study):
    override = study / "bad_type.yaml"
    override.write_text("features:\n  batch_size: big\n")
    result = snakemake(study, "--dry-run", "--configfile", str(override), check=False)
    assert result.returncode != 0
    assert "features.batch_size: 'big' is not of type 'integer'" in result.stderr + result.stdout
