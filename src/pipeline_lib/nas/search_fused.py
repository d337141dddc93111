"""Batched kernels for the search cell: one op (or group of ops) for all E edges leaving a state.

Each group computes, for the E outgoing edges of one state at once, Σ_{op in group}
w[e, op]·op(x) exactly as ``ops.MixedOp`` defines it, as (B, E·C, H', W') in edge-major
channel blocks (rows ``e*C:(e+1)*C`` belong to edge e). Exact because all E edges read the
same tensor:

- a conv op of the E edges is one grouped depthwise and one grouped pointwise conv over
  edge-major channel blocks, its BNs one call (BN is per channel, so batching channels
  changes no statistic) (``FusedSepConv``, ``FusedDilConv``, ``FusedFactorizedReduce``);
- the α weight of a conv op is the *weight argument of the op's final BN* (affine=False
  BN then scaled per edge: w·BN(x) = batch_norm(x, weight=w)), so no separate multiply;
  its gradient comes out of BN's backward;
- pooling (+ its BN) and identity do not depend on the edge: computed once per state and
  mixed into the E edges by one 1x1 conv with weight kron(w[:, ops], I_C) (``SharedOps``);
- dilated convs run as plain convs on the polyphase components (``FusedDilConv``);
- an op without a batched kernel runs as its ``ops.OPS`` module, edge by edge
  (``GenericOp``): adding a candidate op needs no kernel here.

Every group also gives, per edge, the state its ops would have as ``ops.OPS`` modules
(``edge_state``: views of the batched parameters and buffers, keyed like
``MixedOp``'s state dict), which the edge-by-edge reference path runs with
``torch.func.functional_call``; tests check the two paths agree. ``none`` is no group: its
output is 0, so it adds nothing to any output or gradient, while its α still enters the
softmax.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .ops import reduce_phases, search_op
from .search_passes import SearchBN, search_bn

# (tensor, indices into the group's ``ops``, shared): the unweighted outputs of a group,
# per-edge (B, E·C) blocks of one op, or (B, k·C) outputs shared by every edge.
Features = Iterator[tuple[torch.Tensor, tuple[int, ...], bool]]


def _channels_inner(x: torch.Tensor) -> bool:
    """True when x is laid out channels-innermost (channels_last, or a strided view of it)."""
    return x.shape[1] > 1 and x.stride(1) == 1


def repeat_channels(x: torch.Tensor, times: int) -> torch.Tensor:
    """(B, C, H, W) → (B, times·C, H, W), copies in edge-major blocks, x's memory format."""
    if times == 1 and (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)):
        return x
    if _channels_inner(x):
        B, C, H, W = x.shape
        nhwc = x.permute(0, 2, 3, 1).unsqueeze(3).expand(B, H, W, times, C).reshape(B, H, W, times * C)
        return nhwc.permute(0, 3, 1, 2)
    return x.repeat(1, times, 1, 1)


