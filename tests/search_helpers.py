"""Test data for the architecture searches: two disjoint seeded halves of a small dataset.

The pipeline takes its halves from the split file (``search_data.train_halves``); the library
tests work on in-memory tensors and only need two disjoint parts of one dataset.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, Subset


def halves(dataset: Dataset, seed: int) -> tuple[Subset, Subset]:
    """Two disjoint random halves of ``dataset`` (weights' half first), seeded."""
    n = len(dataset)  # type: ignore[arg-type]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed))).tolist()
    cut = min(max(round(n / 2), 2), n - 2)
    return Subset(dataset, sorted(perm[:cut])), Subset(dataset, sorted(perm[cut:]))
