"""The study's classical classifiers on ResNet features: LDA, Random Forest, LR, SVM.

Each is ``StandardScaler`` + the scikit-learn estimator, with keyword arguments from
``params.yaml`` (``classical.<name>: {...}``) and ``random_state`` from the pipeline seed.
``fit_and_evaluate`` trains on ``split == "train"``, reports accuracy on ``"val"`` and the
probability of *bad* for every ``"test"`` row (AUC and ROC only where test labels exist).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from .errors import PipelineError
from .registry import CLASSIFIERS
from .metrics import accuracy, make_metrics, predictions_frame, roc_auc, roc_frame


# name -> (estimator class, defaults the pipeline sets unless params.yaml overrides them)
_ESTIMATORS: dict[str, tuple[type, dict[str, Any]]] = {
    "lda": (LinearDiscriminantAnalysis, {}),
    "rf": (RandomForestClassifier, {"n_estimators": 200}),
    "lr": (LogisticRegression, {"max_iter": 2000}),
    "svm": (SVC, {}),
}
# scikit-learn 1.9 deprecates SVC(probability=True) for this: Platt scaling fitted by
# internal 5-fold CV, one final SVC on all training rows (ensemble=False). Labels still come
# from that SVC's own decision function, as SVC.predict did with probability=True.
SVM_CALIBRATION = {"method": "sigmoid", "cv": 5, "ensemble": False}


@dataclass
class ModelResult:
    metrics: dict  # metrics.json content
    predictions: pd.DataFrame  # id, prob_bad for every test row
    roc: pd.DataFrame  # fpr, tpr, threshold (empty without test labels)


def _validate_value(cls: type, key: str, value: Any, name: str) -> None:
    """Let scikit-learn's own parameter validation judge one keyword, naming the key."""
    try:
        est = cls(**{key: value})
        validate = getattr(est, "_validate_params", None)
        if validate is not None:
            validate()
    except (TypeError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PipelineError(f"params.yaml classical.{name}.{key}: invalid value {value!r} ({first})") from exc


def build_classifier(name: str, params: Mapping[str, Any] | None, seed: int) -> Pipeline:
    """``StandardScaler`` + the estimator for ``name`` with ``params`` as keyword arguments."""
    if name not in _ESTIMATORS:
        raise PipelineError(
            f"params.yaml classical.{name}: unknown classifier; expected one of {', '.join(CLASSIFIERS)}"
        )
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise PipelineError(f"params.yaml classical.{name}: expected a mapping of keyword arguments, got {params!r}")
    cls, defaults = _ESTIMATORS[name]
    valid = set(cls().get_params())
    for key in params:
        if key == "random_state":
            raise PipelineError(
                f"params.yaml classical.{name}.random_state: set by the pipeline seed; remove it"
            )
        if key not in valid:
            raise PipelineError(
                f"params.yaml classical.{name}.{key}: unknown parameter for {cls.__name__}; "
                f"valid: {', '.join(sorted(valid - {'random_state'}))}"
            )
    kwargs = {**defaults, **dict(params)}
    for key, value in params.items():
        _validate_value(cls, key, value, name)
    if "random_state" in valid:
        kwargs["random_state"] = seed
    est = cls(**kwargs)
    if name == "svm" and not kwargs.get("probability", False):
        est = CalibratedClassifierCV(est, **SVM_CALIBRATION)
    return Pipeline([("scale", StandardScaler()), ("clf", est)])


def _base(pipe: Pipeline):
    """The fitted scikit-learn classifier itself (the SVC inside the calibration wrapper)."""
    clf = pipe.named_steps["clf"]
    if isinstance(clf, CalibratedClassifierCV):
        return clf.calibrated_classifiers_[0].estimator
    return clf


def predict_labels(pipe: Pipeline, X: np.ndarray) -> np.ndarray:
    """0/1 predictions from the classifier's own decision rule."""
    if isinstance(pipe.named_steps["clf"], CalibratedClassifierCV):
        return _base(pipe).predict(pipe[:-1].transform(X))
    return pipe.predict(X)


def params_count(pipe: Pipeline) -> int | None:
    """Fitted parameters of the classifier (the scaler's 2·D mean/scale not counted).

    LDA/LR: coefficients + intercepts. SVM: support vectors + dual coefficients +
    intercept + the 2 sigmoid-calibration parameters. RF: tree nodes over all trees (each node holds one split or
    one leaf value), the usual size measure for forests.
    """
    clf = _base(pipe)
    if isinstance(clf, (LinearDiscriminantAnalysis, LogisticRegression)):
        return int(clf.coef_.size + np.size(clf.intercept_))
    if isinstance(clf, SVC):
        n = clf.support_vectors_.size + clf.dual_coef_.size + clf.intercept_.size
        return int(n + 2)  # + the sigmoid calibration's a, b
    if isinstance(clf, RandomForestClassifier):
        return int(sum(t.tree_.node_count for t in clf.estimators_))
    return None


def prob_bad(pipe: Pipeline, X: np.ndarray) -> np.ndarray:
    """P(label == 1) for each row."""
    classes = list(pipe.named_steps["clf"].classes_)
    return pipe.predict_proba(X)[:, classes.index(1)]


def _split_rows(meta: pd.DataFrame, X: np.ndarray) -> dict[str, np.ndarray]:
    if len(meta) != len(X):
        raise ValueError(f"{len(meta)} meta rows but {len(X)} feature rows")
    split = meta["split"].astype(str).to_numpy()
    return {s: np.flatnonzero(split == s) for s in ("train", "val", "test")}


def fit_and_evaluate(
    name: str,
    params: Mapping[str, Any] | None,
    seed: int,
    meta: pd.DataFrame,
    X: np.ndarray,
    *,
    features_name: str,
    test_skipped: int | None = None,
) -> ModelResult:
    """Fit ``name`` on the train rows, evaluate on val/test; metrics per docs/ARCHITECTURE.md."""
    t0 = time.perf_counter()
    pipe = build_classifier(name, params, seed)
    rows = _split_rows(meta, X)
    labels = meta["label"].to_numpy().astype(np.int64)
    tr, va, te = rows["train"], rows["val"], rows["test"]
    y_tr = labels[tr]
    if len(tr) == 0 or set(np.unique(y_tr)) != {0, 1}:
        raise PipelineError(
            f"features {features_name}: the train split needs labelled rows of both classes "
            f"(found labels {sorted(set(np.unique(y_tr).tolist()))}); check the split stage"
        )
    X = np.asarray(X)
    if not np.all(np.isfinite(X)):
        raise PipelineError(f"features {features_name}: non-finite values in the features; re-run features")
    try:
        pipe.fit(X[tr], y_tr)
    except ValueError as exc:  # parameter combinations scikit-learn only rejects at fit time
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PipelineError(f"params.yaml classical.{name}: cannot fit with {dict(params or {})} ({first})") from exc

    valid_acc = accuracy(labels[va], predict_labels(pipe, X[va])) if len(va) else None
    p_test = prob_bad(pipe, X[te]) if len(te) else np.zeros(0)
    y_te = labels[te]
    test_auc = roc_auc(y_te, p_test) if len(te) else None
    roc = roc_frame(y_te, p_test) if len(te) else roc_frame([], [])
    predictions = predictions_frame(meta["id"].to_numpy()[te], p_test)
    metrics = make_metrics(
        model=f"{name}_{features_name}",
        family="classical",
        features=features_name,
        valid_acc=valid_acc,
        valid_loss=None,
        test_auc=test_auc,
        n_train=len(tr),
        n_val=len(va),
        n_test=len(te),
        test_skipped=test_skipped,
        params_count=params_count(pipe),
        wall_time_s=time.perf_counter() - t0,
        device="cpu",
        seed=seed,
    )
    return ModelResult(metrics=metrics, predictions=predictions, roc=roc)
