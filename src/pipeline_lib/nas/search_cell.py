"""The DARTS search cell: every edge a softmax(α)-weighted mixture of the 8 ops.

Mathematics (Liu et al. 2019): node ``i`` = Σ_{j<i} Σ_k w[(i,j), k] · op_k(h_j), with
``w`` = softmax(α) over the 8 ops of ``genotypes.DARTS_PRIMITIVES`` and search-time BN
with ``affine=False``. Edges are numbered as in DARTS: node 0's edges from inputs 0, 1,
then node 1's from 0, 1, 2, and so on (α row ``e`` = edge ``e``).

Implementation: instead of 14 ``MixedOp`` modules of 8 small modules each (public code:
~600 tiny kernels per cell), the cell evaluates all edges *leaving one state* together
(``SourceOps``), which is exact because every one of them reads the same tensor:

- ReLU(h_j) is computed once and shared by the 4 conv ops of all its outgoing edges;
- the depthwise convs of the E outgoing edges are one grouped conv each (edge-major
  channel blocks), the pointwise convs of all (op, edge) pairs one grouped conv, the BNs
  one call (BN is per channel, so batching channels changes no statistic);
- the α weight of a conv op is applied as the *weight argument of the op's final BN*
  (BN with ``affine=False`` then scaled per edge: w·BN(x) = batch_norm(x, weight=w)), so
  no separate multiply; its gradient comes out of BN's backward;
- pooling (+ its BN) and identity do not depend on the edge's parameters: they are computed
  once per state and mixed into the E edges by one small matmul with the (E, 3) weights;
- ``none`` is never computed: w_none·0 contributes nothing to the output or to any
  gradient, while α_none still enters the softmax, so every weight and every α gradient
  is exactly DARTS's;
- a stride-2 skip (FactorizedReduce) of E edges: ReLU shared, its 1x1 convs batched.

``SourceOps.reference_forward`` computes the same thing edge by edge and op by op from the
same parameters, as the public code does; tests check the two agree (outputs and gradients).

BN running statistics: search BN always normalises with batch statistics in training mode
(as DARTS); running statistics (used only in eval mode) are updated unless the pass runs
inside ``frozen_bn_stats()``, which the architect uses for its extra passes (unrolled,
w±) so that only the weight step's batches enter them.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .genotypes import DARTS_PRIMITIVES
from .ops import shifted_for_reduce

# Column of each op in α (order of DARTS_PRIMITIVES).
NONE, MAX_POOL, AVG_POOL, SKIP, SEP3, SEP5, DIL3, DIL5 = range(8)
assert DARTS_PRIMITIVES[SKIP] == "skip_connect" and DARTS_PRIMITIVES[DIL5] == "dil_conv_5x5"

_TRACK_BN_STATS: contextvars.ContextVar[bool] = contextvars.ContextVar("darts_track_bn_stats", default=True)


@contextlib.contextmanager
def frozen_bn_stats() -> Iterator[None]:
    """Passes inside do not update the search network's BN running statistics."""
    token = _TRACK_BN_STATS.set(False)
    try:
        yield
    finally:
        _TRACK_BN_STATS.reset(token)


