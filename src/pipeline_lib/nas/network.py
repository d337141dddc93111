"""The retrain network: cells built from a Genotype (DARTS's or ENAS's), stacked from scratch.

As in DARTS's evaluation network: a 3x3 conv stem, ``layers`` cells with reduction cells
at layers//3 and 2*layers//3 (channels doubled there), each cell's inputs preprocessed
(ReLU-conv1x1-BN, or FactorizedReduce after a reduction cell), an optional auxiliary
head at 2/3 depth, drop path whose probability the training loop ramps linearly
(``on_epoch_start``), global average pooling and a linear classifier. The cell output
concatenates the genotype's ``concat`` nodes, so ENAS cells (which concatenate only
their unused nodes) size themselves from ``len(concat)``.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from .genotypes import Genotype
from .ops import FactorizedReduce, Identity, ReLUConvBN, make_op


def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Zero whole samples of a branch with probability ``drop_prob`` (mask on x's own device)."""
    keep = 1.0 - drop_prob
    mask = torch.empty(x.size(0), 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x / keep * mask


class Cell(nn.Module):
    def __init__(self, edges, concat, C_prev_prev: int, C_prev: int, C: int, *, reduction: bool, reduction_prev: bool):
        super().__init__()
        self.reduction = reduction
        self.preprocess0 = FactorizedReduce(C_prev_prev, C) if reduction_prev else ReLUConvBN(C_prev_prev, C, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0)
        self.indices = [index for _, index in edges]
        self.concat = list(concat)
        self.multiplier = len(self.concat)
        # ops on the cell inputs (indices 0, 1) reduce; ops between nodes keep the size
        self.ops = nn.ModuleList(
            make_op(op, C, 2 if reduction and index < 2 else 1, affine=True) for op, index in edges
        )

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for node in range(len(self.ops) // 2):
            total = 0
            for k in (2 * node, 2 * node + 1):
                h = self.ops[k](states[self.indices[k]])
                if self.training and drop_prob > 0 and not isinstance(self.ops[k], Identity):
                    h = drop_path(h, drop_prob)
                total = total + h
            states.append(total)
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHead(nn.Module):
    """DARTS's auxiliary classifier, with adaptive pooling so any input size works."""

    def __init__(self, C: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(2),
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


class NASNetwork(nn.Module):
    def __init__(
        self,
        genotype: Genotype,
        *,
        channels: int = 16,
        layers: int = 8,
        num_classes: int = 2,
        auxiliary: bool = False,
        drop_path: float = 0.0,
        stem_multiplier: int = 3,
    ):
        super().__init__()
        self.drop_path_max = float(drop_path)
        self.drop_path_prob = 0.0
        C_curr = stem_multiplier * channels
        self.stem = nn.Sequential(nn.Conv2d(3, C_curr, 3, padding=1, bias=False), nn.BatchNorm2d(C_curr))
        C_prev_prev, C_prev, C_curr = C_curr, C_curr, channels
        reductions = {layers // 3, 2 * layers // 3}
        self.aux_position = 2 * layers // 3 if auxiliary else None
        self.cells = nn.ModuleList()
        reduction_prev = False
        aux_channels = 0
        for i in range(layers):
            reduction = i in reductions
            if reduction:
                C_curr *= 2
            kind = "reduce" if reduction else "normal"
            cell = Cell(getattr(genotype, kind), getattr(genotype, f"{kind}_concat"), C_prev_prev, C_prev, C_curr,
                        reduction=reduction, reduction_prev=reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, cell.multiplier * C_curr
            if i == self.aux_position:
                aux_channels = C_prev
        self.auxiliary_head = AuxiliaryHead(aux_channels, num_classes) if auxiliary else None
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        """Drop-path probability ramps linearly from 0 to ``drop_path`` over training."""
        self.drop_path_prob = self.drop_path_max * epoch / max(1, epochs)

    def forward(self, x: torch.Tensor):
        s0 = s1 = self.stem(x)
        aux_logits = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self.aux_position and self.training:
                aux_logits = self.auxiliary_head(s1)
        logits = self.classifier(self.global_pooling(s1).flatten(1))
        if aux_logits is not None:
            return logits, aux_logits
        return logits


def build_network(genotype: Genotype | Mapping[str, Any], **kwargs: Any) -> NASNetwork:
    if not isinstance(genotype, Genotype):
        genotype = Genotype.from_dict(dict(genotype))
    return NASNetwork(genotype, **kwargs)
