"""Intervals and paired tests for the results table (issue 17).

- ``t_interval``: the mean over training seeds ± Student's t quantile × sd/√n (two or more seeds).
  It measures how much the number moves with the seed on these fixed images, not how it would
  move on other images.
- ``bootstrap_interval``: percentile bootstrap over images of one run's metric (one seed only:
  the image-sampling spread is then the only spread there is).
- ``paired_bootstrap``: the difference of a metric between two models on the *same* resampled
  images (both models see the same indices in every resample), each model's metric averaged
  over its seeds *drawn with replacement* in every resample: a two-level bootstrap (seeds, then
  images), so a model whose number swings with the training seed gets the wide interval it
  deserves, not only the image-sampling spread. Resampling of images is stratified by class, so
  every resample holds both classes and the AUC is always defined (as pROC's AUC bootstrap).
- ``mcnemar_exact``: the exact McNemar test, a two-sided binomial test on the discordant pairs.

Metrics work on matrices (one row per resample or seed) so the resamples need no Python loop:
the AUC is the Mann-Whitney statistic from average ranks, which counts a tied good/bad pair as
one half, exactly as ``sklearn.metrics.roc_auc_score``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import stats

from ..io.errors import PipelineError

THRESHOLD = 0.5  # prob_bad above it: called bad (a 2-logit argmax is bad exactly when softmax > 0.5)


def t_interval(values, level: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean of ``values`` (ddof=1); (mean, mean) when they are all equal."""
    x = np.asarray(values, np.float64)
    if x.size < 2:
        raise PipelineError(f"a t-interval needs at least 2 values, got {x.size}")
    mean, sd = float(x.mean()), float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, x.size - 1)) * sd / np.sqrt(x.size)
    return mean - half, mean + half


def accuracy_rows(labels: np.ndarray, called_bad: np.ndarray) -> np.ndarray:
    """Accuracy per row: ``labels`` and ``called_bad`` are (rows, images), 0/1."""
    return np.mean(np.asarray(labels) == np.asarray(called_bad), axis=-1)


def auc_rows(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC AUC per row (bad = 1 positive) from average ranks; NaN for a row with one class."""
    labels = np.atleast_2d(labels).astype(bool)
    scores = np.atleast_2d(np.asarray(scores, np.float64))
    labels = np.broadcast_to(labels, scores.shape)
    ranks = stats.rankdata(scores, axis=-1)  # method="average": ties count one half
    n_pos = labels.sum(axis=-1)
    n_neg = labels.shape[-1] - n_pos
    u = np.where(labels, ranks, 0.0).sum(axis=-1) - n_pos * (n_pos + 1) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def stratified_indices(labels, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(n_resamples, n) image indices: each class resampled with replacement within itself.

    Draw order (what a hand computation repeats): for class 0 then class 1, one
    ``rng.integers(0, n_class, size=(n_resamples, n_class))`` into that class's positions."""
    labels = np.asarray(labels)
    parts = []
    for cls in (0, 1):
        where = np.flatnonzero(labels == cls)
        if where.size:
            parts.append(where[rng.integers(0, where.size, size=(n_resamples, where.size))])
    return np.concatenate(parts, axis=1)


# A metric of many runs on one image set: (labels (n,), scores (runs, n)) -> (runs,).
# accuracy_rows takes 0/1 calls as its scores, auc_rows probabilities.
Metric = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _drawn_seed_mean(metric: Metric, labels: np.ndarray, scores: np.ndarray, idx: np.ndarray,
                     picks: np.ndarray) -> np.ndarray:
    """For each resample r: the metric on images ``idx[r]``, averaged over the seeds ``picks[r]``."""
    per_seed = np.stack([metric(labels[idx], s[idx]) for s in scores], axis=1)  # (resamples, seeds)
    return np.take_along_axis(per_seed, picks, axis=1).mean(axis=1)


def bootstrap_interval(metric: Metric, labels, scores, *, n_resamples: int, seed: int,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval (stratified over images) of one run's ``metric``."""
    labels = np.asarray(labels)
    idx = stratified_indices(labels, n_resamples, np.random.default_rng(seed))
    scores = np.atleast_2d(scores)
    every_seed = np.broadcast_to(np.arange(scores.shape[0]), (n_resamples, scores.shape[0]))
    values = _drawn_seed_mean(metric, labels, scores, idx, every_seed)
    lo, hi = np.nanquantile(values, [0.5 - level / 2, 0.5 + level / 2])
    return float(lo), float(hi)


@dataclass(frozen=True)
class PairedResult:
    """A - B of a metric, seeds averaged, with its percentile bootstrap interval."""

    a: float
    b: float
    diff: float
    lo: float
    hi: float
    n_images: int

    @property
    def significant(self) -> bool:
        return bool(self.lo > 0 or self.hi < 0)


def paired_bootstrap(metric: Metric, labels, scores_a, scores_b, *, n_resamples: int, seed: int,
                     level: float = 0.95) -> PairedResult:
    """Two-level paired bootstrap of metric(A) - metric(B) on the same images.

    ``scores_a``/``scores_b``: (seeds, images), the same image order as ``labels``. The point
    estimate averages each model's metric over its seeds. Every resample draws the images
    (``stratified_indices``, shared by both models), then each model's seeds with replacement
    (``rng.integers(0, seeds, (n_resamples, seeds))``; one draw serves both models when they have
    as many seeds, so a model against itself differs by exactly 0). One ``default_rng(seed)``."""
    labels = np.asarray(labels)
    a, b = np.atleast_2d(scores_a), np.atleast_2d(scores_b)
    if a.shape[1] != labels.size or b.shape[1] != labels.size:
        raise PipelineError(f"paired bootstrap: {labels.size} labels but {a.shape[1]} and {b.shape[1]} predictions")
    point_a, point_b = float(np.mean(metric(labels, a))), float(np.mean(metric(labels, b)))
    rng = np.random.default_rng(seed)
    idx = stratified_indices(labels, n_resamples, rng)
    picks_a = rng.integers(0, a.shape[0], size=(n_resamples, a.shape[0]))
    picks_b = picks_a if b.shape[0] == a.shape[0] else rng.integers(0, b.shape[0], size=(n_resamples, b.shape[0]))
    diffs = _drawn_seed_mean(metric, labels, a, idx, picks_a) - _drawn_seed_mean(metric, labels, b, idx, picks_b)
    lo, hi = np.nanquantile(diffs, [0.5 - level / 2, 0.5 + level / 2])
    return PairedResult(point_a, point_b, point_a - point_b, float(lo), float(hi), int(labels.size))


@dataclass(frozen=True)
class McNemar:
    """Exact McNemar: ``a_only`` images A gets right and B wrong, ``b_only`` the reverse."""

    a_only: int
    b_only: int
    p_value: float


def mcnemar_exact(correct_a, correct_b) -> McNemar:
    """Two-sided exact binomial test (p = 1/2) on the discordant pairs; p = 1 with none."""
    ca, cb = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    a_only, b_only = int(np.sum(ca & ~cb)), int(np.sum(~ca & cb))
    n = a_only + b_only
    p = 1.0 if n == 0 else float(stats.binomtest(a_only, n, 0.5, alternative="two-sided").pvalue)
    return McNemar(a_only, b_only, p)
