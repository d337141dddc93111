"""The SVM row's variants: the auto rule, the kernel the approximation uses, what metrics say."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics.pairwise import polynomial_kernel, rbf_kernel
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC

from pipeline_lib.classical.classifiers import _base, build_classifier, fit_and_evaluate, params_count, svm_variant
from pipeline_lib.io.errors import PipelineError
from pipeline_lib.results.table import estimator_note, markdown_table, build_table
from pipeline_lib.classical.svm_variants import fit_gamma

SVM = {"kernel": "rbf", "C": 1.0, "class_weight": "balanced"}


def ring_data(n=(300, 150, 150), d=6, seed=0, constant_columns=0):
    """Label = outside a sphere: no linear separator, an RBF kernel separates it."""
    rng = np.random.default_rng(seed)
    rows, feats = [], []
    for split, count in zip(("train", "val", "test"), n):
        x = rng.standard_normal((count, d))
        y = (np.linalg.norm(x, axis=1) > np.sqrt(d - 0.7)).astype(int)
        x = np.hstack([x, np.full((count, constant_columns), 3.0)])
        feats.append(x)
        rows += [{"id": f"{split}{i:03d}", "split": split, "label": int(v)} for i, v in enumerate(y)]
    return pd.DataFrame(rows), np.concatenate(feats).astype(np.float32)


@pytest.mark.parametrize("n_train, expected", [(100, "exact"), (101, "nystroem")])
def test_auto_picks_exact_up_to_the_row_threshold(n_train, expected):
    pipe = build_classifier("svm", {**SVM, "variant": "auto", "max_exact_rows": 100}, 0, n_train=n_train)
    assert svm_variant(pipe) == expected
    assert isinstance(_base(pipe), SVC if expected == "exact" else LinearSVC)
    assert list(pipe.named_steps) == (["scale", "clf"] if expected == "exact" else ["scale", "kmap", "clf"])


def test_scalable_variants_take_the_svc_arguments_they_share():
    params = {"kernel": "poly", "degree": 2, "coef0": 0.5, "gamma": 0.3, "C": 0.25, "class_weight": "balanced",
              "cache_size": 500, "variant": "nystroem", "nystroem_components": 64}
    pipe = build_classifier("svm", params, 7, n_jobs=2)
    kmap, svm, calib = pipe.named_steps["kmap"], _base(pipe), pipe.named_steps["clf"]
    assert (kmap.kernel, kmap.degree, kmap.coef0, kmap.gamma, kmap.n_components, kmap.random_state) == ("poly", 2, 0.5, 0.3, 64, 7)
    assert (svm.C, svm.class_weight, svm.random_state) == (0.25, "balanced", 7)
    assert (calib.method, calib.cv, calib.ensemble, calib.n_jobs) == ("sigmoid", 5, False, 2)


def test_forest_gets_the_rule_threads_unless_params_say():
    assert build_classifier("rf", {}, 0, n_jobs=2).named_steps["clf"].n_jobs == 2
    assert build_classifier("rf", {"n_jobs": 1}, 0, n_jobs=2).named_steps["clf"].n_jobs == 1


@pytest.mark.parametrize("constant_columns", [0, 3])
def test_nystroem_uses_the_kernel_the_exact_svc_fits(constant_columns):
    """gamma='scale' resolved as SVC resolves it; with every row a landmark the map is the kernel."""
    meta, X = ring_data(constant_columns=constant_columns)
    X_tr, y_tr = X[:300], meta["label"].to_numpy()[:300]
    exact = build_classifier("svm", SVM, 0).fit(X_tr, y_tr)
    approx = build_classifier("svm", {**SVM, "variant": "nystroem", "nystroem_components": 300}, 0, n_train=300)
    fit_gamma(approx, X_tr)
    approx.fit(X_tr, y_tr)
    gamma = approx.named_steps["kmap"].gamma
    assert gamma == pytest.approx(_base(exact)._gamma, rel=1e-6)
    Xs = StandardScaler().fit_transform(X_tr)
    phi = approx.named_steps["kmap"].transform(Xs)
    np.testing.assert_allclose(phi @ phi.T, rbf_kernel(Xs, gamma=gamma), atol=1e-4)  # float32 features


def test_gamma_auto_is_one_over_features():
    pipe = build_classifier("svm", {**SVM, "kernel": "poly", "gamma": "auto", "variant": "nystroem", "nystroem_components": 50}, 0)
    X = np.random.default_rng(0).standard_normal((80, 5))
    pipe.fit(X, np.arange(80) % 2)
    kmap = pipe.named_steps["kmap"]
    # among its own landmarks the map reproduces the kernel: SVC's 'auto' = 1 / n_features
    phi = kmap.transform(kmap.components_)
    np.testing.assert_allclose(phi @ phi.T, polynomial_kernel(kmap.components_, gamma=1 / 5), atol=1e-6)


def test_variants_on_a_ring_and_what_metrics_say():
    meta, X = ring_data()
    runs = {v: fit_and_evaluate("svm", {**SVM, "variant": v, "nystroem_components": 300}, 0, meta, X, features_name="pretrained")
            for v in ("exact", "nystroem", "linear")}
    acc = {v: r.metrics["valid_acc"] for v, r in runs.items()}
    assert acc["exact"] >= 0.85 and abs(acc["nystroem"] - acc["exact"]) <= 0.02
    assert acc["linear"] <= 0.65  # no linear separator: the kernel is what the other two add
    assert {v: r.metrics["svm_variant"] for v, r in runs.items()} == {v: v for v in runs}
    assert runs["exact"].metrics["estimator"] == "exact rbf SVC"
    assert runs["nystroem"].metrics["estimator"] == "Nystroem rbf kernel map (300 components) + LinearSVC"
    # linear coef (300) + intercept + Nystroem landmarks (300 x 6) and normalisation (300 x 300) + sigmoid a, b
    assert runs["nystroem"].metrics["params_count"] == 300 + 1 + 300 * 6 + 300 * 300 + 2
    assert runs["linear"].metrics["params_count"] == 6 + 1 + 2
    auto = fit_and_evaluate("svm", {**SVM, "variant": "auto", "max_exact_rows": 299}, 0, meta, X, features_name="finetuned")
    assert auto.metrics["svm_variant"] == "nystroem"
    assert auto.metrics["estimator"].endswith("(variant auto: exact up to 299 training rows)")
    assert "svm_variant" not in fit_and_evaluate("lda", {}, 0, meta, X, features_name="pretrained").metrics


def test_bad_variant_settings_are_named():
    with pytest.raises(PipelineError, match=r"classical\.svm\.variant: 'fast'"):
        build_classifier("svm", {"variant": "fast"}, 0)
    with pytest.raises(PipelineError, match=r"classical\.svm\.nystroem_components: expected an integer >= 1"):
        build_classifier("svm", {"variant": "nystroem", "nystroem_components": 0}, 0)
    with pytest.raises(PipelineError, match=r"classical\.svm\.gama: unknown parameter for SVC.*nystroem_components"):
        build_classifier("svm", {"gama": 1}, 0)


def test_table_caption_says_which_svm_ran():
    def m(model, features, estimator=None):
        row = {"model": model, "features": features, "valid_acc": 0.5, "test_auc": 0.5, "family": "classical"}
        return {**row, "estimator": estimator} if estimator else row

    same = [m("lda_pretrained", "pretrained"), m("svm_pretrained", "pretrained", "exact rbf SVC"),
            m("svm_finetuned", "finetuned", "exact rbf SVC")]
    assert estimator_note(same) == "SVM: exact rbf SVC."
    mixed = [same[1], m("svm_finetuned", "finetuned", "LinearSVC on the standardised features (no kernel)")]
    assert estimator_note(mixed) == ("SVM: LinearSVC on the standardised features (no kernel) on finetuned features; "
                                     "exact rbf SVC on pretrained features.")
    assert estimator_note(same[:1]) is None
    assert markdown_table(build_table(same)).count("SVM") == 1  # the note is added by write_table


def test_write_table_adds_the_svm_note(tmp_path):
    from pipeline_lib.results.metrics import make_metrics
    from pipeline_lib.results.table import write_table

    metrics = [make_metrics(model="svm_pretrained", family="classical", features="pretrained", valid_acc=0.5,
                            test_auc=0.6, n_train=1, n_val=1, n_test=1, params_count=1, wall_time_s=1.0, device="cpu",
                            seed=0, estimator="exact rbf SVC")]
    write_table(metrics, tmp_path / "t.csv", tmp_path / "t.md", tmp_path / "t.json")
    assert (tmp_path / "t.md").read_text().rstrip().endswith("SVM: exact rbf SVC.")
    assert pd.read_csv(tmp_path / "t.csv")["estimator"].tolist() == ["exact rbf SVC"]
