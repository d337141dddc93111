"""Classical classifiers: accuracy on easy data, chance on noise, outputs, determinism, params."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline_lib.results import metrics as M
from pipeline_lib.classical.classifiers import CLASSIFIERS, build_classifier, fit_and_evaluate
from pipeline_lib.io.errors import PipelineError

# small forests / few features keep the whole module at a few seconds
FAST = {"lda": {}, "rf": {"n_estimators": 30}, "lr": {}, "svm": {"kernel": "rbf", "C": 1.0}}


def make_data(seed: int, *, separable: bool, n=(120, 60, 60), d=12, test_labels=True):
    rng = np.random.default_rng(seed)
    rows, feats = [], []
    for split, count in zip(("train", "val", "test"), n):
        y = np.arange(count) % 2
        rng.shuffle(y)
        x = rng.standard_normal((count, d))
        if separable:
            x[:, :3] += 3.0 * y[:, None]  # clear margin along 3 directions
        else:
            y = rng.integers(0, 2, count)  # labels independent of features
        for i in range(count):
            label = int(y[i]) if (split != "test" or test_labels) else -1
            rows.append({"id": f"{split}{i:03d}", "split": split, "label": label})
        feats.append(x)
    meta = pd.DataFrame(rows)
    meta["label"] = meta["label"].astype(np.int8)
    return meta, np.concatenate(feats).astype(np.float32)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_easy_data_high_accuracy_and_outputs(name):
    meta, X = make_data(0, separable=True)
    res = fit_and_evaluate(name, FAST[name], 0, meta, X, features_name="pretrained")
    m = res.metrics
    assert m["valid_acc"] >= 0.9 and m["test_auc"] >= 0.95
    assert set(M.METRICS_FIELDS) <= set(m)
    assert m["model"] == f"{name}_pretrained" and m["family"] == "classical"
    assert m["features"] == "pretrained" and m["device"] == "cpu" and m["seed"] == 0
    assert (m["n_train"], m["n_val"], m["n_test"]) == (120, 60, 60)
    assert m["valid_loss"] is None and m["params_count"] > 0
    test_ids = meta.loc[meta.split == "test", "id"].tolist()
    assert res.predictions["id"].tolist() == test_ids
    p = res.predictions["prob_bad"].to_numpy()
    assert ((p >= 0) & (p <= 1)).all()
    assert list(res.roc.columns) == list(M.ROC_COLUMNS) and len(res.roc) >= 2
    assert res.roc["tpr"].iloc[-1] == 1.0


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_random_labels_near_chance(name):
    accs = []
    for seed in range(2):
        meta, X = make_data(seed, separable=False, n=(200, 200, 20))
        accs.append(fit_and_evaluate(name, FAST[name], seed, meta, X, features_name="pretrained").metrics["valid_acc"])
    assert 0.35 <= np.mean(accs) <= 0.65, accs


def test_no_test_labels_gives_no_auc_and_empty_roc(tmp_path):
    meta, X = make_data(0, separable=True, test_labels=False)
    res = fit_and_evaluate("lda", {}, 0, meta, X, features_name="finetuned")
    assert res.metrics["test_auc"] is None and res.metrics["model"] == "lda_finetuned"
    assert res.roc.empty and list(res.roc.columns) == ["fpr", "tpr", "threshold"]
    assert len(res.predictions) == 60
    M.write_model_outputs(tmp_path / "lda_finetuned", res.metrics, res.predictions, res.roc)
    assert (tmp_path / "lda_finetuned" / "roc.csv").read_text().strip() == "fpr,tpr,threshold"
    head = (tmp_path / "lda_finetuned" / "predictions.csv").read_text().splitlines()[0]
    assert head == "id,prob_bad"


@pytest.mark.parametrize("name,seed_matters", [("rf", True), ("svm", False)])
def test_deterministic_by_seed(name, seed_matters):
    meta, X = make_data(3, separable=False, n=(80, 40, 40))
    a = fit_and_evaluate(name, FAST[name], 7, meta, X, features_name="pretrained")
    b = fit_and_evaluate(name, FAST[name], 7, meta, X, features_name="pretrained")
    c = fit_and_evaluate(name, FAST[name], 8, meta, X, features_name="pretrained")
    pd.testing.assert_frame_equal(a.predictions, b.predictions)
    pd.testing.assert_frame_equal(a.roc, b.roc)
    drop = lambda m: {k: v for k, v in m.items() if k != "wall_time_s"}  # noqa: E731
    assert drop(a.metrics) == drop(b.metrics)
    # the forest's bootstrap follows the seed; the (calibrated) SVM has no randomness
    assert np.array_equal(a.predictions["prob_bad"], c.predictions["prob_bad"]) != seed_matters


def test_bad_params_named():
    with pytest.raises(PipelineError, match=r"classical\.rf\.n_trees"):
        build_classifier("rf", {"n_trees": 10}, 0)
    with pytest.raises(PipelineError, match=r"classical\.svm\.kernel"):
        build_classifier("svm", {"kernel": "nope"}, 0)
    with pytest.raises(PipelineError, match=r"classical\.knn"):
        build_classifier("knn", {}, 0)
    with pytest.raises(PipelineError, match=r"classical\.lr\.random_state"):
        build_classifier("lr", {"random_state": 1}, 0)
    pipe = build_classifier("rf", {"n_estimators": 5, "max_depth": None}, 3)
    assert pipe.named_steps["clf"].random_state == 3 and pipe.named_steps["clf"].n_estimators == 5


def test_metric_helpers():
    assert M.accuracy([0, 1, -1], [0, 0, 1]) == 0.5
    assert M.accuracy([-1], [1]) is None
    assert M.roc_auc([1, 1, -1], [0.2, 0.3, 0.9]) is None
    assert M.roc_auc([0, 1, -1], [0.2, 0.3, 0.0]) == 1.0
    assert M.roc_frame([0, 0], [0.1, 0.2]).empty


# --- every number of metrics.json, recomputed with scikit-learn apart from the pipeline -------------


def _reference(name: str, seed: int):
    """The estimator the study describes, built here without pipeline_lib (scaler + estimator)."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import SVC

    return {
        "lda": LinearDiscriminantAnalysis(),
        "rf": RandomForestClassifier(n_estimators=30, random_state=seed),
        "lr": LogisticRegression(max_iter=2000, random_state=seed),
        "svm": SVC(kernel="rbf", C=1.0, random_state=seed),
    }[name]


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_valid_acc_test_auc_and_params_count_match_an_independent_fit(name):
    from sklearn.metrics import accuracy_score, roc_auc_score
    from sklearn.preprocessing import StandardScaler

    meta, X = make_data(5, separable=False, n=(80, 40, 40), d=6)
    # a weak signal: accuracies and AUCs strictly between 0.5 and 1, where a wrong split, label
    # or direction would show
    X[:, :3] += 0.8 * meta["label"].to_numpy()[:, None]
    res = fit_and_evaluate(name, FAST[name], 4, meta, X, features_name="pretrained")
    tr, va, te = (meta.split == s for s in ("train", "val", "test"))
    scaler = StandardScaler().fit(X[tr])
    est = _reference(name, 4).fit(scaler.transform(X[tr]), meta.label[tr])
    y_val, y_test = meta.label[va].to_numpy(), meta.label[te].to_numpy()
    assert res.metrics["valid_acc"] == accuracy_score(y_val, est.predict(scaler.transform(X[va])))
    assert 0.5 < res.metrics["valid_acc"] < 1.0
    # AUC: bad (1) is the positive class, from the probabilities written to predictions.csv
    p = res.predictions["prob_bad"].to_numpy()
    assert res.metrics["test_auc"] == pytest.approx(roc_auc_score(y_test, p), abs=1e-12)
    assert res.metrics["test_auc"] > 0.7
    assert np.trapezoid(res.roc["tpr"], res.roc["fpr"]) == pytest.approx(res.metrics["test_auc"], abs=1e-12)
    if name != "svm":  # the SVM's probabilities come from its Platt calibration (below)
        np.testing.assert_allclose(p, est.predict_proba(scaler.transform(X[te]))[:, 1], rtol=1e-9)
    # params_count: what is counted, per estimator, from the fitted reference
    d = X.shape[1]
    if name in ("lda", "lr"):
        expected = d + 1  # one coefficient per feature (one direction: 2 classes) + the intercept
    elif name == "svm":
        # every support vector (d values) and its dual coefficient, the intercept, and the
        # calibration sigmoid's a and b
        expected = len(est.support_) * (d + 1) + 1 + 2
    else:  # one stored split or leaf value per node, over every tree
        expected = sum(len(tree.tree_.threshold) for tree in est.estimators_)
    assert res.metrics["params_count"] == expected


