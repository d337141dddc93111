"""Intervals and paired tests (pipeline_lib.results.stats) against scipy, scikit-learn and hand computations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import accuracy_score, roc_auc_score

from pipeline_lib.results import stats
from pipeline_lib.io.errors import PipelineError


def test_t_interval_matches_scipy():
    values = [0.62, 0.71, 0.58]
    x = np.asarray(values)
    want = sps.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=sps.sem(x))
    assert stats.t_interval(values, 0.95) == pytest.approx(want, abs=1e-12)
    # closed form with 2 values: mean ± t(0.975, 1) · |a - b| / 2
    lo, hi = stats.t_interval([0.5, 0.7], 0.95)
    assert (hi - lo) / 2 == pytest.approx(12.706204736174707 * 0.1, rel=1e-9)
    with pytest.raises(PipelineError, match="at least 2"):
        stats.t_interval([0.5])


def test_auc_rows_matches_sklearn_with_ties():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 40)
    scores = np.round(rng.random((5, 40)), 1)  # many ties
    got = stats.auc_rows(labels, scores)
    assert got == pytest.approx([roc_auc_score(labels, s) for s in scores], abs=1e-12)
    assert np.isnan(stats.auc_rows(np.zeros(5, int), scores[:, :5])).all()


# a fixed small prediction set: 6 good, 4 bad validation images; A right more often than B
LABELS = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
PROB_A = np.array([[0.1, 0.2, 0.6, 0.3, 0.1, 0.4, 0.9, 0.7, 0.4, 0.8],
                   [0.2, 0.1, 0.3, 0.3, 0.2, 0.6, 0.8, 0.6, 0.6, 0.7]])
PROB_B = np.array([[0.6, 0.2, 0.7, 0.3, 0.5, 0.4, 0.9, 0.3, 0.4, 0.55],
                   [0.3, 0.7, 0.3, 0.6, 0.2, 0.4, 0.4, 0.6, 0.2, 0.8]])


def _hand_paired(metric, labels, a, b, n_resamples, seed):
    """The same draws as stats.stratified_indices, then the seeds, one resample at a time, metrics by sklearn."""
    rng = np.random.default_rng(seed)
    good, bad = np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)
    draws_good = rng.integers(0, len(good), size=(n_resamples, len(good)))
    draws_bad = rng.integers(0, len(bad), size=(n_resamples, len(bad)))
    picks = rng.integers(0, len(a), size=(n_resamples, len(a)))  # seeds drawn with replacement (a, b: 2 seeds each)
    diffs = []
    for r in range(n_resamples):
        idx = np.concatenate([good[draws_good[r]], bad[draws_bad[r]]])
        ma = np.mean([metric(labels[idx], a[k][idx]) for k in picks[r]])
        mb = np.mean([metric(labels[idx], b[k][idx]) for k in picks[r]])
        diffs.append(ma - mb)
    point = np.mean([metric(labels, s) for s in a]) - np.mean([metric(labels, s) for s in b])
    return point, np.percentile(diffs, [2.5, 97.5])


@pytest.mark.parametrize("kind", ["acc", "auc"])
def test_paired_bootstrap_matches_hand_computation(kind):
    if kind == "acc":
        a, b = (PROB_A > 0.5).astype(int), (PROB_B > 0.5).astype(int)
        got = stats.paired_bootstrap(stats.accuracy_rows, LABELS, a, b, n_resamples=120, seed=7)
        point, (lo, hi) = _hand_paired(accuracy_score, LABELS, a, b, 120, 7)
    else:
        a, b = PROB_A, PROB_B
        got = stats.paired_bootstrap(stats.auc_rows, LABELS, a, b, n_resamples=120, seed=7)
        point, (lo, hi) = _hand_paired(roc_auc_score, LABELS, a, b, 120, 7)
    assert got.diff == pytest.approx(point, abs=1e-12)
    assert (got.lo, got.hi) == pytest.approx((lo, hi), abs=1e-12)
    assert got.n_images == 10
    # a different seed draws other images
    other = stats.paired_bootstrap(stats.auc_rows if kind == "auc" else stats.accuracy_rows, LABELS, a, b,
                                   n_resamples=120, seed=8)
    assert (other.lo, other.hi) != (got.lo, got.hi)


def test_paired_bootstrap_zero_difference():
    got = stats.paired_bootstrap(stats.auc_rows, LABELS, PROB_A, PROB_A.copy(), n_resamples=200, seed=0)
    assert (got.diff, got.lo, got.hi) == (0.0, 0.0, 0.0)
    assert not got.significant
    assert got.a == pytest.approx(np.mean([roc_auc_score(LABELS, s) for s in PROB_A]))


def test_paired_bootstrap_shape_mismatch():
    with pytest.raises(PipelineError, match="10 labels but 9"):
        stats.paired_bootstrap(stats.auc_rows, LABELS, PROB_A[:, :9], PROB_B, n_resamples=10, seed=0)


def test_bootstrap_interval_matches_hand_computation():
    rng = np.random.default_rng(11)
    good, bad = np.flatnonzero(LABELS == 0), np.flatnonzero(LABELS == 1)
    dg, db = rng.integers(0, 6, (400, 6)), rng.integers(0, 4, (400, 4))
    values = [roc_auc_score(LABELS[i], PROB_A[0][i]) for i in (np.concatenate([good[g], bad[b]]) for g, b in zip(dg, db))]
    got = stats.bootstrap_interval(stats.auc_rows, LABELS, PROB_A[:1], n_resamples=400, seed=11)
    assert got == pytest.approx(tuple(np.percentile(values, [2.5, 97.5])), abs=1e-12)


def test_mcnemar_matches_binomtest_from_a_2x2():
    # 2x2 by hand: both right 3, A only 5, B only 1, both wrong 1
    correct_a = np.array([1, 1, 1, 1, 1, 1, 1, 1, 0, 0], bool)
    correct_b = np.array([1, 1, 1, 0, 0, 0, 0, 0, 1, 0], bool)
    got = stats.mcnemar_exact(correct_a, correct_b)
    assert (got.a_only, got.b_only) == (5, 1)
    assert got.p_value == pytest.approx(sps.binomtest(5, 6, 0.5).pvalue, abs=1e-15)
    # closed form: 2 · P(X >= 5 | n=6, p=1/2) = 2 · 7/64
    assert got.p_value == pytest.approx(14 / 64, abs=1e-15)
    assert stats.mcnemar_exact(correct_a, correct_a).p_value == 1.0