class SearchBN(nn.BatchNorm2d):
    """BatchNorm2d whose forward takes an optional per-channel weight (the α scaling) and
    honours ``frozen_bn_stats``. State-dict names are BatchNorm2d's."""

    def forward(self, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        if weight is None:
            weight = self.weight
        if self.training:
            track = _TRACK_BN_STATS.get()
            return F.batch_norm(
                x,
                self.running_mean if track else None,
                self.running_var if track else None,
                weight,
                self.bias,
                True,
                self.momentum,
                self.eps,
            )
        return F.batch_norm(x, self.running_mean, self.running_var, weight, self.bias, False, 0.0, self.eps)


# --- edge numbering -----------------------------------------------------------------------


def num_edges(nodes: int) -> int:
    """Edges of a cell with ``nodes`` intermediate nodes: 2 + 3 + ... + (nodes + 1)."""
    return sum(2 + i for i in range(nodes))


def edge_index(node: int, src: int) -> int:
    """α row of the edge into intermediate node ``node`` (0-based) from state ``src``."""
    return sum(2 + i for i in range(node)) + src


def edge_list(nodes: int) -> list[tuple[int, int]]:
    """``(src_state, dst_state)`` of every edge in α-row order (states: 0, 1 inputs; 2.. nodes)."""
    return [(j, 2 + i) for i in range(nodes) for j in range(2 + i)]


def source_fanout(nodes: int, src: int) -> int:
    """How many edges leave state ``src`` (inputs feed every node; node state j feeds j-1..)."""
    return nodes if src < 2 else nodes - src + 1


def source_major_order(nodes: int) -> list[int]:
    """α rows regrouped by source state: for src 0..nodes, its edges by destination node."""
    order = []
    for src in range(nodes + 1):
        first = 0 if src < 2 else src - 1
        order += [edge_index(i, src) for i in range(first, nodes)]
    return order


# --- modules ------------------------------------------------------------------------------


def repeat_channels(x: torch.Tensor, times: int) -> torch.Tensor:
    """(B, C, H, W) → (B, times·C, H, W), copies in edge-major blocks, same memory format."""
    if times == 1:
        return x
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        B, C, H, W = x.shape
        nhwc = x.permute(0, 2, 3, 1).unsqueeze(3).expand(B, H, W, times, C).reshape(B, H, W, times * C)
        return nhwc.permute(0, 3, 1, 2)
    return x.repeat(1, times, 1, 1)


def _init_conv_weight(p: torch.Tensor) -> None:
    # nn.Conv2d's default init; fan_in of the fused shapes equals the per-edge conv's.
    nn.init.kaiming_uniform_(p, a=math.sqrt(5))


class SearchReLUConvBN(nn.Module):
    def __init__(self, C_in: int, C_out: int):
        super().__init__()
        self.conv = nn.Conv2d(C_in, C_out, 1, bias=False)
        self.bn = SearchBN(C_out, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(F.relu(x)))


class SearchFactorizedReduce(nn.Module):
    def __init__(self, C_in: int, C_out: int):
        super().__init__()
        if C_out % 2:
            raise ValueError(f"FactorizedReduce needs an even channel count, got {C_out}")
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.bn = SearchBN(C_out, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted_for_reduce(x))], dim=1))


