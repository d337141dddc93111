"""t-SNE of validation features (pipeline_lib.report.tsne): shape, seeding, perplexity, files."""

import numpy as np
import pandas as pd
import pytest

from pipeline_lib.errors import PipelineError
from pipeline_lib.feature_store import features_frame, write_features
from pipeline_lib.report.tsne import EMBEDDING_COLUMNS, effective_perplexity, embed, embed_feature_sets, separation


def _blobs(n=40, d=64, seed=0, gap=4.0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    X = rng.normal(size=(n, d)) + gap * y[:, None] * np.eye(d)[0]
    return X.astype(np.float32), y


def test_shape_and_determinism_by_seed():
    X, _ = _blobs()
    a = embed(X, seed=3, perplexity=10, max_iter=250, pca_components=20)
    b = embed(X, seed=3, perplexity=10, max_iter=250, pca_components=20)
    assert a.coords.shape == (40, 2)
    assert np.isfinite(a.coords).all()
    assert np.array_equal(a.coords, b.coords)
    # PCA initialisation: the seed only enters through the randomized PCA, so another seed
    # gives (almost) the same picture; determinism for one seed is what the report needs
    assert a.pca_components == 20 and a.perplexity == 10


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
    assert separation(emb.coords, y) > 0.3
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
    frame, embeddings = embed_feature_sets(paths, seed=0, perplexity=30, max_iter=250, pca_components=50)
    assert list(frame.columns) == list(EMBEDDING_COLUMNS)
    assert list(frame["features"].unique()) == ["pretrained", "finetuned"]
    assert (frame["split"] == "val").all() and len(frame) == 24
    assert list(frame["id"][:12]) == [f"im{i}" for i in range(10, 22)]
    assert set(embeddings) == {"pretrained", "finetuned"}
    empty = tmp_path / "noval.parquet"
    write_features(features_frame(meta[meta["split"] != "val"], X[meta["split"].to_numpy() != "val"]), empty)
    with pytest.raises(PipelineError, match="noval.parquet: no 'val' rows"):
        embed_feature_sets({"x": empty}, seed=0, perplexity=5, max_iter=250, pca_components=None)
