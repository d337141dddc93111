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
from joblib import parallel_config
from sklearn.calibration import CalibratedClassifierCV
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC

from . import svm_variants
from ..io.errors import PipelineError
from ..study.registry import CLASSIFIERS
from ..results.metrics import accuracy, make_metrics, predictions_frame, roc_auc, roc_frame, val_predictions_frame


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
    val_predictions: pd.DataFrame | None = None  # id, label, prob_bad for every validation row


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


def build_classifier(
    name: str, params: Mapping[str, Any] | None, seed: int, *, n_train: int | None = None, n_jobs: int = 1
) -> Pipeline:
    """``StandardScaler`` + the estimator for ``name`` with ``params`` as keyword arguments.

    ``svm``: ``classical.svm.variant`` picks the exact SVC or a scalable stand-in
    (``svm_variants``; ``auto`` decides by ``n_train``). ``n_jobs`` (the rule's threads) goes
    to the forest and to the SVM's cross-validated calibration unless params set it.
    """
    if name not in _ESTIMATORS:
        raise PipelineError(
            f"params.yaml classical.{name}: unknown classifier; expected one of {', '.join(CLASSIFIERS)}"
        )
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise PipelineError(f"params.yaml classical.{name}: expected a mapping of keyword arguments, got {params!r}")
    options = None
    if name == "svm":
        options, params = svm_variants.split_params(params)
    cls, defaults = _ESTIMATORS[name]
    valid = set(cls().get_params())
    for key in params:
        if key == "random_state":
            raise PipelineError(
                f"params.yaml classical.{name}.random_state: set by the pipeline seed; remove it"
            )
        if key not in valid:
            extra = f", {', '.join(svm_variants.VARIANT_KEYS)}" if name == "svm" else ""
            raise PipelineError(
                f"params.yaml classical.{name}.{key}: unknown parameter for {cls.__name__}; "
                f"valid: {', '.join(sorted(valid - {'random_state'}))}{extra}"
            )
    kwargs = {**defaults, **dict(params)}
    for key, value in params.items():
        _validate_value(cls, key, value, name)
    if "random_state" in valid:
        kwargs["random_state"] = seed
    if name == "rf":  # trees fit in parallel; the others have no use for more processes here
        kwargs.setdefault("n_jobs", n_jobs)
    if name != "svm":
        return Pipeline([("scale", StandardScaler()), ("clf", cls(**kwargs))])
    variant = svm_variants.resolve_variant(options, n_train or 0)
    *kmap, (_, svm) = svm_variants.svm_steps(variant, options, kwargs, seed)
    if not (variant == "exact" and kwargs.get("probability", False)):
        svm = CalibratedClassifierCV(svm, **SVM_CALIBRATION, n_jobs=n_jobs)
    return Pipeline([("scale", StandardScaler()), *kmap, ("clf", svm)])


def svm_variant(pipe: Pipeline) -> str:
    """Which SVM variant a built pipeline holds: exact, nystroem or linear."""
    if "kmap" in pipe.named_steps:
        return "nystroem"
    return "exact" if isinstance(_base(pipe), SVC) else "linear"


def _base(pipe: Pipeline):
    """The fitted scikit-learn classifier itself (the SVC inside the calibration wrapper)."""
    clf = pipe.named_steps["clf"]
    if isinstance(clf, CalibratedClassifierCV):
        fitted = getattr(clf, "calibrated_classifiers_", None)
        return fitted[0].estimator if fitted else clf.estimator
    return clf


def predict_labels(pipe: Pipeline, X: np.ndarray) -> np.ndarray:
    """0/1 predictions from the classifier's own decision rule."""
    if isinstance(pipe.named_steps["clf"], CalibratedClassifierCV):
        return _base(pipe).predict(pipe[:-1].transform(X))
    return pipe.predict(X)


def params_count(pipe: Pipeline) -> int | None:
    """Fitted parameters of the classifier (the scaler's 2·D mean/scale not counted).

    LDA/LR: coefficients + intercepts. SVM: support vectors + dual coefficients +
    intercept + the 2 sigmoid-calibration parameters; the scalable variants: the linear
    SVM's coefficients + intercept (+ the Nystroem landmarks and normalisation matrix) + 2.
    RF: tree nodes over all trees (each node holds one split or one leaf value), the usual
    size measure for forests.
    """
    clf = _base(pipe)
    if isinstance(clf, LinearSVC):
        kmap = pipe.named_steps.get("kmap")
        extra = kmap.components_.size + kmap.normalization_.size if kmap is not None else 0
        return int(clf.coef_.size + np.size(clf.intercept_) + extra + 2)
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
    n_jobs: int = 1,
) -> ModelResult:
    """Fit ``name`` on the train rows, evaluate on val/test; metrics per docs/ARCHITECTURE.md.

    The SVM's metrics also say which variant ran (``svm_variant``, ``estimator``)."""
    t0 = time.perf_counter()
    rows = _split_rows(meta, X)
    pipe = build_classifier(name, params, seed, n_train=len(rows["train"]), n_jobs=n_jobs)
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
        svm_variants.fit_gamma(pipe, X[tr])
        # threads, not processes: libsvm and liblinear release the GIL while they fit, so the
        # calibration folds run side by side without starting workers or copying the features
        with parallel_config(backend="threading"):
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
    val_predictions = val_predictions_frame(meta["id"].to_numpy()[va], labels[va], prob_bad(pipe, X[va]) if len(va) else [])
    extra = {}
    if name == "svm":
        options, svc_kwargs = svm_variants.split_params(params or {})
        variant = svm_variant(pipe)
        extra = {"svm_variant": variant, "estimator": svm_variants.describe(variant, options, svc_kwargs)}
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
        **extra,
    )
    return ModelResult(metrics=metrics, predictions=predictions, roc=roc, val_predictions=val_predictions)
