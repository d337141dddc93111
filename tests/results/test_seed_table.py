"""The results table over seeds, from a hand-built results tree (results/models/<model>/seed<s>/)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from sklearn.metrics import roc_auc_score

from pipeline_lib.io.errors import PipelineError
from pipeline_lib.results.metrics import make_metrics
from pipeline_lib.results.seed_runs import expected_files
from pipeline_lib.results.seed_table import TableConfig, TablePaths, build_seed_table, write_flat_seed_metrics, write_seed_table

MODELS = ["lda_pretrained", "lda_finetuned", "cnn2", "resnet_fbp", "darts", "enas", "random"]
FAMILY = {"lda_pretrained": "classical", "lda_finetuned": "classical", "cnn2": "cnn", "resnet_fbp": "transfer",
          "darts": "nas", "enas": "nas", "random": "nas"}
SETTINGS = TableConfig(bootstrap_resamples=200, seed=0)
N_VAL, N_TEST = 40, 30
# how well each model separates the classes (larger: better); the random cell as good as DARTS
SKILL = {"lda_pretrained": 0.5, "lda_finetuned": 1.2, "cnn2": 0.8, "resnet_fbp": 1.5, "darts": 1.0, "enas": 0.2,
         "random": 1.0}


def _probs(rng, labels, skill):
    return 1 / (1 + np.exp(-(skill * (2 * labels - 1) + rng.normal(size=labels.size))))


def build_tree(tmp_path, seeds=(0, 1, 2), models=MODELS, test_labels=True):
    """Write every run's three files and the split table; return (root, split path, truth)."""
    rng = np.random.default_rng(0)
    val_ids = np.array([f"v{i:03d}" for i in range(N_VAL)])
    val_labels = np.arange(N_VAL) % 2
    test_ids = np.array([f"t{i:03d}" for i in range(N_TEST)])
    test_y = (np.arange(N_TEST) % 3 == 0).astype(int)
    split = pd.DataFrame({"id": [*val_ids, *test_ids], "label": [*val_labels, *(test_y if test_labels else [-1] * N_TEST)],
                          "split": ["val"] * N_VAL + ["test"] * N_TEST, "path": "x.png"})
    split_path = tmp_path / "split.parquet"
    split.to_parquet(split_path)
    root, truth = tmp_path / "models", {}
    for model in models:
        for seed in seeds:
            run = root / model / f"seed{seed}"
            run.mkdir(parents=True)
            pv, pt = _probs(rng, val_labels, SKILL[model]), _probs(rng, test_y, SKILL[model])
            acc = float(np.mean((pv > 0.5) == val_labels))
            auc = float(roc_auc_score(test_y, pt)) if test_labels else None
            truth[(model, seed)] = (acc, auc)
            order = rng.permutation(N_VAL)  # rows in any order: the reader aligns by id
            pd.DataFrame({"id": val_ids[order], "label": val_labels[order], "prob_bad": pv[order]}).to_csv(
                run / "val_predictions.csv", index=False)
            pd.DataFrame({"id": test_ids, "prob_bad": pt}).to_csv(run / "predictions.csv", index=False)
            metrics = make_metrics(model=model, family=FAMILY[model], features=None, valid_acc=acc, test_auc=auc,
                                   n_train=100, n_val=N_VAL, n_test=N_TEST, params_count=10, wall_time_s=1.0 + seed,
                                   device="cpu", seed=seed)
            (run / "metrics.json").write_text(json.dumps(metrics))
    return root, split_path, truth


def _paths(tmp_path):
    out = tmp_path / "table"
    return TablePaths(*(out / n for n in ("results_per_seed.csv", "results.csv", "results.md", "results.json",
                                          "comparisons.csv")))


def test_seed_interval_is_cut_to_the_unit_range():
    from pipeline_lib.results.seed_table import _interval

    values = [0.50, 0.99, 0.98]  # sd 0.28: the raw t-interval runs past 100 % (and below 0 % for the mirror)
    raw_lo, raw_hi = sps.t.interval(0.95, 2, loc=np.mean(values), scale=sps.sem(values))
    assert raw_hi > 1.0
    assert _interval("m", "valid_acc", values, None, None, SETTINGS) == pytest.approx((raw_lo, 1.0))
    mirror = [1 - v for v in values]
    assert _interval("m", "valid_acc", mirror, None, None, SETTINGS) == pytest.approx((0.0, 1 - raw_lo))


