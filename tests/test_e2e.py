"""The real DAG on the tiny configuration: data → manifest → split → features → classifiers → table."""

import json
import re

import numpy as np
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


def test_table_compares_the_pairs_in_words(study):
    comparisons = pd.read_csv(study / "results/table/comparisons.csv")
    assert list(zip(comparisons["model_a"], comparisons["model_b"])) == [
        ("resnet_fbp", "cnn2"), *((f"{c}_finetuned", f"{c}_pretrained") for c in ("lda", "rf", "lr", "svm")),
        ("darts", "enas"), ("darts", "random"), ("enas", "random")]
    assert comparisons["sentence"].str.contains(r"points valid acc, 95 % CI \[").all()
    page = (study / "results/report/index.html").read_text()
    comparison_list = re.search(r'<div id="comparisons">(.*?)</div>', page, re.S).group(1)
    assert comparison_list.count("<li>") == len(comparisons)
    assert "ResNet FBP vs 2-layer CNN: " in comparison_list


def test_every_rule_left_log_and_benchmark(study):
    for rule in ("generate", "ingest", "split", "table"):
        assert (study / f"logs/{rule}.log").stat().st_size > 0
        assert (study / f"benchmarks/{rule}.tsv").exists()
    assert (study / "benchmarks/features/pretrained.tsv").exists()
    assert "rule features finished" in (study / "logs/features/pretrained.log").read_text()


CLASSICAL = [f"{clf}_{features}" for features in ("pretrained", "finetuned") for clf in ("lda", "rf", "lr", "svm")]
DEEP = ["resnet_ll", "cnn2", "resnet_fbp", "darts", "enas", "random"]
SEED = 0  # the tiny study's one seed (.test/params.yaml study.seeds)


def _model_dir(model: str) -> str:
    return f"results/models/{model}/seed{SEED}"


def _params(study) -> dict:
    """params.yaml with the tiny overrides merged, as Snakemake merged them for the run."""
    from snakemake.utils import update_config

    params = yaml.safe_load((study / "params.yaml").read_text())
    update_config(params, yaml.safe_load((study / ".test/params.yaml").read_text()))
    return params


def _metrics(study, model: str) -> dict:
    return json.loads((study / _model_dir(model) / "metrics.json").read_text())


def test_metrics_follow_the_contract(study):
    metrics = _metrics(study, "lda_pretrained")
    assert metrics["model"] == "lda_pretrained"
    assert metrics["family"] == "classical"
    tiny = yaml.safe_load((study / ".test/params.yaml").read_text())
    assert metrics["n_val"] == tiny["split"]["val_good"] + tiny["split"]["val_bad"]
    predictions = pd.read_csv(study / _model_dir("lda_pretrained") / "predictions.csv")
    assert list(predictions.columns) == ["id", "prob_bad"]
    assert len(predictions) == tiny["generate"]["n_test"]


@pytest.mark.parametrize("model", CLASSICAL + DEEP)
def test_every_models_metrics_and_predictions_agree_with_the_split(study, model):
    """Each metrics.json against what the other files of the run say, recomputed here."""
    from sklearn.metrics import roc_auc_score

    from pipeline_lib.results.metrics import METRICS_FIELDS, validate_metrics
    from pipeline_lib.study.registry import spec

    params = _params(study)
    m = validate_metrics(_metrics(study, model), model)
    assert set(METRICS_FIELDS) <= set(m) and m["model"] == model
    split = pd.read_parquet(study / "results/split/split.parquet")
    split["path"] = [str(study / p) for p in split["path"]]  # relative to the work directory
    counts = split["split"].value_counts().to_dict()
    assert (m["n_train"], m["n_val"], m["n_test"]) == (counts["train"], counts["val"], counts["test"])
    assert m["device"] == "cpu" and m["wall_time_s"] > 0
    assert params["study"]["seeds"] == [SEED] and m["seed"] == SEED  # the job's {seed} wildcard
    if model in CLASSICAL:
        features = model.split("_")[1]
        assert (m["family"], m["features"]) == ("classical", features)
    else:
        assert (m["family"], m["features"], m["display_name"]) == (spec(model).family, None, spec(model).display_name)
    _check_val_predictions(study, model, m, split)
    # the test AUC is the AUC of the saved predictions, bad (label 1) positive, over every test image
    predictions = pd.read_csv(study / _model_dir(model) / "predictions.csv")
    labels = split.set_index("id").loc[predictions["id"].astype(str), "label"].to_numpy()
    assert sorted(predictions["id"].astype(str)) == sorted(split.loc[split["split"] == "test", "id"])
    assert set(labels) == {0, 1}  # the built-in data has test labels
    assert m["test_auc"] == pytest.approx(roc_auc_score(labels, predictions["prob_bad"]), abs=1e-12)
    roc = pd.read_csv(study / _model_dir(model) / "roc.csv")
    assert np.trapezoid(roc["tpr"], roc["fpr"]) == pytest.approx(m["test_auc"], abs=1e-9)
    if model.startswith(("lda", "lr")):  # coefficients + intercept, one per feature dimension
        from pipeline_lib.features.store import load_features

        _, X = load_features(study / ("results/features/pretrained.parquet" if model.endswith("pretrained")
                                        else f"results/features/finetuned/seed{SEED}.parquet"))
        assert m["params_count"] == X.shape[1] + 1
    elif model in CLASSICAL:
        assert isinstance(m["params_count"], int) and m["params_count"] > 0
    else:
        _check_network(study, model, m, split, params)


