"""t-SNE (scikit-learn) of validation features: pretrained vs fine-tuned ResNet.

``embed`` is seeded (``random_state``) and deterministic for a given seed on one machine;
with the PCA initialisation the seed only reaches the randomized PCA, so the picture
hardly depends on it (a property, not a bug: t-SNE's layout is then stable).
The perplexity must be below the number of points; with very few points (the tiny test
configuration) it is lowered to ``(n - 1) / 3`` and the value used is reported.
Optional PCA first (``pca_components``), the usual way to denoise 512-d features.

The t-SNE runs with one OpenMP thread: scikit-learn and torch each ship a libgomp, and with
both loaded their thread pools fight (10-20 s for ten points on two cores instead of 0.2 s);
one thread is also what makes the result bitwise repeatable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pandas as pd

from ..io.errors import PipelineError
from ..features.store import load_features
from .config import TsneConfig

EMBEDDING_COLUMNS = ("features", "id", "split", "label", "x", "y")


@dataclass(frozen=True)
class Embedding:
    coords: np.ndarray  # [N, 2] float64
    perplexity: float  # the value used
    pca_components: int | None  # the value used (None: no PCA)


def effective_perplexity(n: int, perplexity: float) -> float:
    """``perplexity``, lowered to ``(n - 1) / 3`` when there are too few points for it."""
    if n < 3:
        raise PipelineError(f"t-SNE needs at least 3 points, got {n}; check split.val_good / split.val_bad")
    return float(min(perplexity, (n - 1) / 3.0))


def embed(
    X: np.ndarray, *, seed: int, perplexity: float = 30.0, max_iter: int = 1000, pca_components: int | None = 50
) -> Embedding:
    """2-D t-SNE of the rows of ``X`` (PCA init, automatic learning rate), seeded."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"expected a 2-D feature matrix, got shape {X.shape}")
    n = X.shape[0]
    perp = effective_perplexity(n, perplexity)
    used_pca = None
    if pca_components and min(n, X.shape[1]) > pca_components:
        used_pca = int(pca_components)
        X = PCA(n_components=used_pca, random_state=seed).fit_transform(X)
    tsne = TSNE(
        n_components=2,
        perplexity=perp,
        max_iter=int(max_iter),
        init="pca",
        learning_rate="auto",
        random_state=int(seed),
    )
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="openmp"):
        coords = tsne.fit_transform(X)
    return Embedding(coords=np.asarray(coords, dtype=np.float64), perplexity=perp, pca_components=used_pca)


def validation_features(path: str | os.PathLike, split: str = "val") -> tuple[pd.DataFrame, np.ndarray]:
    """Rows of one split (default: validation) of a features Parquet file."""
    meta, X = load_features(path)
    keep = (meta["split"] == split).to_numpy()
    if not keep.any():
        raise PipelineError(f"{path}: no '{split}' rows; re-run the features stage")
    return meta[keep].reset_index(drop=True), X[keep]


def embed_feature_sets(
    paths: Mapping[str, str | os.PathLike], config: TsneConfig, *, seed: int, split: str = "val"
) -> tuple[pd.DataFrame, dict[str, Embedding]]:
    """One t-SNE per feature set (same ``seed``: ``report.seed``); the long frame ``features,id,split,label,x,y``."""
    frames, embeddings = [], {}
    for name, path in paths.items():
        meta, X = validation_features(path, split)
        emb = embed(X, seed=seed, perplexity=config.perplexity, max_iter=config.max_iter,
                    pca_components=config.pca_components)
        embeddings[name] = emb
        frames.append(
            pd.DataFrame(
                {
                    "features": name,
                    "id": meta["id"].astype(str).to_numpy(),
                    "split": meta["split"].astype(str).to_numpy(),
                    "label": meta["label"].astype(int).to_numpy(),
                    "x": emb.coords[:, 0],
                    "y": emb.coords[:, 1],
                }
            )
        )
    return pd.concat(frames, ignore_index=True)[list(EMBEDDING_COLUMNS)], embeddings


def separation(coords: np.ndarray, labels: np.ndarray) -> float | None:
    """Silhouette score of the classes in the embedding (None with a single class)."""
    from sklearn.metrics import silhouette_score

    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2 or len(labels) < 3:
        return None
    return float(silhouette_score(coords, labels))
