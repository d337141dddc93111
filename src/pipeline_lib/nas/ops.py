"""DARTS's candidate operations: ``OPS`` (name → builder) and ``MixedOp``, the search cell's edge.

``OPS[name](C, stride, affine)`` builds one op as a module, as in DARTS's
``operations.py`` (and khanrc/pt.darts' ``ops.py``); the retrain network builds its cells
from it, and the search space is any list of its names (``params.yaml``:
``darts_search.ops``; default ``genotypes.DARTS_PRIMITIVES``):

- ``none``          zero (its output is 0; the search keeps it only inside α's softmax)
- ``max_pool_3x3``  / ``avg_pool_3x3`` (padding 1, average without the padding)
- ``skip_connect``  identity, or ``FactorizedReduce`` when the edge has stride 2
- ``sep_conv_KxK``  (ReLU, depthwise KxK, pointwise 1x1, BN) twice, stride on the first
- ``dil_conv_KxK``  ReLU, depthwise KxK dilation 2, pointwise 1x1, BN
- ``conv_7x1_1x7``  ReLU, 1x7 conv, 7x1 conv, BN (DARTS's ``operations.py``; not in the
  default list)

Adding a candidate op is one entry here and one in ``darts_search.ops``.

``MixedOp`` is the definition of a search edge (DARTS's ``model_search.py``): Σ_k w_k·op_k(x)
over the listed ops, built with ``affine=False`` and a BN after each pool. The search cell
(``search_cell``) computes the same sums for all edges leaving one node with batched
kernels for the ops it knows (``search_fused``), and with these modules, edge by edge, for
any other op; tests check that both paths agree.

Unlike the public code, ``FactorizedReduce`` also works on odd feature-map sizes (its
shifted path is zero-padded to the unshifted path's output size), so every op of a
stride-2 edge outputs ``ceil(H / 2)`` for any input size ``H``; see ``reduce_phases``.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..io.errors import PipelineError


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


def _fac_conv(C: int, stride: int, affine: bool) -> nn.Module:
    """DARTS's ``conv_7x1_1x7``: ReLU, 1x7 conv (stride along W), 7x1 conv (stride along H), BN."""
    return nn.Sequential(
        nn.ReLU(inplace=False),
        nn.Conv2d(C, C, (1, 7), stride=(1, stride), padding=(0, 3), bias=False),
        nn.Conv2d(C, C, (7, 1), stride=(stride, 1), padding=(3, 0), bias=False),
        nn.BatchNorm2d(C, affine=affine),
    )


OPS: dict[str, Callable[[int, int, bool], nn.Module]] = {
    "none": lambda C, stride, affine: Zero(stride),
    "avg_pool_3x3": lambda C, stride, affine: nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False),
    "max_pool_3x3": lambda C, stride, affine: nn.MaxPool2d(3, stride=stride, padding=1),
    "skip_connect": lambda C, stride, affine: Identity() if stride == 1 else FactorizedReduce(C, C, affine=affine),
    "sep_conv_3x3": lambda C, stride, affine: SepConv(C, C, 3, stride, 1, affine=affine),
    "sep_conv_5x5": lambda C, stride, affine: SepConv(C, C, 5, stride, 2, affine=affine),
    "dil_conv_3x3": lambda C, stride, affine: DilConv(C, C, 3, stride, 2, 2, affine=affine),
    "dil_conv_5x5": lambda C, stride, affine: DilConv(C, C, 5, stride, 4, 2, affine=affine),
    "conv_7x1_1x7": _fac_conv,
}


def check_op_names(names, where: str) -> tuple[str, ...]:
    """``names`` as a tuple, or a one-line error naming ``where`` and the known ops."""
    names = tuple(names)
    unknown = [n for n in names if n not in OPS]
    if unknown:
        raise PipelineError(f"{where}: unknown op {unknown[0]!r} (known: {', '.join(sorted(OPS))}); add it to OPS in nas/ops.py")
    return names


def make_op(name: str, C: int, stride: int, affine: bool = True) -> nn.Module:
    check_op_names([name], "genotype")
    return OPS[name](C, stride, affine)


def search_op(name: str, C: int, stride: int) -> nn.Module:
    """The search-time version of an op, as DARTS's ``MixedOp`` builds it: ``affine=False``
    and, after a pool, a BN (a pool's output scale is otherwise unlike the other ops')."""
    op = OPS[name](C, stride, False)
    if "pool" in name:
        op = nn.Sequential(op, nn.BatchNorm2d(C, affine=False))
    return op


class MixedOp(nn.Module):
    """One search edge: Σ_k w_k·op_k(x) over the ops named in ``primitives`` (DARTS)."""

    def __init__(self, C: int, stride: int, primitives):
        super().__init__()
        self._ops = nn.ModuleList(search_op(name, C, stride) for name in check_op_names(primitives, "MixedOp"))

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return sum(w * op(x) for w, op in zip(weights, self._ops))
