"""Feature extraction: shapes, determinism, weights handling (no downloads), Parquet."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from pipeline_lib.features import backbones as B
from pipeline_lib.features import store as S
from pipeline_lib.features import extract as F
from pipeline_lib.data.datasets import ChipImages, eval_transform
from pipeline_lib.io.errors import PipelineError

SIZE = 32


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture()
def frame(tmp_path) -> pd.DataFrame:
    """7 small JPEGs of different sizes (one grayscale, one PNG) with a split column."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(7):
        w, h = 30 + 5 * i, 34 + 3 * i
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        arr[: h // 2] //= 2  # some structure, not only noise
        img = Image.fromarray(arr)
        ext = "jpg"
        if i == 3:
            img = img.convert("L")
        if i == 5:
            ext = "png"
        path = tmp_path / f"c{i}.{ext}"
        img.save(path, quality=85) if ext == "jpg" else img.save(path)
        rows.append({"id": f"c{i}", "path": str(path), "split": ["train", "val", "test"][i % 3],
                     "label": [0, 1, -1][i % 3]})
    return pd.DataFrame(rows)


def test_resnet18_shape_dtype_and_eval_transform_numerics(frame):
    model, record = B.build_backbone("resnet18", "none", seed=0)
    X = F.extract_features(model, frame, image_size=SIZE, batch_size=3, progress=False)
    assert X.shape == (7, 512) and X.dtype == np.float32
    assert np.isfinite(X).all() and np.abs(X).sum() > 0
    assert record.mode == "none" and record.sha256 is None and record.path is None
    # same numbers as the reference path: ChipImages + eval_transform + forward, batch by batch
    ds = ChipImages(frame, eval_transform(SIZE))
    ref = torch.stack([ds[i][0] for i in range(len(ds))])
    with torch.inference_mode():
        Y = torch.cat([model(ref[i:i + 3].contiguous(memory_format=torch.channels_last))
                       for i in range(0, 7, 3)]).numpy()
    assert np.array_equal(X, Y)


def test_batched_decode_equals_eval_transform(frame):
    ds = ChipImages(frame, eval_transform(SIZE))
    ref = torch.stack([ds[i][0] for i in range(len(ds))])
    u8 = F.decode_batch(frame["path"].tolist(), SIZE)
    assert u8.dtype == torch.uint8 and u8.shape == (7, 3, SIZE, SIZE)
    assert torch.equal(F.preprocess_batch(u8), ref)
    # same-size images take the one-call batch resize: still identical
    same = [frame["path"][0]] * 3
    ref0 = torch.stack([ChipImages(frame.iloc[[0, 0, 0]], eval_transform(20))[i][0] for i in range(3)])
    assert torch.equal(F.preprocess_batch(F.decode_batch(same, 20)), ref0)


def test_determinism_by_seed_and_decode_modes(frame):
    a, _ = B.build_backbone("resnet18", "none", seed=1)
    b, _ = B.build_backbone("resnet18", "none", seed=1)
    c, _ = B.build_backbone("resnet18", "none", seed=2)
    kw = dict(image_size=SIZE, batch_size=4, progress=False)
    Xa = F.extract_features(a, frame, **kw)
    Xb = F.extract_features(b, frame, prefetch=2, **kw)  # decode thread: same numbers
    Xw = F.extract_features(b, frame, num_workers=1, **kw)  # worker process: same numbers
    Xc = F.extract_features(c, frame, **kw)
    assert np.array_equal(Xa, Xb) and np.array_equal(Xa, Xw)
    assert not np.allclose(Xa, Xc)


def test_generic_backbone_and_train_mode_restored(frame):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3), torch.nn.AdaptiveAvgPool2d(1))
    net.train()
    X = F.extract_features(net, frame, image_size=SIZE, batch_size=4, progress=False)
    assert X.shape == (7, 5) and net.training