def test_svm_probabilities_are_the_platt_sigmoid_of_the_decision_function():
    from sklearn.calibration import CalibratedClassifierCV

    meta, X = make_data(6, separable=True, n=(80, 40, 40), d=6)
    res = fit_and_evaluate("svm", FAST["svm"], 0, meta, X, features_name="pretrained")
    pipe = build_classifier("svm", FAST["svm"], 0)
    tr, te = meta.split == "train", meta.split == "test"
    pipe.fit(X[tr], meta.label[tr])
    calibrated = pipe.named_steps["clf"]
    assert isinstance(calibrated, CalibratedClassifierCV) and len(calibrated.calibrated_classifiers_) == 1
    sigmoid = calibrated.calibrated_classifiers_[0].calibrators[0]
    decision = calibrated.calibrated_classifiers_[0].estimator.decision_function(pipe[:-1].transform(X[te]))
    # scikit-learn's _SigmoidCalibration: P(positive) = 1 / (1 + exp(a * f + b))
    expected = 1.0 / (1.0 + np.exp(sigmoid.a_ * decision + sigmoid.b_))
    np.testing.assert_allclose(res.predictions["prob_bad"].to_numpy(), expected, rtol=1e-9)


def test_wall_time_is_the_time_around_fit_and_evaluation(monkeypatch):
    import pipeline_lib.classical.classifiers as classical

    ticks = iter([100.0, 103.25])  # the clock when fit_and_evaluate starts, then when it is done
    monkeypatch.setattr(classical.time, "perf_counter", lambda: next(ticks))
    meta, X = make_data(0, separable=True, n=(40, 20, 20), d=4)
    assert fit_and_evaluate("lda", {}, 0, meta, X, features_name="pretrained").metrics["wall_time_s"] == 3.25


