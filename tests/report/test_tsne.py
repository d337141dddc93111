"""t-SNE of validation features (pipeline_lib.report.tsne): shape, seeding, perplexity, files."""

import numpy as np
import pandas as pd
import pytest

from pipeline_lib.io.errors import PipelineError
from pipeline_lib.features.store import features_frame, write_features
from pipeline_lib.report.config import TsneConfig
from pipeline_lib.report.tsne import EMBEDDING_COLUMNS, effective_perplexity, embed, embed_feature_sets, separation


def _blobs(n=40, d=64, seed=0, gap=4.0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    X = rng.normal(size=(n, d)) + gap * y[:, None] * np.eye(d)[0]
    return X.astype(np.float32), y


def _clusters(n_per=15, d=64, seed=0):
    """Three well-separated Gaussian clusters in d dimensions, each with a small inner spread."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=8.0, size=(3, d))
    y = np.repeat(np.arange(3), n_per)
    return (centres[y] + rng.normal(size=(len(y), d))).astype(np.float32), y


def test_embedding_is_scikit_learns_tsne_with_the_documented_settings():
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    X, _ = _clusters()
    emb = embed(X, seed=3, perplexity=10, max_iter=250, pca_components=20)
    assert emb.coords.shape == (45, 2) and emb.perplexity == 10 and emb.pca_components == 20
    # built here from scikit-learn alone: PCA(20, seeded), then TSNE with PCA init and auto LR
    reduced = PCA(n_components=20, random_state=3).fit_transform(X.astype(np.float64))
    with threadpool_limits(limits=1, user_api="openmp"):
        expected = TSNE(n_components=2, perplexity=10, max_iter=250, init="pca", learning_rate="auto",
                        random_state=3).fit_transform(reduced)
    np.testing.assert_allclose(emb.coords, expected, rtol=1e-7, atol=1e-7)
    assert np.array_equal(emb.coords, embed(X, seed=3, perplexity=10, max_iter=250, pca_components=20).coords)


def test_embedding_keeps_neighbourhoods_and_separates_the_clusters():
    from sklearn.manifold import trustworthiness
    from sklearn.neighbors import KNeighborsClassifier

    X, y = _clusters()
    coords = embed(X, seed=0, perplexity=10, max_iter=500, pca_components=None).coords
    assert trustworthiness(X, coords, n_neighbors=5) > 0.9
    # every point's nearest embedded neighbour is of its own cluster
    assert KNeighborsClassifier(n_neighbors=1).fit(coords, y).score(coords, y) == 1.0
    knn = KNeighborsClassifier(n_neighbors=2).fit(coords, y)  # the point itself + its neighbour
    neighbour = knn.kneighbors(coords, return_distance=False)[:, 1]
    assert (y[neighbour] == y).all()
    # shuffled coordinates (the points' identities lost) are not trustworthy
    shuffled = coords[np.random.default_rng(0).permutation(len(coords))]
    assert trustworthiness(X, shuffled, n_neighbors=5) < 0.7


def test_perplexity_is_lowered_for_few_points_and_pca_skipped():
    X, _ = _blobs(n=10, d=8)
    emb = embed(X, seed=0, perplexity=30, max_iter=250, pca_components=50)
    assert emb.perplexity == pytest.approx(3.0)  # (10 - 1) / 3
    assert emb.pca_components is None  # 8 dimensions: nothing to reduce
    assert effective_perplexity(1000, 30) == 30
    with pytest.raises(PipelineError, match="at least 3 points"):
        effective_perplexity(2, 30)


def test_separated_classes_stay_separated():
    X, y = _blobs(n=60, gap=12.0)
    emb = embed(X, seed=0, perplexity=10, max_iter=500, pca_components=None)
    from sklearn.metrics import silhouette_score

    assert separation(emb.coords, y) == silhouette_score(emb.coords, y) > 0.3
    assert separation(emb.coords, np.zeros(60)) is None


def test_embed_feature_sets_uses_only_validation_rows(tmp_path):
    X, y = _blobs(n=30)
    meta = pd.DataFrame(
        {"id": [f"im{i}" for i in range(30)], "split": ["train"] * 10 + ["val"] * 12 + ["test"] * 8, "label": y}
    )
    paths = {}
    for name, shift in (("pretrained", 0.0), ("finetuned", 1.0)):
        paths[name] = tmp_path / f"{name}.parquet"
        write_features(features_frame(meta, X + shift), paths[name])
    frame, embeddings = embed_feature_sets(paths, TsneConfig(perplexity=30, max_iter=250, pca_components=50), seed=0)
    assert list(frame.columns) == list(EMBEDDING_COLUMNS)
    assert list(frame["features"].unique()) == ["pretrained", "finetuned"]
    assert (frame["split"] == "val").all() and len(frame) == 24
    assert list(frame["id"][:12]) == [f"im{i}" for i in range(10, 22)]
    assert set(embeddings) == {"pretrained", "finetuned"}
    empty = tmp_path / "noval.parquet"
    write_features(features_frame(meta[meta["split"] != "val"], X[meta["split"].to_numpy() != "val"]), empty)
    with pytest.raises(PipelineError, match="noval.parquet: no 'val' rows"):
        embed_feature_sets({"x": empty}, TsneConfig(perplexity=5, max_iter=250, pca_components=None), seed=0)