def _check_val_predictions(study, model: str, m: dict, split: pd.DataFrame) -> None:
    """val_predictions.csv: every validation image once, its split label, and (but for the SVM,
    whose labels come from the decision function, not the calibrated probability) valid acc."""
    val = pd.read_csv(study / _model_dir(model) / "val_predictions.csv", dtype={"id": str})
    assert list(val.columns) == ["id", "label", "prob_bad"]
    truth = split[split["split"] == "val"].set_index("id")["label"]
    assert sorted(val["id"]) == sorted(truth.index)
    assert (val["label"].to_numpy() == truth.loc[val["id"]].to_numpy()).all()
    if not model.startswith("svm"):
        assert m["valid_acc"] == pytest.approx(((val["prob_bad"] > 0.5).astype(int) == val["label"]).mean(), abs=1e-12)


def _check_network(study, model: str, m: dict, split: pd.DataFrame, params: dict) -> None:
    """The saved best weights reproduce params_count, valid loss and valid accuracy."""
    import torch

    from pipeline_lib.data.datasets import ChipImages, eval_transform
    from pipeline_lib.models.end_to_end import load_trained
    from pipeline_lib.training.evaluation import evaluate
    from pipeline_lib.study.registry import spec

    net = load_trained(study / _model_dir(model) / "model.pt")
    assert m["params_count"] == sum(p.numel() for p in net.parameters())
    assert m["params_trainable"] == sum(p.numel() for p in net.parameters() if p.requires_grad)
    section = params["nas_retrain"] if spec(model).family == "nas" else dict(params["train"], loop=params["train"][model]["loop"])
    loop = section["loop"]
    val = ChipImages(split[split["split"] == "val"].reset_index(drop=True), eval_transform(section["image_size"]))
    torch.set_num_threads(1)
    loss, acc = evaluate(net, val, batch_size=loop.get("eval_batch_size") or loop["batch_size"], device="cpu")
    assert m["valid_acc"] == acc
    assert m["valid_loss"] == pytest.approx(loss, rel=1e-5)
    history = pd.read_csv(study / _model_dir(model) / "history.csv")
    best = history.loc[history["epoch"] == m["best_epoch"]].iloc[0]
    assert (best["val_loss"], best["val_acc"]) == (pytest.approx(m["valid_loss"], rel=1e-9), m["valid_acc"])
    assert m["epochs_run"] == len(history)


def _md_rows(text: str) -> dict[str, list[str]]:
    rows = [line.strip("|").split("|") for line in text.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows[2:]}  # after header and ---


def _shown(cell: str, value) -> None:
    """A table cell shows ``value`` (a fraction) as a percentage rounded to 2 decimals, 1-2 shown."""
    if value is None:
        assert cell == "-"
        return
    assert re.fullmatch(r"\d+\.\d{1,2}", cell), cell
    assert float(cell) == pytest.approx(round(100 * value, 2), abs=1e-9), (cell, value)


def _pair(cell: str) -> tuple[str, str | None]:
    match = re.fullmatch(r"(\S+) \((\S+)\)", cell)
    return (match[1], match[2]) if match else (cell, None)