def test_every_refusal_is_one_line_naming_the_params_key():
    cases = [
        (("knn", {}), "params.yaml classical.knn: unknown classifier; expected one of lda, rf, lr, svm"),
        (("lr", [1]), "params.yaml classical.lr: expected a mapping of keyword arguments, got [1]"),
        (("lr", {"random_state": 1}), "params.yaml classical.lr.random_state: set by the pipeline seed; remove it"),
        (("lda", {"solverr": "svd"}), "params.yaml classical.lda.solverr: unknown parameter for LinearDiscriminantAnalysis; "
                                      "valid: covariance_estimator, n_components, priors, shrinkage, solver, store_covariance, tol"),
        (("rf", {"n_estimators": -3}), "params.yaml classical.rf.n_estimators: invalid value -3 (The 'n_estimators' parameter"),
    ]
    for (name, params), message in cases:
        with pytest.raises(PipelineError) as info:
            build_classifier(name, params, 0)
        assert str(info.value).startswith(message) and "\n" not in str(info.value), str(info.value)


def test_defaults_the_pipeline_sets_and_params_override():
    from sklearn.calibration import CalibratedClassifierCV

    rf = build_classifier("rf", None, 5).named_steps["clf"]
    assert (rf.n_estimators, rf.random_state) == (200, 5)
    assert build_classifier("rf", {"n_estimators": 7}, 5).named_steps["clf"].n_estimators == 7
    assert build_classifier("lr", {}, 0).named_steps["clf"].max_iter == 2000
    assert list(build_classifier("lda", {}, 0).named_steps) == ["scale", "clf"]
    svm = build_classifier("svm", {}, 3).named_steps["clf"]
    assert isinstance(svm, CalibratedClassifierCV)
    assert (svm.method, svm.cv, svm.ensemble, svm.estimator.random_state) == ("sigmoid", 5, False, 3)
    # SVC's own probabilities when asked for: no calibration wrapper
    assert type(build_classifier("svm", {"probability": True}, 0).named_steps["clf"]).__name__ == "SVC"