def to_phases(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W), H and W even → (4B, C, H/2, W/2): batch block 2a+b holds x[..., a::2, b::2].

    A dilation-2 conv of x equals, phase by phase, the undilated conv of the phases."""
    B, C, H, W = x.shape
    if _channels_inner(x):
        t = x.permute(0, 2, 3, 1).reshape(B, H // 2, 2, W // 2, 2, C).permute(2, 4, 0, 1, 3, 5)
        return t.reshape(4 * B, H // 2, W // 2, C).permute(0, 3, 1, 2)
    t = x.reshape(B, C, H // 2, 2, W // 2, 2).permute(3, 5, 0, 1, 2, 4)
    return t.reshape(4 * B, C, H // 2, W // 2)


def from_phases(y: torch.Tensor, batch: int) -> torch.Tensor:
    """Inverse of ``to_phases``."""
    _, C, h, w = y.shape
    if _channels_inner(y):
        t = y.permute(0, 2, 3, 1).reshape(2, 2, batch, h, w, C).permute(2, 3, 0, 4, 1, 5)
        return t.reshape(batch, 2 * h, 2 * w, C).permute(0, 3, 1, 2)
    t = y.reshape(2, 2, batch, C, h, w).permute(2, 3, 4, 0, 5, 1)
    return t.reshape(batch, C, 2 * h, 2 * w)


def interleave_halves(a: torch.Tensor, b: torch.Tensor, edges: int) -> torch.Tensor:
    """(B, E·h, H, W) twice → (B, E·2h, H, W) with edge e's block = [a_e | b_e], x's format."""
    B, Eh, H, W = a.shape
    h = Eh // edges
    if _channels_inner(a):
        nhwc = torch.stack([a.permute(0, 2, 3, 1).reshape(B, H, W, edges, h), b.permute(0, 2, 3, 1).reshape(B, H, W, edges, h)], 4)
        return nhwc.reshape(B, H, W, 2 * Eh).permute(0, 3, 1, 2)
    return torch.stack([a.reshape(B, edges, h, H, W), b.reshape(B, edges, h, H, W)], 2).reshape(B, 2 * Eh, H, W)


def edge_weights(w: torch.Tensor | None, C: int) -> torch.Tensor | None:
    """BN weight of an op's (E·C) edge-major channels: w[e] on edge e's C channels."""
    return None if w is None else w.reshape(-1).repeat_interleave(C)


def channel_major_depthwise(dw: torch.Tensor, edges: int) -> torch.Tensor:
    """The E edges' depthwise weights (edge-major rows e·C + c) as one depthwise conv with
    channel multiplier E (``groups=C``), whose output channel c·E + e is edge e's channel c.

    At stride 2 this replaces copying the full-resolution input E times
    (``repeat_channels``) and the grouped depthwise conv over the copies: measured 1.3-1.7x
    faster forward + backward on this CPU (oneDNN, channels_last, 1 thread) for the
    reduction cells' shapes, and backward keeps the input once instead of E times. At
    stride 1 it was no faster, so the stride-1 convs keep the edge-major layout."""
    k = dw.shape[-1]
    C = dw.shape[0] // edges
    return dw.view(edges, C, 1, k, k).transpose(0, 1).reshape(edges * C, 1, k, k)


def channel_major_pointwise(pw: torch.Tensor, edges: int) -> torch.Tensor:
    """The E edges' pointwise weights (E·C, C, 1, 1) as one dense 1x1 conv from the
    channel-major layout (c·E + e, see ``channel_major_depthwise``) to edge-major output
    channels: W[e·C + o, c·E + f] = pw[e·C + o, c]·δ(e, f) (zeros elsewhere)."""
    EC, C = pw.shape[0], pw.shape[1]
    eye = torch.eye(edges, dtype=pw.dtype, device=pw.device)
    return torch.einsum("eoc,ef->eocf", pw.view(edges, EC // edges, C), eye).reshape(EC, C * edges, 1, 1)


def conv_param(*shape: int) -> nn.Parameter:
    # nn.Conv2d's default init; fan_in of the batched shapes equals the per-edge conv's.
    p = nn.Parameter(torch.empty(*shape))
    nn.init.kaiming_uniform_(p, a=math.sqrt(5))
    return p


def bn_state(prefix: str, bn: nn.BatchNorm2d, rows: slice, first: bool) -> dict[str, torch.Tensor]:
    """One edge's share of a batched BN's buffers. The step counter is one for all edges:
    the first edge gets it, the others a copy (each per-edge BN would count the same steps)."""
    counter = bn.num_batches_tracked if first else bn.num_batches_tracked.clone()
    return {f"{prefix}running_mean": bn.running_mean[rows], f"{prefix}running_var": bn.running_var[rows],
            f"{prefix}num_batches_tracked": counter}  # fmt: skip


class FusedSepConv(nn.Module):
    """``sep_conv_kxk`` of all E edges: (ReLU, depthwise, pointwise, BN) twice; the α weight
    is the weight of the final BN."""

    def __init__(self, name: str, C: int, edges: int, stride: int, k: int):
        super().__init__()
        self.ops, self.C, self.E, self.stride, self.k = (name,), C, edges, stride, k
        EC = edges * C
        self.dw1, self.pw1, self.bn1 = conv_param(EC, 1, k, k), conv_param(EC, C, 1, 1), SearchBN(EC, affine=False)
        self.dw2, self.pw2, self.bn2 = conv_param(EC, 1, k, k), conv_param(EC, C, 1, 1), SearchBN(EC, affine=False)

    def forward(self, x: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
        E, EC, pad = self.E, self.E * self.C, (self.k - 1) // 2
        # one name for every intermediate: each is freed as soon as it is consumed (when
        # recomputed, none is kept for backward)
        if self.stride == 2:  # see channel_major_depthwise
            t = F.conv2d(F.relu(x), channel_major_depthwise(self.dw1, E), None, 2, pad, 1, self.C)
            t = F.conv2d(t, channel_major_pointwise(self.pw1, E))
        else:
            t = repeat_channels(F.relu(x), E)
            t = F.conv2d(t, self.dw1, None, 1, pad, 1, EC)
            t = F.conv2d(t, self.pw1, None, 1, 0, 1, E)
        t = F.relu(self.bn1(t), inplace=True)  # BN keeps its input, not its output
        t = F.conv2d(t, self.dw2, None, 1, pad, 1, EC)
        t = F.conv2d(t, self.pw2, None, 1, 0, 1, E)
        return self.bn2(t, edge_weights(w, self.C))

    def features(self, x: torch.Tensor) -> Features:
        yield self(x, None), (0,), False

    def edge_state(self, e: int) -> dict[str, dict[str, torch.Tensor]]:
        rows = slice(e * self.C, (e + 1) * self.C)  # ops.SepConv: op.1/op.2 dw/pw, op.3 BN, op.5/op.6, op.7
        state = {"op.1.weight": self.dw1[rows], "op.2.weight": self.pw1[rows], **bn_state("op.3.", self.bn1, rows, e == 0),
                 "op.5.weight": self.dw2[rows], "op.6.weight": self.pw2[rows], **bn_state("op.7.", self.bn2, rows, e == 0)}  # fmt: skip
        return {self.ops[0]: state}


class FusedDilConv(nn.Module):
    """``dil_conv_kxk`` (dilation 2) of all E edges, as a plain conv on the polyphase input.

    oneDNN's dilated depthwise kernels are several times slower than the plain ones on CPU,
    so a dilation-2 conv runs as a plain conv on the input's 2x2 polyphase components
    (stride 1, even sizes: ``to_phases``; stride 2: only the even phase is read,
    ``x[:, :, ::2, ::2]``). Exact: it is a re-indexing of the same sums. The pointwise conv
    and the BN after it are per pixel / per channel, so they run in the phase layout too;
    the result goes back once (``from_phases``)."""

    def __init__(self, name: str, C: int, edges: int, stride: int, k: int):
        super().__init__()
        self.ops, self.C, self.E, self.stride, self.k = (name,), C, edges, stride, k
        EC = edges * C
        self.dw, self.pw, self.bn = conv_param(EC, 1, k, k), conv_param(EC, C, 1, 1), SearchBN(EC, affine=False)

    def forward(self, x: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
        E, EC, s, k = self.E, self.E * self.C, self.stride, self.k
        B, H, W = x.shape[0], x.shape[2], x.shape[3]
        phased = s == 1 and H % 2 == 0 and W % 2 == 0
        t = F.relu(x)
        if s == 2:
            t, pad, dil = t[:, :, ::2, ::2], (k - 1) // 2, 1
        elif phased:
            t, pad, dil = to_phases(t), (k - 1) // 2, 1
        else:  # odd size at stride 1: the dilated kernel itself
            pad, dil = k - 1, 2
        t = F.conv2d(repeat_channels(t, E), self.dw, None, 1, pad, dil, EC)
        t = F.conv2d(t, self.pw, None, 1, 0, 1, E)
        t = self.bn(t, edge_weights(w, self.C))
        return from_phases(t, B) if phased else t

    def features(self, x: torch.Tensor) -> Features:
        yield self(x, None), (0,), False

    def edge_state(self, e: int) -> dict[str, dict[str, torch.Tensor]]:
        rows = slice(e * self.C, (e + 1) * self.C)  # ops.DilConv: op.1 dw, op.2 pw, op.3 BN
        return {self.ops[0]: {"op.1.weight": self.dw[rows], "op.2.weight": self.pw[rows], **bn_state("op.3.", self.bn, rows, e == 0)}}


class FusedFactorizedReduce(nn.Module):
    """``skip_connect`` at stride 2 (FactorizedReduce) of all E edges: ReLU, two 1x1 convs
    of the even / shifted phases (``ops.reduce_phases``), concat per edge, BN."""

    def __init__(self, name: str, C: int, edges: int):
        super().__init__()
        if C % 2:
            raise ValueError(f"a reduction cell needs an even channel count, got {C}")
        self.ops, self.C, self.E = (name,), C, edges
        self.conv_1, self.conv_2 = conv_param(edges * C // 2, C, 1, 1), conv_param(edges * C // 2, C, 1, 1)
        self.bn = SearchBN(edges * C, affine=False)

    def forward(self, x: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
        even, odd = reduce_phases(F.relu(x))  # stride-2 1x1 convs as stride-1 convs of the phases
        t = interleave_halves(F.conv2d(even, self.conv_1), F.conv2d(odd, self.conv_2), self.E)
        return self.bn(t, edge_weights(w, self.C))

    def features(self, x: torch.Tensor) -> Features:
        yield self(x, None), (0,), False

    def edge_state(self, e: int) -> dict[str, dict[str, torch.Tensor]]:
        half, rows = slice(e * self.C // 2, (e + 1) * self.C // 2), slice(e * self.C, (e + 1) * self.C)
        state = {"conv_1.weight": self.conv_1[half], "conv_2.weight": self.conv_2[half], **bn_state("bn.", self.bn, rows, e == 0)}
        return {self.ops[0]: state}


class SharedOps(nn.Module):
    """The ops whose output does not depend on the edge: max / avg pool (+ BN, one call for
    both) and, at stride 1, identity; computed once and mixed into the E edges by one 1x1
    conv whose weight is kron(w[:, ops], I_C): out[e·C + c] = Σ_k w[e, k]·shared[k·C + c]."""

    POOLS = {"max_pool_3x3": F.max_pool2d, "avg_pool_3x3": F.avg_pool2d}

    def __init__(self, names: tuple[str, ...], C: int, edges: int, stride: int):
        super().__init__()
        pools = tuple(n for n in names if n in self.POOLS)
        self.ops = pools + tuple(n for n in names if n not in self.POOLS)  # identity last
        self.C, self.E, self.stride = C, edges, stride
        self.bn = SearchBN(len(pools) * C, affine=False) if pools else None

    def shared(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stride
        outs = [F.max_pool2d(x, 3, s, 1) if n == "max_pool_3x3" else F.avg_pool2d(x, 3, s, 1, count_include_pad=False)
                for n in self.ops if n in self.POOLS]  # fmt: skip
        if outs:
            outs = [self.bn(torch.cat(outs, 1) if len(outs) > 1 else outs[0])]
        if self.ops[-1] == "skip_connect":
            outs.append(x)
        return torch.cat(outs, 1) if len(outs) > 1 else outs[0]

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        eye = torch.eye(self.C, dtype=w.dtype, device=w.device)
        return F.conv2d(self.shared(x), torch.kron(w, eye)[:, :, None, None])

    def features(self, x: torch.Tensor) -> Features:
        yield self.shared(x), tuple(range(len(self.ops))), True

    def edge_state(self, e: int) -> dict[str, dict[str, torch.Tensor]]:
        out: dict[str, dict[str, torch.Tensor]] = {}
        for i, name in enumerate(self.ops):  # ops.search_op: Sequential(pool, BN) → "1.*"
            out[name] = bn_state("1.", self.bn, slice(i * self.C, (i + 1) * self.C), e == 0) if name in self.POOLS else {}
        if e > 0:  # every edge's pool BN sees the same input: edge 0 updates the shared statistics
            out = {n: {k: (v.clone() if "running" in k else v) for k, v in st.items()} for n, st in out.items()}
        return out


class GenericOp(nn.Module):
    """An op without a batched kernel: its ``ops.OPS`` module (search version), one per edge."""

    def __init__(self, name: str, C: int, edges: int, stride: int):
        super().__init__()
        self.ops, self.C, self.E = (name,), C, edges
        self.edges = nn.ModuleList(search_bn(search_op(name, C, stride)) for _ in range(edges))

    def forward(self, x: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
        if w is None:
            return torch.cat([op(x) for op in self.edges], 1)
        return torch.cat([w[e, 0] * op(x) for e, op in enumerate(self.edges)], 1)

    def features(self, x: torch.Tensor) -> Features:
        yield self(x, None), (0,), False

    def edge_state(self, e: int) -> dict[str, dict[str, torch.Tensor]]:
        return {self.ops[0]: dict(self.edges[e].state_dict(keep_vars=True))}


# Batched kernels by op name: (name, C, E, stride) → group. Pools and stride-1 identity
# go to ``SharedOps``; ``none`` is never computed; any other op runs as ``GenericOp``.
FUSED: dict[str, Callable[[str, int, int, int], nn.Module]] = {
    "sep_conv_3x3": lambda name, C, E, s: FusedSepConv(name, C, E, s, 3),
    "sep_conv_5x5": lambda name, C, E, s: FusedSepConv(name, C, E, s, 5),
    "dil_conv_3x3": lambda name, C, E, s: FusedDilConv(name, C, E, s, 3),
    "dil_conv_5x5": lambda name, C, E, s: FusedDilConv(name, C, E, s, 5),
}


def build_groups(primitives: tuple[str, ...], C: int, edges: int, stride: int) -> list[tuple[str, nn.Module]]:
    """The groups computing the mixed ops of ``edges`` edges, keyed for a ModuleDict."""
    shared = [n for n in primitives if n in SharedOps.POOLS or (n == "skip_connect" and stride == 1)]
    groups: list[tuple[str, nn.Module]] = []
    if shared:
        groups.append(("shared", SharedOps(tuple(shared), C, edges, stride)))
    for name in primitives:
        if name == "none" or name in shared:
            continue
        if name == "skip_connect":  # stride 2
            groups.append((name, FusedFactorizedReduce(name, C, edges)))
        elif name in FUSED:
            groups.append((name, FUSED[name](name, C, edges, stride)))
        else:
            groups.append((name, GenericOp(name, C, edges, stride)))
    return groups
