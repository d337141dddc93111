"""A frozen backbone's outputs, computed once per job (ResNet LL's training data).

ResNet LL trains only its head: the trunk is frozen and kept in eval mode, and without
augmentation every epoch feeds it the same images, so every epoch recomputed the same
trunk outputs (8 epochs x 1,000 ResNet-18 forwards for a 1,026-parameter head). Training the
head on the outputs computed once is the same computation: the same shuffled order (the
loader's seeded generator draws over the same length), the head in train mode (its BN1d
takes batch statistics as before), the trunk in eval mode with no gradient. The default
study's three ResNet LL jobs took 30-46 s each, ~30 s of it in the 8 epochs, and 21-23 s
this way on a host 1.26x slower (bench/README.md, "ResNet LL: the frozen trunk once").
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..training.config import TrainConfig
from ..training.evaluation import forward_all


class TrunkOutputs(Dataset):
    """(trunk output, label) pairs; ``labels`` as the image dataset's, for the class weights."""

    def __init__(self, outputs: torch.Tensor, labels: np.ndarray):
        self.outputs, self.labels = outputs, np.asarray(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.outputs[index], int(self.labels[index])


def head_only(model: torch.nn.Module, augment: Mapping[str, Any] | None) -> bool:
    """True when only ``model.classifier`` trains and the training images are not augmented."""
    return bool(getattr(model, "freeze_backbone", False)) and not any((augment or {}).values())


def trunk_outputs(model: torch.nn.Module, datasets: Sequence[Dataset], loop: TrainConfig,
                  device: torch.device | str) -> list[TrunkOutputs]:
    """``model.features`` (eval mode, no gradient) over each dataset in order, once."""
    return [TrunkOutputs(forward_all(model.features, dataset, batch_size=loop.eval_batch_size or loop.batch_size,
                                     device=device, num_workers=loop.num_workers, amp=loop.amp,
                                     channels_last=loop.channels_last), dataset.labels)
            for dataset in datasets]