def test_bad_training_data_is_refused_naming_the_features():
    meta, X = make_data(0, separable=True, n=(20, 10, 10), d=3)
    one_class = meta.copy()
    one_class.loc[one_class.split == "train", "label"] = 0
    with pytest.raises(PipelineError, match=r"^features finetuned: the train split needs labelled rows of both classes "
                                            r"\(found labels \[0\]\); check the split stage$"):
        fit_and_evaluate("lda", {}, 0, one_class, X, features_name="finetuned")
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(PipelineError, match=r"^features pretrained: non-finite values in the features; re-run features$"):
        fit_and_evaluate("lda", {}, 0, meta, bad, features_name="pretrained")
    with pytest.raises(ValueError, match="40 meta rows but 39 feature rows"):
        fit_and_evaluate("lda", {}, 0, meta, X[:-1], features_name="pretrained")
    with pytest.raises(PipelineError, match=r"^params\.yaml classical\.lda: cannot fit with \{'n_components': 5\}"):
        fit_and_evaluate("lda", {"n_components": 5}, 0, meta, X, features_name="pretrained")


# --- the SVM variants as fit_and_evaluate runs them, recomputed apart from the pipeline ---------------

VARIANT_SVM = {"kernel": "rbf", "C": 0.5, "variant": "nystroem", "nystroem_components": 20}


def _weak_signal(n=(60, 30, 30), d=4):
    meta, X = make_data(5, separable=False, n=n, d=d)
    X[:, :2] += 1.0 * meta["label"].to_numpy()[:, None]
    return meta, X


def test_nystroem_variant_numbers_match_an_independent_kernel_map_and_linear_svm():
    from sklearn.kernel_approximation import Nystroem
    from sklearn.metrics import accuracy_score
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    meta, X = _weak_signal()
    res = fit_and_evaluate("svm", VARIANT_SVM, 3, meta, X, features_name="pretrained", test_skipped=4)
    tr, va = (meta.split == "train").to_numpy(), (meta.split == "val").to_numpy()
    scaler = StandardScaler().fit(X[tr])
    Xs = scaler.transform(X[tr]).astype(np.float64)
    gamma = 1.0 / (Xs.shape[1] * Xs.var())  # SVC's gamma='scale' on the standardised rows
    kmap = Nystroem(kernel="rbf", gamma=gamma, n_components=20, random_state=3).fit(Xs)
    svm = LinearSVC(C=0.5, max_iter=5000, random_state=3).fit(kmap.transform(Xs), meta.label[tr])
    predicted = svm.predict(kmap.transform(scaler.transform(X[va])))
    m = res.metrics
    assert m["valid_acc"] == accuracy_score(meta.label[va], predicted)
    # what params_count's docstring counts: the linear SVM, the landmarks and normalisation, a and b
    assert m["params_count"] == svm.coef_.size + svm.intercept_.size + kmap.components_.size + kmap.normalization_.size + 2
    assert (m["svm_variant"], m["estimator"]) == ("nystroem", "Nystroem rbf kernel map (20 components) + LinearSVC")
    assert (m["test_skipped"], m["n_train"], m["valid_loss"]) == (4, 60, None)


