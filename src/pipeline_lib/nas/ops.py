"""DARTS's candidate operations as modules (the retrain network builds its cells from them).

The eight ops of ``genotypes.DARTS_PRIMITIVES`` (Liu et al. 2019, ``operations.py``):

- ``none``          zero (its output is 0; the search keeps it only inside α's softmax)
- ``max_pool_3x3``  / ``avg_pool_3x3`` (padding 1, average without the padding)
- ``skip_connect``  identity, or ``FactorizedReduce`` when the edge has stride 2
- ``sep_conv_KxK``  (ReLU, depthwise KxK, pointwise 1x1, BN) twice, stride on the first
- ``dil_conv_KxK``  ReLU, depthwise KxK dilation 2, pointwise 1x1, BN

``affine=False`` gives the search-time BN. The search cell does not use these modules
edge by edge: ``search_cell`` evaluates all edges leaving one node in a few batched
calls with the same mathematics (``search_cell.SourceOps.reference_forward`` is the
edge-by-edge version built from these definitions and the tests compare the two).

Unlike the public code, ``FactorizedReduce`` also works on odd feature-map sizes (its
shifted path is zero-padded to the unshifted path's output size), so every op of a
stride-2 edge outputs ``ceil(H / 2)`` for any input size ``H``; see ``reduce_phases``.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


class ReLUConvBN(nn.Module):
    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, affine: bool = True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class DilConv(nn.Module):
    def __init__(self, C_in, C_out, kernel_size, stride, padding, dilation, affine: bool = True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride, padding, dilation=dilation, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class SepConv(nn.Module):
    def __init__(self, C_in, C_out, kernel_size, stride, padding, affine: bool = True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride, padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_in, 1, bias=False),
            nn.BatchNorm2d(C_in, affine=affine),
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, 1, padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Zero(nn.Module):
    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


def reduce_phases(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What FactorizedReduce's two stride-2 1x1 convs read: ``x[..., ::2, ::2]`` and the
    one-pixel-shifted ``x[..., 1::2, 1::2]`` (zero-padded to the first's size when H or W
    is odd). A stride-2 1x1 conv equals a stride-1 1x1 conv of the even phase; computing
    it that way also avoids a oneDNN crash (segfault in the backward of stride-2 1x1 convs
    with <= 8 input channels on channels_last inputs of 48+ px, torch 2.14.1 CPU)."""
    even = x[:, :, ::2, ::2]
    odd = x[:, :, 1::2, 1::2]
    dh, dw = even.shape[2] - odd.shape[2], even.shape[3] - odd.shape[3]
    if dh or dw:
        odd = F.pad(odd, (0, dw, 0, dh))
    return even, odd


class FactorizedReduce(nn.Module):
    """ReLU, two stride-2 1x1 convs (one on the input shifted by one pixel), concat, BN.

    The convs keep DARTS's modules (stride 2, same state dict) but run as stride-1 convs
    of ``reduce_phases`` (identical values; see there)."""

    def __init__(self, C_in: int, C_out: int, affine: bool = True):
        super().__init__()
        if C_out % 2:
            raise ValueError(f"FactorizedReduce needs an even channel count, got {C_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, padding=0, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        even, odd = reduce_phases(x)
        out = torch.cat([F.conv2d(even, self.conv_1.weight), F.conv2d(odd, self.conv_2.weight)], dim=1)
        return self.bn(out)


OPS: dict[str, Callable[[int, int, bool], nn.Module]] = {
    "none": lambda C, stride, affine: Zero(stride),
    "avg_pool_3x3": lambda C, stride, affine: nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False),
    "max_pool_3x3": lambda C, stride, affine: nn.MaxPool2d(3, stride=stride, padding=1),
    "skip_connect": lambda C, stride, affine: Identity() if stride == 1 else FactorizedReduce(C, C, affine=affine),
    "sep_conv_3x3": lambda C, stride, affine: SepConv(C, C, 3, stride, 1, affine=affine),
    "sep_conv_5x5": lambda C, stride, affine: SepConv(C, C, 5, stride, 2, affine=affine),
    "dil_conv_3x3": lambda C, stride, affine: DilConv(C, C, 3, stride, 2, 2, affine=affine),
    "dil_conv_5x5": lambda C, stride, affine: DilConv(C, C, 5, stride, 4, 2, affine=affine),
}


def make_op(name: str, C: int, stride: int, affine: bool = True) -> nn.Module:
    try:
        factory = OPS[name]
    except KeyError:
        raise ValueError(f"unknown op {name!r}; known: {sorted(OPS)}") from None
    return factory(C, stride, affine)