def test_imagenet_without_cache_names_path_and_url(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    expected = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert B.hub_cache_path("resnet18") == expected
    with pytest.raises(PipelineError) as err:
        B.build_backbone("resnet18", "imagenet", seed=0)
    msg = str(err.value)
    assert str(expected) in msg
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in msg
    assert "features.weights_file" in msg and "features.weights: none" in msg
    assert "\n" not in msg
    # once the file is in the cache it is used (and recorded) without any download
    expected.parent.mkdir(parents=True)
    torch.save(B.ARCHS["resnet18"][0](weights=None).state_dict(), expected)
    _, record = B.build_backbone("resnet18", "imagenet", seed=0)
    assert record.path == expected.as_posix() and record.mode == "imagenet" and record.sha256


def test_explicit_weights_file_loaded_and_hashed(tmp_path):
    torch.manual_seed(123)
    src = B.ARCHS["resnet18"][0](weights=None)  # full model, 1000-class head included
    path = tmp_path / "w.pth"
    torch.save(src.state_dict(), path)
    model, record = B.build_backbone("resnet18", "imagenet", seed=0, weights_file=path)
    assert record.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record.path == path.as_posix() and record.url.endswith("resnet18-f37072fd.pth")
    assert torch.equal(model.conv1.weight, src.conv1.weight)
    assert isinstance(model.fc, torch.nn.Identity)
    # what the features rule writes as {name}.weights.json
    saved = json.loads(json.dumps(record.to_dict()))
    assert saved["sha256"] == record.sha256 and saved["arch"] == "resnet18"


def test_corrupt_or_wrong_weights_file(tmp_path):
    bad = tmp_path / "corrupt.pth"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(PipelineError, match="corrupt.pth"):
        B.build_backbone("resnet18", "imagenet", seed=0, weights_file=bad)
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, wrong)
    with pytest.raises(PipelineError, match="wrong.pth"):
        B.build_backbone("resnet18", "imagenet", seed=0, weights_file=wrong)
    with pytest.raises(PipelineError, match="missing.pth"):
        B.build_backbone("resnet18", "imagenet", seed=0, weights_file=tmp_path / "missing.pth")


def test_bad_params_named():
    with pytest.raises(PipelineError, match="features.arch"):
        B.build_backbone("vgg", "none", seed=0)
    with pytest.raises(PipelineError, match="features.weights"):
        B.build_backbone("resnet18", "random", seed=0)


def test_unreadable_image_names_file(frame, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff garbage")
    bad = pd.concat([frame, pd.DataFrame([{"id": "b", "path": str(broken), "split": "test", "label": -1}])])
    model, _ = B.build_backbone("resnet18", "none", seed=0)
    with pytest.raises(PipelineError, match="broken.jpg"):
        F.extract_features(model, bad, image_size=SIZE, batch_size=4, progress=False)


def test_parquet_round_trip(tmp_path, frame):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((7, 16)).astype(np.float32)
    X[0, 0] = np.float32(1e-38)
    df = S.features_frame(frame, X)
    path = tmp_path / "feats" / "pretrained.parquet"
    S.write_features(df, path)
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    assert str(schema.field("feature").type).startswith("fixed_size_list<") and "[16]" in str(
        schema.field("feature").type)
    meta, Y = S.load_features(path)
    assert Y.dtype == np.float32 and np.array_equal(X, Y)
    assert meta["id"].tolist() == frame["id"].tolist()
    assert meta["label"].tolist() == frame["label"].tolist() and meta["label"].dtype == np.int8
    assert meta["split"].tolist() == frame["split"].tolist()
    # byte-identical when written twice (DVC caching, reproducibility)
    S.write_features(df, tmp_path / "again.parquet")
    assert (tmp_path / "again.parquet").read_bytes() == path.read_bytes()
    with pytest.raises(PipelineError, match="nope.parquet"):
        S.load_features(tmp_path / "nope.parquet")


def test_the_features_config_is_the_features_section_whole():
    """``FeaturesConfig.from_params`` takes the params.yaml section as written: every schema key
    is a field, an unknown key is a one-line error naming ``features.<key>``."""
    from dataclasses import asdict, fields
    from pathlib import Path

    import yaml

    from pipeline_lib.params import load_schema

    root = Path(__file__).resolve().parents[2]
    schema = load_schema(root / "workflow/schemas/params.schema.yaml")
    assert set(schema["properties"]["features"]["properties"]) == {f.name for f in fields(F.FeaturesConfig)}
    section = yaml.safe_load((root / "params.yaml").read_text())["features"]
    assert asdict(F.FeaturesConfig.from_params(section)) == section
    with pytest.raises(PipelineError, match=r"^features\.archh: unknown key"):
        F.FeaturesConfig.from_params({**section, "archh": "resnet18"})
