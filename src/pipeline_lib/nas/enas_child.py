"""ENAS micro shared-weight child network: every candidate keeps its own weights.

Follows the official search child (melodyguan/enas, ``src/cifar10/micro_child.py``):

- stem: 3x3 conv to ``3 * channels`` + BN, then ``num_layers + num_reductions`` cells; the
  reduction cells sit where ENAS puts them (``num_layers // 3`` and ``2 * (num_layers // 3)
  + 1`` for the default two reductions: e.g. N N R N N R N N for 6 layers);
- a reduction step first halves the previous output with a factorized reduction (2x the
  channels) and then runs the *reduction-cell architecture* at stride 1 on
  ``[previous output, its reduction]`` (as in the official search; the retrain network
  applies the reduction cell's ops at stride 2 to the cell inputs, again as in ENAS);
- cell inputs are calibrated: a factorized reduction when the spatial size differs, a
  ReLU-1x1 conv-BN when the channel count differs, else used as they are;
- each node sums two ops, each op applied to one chosen input; every (node, slot x/y,
  input index, op) has its own weights (the official code indexes weight tables by the
  input index; here each is a small module), so an architecture trains only its subset;
- separable convs are (ReLU, depthwise kxk, pointwise 1x1, BN) twice; pools are 3x3 stride 1
  (average excluding padding, like TF "SAME"); identity passes through;
- the cell output concatenates the nodes no later node uses (the genotype's concat; the
  official search also concatenated unused *cell inputs*, which the genotype format cannot
  express) followed by ReLU, a 1x1 conv whose weight has one ``channels x channels`` block
  per node (only the used blocks are applied) and BN;
- BN always uses batch statistics (``track_running_stats=False``, as the official search
  child with ``is_training=True``): running averages are meaningless when each minibatch
  has a different architecture;
- head: ReLU, global average pool, dropout (``dropout`` = 1 - ENAS keep_prob), linear to
  ``num_classes`` (the official code hard-codes 10).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .enas_controller import OPS, Arch, Node, concat_nodes


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, affine=True, track_running_stats=False)


class ReLUConvBN(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.bn = _bn(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(F.relu(x)))


class FactorizedReduce(nn.Module):
    """Halve H and W (rounding up) without losing pixels: two offset strided 1x1 convs + BN."""

    def __init__(self, c_in: int, c_out: int, relu: bool = True):
        super().__init__()
        if c_out % 2:
            raise ValueError(f"factorized reduction needs an even channel count, got {c_out}")
        self.relu = relu
        self.conv1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = _bn(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.relu:
            x = F.relu(x)
        shifted = F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
        return self.bn(torch.cat([self.conv1(x), self.conv2(shifted)], dim=1))


class SepConv(nn.Module):
    """ENAS's separable conv: (ReLU, depthwise kxk, pointwise 1x1, BN) twice, stride 1."""

    def __init__(self, c: int, k: int):
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(2):
            layers += [
                nn.ReLU(inplace=False),
                nn.Conv2d(c, c, k, padding=k // 2, groups=c, bias=False),
                nn.Conv2d(c, c, 1, bias=False),
                _bn(c),
            ]
        self.op = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


_PARAM_OPS = {"sep_conv_3x3": 3, "sep_conv_5x5": 5}


def apply_free_op(name: str, x: torch.Tensor) -> torch.Tensor:
    if name == "avg_pool_3x3":
        return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    if name == "max_pool_3x3":
        return F.max_pool2d(x, 3, stride=1, padding=1)
    if name == "identity":
        return x
    raise ValueError(f"unknown parameter-free op {name!r}")


class SharedCell(nn.Module):
    """One cell position of the child with weights for every (node, slot, input, op)."""

    def __init__(self, num_nodes: int, channels: int, in0: tuple[int, bool], in1: int):
        """``in0`` = (channels, needs spatial reduction) of cell input 0; ``in1`` = channels."""
        super().__init__()
        self.num_nodes = num_nodes
        self.channels = channels
        c0, reduce0 = in0
        if reduce0:
            self.pre0: nn.Module = FactorizedReduce(c0, channels)
        elif c0 != channels:
            self.pre0 = ReLUConvBN(c0, channels)
        else:
            self.pre0 = nn.Identity()
        self.pre1: nn.Module = ReLUConvBN(in1, channels) if in1 != channels else nn.Identity()
        # ops[node][slot][input] = ModuleDict of the parameterised ops.
        self.ops = nn.ModuleList(
            nn.ModuleList(
                nn.ModuleList(
                    nn.ModuleDict({name: SepConv(channels, k) for name, k in _PARAM_OPS.items()})
                    for _ in range(node + 2)
                )
                for _ in range(2)
            )
            for node in range(num_nodes)
        )
        # Final 1x1 projection: one C x C block per node, gathered for the concatenated nodes.
        self.final_weight = nn.Parameter(torch.empty(num_nodes, channels, channels))
        nn.init.kaiming_uniform_(self.final_weight.view(num_nodes * channels, channels), a=5**0.5)
        self.final_bn = _bn(channels)

    def _op(self, node: int, slot: int, inp: int, op: int, x: torch.Tensor) -> torch.Tensor:
        name = OPS[op]
        if name in _PARAM_OPS:
            return self.ops[node][slot][inp][name](x)
        return apply_free_op(name, x)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, cell: tuple[Node, ...]) -> torch.Tensor:
        if len(cell) != self.num_nodes:
            raise ValueError(f"cell has {len(cell)} nodes, the child was built for {self.num_nodes}")
        states = [self.pre0(s0), self.pre1(s1)]
        for k, (a, oa, b, ob) in enumerate(cell):
            states.append(self._op(k, 0, a, oa, states[a]) + self._op(k, 1, b, ob, states[b]))
        out_nodes = concat_nodes(cell)
        out = F.relu(torch.cat([states[i] for i in out_nodes], dim=1))
        # weight [C_out, len(out_nodes) * C, 1, 1]: block j maps node out_nodes[j]'s channels.
        w = torch.cat([self.final_weight[i - 2] for i in out_nodes], dim=1)
        out = F.conv2d(out, w[:, :, None, None])
        return self.final_bn(out)