def test_table_reads_every_seed(tmp_path):
    seeds = [0, 1, 2]
    root, split_path, truth = build_tree(tmp_path)
    per_seed, rows, comparisons = build_seed_table(root, MODELS, seeds, split_path, SETTINGS)
    paths = _paths(tmp_path)
    md = write_seed_table(per_seed, rows, comparisons, paths, SETTINGS)

    written = pd.read_csv(paths.per_seed)
    assert len(written) == len(MODELS) * len(seeds)
    assert set(zip(written["model"], written["seed"])) == {(m, s) for m in MODELS for s in seeds}
    for r in written.itertuples():
        assert (r.valid_acc, r.test_auc) == pytest.approx(truth[(r.model, r.seed)])

    summary = pd.read_csv(paths.csv).set_index("model")
    for model in MODELS:
        accs = [truth[(model, s)][0] for s in seeds]
        assert summary.loc[model, "n_seeds"] == 3
        assert summary.loc[model, "valid_acc"] == pytest.approx(np.mean(accs))
        assert summary.loc[model, "valid_acc_sd"] == pytest.approx(np.std(accs, ddof=1))
        want = tuple(np.clip(sps.t.interval(0.95, 2, loc=np.mean(accs), scale=sps.sem(accs)), 0.0, 1.0))
        assert (summary.loc[model, "valid_acc_lo"], summary.loc[model, "valid_acc_hi"]) == pytest.approx(want)
        aucs = [truth[(model, s)][1] for s in seeds]
        assert summary.loc[model, "test_auc"] == pytest.approx(np.mean(aucs))
    assert "Student-t interval of the mean over seeds" in md and "± " in md
    assert "| LDA |" in md  # slide shape: one LDA row, fine-tuned in parentheses

    # one model per pair of the study, where the table has both (no classifier other than LDA here)
    assert list(zip(comparisons["model_a"], comparisons["model_b"])) == [
        ("resnet_fbp", "cnn2"), ("lda_finetuned", "lda_pretrained"), ("darts", "enas"), ("darts", "random"),
        ("enas", "random")]
    pd.testing.assert_frame_equal(pd.read_csv(paths.comparisons)[["model_a"]], comparisons[["model_a"]])
    sentences = dict(zip(comparisons["model_a"] + "/" + comparisons["model_b"], comparisons["sentence"]))
    assert sentences["resnet_fbp/cnn2"].startswith("ResNet FBP vs 2-layer CNN: +")
    assert "valid acc, 95 % CI [" in sentences["resnet_fbp/cnn2"]
    assert "does not beat the random cell" in sentences["enas/random"]
    first = comparisons.iloc[0]
    fbp = np.mean([truth[("resnet_fbp", s)][0] for s in seeds])
    cnn = np.mean([truth[("cnn2", s)][0] for s in seeds])
    assert first["valid_acc_diff"] == pytest.approx(fbp - cnn)
    assert "Paired comparisons" in md and sentences["darts/enas"] in md

    flat = [tmp_path / "metrics" / f"{m}.json" for m in MODELS]
    write_flat_seed_metrics(rows, flat)
    cnn2 = json.loads((tmp_path / "metrics" / "cnn2.json").read_text())
    assert cnn2["valid_acc"] == pytest.approx(cnn) and set(cnn2) == {"valid_acc", "valid_acc_sd", "test_auc", "test_auc_sd"}


def test_one_seed_interval_is_a_bootstrap_over_images(tmp_path):
    root, split_path, truth = build_tree(tmp_path, seeds=(0,), models=["cnn2", "resnet_fbp"])
    _, rows, comparisons = build_seed_table(root, ["cnn2", "resnet_fbp"], [0], split_path, SETTINGS)
    row = rows[0]
    assert row["n_seeds"] == 1 and row["valid_acc_sd"] is None and row["interval"] == "bootstrap over images"
    assert row["valid_acc_lo"] < row["valid_acc_hi"] and row["test_auc_lo"] < row["test_auc_hi"]
    assert len(comparisons) == 1