@pytest.mark.parametrize("max_exact_rows, variant, estimator", [
    (59, "nystroem", "Nystroem rbf kernel map (20 components) + LinearSVC"),
    (60, "exact", "exact rbf SVC"),
])
def test_auto_variant_decides_by_the_training_rows_fit_and_evaluate_counts(max_exact_rows, variant, estimator):
    meta, X = _weak_signal()  # 60 training rows
    params = {**VARIANT_SVM, "variant": "auto", "max_exact_rows": max_exact_rows}
    m = fit_and_evaluate("svm", params, 0, meta, X, features_name="finetuned").metrics
    assert m["svm_variant"] == variant
    assert m["estimator"] == f"{estimator} (variant auto: exact up to {max_exact_rows} training rows)"
    assert m["test_skipped"] is None  # not known unless the caller passes it


def test_linear_variant_counts_and_names_what_it_fits():
    from sklearn.metrics import accuracy_score
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    meta, X = _weak_signal()
    m = fit_and_evaluate("svm", {"variant": "linear"}, 0, meta, X, features_name="pretrained").metrics
    tr, va = (meta.split == "train").to_numpy(), (meta.split == "val").to_numpy()
    scaler = StandardScaler().fit(X[tr])
    svm = LinearSVC(max_iter=5000, random_state=0).fit(scaler.transform(X[tr]), meta.label[tr])
    assert m["valid_acc"] == accuracy_score(meta.label[va], svm.predict(scaler.transform(X[va])))
    assert m["params_count"] == X.shape[1] + 1 + 2  # one weight per feature, the intercept, sigmoid a and b
    assert (m["svm_variant"], m["estimator"]) == ("linear", "LinearSVC on the standardised features (no kernel)")
    exact = fit_and_evaluate("svm", {}, 0, meta, X, features_name="pretrained").metrics
    assert (exact["svm_variant"], exact["estimator"]) == ("exact", "exact rbf SVC")
    assert "svm_variant" not in fit_and_evaluate("lda", {}, 0, meta, X, features_name="pretrained").metrics


def test_svm_variant_of_built_pipelines_before_and_after_fit():
    from pipeline_lib.classical.classifiers import _base, svm_variant
    from sklearn.svm import SVC, LinearSVC

    built = {v: build_classifier("svm", {"variant": v, "nystroem_components": 5}, 7, n_jobs=2)
             for v in ("exact", "nystroem", "linear")}
    assert {v: svm_variant(p) for v, p in built.items()} == {v: v for v in built}  # before fit: the wrapped SVM
    assert list(built["exact"].named_steps) == ["scale", "clf"]
    assert list(built["nystroem"].named_steps) == ["scale", "kmap", "clf"]
    assert isinstance(_base(built["exact"]), SVC) and isinstance(_base(built["linear"]), LinearSVC)
    assert built["nystroem"].named_steps["kmap"].random_state == 7 and _base(built["linear"]).random_state == 7
    assert built["linear"].named_steps["clf"].n_jobs == 2  # the rule's threads reach the calibration folds
    meta, X = _weak_signal(n=(20, 0, 0))
    fitted = build_classifier("svm", {"variant": "linear"}, 7).fit(X, meta.label)  # one thread: no worker processes
    assert svm_variant(fitted) == "linear" and _base(fitted) is fitted.named_steps["clf"].calibrated_classifiers_[0].estimator


def test_threads_default_to_one_and_reach_only_the_forest_and_the_calibration(monkeypatch):
    import pipeline_lib.classical.classifiers as classical

    assert build_classifier("rf", {}, 0).named_steps["clf"].n_jobs == 1
    assert build_classifier("svm", {}, 0).named_steps["clf"].n_jobs == 1
    assert build_classifier("rf", {}, 0, n_jobs=2).named_steps["clf"].n_jobs == 2
    assert build_classifier("rf", {"n_jobs": 1}, 0, n_jobs=2).named_steps["clf"].n_jobs == 1
    assert build_classifier("lr", {}, 0, n_jobs=2).named_steps["clf"].n_jobs is None  # LR keeps its own default
    built = []
    real = classical.build_classifier
    monkeypatch.setattr(classical, "build_classifier", lambda *a, **k: built.append(real(*a, **k)) or built[-1])
    meta, X = _weak_signal(n=(20, 10, 10))
    fit_and_evaluate("rf", {"n_estimators": 3}, 0, meta, X, features_name="pretrained", n_jobs=2)
    fit_and_evaluate("rf", {"n_estimators": 3}, 0, meta, X, features_name="pretrained")
    assert [p.named_steps["clf"].n_jobs for p in built] == [2, 1]


