"""ChipImages.preload: images decoded once per job give bitwise the items of decoding every epoch,
the random steps draw the same numbers, and nothing is decoded again after the preload."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2 as T

from pipeline_lib.data import datasets as data
from pipeline_lib.data.datasets import ChipImages, eval_transform, split_transform, train_transform_for


@pytest.fixture
def frame(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        paths.append(str(tmp_path / f"{i}.jpg"))
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(paths[-1], quality=90)
    return pd.DataFrame({"path": paths, "label": [0, 1, 0, 1, 1]})


def _items(dataset: ChipImages, seed: int) -> list[torch.Tensor]:
    torch.manual_seed(seed)  # the random steps draw from torch's global generator
    return [dataset[i][0] for i in range(len(dataset))] + [dataset[i][0] for i in (3, 1)]


@pytest.mark.parametrize("augment", [{}, {"hflip": True, "vflip": True}, {"hflip": True, "cutout": 6},
                                     {"crop_scale": 0.7, "rotation_deg": 10.0}])
def test_preloaded_items_equal_decoding_every_time(frame, augment):
    fresh = ChipImages(frame, train_transform_for(16, augment))
    kept = ChipImages(frame, train_transform_for(16, augment))
    assert kept.preload() is not None
    for a, b in zip(_items(fresh, 7), _items(kept, 7)):
        assert torch.equal(a, b)
    # and the global generator ends where it would have
    torch.manual_seed(3), _items(fresh, 3)
    after_fresh = torch.rand(1)
    _items(kept, 3)
    assert torch.equal(torch.rand(1), after_fresh)


def test_the_eval_transform_is_kept_whole_and_nothing_is_decoded_again(frame, monkeypatch):
    dataset = ChipImages(frame, eval_transform(16))
    reference = [eval_transform(16)(data.load_rgb(p)) for p in frame["path"]]
    assert dataset.preload() == 5 * 3 * 16 * 16 * 4  # float32, normalised
    monkeypatch.setattr(data, "load_rgb", lambda path: pytest.fail(f"decoded {path} again"))
    for i, ref in enumerate(reference):
        image, label = dataset[i]
        assert torch.equal(image, ref) and label == frame["label"][i]


def test_flips_keep_the_resized_uint8_and_too_large_a_set_is_decoded_every_epoch(frame):
    fixed, rest = split_transform(train_transform_for(16, {"hflip": True}))
    assert [type(s) for s in fixed.transforms] == [T.ToImage, T.Resize]
    assert [type(s) for s in rest.transforms] == [T.RandomHorizontalFlip, T.ToDtype, T.Normalize]
    dataset = ChipImages(frame, train_transform_for(16, {"hflip": True}))
    assert dataset.preload() == 5 * 3 * 16 * 16  # uint8 at the training size
    small = ChipImages(frame, train_transform_for(16, {"hflip": True}))
    assert small.preload(max_bytes=5 * 3 * 16 * 16 - 1) is None
    torch.manual_seed(0)
    a = small[2][0]
    torch.manual_seed(0)
    assert torch.equal(a, dataset[2][0])
    assert split_transform(lambda image: image)[0] is None
