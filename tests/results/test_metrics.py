"""pipeline_lib.results.metrics: the helpers behind every model's metrics.json, predictions.csv and roc.csv.

Expected values come from scikit-learn (accuracy_score, roc_auc_score, roc_curve) on the known
rows, or are written out by hand.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, roc_auc_score, roc_curve

from pipeline_lib.results import metrics as M
from pipeline_lib.io.errors import PipelineError

# unknown labels (-1, hidden test labels) are left out of every number
Y = np.array([1, 0, -1, 1, 0, 0, -1, 1])
SCORES = np.array([0.9, 0.2, 0.99, 0.4, 0.45, 0.1, 0.0, 0.7])
KNOWN = Y != -1


def test_accuracy_and_auc_over_known_labels_only():
    predicted = (SCORES > 0.5).astype(int)
    assert M.accuracy(Y, predicted) == accuracy_score(Y[KNOWN], predicted[KNOWN]) == 5 / 6
    # one bad chip (0.4) ranks below one good chip (0.45): 8 of 9 bad/good pairs in order
    assert M.roc_auc(Y, SCORES) == roc_auc_score(Y[KNOWN], SCORES[KNOWN]) == pytest.approx(8 / 9)
    # bad = positive: reversing the scores reverses the ranking
    assert M.roc_auc(Y, 1 - SCORES) == pytest.approx(1 / 9)
    assert M.roc_auc([1, 0, 1, 0], [0.8, 0.6, 0.5, 0.1]) == pytest.approx(0.75)
    assert isinstance(M.accuracy(Y, predicted), float) and isinstance(M.roc_auc(Y, SCORES), float)


def test_roc_frame_is_scikit_learns_curve_over_known_labels():
    frame = M.roc_frame(Y, SCORES)
    fpr, tpr, thr = roc_curve(Y[KNOWN], SCORES[KNOWN])
    assert list(frame.columns) == list(M.ROC_COLUMNS)
    np.testing.assert_array_equal(frame["fpr"], fpr)
    np.testing.assert_array_equal(frame["tpr"], tpr)
    np.testing.assert_array_equal(frame["threshold"], thr)


@pytest.mark.parametrize("labels", [[-1, -1], [0, 0], [1, -1]])
def test_auc_and_roc_are_undefined_without_both_classes(labels):
    assert M.roc_auc(labels, [0.1, 0.2]) is None
    frame = M.roc_frame(labels, [0.1, 0.2])
    assert frame.empty and list(frame.columns) == ["fpr", "tpr", "threshold"]
    assert all(frame[c].dtype == np.float64 for c in frame.columns)
    assert M.accuracy([-1, -1], [0, 1]) is None


def test_length_mismatch_is_refused():
    with pytest.raises(ValueError, match="3 labels but 2 predictions"):
        M.accuracy([0, 1, 0], [0, 1])
    with pytest.raises(ValueError, match="2 labels but 3 predictions"):
        M.roc_auc([0, 1], [0.1, 0.2, 0.3])


def test_predictions_frame_clips_to_probabilities_and_keeps_ids_as_text():
    frame = M.predictions_frame([7, "x", 3.5], [1.2, -0.1, 0.25])
    assert list(frame.columns) == ["id", "prob_bad"]
    assert frame["id"].tolist() == ["7", "x", "3.5"]
    assert frame["prob_bad"].tolist() == [1.0, 0.0, 0.25] and frame["prob_bad"].dtype == np.float64


def _metrics(**overrides):
    fields = dict(model="cnn2", family="cnn", features=None, valid_acc=0.5, test_auc=0.75, n_train=10, n_val=4,
                  n_test=6, params_count=123, wall_time_s=1.23456, device="cpu", seed=3)
    return M.make_metrics(**{**fields, **overrides})


def test_make_metrics_writes_plain_json_types_in_contract_order():
    m = _metrics(valid_acc=np.float32(0.5), test_auc=None, n_train=np.int64(10), params_count=np.int32(123),
                 seed=np.int64(3), valid_loss=np.float64(float("nan")), stopped_early=np.bool_(True), best_epoch=2)
    assert list(m)[: len(M.METRICS_FIELDS)] == list(M.METRICS_FIELDS)
    assert m["valid_acc"] == 0.5 and type(m["valid_acc"]) is float
    assert m["test_auc"] is None and m["valid_loss"] is None  # NaN becomes null
    assert type(m["n_train"]) is int and type(m["params_count"]) is int and type(m["seed"]) is int
    assert m["stopped_early"] is True and type(m["stopped_early"]) is bool and m["best_epoch"] == 2
    assert m["wall_time_s"] == 1.235  # milliseconds
    assert m["features"] is None and m["device"] == "cpu"
    assert json.loads(json.dumps(m)) == m  # strict JSON round trip


@pytest.mark.parametrize("field, value", [("valid_acc", 1.01), ("valid_acc", -0.01), ("test_auc", 2.0), ("test_auc", math.nan)])
def test_make_metrics_refuses_a_value_that_is_not_a_fraction(field, value):
    with pytest.raises(ValueError, match=f"{field}={value} is not a fraction"):
        _metrics(**{field: value})
    assert _metrics(**{field: 1.0})[field] == 1.0 and _metrics(**{field: 0.0})[field] == 0.0


def test_make_metrics_refuses_an_unknown_family():
    with pytest.raises(ValueError, match="family 'deep' not in"):
        _metrics(family="deep")
    assert [_metrics(family=f)["family"] for f in M.FAMILIES] == list(M.FAMILIES)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"valid_acc": 1.5}, "field 'valid_acc' must be a fraction in [0, 1] or null, got 1.5"),
        ({"test_auc": -0.5}, "field 'test_auc' must be a fraction"),
        ({"test_auc": True}, "field 'test_auc' must be a fraction"),
        ({"valid_acc": "0.5"}, "field 'valid_acc' must be a fraction"),
        ({"model": ""}, "field 'model' must be a non-empty string"),
        ({"model": 3}, "field 'model' must be a non-empty string"),
    ],
)
def test_validate_metrics_names_the_file_and_the_field(change, message):
    with pytest.raises(PipelineError) as info:
        M.validate_metrics({**_metrics(), **change}, "results/models/x/metrics.json")
    assert str(info.value).startswith("results/models/x/metrics.json: ") and message in str(info.value)


def test_validate_metrics_accepts_null_values_and_needs_every_field():
    ok = {**_metrics(), "valid_acc": None, "test_auc": None}
    assert M.validate_metrics(ok, "m.json") == ok
    assert M.validate_metrics({**_metrics(), "valid_acc": 1, "test_auc": 0}, "m.json")["valid_acc"] == 1
    incomplete = {k: v for k, v in _metrics().items() if k not in ("seed", "device")}
    with pytest.raises(PipelineError, match=r"m\.json: missing field\(s\) device, seed; re-run"):
        M.validate_metrics(incomplete, "m.json")
    with pytest.raises(PipelineError, match=r"m\.json: expected a JSON object"):
        M.validate_metrics([1, 2], "m.json")


def test_write_model_outputs_writes_the_three_files_in_contract_columns(tmp_path):
    predictions = pd.DataFrame({"prob_bad": [0.25], "id": ["a"], "extra": [1]})
    roc = pd.DataFrame({"tpr": [0.0, 1.0], "threshold": [math.inf, 0.5], "fpr": [0.0, 1.0]})
    M.write_model_outputs(tmp_path / "m", _metrics(), predictions, roc)
    assert json.loads((tmp_path / "m/metrics.json").read_text()) == _metrics()
    assert (tmp_path / "m/predictions.csv").read_text().splitlines() == ["id,prob_bad", "a,0.25"]
    assert (tmp_path / "m/roc.csv").read_text().splitlines()[0] == "fpr,tpr,threshold"


# --- input shapes and dtypes, and ingest's skipped-test count ----------------------------------------


def test_column_vectors_count_as_one_row_per_image():
    """Labels or scores as (n, 1) columns (a DataFrame's values) are the same rows as flat ones."""
    y, p = M._known(Y.reshape(-1, 1), SCORES.reshape(-1, 1))
    assert y.shape == (6,) and p.shape == (6,)
    assert y.dtype == np.int64 and y.tolist() == Y[KNOWN].tolist()  # labels are integers whatever came in
    assert M._known(Y.astype(np.float32), SCORES)[0].dtype == np.int64
    assert M.accuracy(Y.reshape(-1, 1), (SCORES > 0.5).astype(int)) == 5 / 6
    frame = M.predictions_frame(["a", "b"], np.array([[1.5], [0.25]]))
    assert frame["prob_bad"].tolist() == [1.0, 0.25]


def test_predictions_frame_writes_float64_and_ids_as_given():
    # float32 network outputs become float64 (the CSV's precision does not depend on the model)
    p32 = np.array([0.1, 1.5, -2.0], dtype=np.float32)
    frame = M.predictions_frame(["a", "b", "c"], p32)
    assert frame["prob_bad"].dtype == np.float64
    assert frame["prob_bad"].tolist() == [float(np.float32(0.1)), 1.0, 0.0]
    assert M.predictions_frame(["a"], np.array([1], dtype=np.int64))["prob_bad"].dtype == np.float64
    # numeric ids keep their own text: 7 stays "7" next to 3.5 (no common float dtype: "7.0")
    assert M.predictions_frame([7, 3.5], [0.5, 0.5])["id"].tolist() == ["7", "3.5"]


def test_skipped_test_images_reads_ingests_count(tmp_path):
    path = tmp_path / "ingest_metrics.json"
    path.write_text(json.dumps({"test_files": 6, "test_skipped": 2}), encoding="utf-8")
    assert M.skipped_test_images(path) == 2 and type(M.skipped_test_images(path)) is int
    path.write_text(json.dumps({"test_skipped": 0, "note": "é"}), encoding="utf-8")
    assert M.skipped_test_images(str(path)) == 0


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no test_skipped count (FileNotFoundError: "),
        ("{not json", "no test_skipped count (JSONDecodeError: "),
        ('{"test_files": 3}', "no test_skipped count (KeyError: 'test_skipped'); re-run ingest"),
        ("[1, 2]", "no test_skipped count (TypeError: "),
        ('{"test_skipped": -1}', "test_skipped is -1, not a count; re-run ingest"),
        ('{"test_skipped": true}', "test_skipped is True, not a count; re-run ingest"),
        ('{"test_skipped": 1.0}', "test_skipped is 1.0, not a count; re-run ingest"),
        ('{"test_skipped": "1"}', "test_skipped is '1', not a count; re-run ingest"),
        ('{"test_skipped": null}', "test_skipped is None, not a count; re-run ingest"),
    ],
)
def test_skipped_test_images_refuses_a_missing_or_bad_count(tmp_path, content, message):
    path = tmp_path / "ingest_metrics.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(PipelineError) as info:
        M.skipped_test_images(path)
    text = str(info.value)
    assert text.startswith(f"{path}: {message}"), text
    assert text.endswith("; re-run ingest") and "\n" not in text