def test_empty_val_or_test_split_gives_null_numbers_and_empty_outputs():
    meta, X = _weak_signal(n=(30, 0, 10))
    m = fit_and_evaluate("lda", {}, 0, meta, X, features_name="pretrained").metrics
    assert (m["valid_acc"], m["n_val"], m["n_test"]) == (None, 0, 10)
    meta, X = _weak_signal(n=(30, 10, 0))
    res = fit_and_evaluate("lda", {}, 0, meta, X, features_name="pretrained")
    assert (res.metrics["test_auc"], res.metrics["n_test"]) == (None, 0)
    assert res.predictions.empty and list(res.predictions.columns) == ["id", "prob_bad"]
    assert res.roc.empty and list(res.roc.columns) == ["fpr", "tpr", "threshold"]


def test_unknown_key_lists_every_valid_key_word_for_word():
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import SVC

    lr_keys = ", ".join(sorted(set(LogisticRegression().get_params()) - {"random_state"}))
    svc_keys = ", ".join(sorted(set(SVC().get_params()) - {"random_state"}))
    cases = [
        ("lr", "params.yaml classical.lr.Cc: unknown parameter for LogisticRegression; valid: " + lr_keys),
        ("svm", "params.yaml classical.svm.Cc: unknown parameter for SVC; valid: " + svc_keys
         + ", variant, max_exact_rows, nystroem_components"),
    ]
    for name, message in cases:
        with pytest.raises(PipelineError) as info:
            build_classifier(name, {"Cc": 1}, 0)
        assert str(info.value) == message


def test_fit_time_refusal_quotes_scikit_learns_first_line_or_the_error_type(monkeypatch):
    import pipeline_lib.classical.classifiers as classical
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    meta, X = make_data(0, separable=True, n=(20, 10, 10), d=3)
    tr = (meta.split == "train").to_numpy()
    with pytest.raises(ValueError) as direct:
        LinearDiscriminantAnalysis(n_components=5).fit(X[tr], meta.label[tr])
    first = str(direct.value).splitlines()[0]
    with pytest.raises(PipelineError) as info:
        fit_and_evaluate("lda", {"n_components": 5}, 0, meta, X, features_name="pretrained")
    assert str(info.value) == f"params.yaml classical.lda: cannot fit with {{'n_components': 5}} ({first})"

    def no_message(*_):
        raise ValueError()

    monkeypatch.setattr(classical.svm_variants, "fit_gamma", no_message)
    with pytest.raises(PipelineError) as info:
        fit_and_evaluate("lda", {}, 0, meta, X, features_name="pretrained")
    assert str(info.value) == "params.yaml classical.lda: cannot fit with {} (ValueError)"


def test_invalid_value_without_a_message_names_the_error_type():
    from pipeline_lib.classical.classifiers import _validate_value

    class Refuses:
        def __init__(self, **kwargs):
            raise TypeError()

    with pytest.raises(PipelineError) as info:
        _validate_value(Refuses, "tol", "x", "lr")
    assert str(info.value) == "params.yaml classical.lr.tol: invalid value 'x' (TypeError)"


def test_params_count_counts_every_class_intercept():
    from pipeline_lib.classical.classifiers import params_count
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    X = np.random.default_rng(0).standard_normal((30, 4))
    pipe = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression())]).fit(X, np.arange(30) % 3)
    assert params_count(pipe) == 3 * 4 + 3  # a weight vector and an intercept per class