def test_every_table_row_shows_its_models_numbers(study):
    from pipeline_lib.study.registry import spec

    metrics = {model: _metrics(study, model) for model in CLASSICAL + DEEP}
    tidy = pd.read_csv(study / "results/table/results.csv").set_index("model")
    assert sorted(tidy.index) == sorted(metrics)
    for model, m in metrics.items():
        row = tidy.loc[model]
        for field in ("family", "valid_acc", "test_auc", "params_count", "wall_time_s", "device"):
            assert row[field] == m[field], (model, field)
    table_json = json.loads((study / "results/table/results.json").read_text())
    assert {model: {f: row[f] for f in ("valid_acc", "test_auc", "params_count", "n_seeds")}
            for model, row in table_json.items()} == {
        model: {**{f: m[f] for f in ("valid_acc", "test_auc", "params_count")}, "n_seeds": 1} for model, m in metrics.items()
    }
    # one seed: no sd, the interval is a bootstrap over images around the run's own number
    per_seed = pd.read_csv(study / "results/table/results_per_seed.csv")
    assert sorted(zip(per_seed["model"], per_seed["seed"])) == sorted((model, SEED) for model in metrics)
    for model, m in metrics.items():
        assert tidy.loc[model, "interval"] == "bootstrap over images" and pd.isna(tidy.loc[model, "valid_acc_sd"])
        assert tidy.loc[model, "valid_acc_lo"] <= tidy.loc[model, "valid_acc_hi"]
    rows = _md_rows((study / "results/table/results.md").read_text())
    expected_rows = ["LDA", "RF", "LR", "SVM", *(spec(d).display_name for d in DEEP)]
    assert list(rows) == expected_rows  # the slide's order
    for label, cells in rows.items():
        clf = label.lower()
        for column, field in ((0, "valid_acc"), (2, "test_auc")):  # each followed by its interval
            if label in ("LDA", "RF", "LR", "SVM"):
                pre, fine = _pair(cells[column])
                _shown(pre, metrics[f"{clf}_pretrained"][field])
                _shown(fine, metrics[f"{clf}_finetuned"][field])
            else:
                model = next(d for d in DEEP if spec(d).display_name == label)
                _shown(cells[column], metrics[model][field])
    # the report's table: the same rows, with the params count of each model
    page = (study / "results/report/index.html").read_text()
    # the results table alone (the page also holds the localisation table)
    results_table = re.search(r'<table id="results-table">(.*?)</table>', page, re.S).group(1)
    report_rows = re.findall(r"<tr><td>([^<]+)</td>((?:<td[^>]*>[^<]*</td>)+)</tr>", results_table)
    assert [label for label, _ in report_rows] == expected_rows
    for label, cells in report_rows:
        values = re.findall(r"<td[^>]*>([^<]*)</td>", cells)
        params_cell = values[4]  # after valid acc, its interval, test AUC, its interval
        if label in ("LDA", "RF", "LR", "SVM"):
            pre, fine = (metrics[f"{label.lower()}_{f}"]["params_count"] for f in ("pretrained", "finetuned"))
            assert params_cell == f"{pre:,} ({fine:,})"
        else:
            model = next(d for d in DEEP if spec(d).display_name == label)
            assert params_cell == f"{metrics[model]['params_count']:,}"


NAS_FIGURES = {  # file → title in the report
    "results/report/figures/darts_alpha.png": "DARTS α heatmap",
    "results/report/figures/search_diagnostics.png": "Search diagnostics",
    f"results/nas/darts/seed{SEED}/cell_normal.png": "DARTS normal cell",
    f"results/nas/darts/seed{SEED}/cell_reduce.png": "DARTS reduce cell",
    f"results/nas/enas/seed{SEED}/cell_normal.png": "ENAS normal cell",
    f"results/nas/enas/seed{SEED}/cell_reduce.png": "ENAS reduce cell",
}


def test_the_report_holds_every_nas_figure_by_name(study):
    import base64
    import html

    page = (study / "results/report/index.html").read_text()
    figures = {
        html.unescape(path): (html.unescape(title), base64.b64decode(data))
        for data, title, path in re.findall(
            r'<figure id="[^"]+"><img src="data:image/png;base64,([^"]+)" alt="([^"]*)">.*?<code>([^<]+)</code>', page, re.S)
    }
    ids = re.findall(r'<figure id="([^"]+)"', page)
    assert len(ids) == len(set(ids)) == len(figures)
    for path, title in NAS_FIGURES.items():
        assert path in figures, path
        shown_title, data = figures[path]
        assert shown_title == title and data == (study / path).read_bytes(), path


def test_search_histories_carry_diagnostics_and_the_report_states_each_verdict(study):
    import html

    import pandas as pd

    from pipeline_lib.report.search_diagnostics import COLUMNS, search_verdict

    page = html.unescape((study / "results/report/index.html").read_text())
    for method, columns in COLUMNS.items():
        frame = pd.read_csv(study / f"results/nas/{method}/seed{SEED}/search_history.csv")
        old = {"darts": ("train_loss", "val_acc", "lr"), "enas": ("child_loss", "reward_mean", "baseline")}[method]
        assert set(columns) | set(old) <= set(frame.columns)  # the diagnostics next to the old columns
        assert search_verdict(frame, method, SEED) in page


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
