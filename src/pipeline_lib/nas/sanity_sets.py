"""Two small data sets that a working architecture search must learn, independent of the chips.

A search that ends at chance on the chips may be a search that does not work, or chips that its
budget cannot see. These sets separate the two (issue 28): each search must clear chance on its
own held-out half of them within a small CPU budget (``bench/search_sanity.py``,
``tests/nas/test_search_sanity.py``).

- ``digits_halves``: scikit-learn's bundled handwritten digits (8x8, 1,797 images, shipped with
  the package: nothing is downloaded), parity as the label (odd = 1, "bad"), class-balanced,
  upsampled to ``size`` px and repeated to 3 channels. Every classical model reaches 96-99 % on
  it: a search that stays at chance here is broken.
- ``planted_patch_halves``: Gaussian noise images in which class 1 carries one small bright
  square at a uniformly random place: the small-object case of the chips (a defect of a few
  pixels anywhere on the die), without the chips' other structure.

Both return two disjoint, class-balanced ``TensorDataset`` halves (weights' / held-out), seeded,
as ``search_data.as_tensors`` gives them: float32 images, roughly zero mean and unit variance.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset


def _halves(x: torch.Tensor, y: torch.Tensor, n_per_half: int, seed: int) -> tuple[TensorDataset, TensorDataset]:
    """Two disjoint halves of ``n_per_half`` images each, half of each class, in a seeded order."""
    rng = np.random.default_rng(seed)
    per_class = n_per_half // 2
    picked = {c: rng.permutation(np.flatnonzero(y.numpy() == c)) for c in (0, 1)}
    if min(len(v) for v in picked.values()) < 2 * per_class:
        raise ValueError(f"sanity set: {2 * n_per_half} images asked, fewer than {per_class * 2} in a class")
    halves = []
    for h in range(2):
        idx = np.concatenate([picked[c][h * per_class:(h + 1) * per_class] for c in (0, 1)])
        idx = rng.permutation(idx)
        halves.append(TensorDataset(x[idx].contiguous(), y[idx].contiguous()))
    return halves[0], halves[1]


def digits_halves(n_per_half: int = 300, size: int = 32, seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """scikit-learn's digits, parity as the class, upsampled to ``size`` px (bilinear), 3 channels."""
    from sklearn.datasets import load_digits  # the data ships inside scikit-learn

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    x = (x - x.mean()) / x.std()
    y = torch.tensor(digits.target % 2, dtype=torch.long)
    return _halves(x, y, n_per_half, seed)


def planted_patch_halves(n_per_half: int = 300, size: int = 32, patch: int = 3, contrast: float = 2.0,
                         seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """Noise (sd 1) images; class 1 has a ``patch`` x ``patch`` square raised by ``contrast`` sd
    at a uniformly random place (the same on the 3 channels)."""
    gen = torch.Generator().manual_seed(int(seed))
    n = 2 * n_per_half + 2
    x = torch.randn(n, 3, size, size, generator=gen)
    y = (torch.arange(n) % 2).long()
    corners = torch.randint(0, size - patch + 1, (n, 2), generator=gen)
    for i in torch.nonzero(y).flatten().tolist():
        r, c = corners[i].tolist()
        x[i, :, r:r + patch, c:c + patch] += contrast
    return _halves(x, y, n_per_half, seed)
