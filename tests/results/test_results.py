"""Results table: slide shape, parentheses, formatting, files, errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from pipeline_lib.io.errors import PipelineError
from pipeline_lib.results.metrics import make_metrics
from pipeline_lib.results.table import build_table, fmt_pct, load_metrics, write_table


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
                                     "test_skipped", "params_count", "wall_time_s", "device", "estimator"]
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


# --- formatting and shapes, written out by hand ------------------------------------------------------


@pytest.mark.parametrize("value, shown", [(0.1, "10.0"), (0.005, "0.5"), (0.999, "99.9"), (0.12, "12.0"),
                                          (0.1234, "12.34"), (0.5, "50.0"), (1, "100.0")])
def test_fmt_pct_shows_one_or_two_decimals(value, shown):
    assert fmt_pct(value) == shown


def test_only_finetuned_and_display_names_and_same_value_collapse():
    from pipeline_lib.results.table import Column, slide_table

    rows = [m("rf_finetuned", "classical", "finetuned", 0.9, 0.95),
            {**m("cnn2", "cnn", None, 0.7, 0.8), "display_name": "2-layer CNN"},
            m("darts", "nas", None, 0.6, 0.65)]
    t = build_table(rows).set_index("Model")
    assert list(t.index) == ["RF", "2-layer CNN", "darts"]  # display name when there is one, else the model
    assert t.loc["RF", "Valid acc %"] == "- (90.0)" and t.loc["2-layer CNN", "Test AUC %"] == "80.0"
    pair = [m("lr_pretrained", "classical", "pretrained", 0.5, 0.6), m("lr_finetuned", "classical", "finetuned", 0.7, 0.6)]
    columns = (Column("Acc", "valid_acc", fmt_pct), Column("AUC", "test_auc", fmt_pct, collapse_equal=True),
               Column("AUC again", "test_auc", fmt_pct))
    # equal values shown once only where the column asks for it
    assert slide_table(pair, columns).iloc[0].tolist() == ["LR", "50.0 (70.0)", "60.0", "60.0 (60.0)"]
    with pytest.raises(PipelineError, match="'cnn2' appears in more than one"):
        build_table([rows[1], rows[1]])


def test_markdown_escapes_pipes_and_adds_the_note_only_for_parentheses():
    from pipeline_lib.results.table import NOTE, markdown_table

    table = pd.DataFrame({"Model": ["a|b"], "Valid acc %": ["50.0"], "Test AUC %": ["-"]})
    text = markdown_table(table)
    assert text == "| Model | Valid acc % | Test AUC % |\n| --- | ---: | ---: |\n| a\\|b | 50.0 | - |\n"
    assert markdown_table(table, note=True).endswith(f"\n\n{NOTE}\n")
    with_parens = pd.DataFrame({"Model": ["LDA"], "Valid acc %": ["50.0 (60.0)"], "Test AUC %": ["-"]})
    assert markdown_table(with_parens).endswith(f"| LDA | 50.0 (60.0) | - |\n\n{NOTE}\n")
    assert NOTE not in markdown_table(with_parens, note=False)
    # a model called "(x)" is no parentheses note: only value cells count
    assert NOTE not in markdown_table(pd.DataFrame({"Model": ["(x)"], "Valid acc %": ["1.0"], "Test AUC %": ["-"]}))


def test_metrics_json_and_tidy_rows_keep_the_raw_fractions():
    from pipeline_lib.results.table import TIDY_COLUMNS, metrics_json, tidy_frame

    rows = [m("cnn2", "cnn", None, 0.77, None, params=19_522)]
    assert metrics_json(rows) == {"cnn2": {"valid_acc": 0.77, "test_auc": None, "params_count": 19_522}}
    assert list(tidy_frame([]).columns) == list(TIDY_COLUMNS)  # no model yet: the header alone
    tidy = tidy_frame(rows)
    assert tidy.iloc[0].to_dict() == {"model": "cnn2", "display_name": None, "family": "cnn", "features": None,
                                      "valid_acc": 0.77, "test_auc": None, "test_skipped": None, "params_count": 19_522,
                                      "wall_time_s": 1.5, "device": "cpu", "estimator": None}


def test_an_unreadable_metrics_path_is_named(tmp_path):
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(PipelineError, match=r"dir\.json: cannot be read"):
        load_metrics([tmp_path / "dir.json"])
    other = tmp_path / "list.json"
    other.write_text("[1, 2]")
    with pytest.raises(PipelineError, match=r"list\.json: expected a JSON object"):
        load_metrics([other])


def test_report_table_formats_missing_values_as_a_dash(tmp_path):
    from pipeline_lib.report.table import load_tidy, report_table

    rows = [dict(model="enas", display_name="ENAS", family="nas", features=None, valid_acc=0.5, test_auc=None,
                 params_count=None, wall_time_s=None, device=None),
            dict(model="cnn2", display_name="2-layer CNN", family="cnn", features=None, valid_acc=0.25, test_auc=0.5,
                 params_count=1234567, wall_time_s=12.349, device="cpu")]
    pd.DataFrame(rows).to_csv(tmp_path / "results.csv", index=False)
    loaded = load_tidy(tmp_path / "results.csv")
    assert loaded[0]["test_auc"] is None and loaded[0]["params_count"] is None  # NaN from the CSV -> None
    table = report_table(loaded)
    # without sd/interval columns: the mean alone and "-" for the interval
    assert table.iloc[0].tolist() == ["ENAS", "50.0", "-", "-", "-", "-", "-", "-"]
    assert table.iloc[1].tolist() == ["2-layer CNN", "25.0", "-", "50.0", "-", "1,234,567", "12.3", "cpu"]
    (tmp_path / "empty.csv").write_text("model,valid_acc,test_auc\n")
    with pytest.raises(PipelineError, match=r"empty\.csv: the results table is empty"):
        load_tidy(tmp_path / "empty.csv")


def test_report_table_input_errors_and_note(tmp_path):
    from pipeline_lib.report.table import load_tidy, report_table, table_note

    with pytest.raises(PipelineError, match=r"^\S*nope\.csv: results table not found; run the table rule first$"):
        load_tidy(tmp_path / "nope.csv")
    (tmp_path / "cols.csv").write_text("model,valid_acc\nx,0.5\n")
    with pytest.raises(PipelineError, match=r"cols\.csv: column\(s\) test_auc missing; re-run the table rule$"):
        load_tidy(tmp_path / "cols.csv")
    pair = report_table([m("lda_pretrained", "classical", "pretrained", 0.5, 0.6),
                         m("lda_finetuned", "classical", "finetuned", 0.7, 0.8)])
    assert pair.iloc[0].tolist() == ["LDA", "50.0 (70.0)", "- (-)", "60.0 (80.0)", "- (-)", "10 (10)", "1.5 (1.5)", "cpu"]
    assert table_note(pair) == "Parentheses: the same classifier on fine-tuned ResNet features."
    assert table_note(report_table([m("cnn2", "cnn", None, 0.5, 0.6)])) is None
    only_acc = pd.DataFrame({"Model": ["LDA"], "Valid acc %": ["1.0 (2.0)"], "Test AUC %": ["-"]})
    assert table_note(only_acc) is not None  # parentheses in the first value column count too
