"""The retrain network built from any Genotype (DARTS's or ENAS's), as DARTS's NetworkCIFAR.

- Stem: conv3x3 (``stem_multiplier``·C channels, stride ``stem_stride``) + BN.
- ``layers`` cells; reduction cells (channels doubled, stride 2 on the edges from the two
  inputs) at ``layers // 3`` and ``2 * layers // 3``. Cell inputs are preprocessed by
  ReLU-conv1x1-BN, or by FactorizedReduce when the previous cell reduced (so the older
  input matches the new resolution).
- A cell's output concatenates the nodes listed in the genotype's ``*_concat``: all nodes
  for DARTS, the unused ones for ENAS; the next cell's 1x1 preprocessing then plays the
  role of ENAS's projection. Channel counts follow ``len(concat)`` per cell type.
- Drop path: in training, every op output except identity is zeroed per sample with
  probability ``model.drop_path_prob`` and rescaled by 1/keep; the mask is created on the
  input's device and dtype. The attribute is ramped linearly per epoch as DARTS does
  (``drop_path_prob = drop_path_max · epoch / epochs``) by ``on_epoch_start(epoch,
  epochs)``, the hook the shared training loop calls before every epoch.
- Auxiliary head (``auxiliary=True``) after the cell at ``2 * layers // 3``: in training
  mode ``forward`` returns ``(logits, aux_logits)``, otherwise logits only. DARTS's head
  pools 5x5/stride 3 on an 8x8 map (CIFAR); here the pooling is adaptive to 2x2 so any
  input size works (identical layout of the rest of the head).
- Global average pooling before the classifier: any input size (32-128 px, odd sizes
  included) works.

DARTS's Cutout is ``pipeline_lib.data.datasets.Cutout`` (``augment: {cutout: N}`` of the loop).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .genotypes import Genotype
from .ops import FactorizedReduce, Identity, ReLUConvBN, make_op


def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Zero whole samples with probability ``drop_prob``, scale the rest by 1/keep."""
    if drop_prob <= 0.0:
        return x
    keep = 1.0 - drop_prob
    mask = torch.empty((x.shape[0], 1, 1, 1), dtype=x.dtype, device=x.device).bernoulli_(keep)
    return x.div(keep).mul(mask)


class Cell(nn.Module):
    def __init__(self, genotype: Genotype, C_prev_prev: int, C_prev: int, C: int, reduction: bool, reduction_prev: bool):
        super().__init__()
        self.reduction = reduction
        self.preprocess0 = FactorizedReduce(C_prev_prev, C) if reduction_prev else ReLUConvBN(C_prev_prev, C, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0)
        edges = genotype.reduce if reduction else genotype.normal
        self.concat = tuple(genotype.reduce_concat if reduction else genotype.normal_concat)
        self.nodes = len(edges) // 2
        self.indices = tuple(index for _, index in edges)
        self.ops = nn.ModuleList(make_op(op, C, 2 if reduction and index < 2 else 1, True) for op, index in edges)
        self.multiplier = len(self.concat)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for i in range(self.nodes):
            hs = []
            for k in (2 * i, 2 * i + 1):
                op = self.ops[k]
                h = op(states[self.indices[k]])
                if self.training and drop_prob > 0.0 and not isinstance(op, Identity):
                    h = drop_path(h, drop_prob)
                hs.append(h)
            states.append(hs[0] + hs[1])
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHead(nn.Module):
    """DARTS's CIFAR auxiliary head, with adaptive 2x2 pooling instead of 5x5/3 on 8x8."""

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


class Network(nn.Module):
    def __init__(
        self,
        genotype: Genotype,
        *,
        C: int = 36,
        num_classes: int = 2,
        layers: int = 20,
        auxiliary: bool = True,
        drop_path_prob: float = 0.0,
        drop_path_max: float | None = None,
        stem_multiplier: int = 3,
        stem_stride: int = 1,
        in_channels: int = 3,
    ):
        super().__init__()
        if layers < 1 or C < 2 or num_classes < 2:
            raise ValueError(f"bad network size: C={C}, layers={layers}, num_classes={num_classes}")
        self.genotype = genotype
        self.layers = layers
        self.drop_path_prob = float(drop_path_prob)
        # the value ``on_epoch_start`` ramps towards (default: the initial probability)
        self.drop_path_max = float(drop_path_prob if drop_path_max is None else drop_path_max)
        C_curr = stem_multiplier * C
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, C_curr, 3, stride=stem_stride, padding=1, bias=False), nn.BatchNorm2d(C_curr)
        )
        C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        self.reduction_layers = (layers // 3, 2 * layers // 3)
        self.aux_layer = 2 * layers // 3
        C_aux = None
        for i in range(layers):
            reduction = i in self.reduction_layers
            if reduction:
                C_curr *= 2
            cell = Cell(genotype, C_prev_prev, C_prev, C_curr, reduction, reduction_prev)
            reduction_prev = reduction
            self.cells.append(cell)
            C_prev_prev, C_prev = C_prev, cell.multiplier * C_curr
            if i == self.aux_layer:
                C_aux = C_prev
        self.auxiliary_head = AuxiliaryHead(C_aux, num_classes) if auxiliary and C_aux is not None else None
        self.classifier = nn.Linear(C_prev, num_classes)

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        """DARTS's linear drop-path ramp: ``drop_path_max · epoch / epochs`` (epoch 0-based)."""
        self.drop_path_prob = self.drop_path_max * float(epoch) / max(int(epochs), 1)

    def forward(self, x: torch.Tensor):
        """Logits; in training mode with the auxiliary head, ``(logits, aux_logits)``."""
        aux = None
        s0 = s1 = self.stem(x)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self.aux_layer and self.auxiliary_head is not None and self.training:
                aux = self.auxiliary_head(s1)
        logits = self.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1))
        if aux is not None:
            return logits, aux
        return logits


def build_network(
    *,
    num_classes: int,
    genotype: Genotype | dict,
    channels: int = 36,
    layers: int = 20,
    auxiliary: bool = True,
    drop_path: float = 0.2,
    stem_stride: int = 1,
) -> Network:
    """The retrain network from params-style options (``models.build_model``'s entry):
    ``genotype`` as a Genotype or its dict (file format), ``drop_path`` the maximum drop
    path probability reached by the per-epoch ramp (starts at 0)."""
    if not isinstance(genotype, Genotype):
        genotype = Genotype.from_dict(dict(genotype), where="genotype")
    return Network(
        genotype,
        C=int(channels),
        num_classes=int(num_classes),
        layers=int(layers),
        auxiliary=bool(auxiliary),
        drop_path_prob=0.0,
        drop_path_max=float(drop_path),
        stem_stride=int(stem_stride),
    )


def count_parameters(model: nn.Module, *, include_auxiliary: bool = False) -> int:
    """Parameter count; DARTS reports it without the auxiliary head."""
    total = 0
    for name, p in model.named_parameters():
        if not include_auxiliary and name.startswith("auxiliary_head."):
            continue
        total += p.numel()
    return total
