"""Shared evaluation helpers and the per-model output files (metrics.json, predictions, ROC).

Used by the classical classifiers and the neural models, so every model's
``results/models/{model}/seed{s}/`` looks the same (docs/ARCHITECTURE.md), validation predictions included.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from ..io.atomic import write_csv, write_json
from ..io.errors import PipelineError
from ..study.registry import FAMILIES  # the contract's families are the registry's

UNKNOWN_LABEL = -1
ROC_COLUMNS = ("fpr", "tpr", "threshold")
PREDICTION_COLUMNS = ("id", "prob_bad")
# every model's validation predictions (val_predictions.csv): the paired comparisons of the table
# (McNemar, paired bootstrap) need both models' answers on the same validation images
VAL_PREDICTION_COLUMNS = ("id", "label", "prob_bad")
# metrics.json fields, all required (values may be null where the contract allows it)
METRICS_FIELDS = (
    "model",
    "family",
    "features",
    "valid_acc",
    "valid_loss",
    "test_auc",
    "n_train",
    "n_val",
    "n_test",
    "test_skipped",
    "params_count",
    "wall_time_s",
    "device",
    "seed",
)


def _known(y_true, other) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).astype(np.int64).reshape(-1)
    o = np.asarray(other).reshape(-1)
    if len(y) != len(o):
        raise ValueError(f"{len(y)} labels but {len(o)} predictions")
    keep = y != UNKNOWN_LABEL
    return y[keep], o[keep]


def accuracy(y_true, y_pred) -> float | None:
    """Fraction of correct predictions over rows with a known label; None when there are none."""
    y, p = _known(y_true, y_pred)
    if len(y) == 0:
        return None
    return float(np.mean(y == np.asarray(p).astype(np.int64)))


def roc_auc(y_true, scores) -> float | None:
    """ROC AUC of ``scores`` (higher = bad) over known labels; None when a class is missing."""
    from sklearn.metrics import roc_auc_score

    y, s = _known(y_true, scores)
    if len(np.unique(y)) < 2:
        return None
    return float(roc_auc_score(y, s.astype(np.float64)))


def roc_frame(y_true, scores) -> pd.DataFrame:
    """``fpr,tpr,threshold`` over known labels; empty (same columns) when AUC is undefined."""
    from sklearn.metrics import roc_curve

    y, s = _known(y_true, scores)
    if len(np.unique(y)) < 2:
        return empty_roc()
    fpr, tpr, thr = roc_curve(y, s.astype(np.float64))
    return pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": thr})


def empty_roc() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=np.float64) for c in ROC_COLUMNS})


def predictions_frame(ids, prob_bad) -> pd.DataFrame:
    """Kaggle-style ``id,prob_bad`` (probabilities clipped to [0, 1])."""
    p = np.clip(np.asarray(prob_bad, dtype=np.float64).reshape(-1), 0.0, 1.0)
    return pd.DataFrame({"id": pd.Series(list(ids), dtype=object).astype(str), "prob_bad": p})


def val_predictions_frame(ids, labels, prob_bad) -> pd.DataFrame:
    """``id,label,prob_bad`` for the validation images (label 0 good / 1 bad)."""
    frame = predictions_frame(ids, prob_bad)
    frame.insert(1, "label", np.asarray(labels, dtype=np.int64).reshape(-1))
    return frame[list(VAL_PREDICTION_COLUMNS)]


def _clean_number(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return None if math.isnan(v) else v
    return value


def make_metrics(
    *,
    model: str,
    family: str,
    features: str | None,
    valid_acc: float | None,
    test_auc: float | None,
    n_train: int,
    n_val: int,
    n_test: int,
    params_count: int | None,
    wall_time_s: float,
    device: str,
    seed: int,
    valid_loss: float | None = None,
    test_skipped: int | None = None,
    **extra: Any,
) -> dict:
    """A metrics.json dict with every contract field (plain Python types, NaN -> null).

    ``test_skipped``: test images that ingest left out (bad files, label conflicts), so
    they have no prediction and are not in ``test_auc``; null when not known.
    """
    if family not in FAMILIES:
        raise ValueError(f"family {family!r} not in {FAMILIES}")
    for name, v in (("valid_acc", valid_acc), ("test_auc", test_auc)):
        if v is not None and not (0.0 <= float(v) <= 1.0):
            raise ValueError(f"{name}={v} is not a fraction in [0, 1]")
    out = {
        "model": model,
        "family": family,
        "features": features,
        "valid_acc": valid_acc,
        "valid_loss": valid_loss,
        "test_auc": test_auc,
        "n_train": n_train,
        "n_val": n_val,
        "n_test": n_test,
        "test_skipped": test_skipped,
        "params_count": params_count,
        "wall_time_s": round(float(wall_time_s), 3),
        "device": str(device),
        "seed": seed,
        **extra,
    }
    return {k: _clean_number(v) for k, v in out.items()}


def validate_metrics(obj: Any, source: str | os.PathLike) -> dict:
    """Check a loaded metrics.json; PipelineError naming ``source`` when it is not valid."""
    if not isinstance(obj, Mapping):
        raise PipelineError(f"{source}: expected a JSON object with metrics; re-run that model's rule")
    missing = [f for f in METRICS_FIELDS if f not in obj]
    if missing:
        raise PipelineError(f"{source}: missing field(s) {', '.join(missing)}; re-run that model's rule")
    if not isinstance(obj["model"], str) or not obj["model"]:
        raise PipelineError(f"{source}: field 'model' must be a non-empty string")
    for name in ("valid_acc", "test_auc"):
        v = obj[name]
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1):
            raise PipelineError(f"{source}: field '{name}' must be a fraction in [0, 1] or null, got {v!r}")
    return dict(obj)


def skipped_test_images(ingest_metrics_path: str | os.PathLike) -> int:
    """``test_skipped`` from ingest's ``ingest_metrics.json`` (for every model's metrics)."""
    import json

    try:
        value = json.loads(Path(ingest_metrics_path).read_text(encoding="utf-8"))["test_skipped"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PipelineError(
            f"{ingest_metrics_path}: no test_skipped count ({type(exc).__name__}: {exc}); re-run ingest"
        ) from exc
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PipelineError(f"{ingest_metrics_path}: test_skipped is {value!r}, not a count; re-run ingest")
    return value


def write_model_outputs(
    model_dir: str | os.PathLike, metrics: dict, predictions: pd.DataFrame, roc: pd.DataFrame,
    val_predictions: pd.DataFrame | None = None,
) -> None:
    """``metrics.json``, ``predictions.csv``, ``roc.csv`` (and ``val_predictions.csv``) in ``model_dir``, atomically."""
    d = Path(model_dir)
    write_json(d / "metrics.json", metrics)
    if val_predictions is not None:
        write_csv(val_predictions[list(VAL_PREDICTION_COLUMNS)], d / "val_predictions.csv")
    write_csv(predictions[list(PREDICTION_COLUMNS)], d / "predictions.csv")
    write_csv(roc[list(ROC_COLUMNS)], d / "roc.csv")