def test_hidden_test_labels_leave_test_numbers_null(tmp_path):
    root, split_path, _ = build_tree(tmp_path, seeds=(0, 1), models=["cnn2", "resnet_fbp"], test_labels=False)
    _, rows, comparisons = build_seed_table(root, ["cnn2", "resnet_fbp"], [0, 1], split_path, SETTINGS)
    assert rows[0]["test_auc"] is None and rows[0]["test_auc_lo"] is None
    assert comparisons.iloc[0]["test_auc_diff"] is None
    assert "test AUC not measured (no test labels)" in comparisons.iloc[0]["sentence"]


@pytest.mark.parametrize("name", ["metrics.json", "val_predictions.csv", "predictions.csv"])
def test_missing_seed_file_names_it(tmp_path, name):
    root, split_path, _ = build_tree(tmp_path, seeds=(0, 1, 2), models=["cnn2", "resnet_fbp"])
    gone = root / "resnet_fbp" / "seed1" / name
    gone.unlink()
    with pytest.raises(PipelineError) as err:
        build_seed_table(root, ["cnn2", "resnet_fbp"], [0, 1, 2], split_path, SETTINGS)
    message = str(err.value)
    assert message.startswith(f"{gone}: missing;") and "\n" not in message and "study.seeds" in message


def test_expected_files_every_model_and_seed(tmp_path):
    files = expected_files(tmp_path, ["a", "b"], [0, 5])
    assert len(files) == 2 * 2 * 3 and tmp_path / "b" / "seed5" / "val_predictions.csv" in files


def test_wrong_seed_in_metrics_is_an_error(tmp_path):
    root, split_path, _ = build_tree(tmp_path, seeds=(0, 1), models=["cnn2"])
    path = root / "cnn2" / "seed1" / "metrics.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "seed": 0}))
    with pytest.raises(PipelineError, match="expected 'cnn2' seed 1"):
        build_seed_table(root, ["cnn2"], [0, 1], split_path, SETTINGS)


def test_report_page_shows_intervals_and_the_comparisons_in_words(tmp_path):
    from pipeline_lib.report.html import render_report
    from pipeline_lib.report.table import interval_note, load_comparisons, load_tidy, report_table, table_note

    root, split_path, truth = build_tree(tmp_path, seeds=(0, 1), models=["cnn2", "resnet_fbp"])
    per_seed, rows, comparisons = build_seed_table(root, ["cnn2", "resnet_fbp"], [0, 1], split_path, SETTINGS)
    paths = _paths(tmp_path)
    write_seed_table(per_seed, rows, comparisons, paths, SETTINGS)
    metrics = load_tidy(paths.csv)
    table = report_table(metrics)
    cnn = [truth[("cnn2", s)][0] for s in (0, 1)]
    mean, sd = np.mean(cnn), np.std(cnn, ddof=1)
    lo, hi = sps.t.interval(0.95, 1, loc=mean, scale=sps.sem(cnn))
    row = table.set_index("Model").loc["cnn2"]  # the hand-made metrics carry no display name
    assert row["Valid acc %"] == f"{100 * mean:.2f}".rstrip("0") + " ± " + f"{100 * sd:.2f}".rstrip("0")
    assert row["Valid acc 95 % CI"].startswith(f"[{100 * lo:.1f}")
    caption = interval_note(metrics, TableConfig(bootstrap_resamples=200, confidence=0.95, seed=0))
    assert caption.startswith("Mean ± sd over 2 training seeds")
    sentences = load_comparisons(paths.comparisons)
    page = render_report(table, [], note=table_note(table, metrics, caption), git_commit="x", params_sha256="0" * 64,
                         comparisons=sentences)
    assert "Student-t interval of the mean over seeds" in page
    assert '<div id="comparisons">' in page and sentences[0].startswith("ResNet FBP vs 2-layer CNN:")
    assert f"<li>{sentences[0]}</li>" in page.replace("&#x27;", "'")
