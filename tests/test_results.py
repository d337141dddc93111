"""Results table: slide shape, parentheses, formatting, files, errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from pipeline_lib.errors import PipelineError
from pipeline_lib.metrics import make_metrics
from pipeline_lib.results import build_table, fmt_pct, load_metrics, write_table


def m(model, family, features, acc, auc, **kw):
    return make_metrics(model=model, family=family, features=features, valid_acc=acc, test_auc=auc,
                        n_train=900, n_val=300, n_test=300, params_count=kw.get("params", 10),
                        wall_time_s=1.5, device="cpu", seed=0)


SLIDE = [
    m("lda_pretrained", "classical", "pretrained", 0.58, 0.60),
    m("lda_finetuned", "classical", "finetuned", 0.96, 0.981),
    m("rf_pretrained", "classical", "pretrained", 0.54, None),
    m("rf_finetuned", "classical", "finetuned", 0.956, 0.97),
    m("lr_pretrained", "classical", "pretrained", 0.55333, 0.7),
    m("svm_pretrained", "classical", "pretrained", 0.57, 0.71),
    m("svm_finetuned", "classical", "finetuned", 0.956, 0.95),
    m("resnet_ll", "transfer", None, 0.6067, None),
    m("cnn2", "cnn", None, 0.77, 0.8),
    m("resnet_fbp", "transfer", None, 0.9733, 0.983),
]


def test_fmt_pct():
    assert fmt_pct(0.58) == "58.0" and fmt_pct(0.6067) == "60.67" and fmt_pct(0.55333) == "55.33"
    assert fmt_pct(1.0) == "100.0" and fmt_pct(0.0) == "0.0" and fmt_pct(None) == "-"


def test_table_with_finetuned_rows():
    t = build_table(SLIDE)
    assert list(t.columns) == ["Model", "Valid acc %", "Test AUC %"]
    assert t["Model"].tolist() == ["LDA", "RF", "LR", "SVM", "resnet_ll", "cnn2", "resnet_fbp"]
    row = t.set_index("Model")
    assert row.loc["LDA", "Valid acc %"] == "58.0 (96.0)"
    assert row.loc["LDA", "Test AUC %"] == "60.0 (98.1)"
    assert row.loc["RF", "Test AUC %"] == "- (97.0)"
    assert row.loc["LR", "Valid acc %"] == "55.33"  # no finetuned LR: no parentheses
    assert row.loc["resnet_ll", "Valid acc %"] == "60.67" and row.loc["resnet_ll", "Test AUC %"] == "-"
    assert row.loc["resnet_fbp", "Test AUC %"] == "98.3"


def test_table_without_finetuned_rows():
    pre = [x for x in SLIDE if not x["model"].endswith("_finetuned")]
    t = build_table(pre)
    assert len(t) == 7
    assert not t.iloc[:, 1:].apply(lambda c: c.str.contains(r"\(")).to_numpy().any()
    assert t.set_index("Model").loc["LDA", "Valid acc %"] == "58.0"


def test_write_table_and_load(tmp_path):
    paths = []
    for x in SLIDE:
        p = tmp_path / "models" / x["model"] / "metrics.json"
        p.parent.mkdir(parents=True)
        p.write_text(json.dumps(x))
        paths.append(p)
    metrics = load_metrics(paths)
    out = tmp_path / "table"
    write_table(metrics, out / "results.csv", out / "results.md", out / "results.json")
    tidy = pd.read_csv(out / "results.csv")
    assert tidy.columns.tolist() == ["model", "display_name", "family", "features", "valid_acc", "test_auc",
                                     "params_count", "wall_time_s", "device", "estimator"]
    assert len(tidy) == len(SLIDE) and tidy.loc[0, "valid_acc"] == 0.58
    md = (out / "results.md").read_text().splitlines()
    assert md[0] == "| Model | Valid acc % | Test AUC % |"
    assert "| LDA | 58.0 (96.0) | 60.0 (98.1) |" in md
    assert any("fine-tuned" in line for line in md)
    js = json.loads((out / "results.json").read_text())
    assert js["lda_pretrained"] == {"valid_acc": 0.58, "test_auc": 0.6, "params_count": 10}
    assert js["resnet_ll"]["test_auc"] is None


def test_missing_or_invalid_metrics_file(tmp_path):
    with pytest.raises(PipelineError, match="absent.json"):
        load_metrics([tmp_path / "absent.json"])
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(PipelineError, match="bad.json"):
        load_metrics([bad])
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"model": "x"}))
    with pytest.raises(PipelineError, match="partial.json.*missing"):
        load_metrics([partial])
    dup = tmp_path / "dup.json"
    dup.write_text(json.dumps(SLIDE[0]))
    with pytest.raises(PipelineError, match="lda_pretrained"):
        load_metrics([dup, dup])