class SourceOps(nn.Module):
    """The mixed ops of all E edges leaving one state (see the module docstring).

    Parameters (edge-major channel blocks: rows ``e*C:(e+1)*C`` belong to outgoing edge e):
    ``sep3_dw1/sep5_dw1/dil3_dw/dil5_dw`` (E·C, 1, k, k); ``pw1`` (4·E·C, C, 1, 1) in op
    blocks [sep3, sep5, dil3, dil5]; ``sep3_dw2/sep5_dw2`` (E·C, 1, k, k); ``pw2``
    (2·E·C, C, 1, 1) in blocks [sep3, sep5]; for stride 2 ``fr_1/fr_2`` (E·C/2, C, 1, 1).
    """

    def __init__(self, C: int, fanout: int, stride: int):
        super().__init__()
        if stride == 2 and C % 2:
            raise ValueError(f"a reduction cell needs an even channel count, got {C}")
        self.C, self.E, self.stride = C, fanout, stride
        EC = fanout * C

        def param(*shape: int) -> nn.Parameter:
            p = nn.Parameter(torch.empty(*shape))
            _init_conv_weight(p)
            return p

        self.sep3_dw1 = param(EC, 1, 3, 3)
        self.sep5_dw1 = param(EC, 1, 5, 5)
        self.dil3_dw = param(EC, 1, 3, 3)
        self.dil5_dw = param(EC, 1, 5, 5)
        self.pw1 = param(4 * EC, C, 1, 1)
        self.sep3_dw2 = param(EC, 1, 3, 3)
        self.sep5_dw2 = param(EC, 1, 5, 5)
        self.pw2 = param(2 * EC, C, 1, 1)
        self.bn1 = SearchBN(4 * EC, affine=False)
        self.bn2 = SearchBN(2 * EC, affine=False)
        self.bn_pool = SearchBN(2 * C, affine=False)
        if stride == 2:
            self.fr_1 = param(EC // 2, C, 1, 1)
            self.fr_2 = param(EC // 2, C, 1, 1)
            self.bn_fr = SearchBN(EC, affine=False)
        self.register_buffer("ones", torch.ones(2 * EC), persistent=False)

    # The batched forward -----------------------------------------------------------------
    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """``x`` (B, C, H, W), ``w`` (E, 8) softmax weights → (B, E·C, H', W'), edge-major
        channel blocks (block e = Σ_k w[e,k]·op_k(x) of outgoing edge e). Works in NCHW and
        in channels_last (the output follows x's memory format)."""
        C, E, s = self.C, self.E, self.stride
        EC = E * C
        r = F.relu(x)
        rr = repeat_channels(r, E)
        a3 = F.conv2d(rr, self.sep3_dw1, None, s, 1, 1, EC)
        a5 = F.conv2d(rr, self.sep5_dw1, None, s, 2, 1, EC)
        d3 = F.conv2d(rr, self.dil3_dw, None, s, 2, 2, EC)
        d5 = F.conv2d(rr, self.dil5_dw, None, s, 4, 2, EC)
        p1 = F.conv2d(torch.cat([a3, a5, d3, d5], 1), self.pw1, None, 1, 0, 1, 4 * E)
        # BN weight: 1 for the sep convs' inner BN, the dil convs' α weight per edge.
        w_dil = w[:, DIL3 : DIL5 + 1].t().unsqueeze(-1).expand(2, E, C).reshape(2 * EC)
        # split (not slicing): its backward is one cat, not a zero-filled full-size tensor per slice
        q_sep, q_dil3, q_dil5 = self.bn1(p1, torch.cat([self.ones, w_dil])).split([2 * EC, EC, EC], 1)
        h3, h5 = F.relu(q_sep).split(EC, 1)
        b3 = F.conv2d(h3, self.sep3_dw2, None, 1, 1, 1, EC)
        b5 = F.conv2d(h5, self.sep5_dw2, None, 1, 2, 1, EC)
        p2 = F.conv2d(torch.cat([b3, b5], 1), self.pw2, None, 1, 0, 1, 2 * E)
        w_sep = w[:, SEP3 : SEP5 + 1].t().unsqueeze(-1).expand(2, E, C).reshape(2 * EC)
        q_sep3, q_sep5 = self.bn2(p2, w_sep).split(EC, 1)

        # Parameter-free ops, computed once and mixed into the E edges by one 1x1 conv whose
        # weight is kron(w[:, ops], I_C): out[e·C + c] = Σ_k w[e, k] · free[k·C + c].
        pools = self.bn_pool(torch.cat([F.max_pool2d(x, 3, s, 1), F.avg_pool2d(x, 3, s, 1, count_include_pad=False)], 1))
        if s == 1:
            free, coeff = torch.cat([pools, x], 1), w[:, MAX_POOL : SKIP + 1]
        else:
            free, coeff = pools, w[:, MAX_POOL : AVG_POOL + 1]
        eye = torch.eye(C, dtype=w.dtype, device=w.device)
        out = F.conv2d(free, torch.kron(coeff, eye)[:, :, None, None])
        out = out.add_(q_sep3).add_(q_sep5).add_(q_dil3).add_(q_dil5)
        if s == 2:
            # FactorizedReduce per edge: channels [conv_1 half, conv_2 half] of each edge.
            B, H, W = out.shape[0], out.shape[2], out.shape[3]
            f1 = F.conv2d(r, self.fr_1, None, 2)
            f2 = F.conv2d(shifted_for_reduce(r), self.fr_2, None, 2)
            half = C // 2
            w_fr = w[:, SKIP].view(1, E, 1).expand(2, E, half).reshape(EC)
            fr = self.bn_fr(torch.cat([f1, f2], 1), w_fr)
            out.view(B, E, 2, half, H, W).add_(fr.view(B, 2, E, half, H, W).transpose(1, 2))
        return out

    # The same mathematics, edge by edge and op by op (the public code's structure) --------
    def edge_params(self, e: int) -> dict[str, torch.Tensor]:
        """Edge ``e``'s parameters as the per-op conv weights of ``ops.py``'s modules."""
        C, E = self.C, self.E
        sl = slice(e * C, (e + 1) * C)

        def blk(t: torch.Tensor, b: int) -> torch.Tensor:
            return t[(b * E + e) * C : (b * E + e + 1) * C]

        p = {
            "sep3_dw1": self.sep3_dw1[sl], "sep3_pw1": blk(self.pw1, 0),
            "sep3_dw2": self.sep3_dw2[sl], "sep3_pw2": blk(self.pw2, 0),
            "sep5_dw1": self.sep5_dw1[sl], "sep5_pw1": blk(self.pw1, 1),
            "sep5_dw2": self.sep5_dw2[sl], "sep5_pw2": blk(self.pw2, 1),
            "dil3_dw": self.dil3_dw[sl], "dil3_pw": blk(self.pw1, 2),
            "dil5_dw": self.dil5_dw[sl], "dil5_pw": blk(self.pw1, 3),
        }  # fmt: skip
        if self.stride == 2:
            half = C // 2
            p["fr_1"] = self.fr_1[e * half : (e + 1) * half]
            p["fr_2"] = self.fr_2[e * half : (e + 1) * half]
        return p

    def reference_forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Σ_k w[e,k]·op_k(x) for each edge, every op separately (incl. ``none``);
        BN uses batch statistics and updates no running statistics (training mode only)."""
        C, s = self.C, self.stride

        def bn(t: torch.Tensor) -> torch.Tensor:
            return F.batch_norm(t, None, None, None, None, True, 0.0, 1e-5)

        def sep(t, dw1, pw1, dw2, pw2, pad):
            t = bn(F.conv2d(F.conv2d(F.relu(t), dw1, None, s, pad, 1, C), pw1))
            return bn(F.conv2d(F.conv2d(F.relu(t), dw2, None, 1, pad, 1, C), pw2))

        def dil(t, dw, pw, pad):
            return bn(F.conv2d(F.conv2d(F.relu(t), dw, None, s, pad, 2, C), pw))

        outs = []
        for e in range(self.E):
            p = self.edge_params(e)
            if s == 1:
                skip, zero = x, x.mul(0.0)
            else:
                rx = F.relu(x)
                skip = bn(torch.cat([F.conv2d(rx, p["fr_1"], None, 2), F.conv2d(shifted_for_reduce(rx), p["fr_2"], None, 2)], 1))
                zero = x[:, :, ::s, ::s].mul(0.0)
            results = [
                zero,
                bn(F.max_pool2d(x, 3, s, 1)),
                bn(F.avg_pool2d(x, 3, s, 1, count_include_pad=False)),
                skip,
                sep(x, p["sep3_dw1"], p["sep3_pw1"], p["sep3_dw2"], p["sep3_pw2"], 1),
                sep(x, p["sep5_dw1"], p["sep5_pw1"], p["sep5_dw2"], p["sep5_pw2"], 2),
                dil(x, p["dil3_dw"], p["dil3_pw"], 2),
                dil(x, p["dil5_dw"], p["dil5_pw"], 4),
            ]
            outs.append(sum(w[e, k] * results[k] for k in range(len(results))))
        return torch.cat(outs, 1)


class SearchCell(nn.Module):
    """Preprocessing (ReLU-conv1x1-BN, or FactorizedReduce after a reduction cell), then
    ``nodes`` intermediate nodes fed by mixed edges; output = concat of all nodes."""

    def __init__(self, nodes: int, C_prev_prev: int, C_prev: int, C: int, reduction: bool, reduction_prev: bool):
        super().__init__()
        self.nodes, self.C, self.reduction = nodes, C, reduction
        self.preprocess0 = SearchFactorizedReduce(C_prev_prev, C) if reduction_prev else SearchReLUConvBN(C_prev_prev, C)
        self.preprocess1 = SearchReLUConvBN(C_prev, C)
        self.sources = nn.ModuleList(
            SourceOps(C, source_fanout(nodes, j), 2 if reduction and j < 2 else 1) for j in range(nodes + 1)
        )
        self.multiplier = nodes

    def split_weights(self, weights_source_major: torch.Tensor) -> list[torch.Tensor]:
        """Cut the source-major weight rows (``source_major_order``) into one block per source."""
        return list(torch.split(weights_source_major, [m.E for m in self.sources], dim=0))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights_source_major: torch.Tensor, *, reference: bool = False) -> torch.Tensor:
        blocks = self.split_weights(weights_source_major)
        states = [self.preprocess0(s0), self.preprocess1(s1)]

        def run(j: int, h: torch.Tensor) -> torch.Tensor:
            src = self.sources[j]
            return src.reference_forward(h, blocks[j]) if reference else src(h, blocks[j])

        C = self.C
        contrib = [run(0, states[0]), run(1, states[1])]
        acc = (contrib[0] + contrib[1]).split(C, 1)  # both inputs' share of every node
        parts: list[tuple[torch.Tensor, ...]] = [(), ()]
        nodes_out = []
        for i in range(self.nodes):
            h = acc[i]
            for j in range(2, i + 2):  # earlier intermediate nodes (states 2..i+1)
                h = h + parts[j][i - (j - 1)]
            nodes_out.append(h)
            if i < self.nodes - 1:
                parts.append(run(i + 2, h).split(C, 1))
        return torch.cat(nodes_out, dim=1)