def reduction_positions(num_layers: int, num_reductions: int = 2) -> list[int]:
    """ENAS's placement: reductions at d, 2d+1, ... with d = num_layers // (num_reductions + 1).

    With fewer normal cells than that needs (d = 0) but at least one per reduction, ENAS's formula
    would put every reduction first, before any normal cell; then each normal cell is followed by
    one reduction instead (2 layers: N R N R). With fewer normal cells than reductions, ENAS's
    placement stays (1 layer: R R N; N R R crashed oneDNN's channels_last kernels, torch 2.14.1)."""
    d = num_layers // (num_reductions + 1)
    if d == 0 and num_layers >= num_reductions:
        return [2 * i + 1 for i in range(num_reductions)]
    return [d * (i + 1) + i for i in range(num_reductions)]


class SharedChild(nn.Module):
    """The ENAS micro search network; ``forward(x, arch)`` runs the sampled architecture."""

    def __init__(
        self,
        num_classes: int,
        *,
        num_nodes: int = 5,
        channels: int = 20,
        num_layers: int = 6,
        num_reductions: int = 2,
        in_channels: int = 3,
        stem_stride: int = 1,
        dropout: float = 0.1,
    ):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if channels < 1 or num_layers < 0 or num_reductions < 0 or num_nodes < 1:
            raise ValueError("channels, num_nodes must be >= 1 and num_layers, num_reductions >= 0")
        if num_reductions and channels % 2:
            raise ValueError(f"channels must be even with reduction cells, got {channels}")
        self.num_classes = num_classes
        self.num_nodes = num_nodes
        stem_c = 3 * channels
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stem_c, 3, stride=stem_stride, padding=1, bias=False), _bn(stem_c)
        )
        self.reduce_at = reduction_positions(num_layers, num_reductions)
        self.kinds: list[str] = []
        self.reducers = nn.ModuleDict()
        cells = []
        # (channels, resolution level) of the two most recent outputs
        prev_prev, prev = (stem_c, 0), (stem_c, 0)
        c = channels
        for layer in range(num_layers + num_reductions):
            if layer in self.reduce_at:
                c *= 2
                self.reducers[str(layer)] = FactorizedReduce(prev[0], c, relu=False)
                prev_prev, prev = prev, (c, prev[1] + 1)
                kind = "reduce"
            else:
                kind = "normal"
            in0 = (prev_prev[0], prev_prev[1] != prev[1])
            cells.append(SharedCell(num_nodes, c, in0, prev[0]))
            self.kinds.append(kind)
            prev_prev, prev = prev, (c, prev[1])
        self.cells = nn.ModuleList(cells)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(prev[0], num_classes)

    def forward(self, x: torch.Tensor, arch: Arch) -> torch.Tensor:
        if arch.nodes != self.num_nodes:
            raise ValueError(f"arch has {arch.nodes} nodes, the child was built for {self.num_nodes}")
        s = self.stem(x)
        s0, s1 = s, s
        for layer, (kind, cell) in enumerate(zip(self.kinds, self.cells)):
            if kind == "reduce":
                r = self.reducers[str(layer)](s1)
                s0, s1 = s1, r
                out = cell(s0, s1, arch.reduce)
            else:
                out = cell(s0, s1, arch.normal)
            s0, s1 = s1, out
        out = F.adaptive_avg_pool2d(F.relu(s1), 1).flatten(1)
        return self.classifier(self.dropout(out))
