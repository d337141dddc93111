"""The data an architecture search sees: two disjoint halves of the *training* split.

DARTS trains weights on one half and α on the other; ENAS trains shared weights on one
and rewards the controller on the other. Neither ever sees the validation split (model
selection) or test. Images are decoded once into normalised tensors: a search walks over
them for many epochs and decoding would otherwise dominate at small sizes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torchvision.transforms.v2 import functional as TF

from ..data.datasets import IMAGENET_MEAN, IMAGENET_STD
from ..io.errors import PipelineError


def train_halves(
    split_frame: pd.DataFrame, *, seed: int, max_images: int | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seeded, class-stratified halves of the rows with ``split == "train"``: every image, in the
    classes' proportions (the searches balance the classes by sampling, ``balance_classes``).
    ``max_images`` caps the total, still in the classes' proportions.
    """
    train = split_frame[split_frame["split"] == "train"].sort_values("id").reset_index(drop=True)
    labels = train["label"].to_numpy()
    rng = np.random.default_rng(seed)
    counts = {label: int((labels == label).sum()) for label in (0, 1)}
    total = sum(counts.values())
    halves: tuple[list, list] = ([], [])
    for label in (0, 1):
        idx = np.flatnonzero(labels == label)
        if len(idx) < 2:
            raise PipelineError(f"architecture search: the train split has {len(idx)} images of class {label}; needs at least 2")
        idx = rng.permutation(idx)[: counts[label]]
        if max_images:
            idx = idx[: max(2, round(max_images * counts[label] / total))]
        cut = len(idx) // 2
        halves[0].extend(idx[:cut])
        halves[1].extend(idx[cut:])
    return train.iloc[sorted(halves[0])].reset_index(drop=True), train.iloc[sorted(halves[1])].reset_index(drop=True)


def as_tensors(frame: pd.DataFrame, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(images [N, 3, S, S] float32, ImageNet-normalised; labels [N] int64), as the eval transform gives."""
    from ..features.extract import decode_batch  # torchvision decoders: imported only when needed

    images = decode_batch(frame["path"].tolist(), image_size)
    images = TF.normalize(TF.to_dtype(images, torch.float32, scale=True), IMAGENET_MEAN, IMAGENET_STD)
    return images, torch.tensor(frame["label"].to_numpy(dtype=np.int64))
