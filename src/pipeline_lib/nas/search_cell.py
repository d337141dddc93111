"""The DARTS search cell: every edge a softmax(α)-weighted mixture of the 8 ops.

Mathematics (Liu et al. 2019): node ``i`` = Σ_{j<i} Σ_k w[(i,j), k] · op_k(h_j), with
``w`` = softmax(α) over the 8 ops of ``genotypes.DARTS_PRIMITIVES`` and search-time BN
with ``affine=False``. Edges are numbered as in DARTS: node 0's edges from inputs 0, 1,
then node 1's from 0, 1, 2, and so on (α row ``e`` = edge ``e``).

Implementation (same mathematics, far fewer and larger kernels than 14 ``MixedOp``s of 8
small modules each, ~600 kernels per cell in the public code): the cell evaluates all E
edges *leaving one state* together (``SourceOps``), which is exact because they all read
the same tensor:

- each conv op of the E edges is one grouped depthwise conv and one grouped pointwise
  conv over edge-major channel blocks, its BNs one call (BN is per channel, so batching
  channels changes no statistic);
- the α weight of a conv op is the *weight argument of the op's final BN* (affine=False
  BN then scaled per edge: w·BN(x) = batch_norm(x, weight=w)), so no separate multiply;
  its gradient comes out of BN's backward;
- pooling (+ its BN) and identity do not depend on the edge: computed once per state and
  mixed into the E edges by one 1x1 conv with weight kron(w[:, ops], I_C);
- ``none`` is never computed: w_none·0 contributes nothing to the output or to any
  gradient, while α_none still enters the softmax, so every weight and every α gradient
  is exactly DARTS's;
- dilated convs run as plain convs on the polyphase components (see ``SourceOps``);
- memory: each op group is recomputed in backward instead of kept (``recompute_call``),
  and in α-only passes states that do not depend on α are constants (``_ConstantMix``).

``SourceOps.reference_forward`` computes the same thing edge by edge and op by op from the
same parameters, as the public code does; tests check the two agree (outputs and gradients).

BN running statistics: search BN always normalises with batch statistics in training mode
(as DARTS); running statistics (used only in eval mode) are updated unless the pass runs
inside ``frozen_bn_stats()``, which the architect uses for its α-step passes (unrolled,
w±, first-order validation) so that only the weight step's batches enter them. Those pass
modes and the recomputation live in ``search_passes``.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .genotypes import DARTS_PRIMITIVES
from .ops import reduce_phases
from .search_passes import SearchBN, frozen_bn_stats, is_alpha_only, recompute_call

# Column of each op in α (order of DARTS_PRIMITIVES).
NONE, MAX_POOL, AVG_POOL, SKIP, SEP3, SEP5, DIL3, DIL5 = range(8)
assert DARTS_PRIMITIVES[SKIP] == "skip_connect" and DARTS_PRIMITIVES[DIL5] == "dil_conv_5x5"

class _ConstantMix(torch.autograd.Function):
    """Σ_k w[e,k]·op_k(x) for an input that does not depend on α, in an α-only pass: the
    op outputs are constants, so backward only needs ∂/∂w[e,k] = <grad_e, op_k(x)_e>. The
    op outputs are recomputed in backward (no graph, BN statistics frozen, one op group at
    a time) rather than kept; no gradient flows to x or to the weights (none is wanted in
    an α-only pass)."""

    @staticmethod
    def forward(ctx, x, w, module):  # noqa: D102
        ctx.module = module
        ctx.save_for_backward(x, w)
        out = None
        for t, cols, shared in module.constant_features(x):
            term = _mix_terms(t, w, cols, shared, module.C)
            out = term if out is None else out.add_(term)
        return out

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        x, w = ctx.saved_tensors
        module = ctx.module
        E, C = module.E, module.C
        grad_w = torch.zeros_like(w)
        g = grad.unflatten(1, (E, C))
        for t, cols, shared in module.constant_features(x):
            if shared:  # (B, k·C) mixed into every edge: <g_e, t_k>
                grad_w[:, list(cols)] += torch.einsum("bechw,bkchw->ek", g, t.unflatten(1, (len(cols), C)))
            else:  # (B, E·C) per-edge block of one op
                grad_w[:, cols[0]] += torch.einsum("bechw,bechw->e", g, t.unflatten(1, (E, C)))
        return None, grad_w, None


def _mix_terms(t: torch.Tensor, w: torch.Tensor, cols: tuple[int, ...], shared: bool, C: int) -> torch.Tensor:
    """Σ over the ops in ``t`` of w[e, op]·t_op, as (B, E·C, H, W) (no autograd inside)."""
    if shared:
        eye = torch.eye(C, dtype=w.dtype, device=w.device)
        return F.conv2d(t, torch.kron(w[:, list(cols)], eye)[:, :, None, None])
    return t * w[:, cols[0]].repeat_interleave(C).view(1, -1, 1, 1)


def _call(fn, *args):
    return fn(*args)


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


def _edge_weights(w: torch.Tensor | None, op: int, C: int) -> torch.Tensor | None:
    """BN weight of an op's (E·C) edge-major channels: w[e, op] on edge e's C channels."""
    return None if w is None else w[:, op].repeat_interleave(C)


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
        even, odd = reduce_phases(F.relu(x))  # stride-2 1x1 convs as stride-1 convs of the phases
        return self.bn(torch.cat([F.conv2d(even, self.conv_1.weight), F.conv2d(odd, self.conv_2.weight)], dim=1))


class SourceOps(nn.Module):
    """The mixed ops of all E edges leaving one state (see the module docstring).

    Parameters, per op, in edge-major channel blocks (rows ``e*C:(e+1)*C`` belong to
    outgoing edge e): ``sep{3,5}_dw1`` / ``sep{3,5}_dw2`` (E·C, 1, k, k) depthwise and
    ``sep{3,5}_pw1`` / ``sep{3,5}_pw2`` (E·C, C, 1, 1) pointwise (grouped by edge);
    ``dil{3,5}_dw``, ``dil{3,5}_pw``; for stride 2 ``fr_1`` / ``fr_2`` (E·C/2, C, 1, 1).

    Dilated convs: oneDNN's dilated depthwise kernels are several times slower than the
    plain ones on CPU, so a dilation-2 conv runs as a plain conv on the input's 2x2
    polyphase components (stride 1, even sizes: ``to_phases``; stride 2: only the even
    phase is read, ``x[:, :, ::2, ::2]``). Exact: it is a re-indexing of the same sums.
    The pointwise conv and the BN after it are per pixel / per channel, so they run in the
    phase layout too; the result goes back once (``from_phases``).

    With ``recompute`` each op group (sep3, sep5, dil3, dil5, pooling/identity, factorized
    reduce) is its own recomputation unit: backward holds one group's intermediates at a
    time.
    """

    SEP = {3: SEP3, 5: SEP5}
    DIL = {3: DIL3, 5: DIL5}

    def __init__(self, C: int, fanout: int, stride: int):
        super().__init__()
        if stride == 2 and C % 2:
            raise ValueError(f"a reduction cell needs an even channel count, got {C}")
        self.C, self.E, self.stride = C, fanout, stride
        EC = fanout * C
        # Recompute intermediates in backward instead of keeping them (activation
        # checkpointing): activations shrink ~10x for about one extra forward of the mixed
        # ops. Set by SearchNetwork(recompute=...).
        self.recompute = False

        def param(*shape: int) -> nn.Parameter:
            p = nn.Parameter(torch.empty(*shape))
            _init_conv_weight(p)
            return p

        for k in (3, 5):
            setattr(self, f"sep{k}_dw1", param(EC, 1, k, k))
            setattr(self, f"sep{k}_pw1", param(EC, C, 1, 1))
            setattr(self, f"sep{k}_bn1", SearchBN(EC, affine=False))
            setattr(self, f"sep{k}_dw2", param(EC, 1, k, k))
            setattr(self, f"sep{k}_pw2", param(EC, C, 1, 1))
            setattr(self, f"sep{k}_bn2", SearchBN(EC, affine=False))
        for k in (3, 5):
            setattr(self, f"dil{k}_dw", param(EC, 1, k, k))
            setattr(self, f"dil{k}_pw", param(EC, C, 1, 1))
            setattr(self, f"dil{k}_bn", SearchBN(EC, affine=False))
        self.bn_pool = SearchBN(2 * C, affine=False)
        if stride == 2:
            self.fr_1 = param(EC // 2, C, 1, 1)
            self.fr_2 = param(EC // 2, C, 1, 1)
            self.bn_fr = SearchBN(EC, affine=False)

    # The batched forward -----------------------------------------------------------------
    def forward(self, x: torch.Tensor, w: torch.Tensor, *, constant_input: bool = False) -> torch.Tensor:
        """``x`` (B, C, H, W), ``w`` (E, 8) softmax weights → (B, E·C, H', W'), edge-major
        channel blocks (block e = Σ_k w[e,k]·op_k(x) of outgoing edge e). Works in NCHW and
        in channels_last (the output follows x's memory format).

        ``constant_input=True``: only α's gradient is wanted and ``x`` does not depend on α
        (inputs of the first cells in an α-only pass). The op outputs are then constants:
        computed without a graph, recomputed in backward for ∂/∂α (``_ConstantMix``)."""
        if constant_input:
            return _ConstantMix.apply(x.detach(), w, self)
        call = recompute_call if (self.recompute and torch.is_grad_enabled()) else _call
        out = call(self._free_mixed, x, w)
        for k in (3, 5):
            out = out.add_(call(self._sep_op, x, w, k))
            out = out.add_(call(self._dil_op, x, w, k))
        if self.stride == 2:
            B, E, C, Ho, Wo = out.shape[0], self.E, self.C, out.shape[2], out.shape[3]
            fr = call(self._fr_op, x, w)  # (conv half, edge, C/2) channel blocks
            out.view(B, E, 2, C // 2, Ho, Wo).add_(fr.view(B, 2, E, C // 2, Ho, Wo).transpose(1, 2))
        return out

    # Op groups: (x, w) → α-weighted output of all E edges (w None: unweighted) -------------
    def _sep_op(self, x: torch.Tensor, w: torch.Tensor | None, k: int) -> torch.Tensor:
        """sep_conv_kxk of all edges; the α weight is the weight of the final BN."""
        E, EC, pad = self.E, self.E * self.C, (k - 1) // 2
        # one name for every intermediate: each is freed as soon as it is consumed (when
        # recomputed, none is kept for backward)
        t = repeat_channels(F.relu(x), E)
        t = F.conv2d(t, getattr(self, f"sep{k}_dw1"), None, self.stride, pad, 1, EC)
        t = F.conv2d(t, getattr(self, f"sep{k}_pw1"), None, 1, 0, 1, E)
        t = F.relu(getattr(self, f"sep{k}_bn1")(t), inplace=True)  # BN keeps its input, not output
        t = F.conv2d(t, getattr(self, f"sep{k}_dw2"), None, 1, pad, 1, EC)
        t = F.conv2d(t, getattr(self, f"sep{k}_pw2"), None, 1, 0, 1, E)
        return getattr(self, f"sep{k}_bn2")(t, _edge_weights(w, self.SEP[k], self.C))

    def _dil_op(self, x: torch.Tensor, w: torch.Tensor | None, k: int) -> torch.Tensor:
        """dil_conv_kxk (dilation 2) of all edges, as a plain conv on the polyphase input."""
        E, EC, s = self.E, self.E * self.C, self.stride
        B, H, W = x.shape[0], x.shape[2], x.shape[3]
        phased = s == 1 and H % 2 == 0 and W % 2 == 0
        t = F.relu(x)
        if s == 2:
            t, pad, dil = t[:, :, ::2, ::2], (k - 1) // 2, 1
        elif phased:
            t, pad, dil = to_phases(t), (k - 1) // 2, 1
        else:  # odd size at stride 1: the dilated kernel itself
            pad, dil = k - 1, 2
        t = F.conv2d(repeat_channels(t, E), getattr(self, f"dil{k}_dw"), None, 1, pad, dil, EC)
        t = F.conv2d(t, getattr(self, f"dil{k}_pw"), None, 1, 0, 1, E)
        t = getattr(self, f"dil{k}_bn")(t, _edge_weights(w, self.DIL[k], self.C))
        return from_phases(t, B) if phased else t

    def _free_ops(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        """BN(max pool), BN(avg pool) (and x itself at stride 1), shared by all edges, with
        their α columns."""
        s = self.stride
        pools = self.bn_pool(torch.cat([F.max_pool2d(x, 3, s, 1), F.avg_pool2d(x, 3, s, 1, count_include_pad=False)], 1))
        if s == 1:
            return torch.cat([pools, x], 1), (MAX_POOL, AVG_POOL, SKIP)
        return pools, (MAX_POOL, AVG_POOL)

    def _free_mixed(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        # mixed into the E edges by one 1x1 conv whose weight is kron(w[:, ops], I_C):
        # out[e·C + c] = Σ_k w[e, k] · free[k·C + c]
        free, cols = self._free_ops(x)
        eye = torch.eye(self.C, dtype=w.dtype, device=w.device)
        return F.conv2d(free, torch.kron(w[:, list(cols)], eye)[:, :, None, None])

    def _fr_op(self, x: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
        """FactorizedReduce (stride-2 skip) of all edges: channel blocks (conv_1|conv_2, edge, C/2)."""
        even, odd = reduce_phases(F.relu(x))  # stride-2 1x1 convs as stride-1 convs of the phases
        f1 = F.conv2d(even, self.fr_1)
        f2 = F.conv2d(odd, self.fr_2)
        del even, odd
        bn_weight = None
        if w is not None:
            E, half = self.E, self.C // 2
            bn_weight = w[:, SKIP].view(1, E, 1).expand(2, E, half).reshape(E * self.C)
        return self.bn_fr(torch.cat([f1, f2], 1), bn_weight)

    def constant_features(self, x: torch.Tensor) -> Iterator[tuple[torch.Tensor, tuple[int, ...], bool]]:
        """Unweighted op outputs without a graph, one group at a time, as (tensor, α
        columns, shared): per-edge (B, E·C) blocks for the conv ops and the stride-2 skip,
        and the (B, k·C) parameter-free ops shared by every edge."""
        C, E = self.C, self.E
        with torch.no_grad(), frozen_bn_stats():
            for k in (3, 5):
                yield self._sep_op(x, None, k), (self.SEP[k],), False
                yield self._dil_op(x, None, k), (self.DIL[k],), False
            if self.stride == 2:
                fr = self._fr_op(x, None)
                B, Ho, Wo = fr.shape[0], fr.shape[2], fr.shape[3]  # → edge-major channels
                yield fr.view(B, 2, E, C // 2, Ho, Wo).transpose(1, 2).reshape(B, E * C, Ho, Wo), (SKIP,), False
            free, cols = self._free_ops(x)
            yield free, cols, True

    # The same mathematics, edge by edge and op by op (the public code's structure) --------
    def edge_params(self, e: int) -> dict[str, torch.Tensor]:
        """Edge ``e``'s parameters as the per-op conv weights of ``ops.py``'s modules."""
        C = self.C
        sl = slice(e * C, (e + 1) * C)
        names = [f"sep{k}_{p}" for k in (3, 5) for p in ("dw1", "pw1", "dw2", "pw2")]
        names += [f"dil{k}_{p}" for k in (3, 5) for p in ("dw", "pw")]
        p = {name: getattr(self, name)[sl] for name in names}
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

        def sep(t, p, k):
            pad = (k - 1) // 2
            t = bn(F.conv2d(F.conv2d(F.relu(t), p[f"sep{k}_dw1"], None, s, pad, 1, C), p[f"sep{k}_pw1"]))
            return bn(F.conv2d(F.conv2d(F.relu(t), p[f"sep{k}_dw2"], None, 1, pad, 1, C), p[f"sep{k}_pw2"]))

        def dil(t, p, k):
            return bn(F.conv2d(F.conv2d(F.relu(t), p[f"dil{k}_dw"], None, s, k - 1, 2, C), p[f"dil{k}_pw"]))

        outs = []
        for e in range(self.E):
            p = self.edge_params(e)
            if s == 1:
                skip, zero = x, x.mul(0.0)
            else:
                rx = F.relu(x)
                shifted = F.pad(rx[:, :, 1:, 1:], (0, 1, 0, 1))  # the public code's x[:, :, 1:, 1:] (+ odd sizes)
                skip = bn(torch.cat([F.conv2d(rx, p["fr_1"], None, 2), F.conv2d(shifted, p["fr_2"], None, 2)], 1))
                zero = x[:, :, ::s, ::s].mul(0.0)
            results = [
                zero,
                bn(F.max_pool2d(x, 3, s, 1)),
                bn(F.avg_pool2d(x, 3, s, 1, count_include_pad=False)),
                skip,
                sep(x, p, 3),
                sep(x, p, 5),
                dil(x, p, 3),
                dil(x, p, 5),
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
        self.recompute = False  # preprocessing recomputed in backward (SearchNetwork(recompute=...))

    def split_weights(self, weights_source_major: torch.Tensor) -> list[torch.Tensor]:
        """Cut the source-major weight rows (``source_major_order``) into one block per source."""
        return list(torch.split(weights_source_major, [m.E for m in self.sources], dim=0))

    def forward(
        self,
        s0: torch.Tensor,
        s1: torch.Tensor,
        weights_source_major: torch.Tensor,
        *,
        reference: bool = False,
        alpha_free: tuple[bool, bool] = (False, False),
    ) -> torch.Tensor:
        """``alpha_free``: whether s0 / s1 do not depend on α (used in α-only passes)."""
        blocks = self.split_weights(weights_source_major)
        constant = [f and is_alpha_only() and not reference for f in alpha_free]
        states = []
        for pre, s, const in ((self.preprocess0, s0, constant[0]), (self.preprocess1, s1, constant[1])):
            if const:
                with torch.no_grad():
                    states.append(pre(s))
            elif self.recompute and torch.is_grad_enabled() and not reference:
                states.append(recompute_call(pre, s))  # keeps s (alive anyway), not ReLU(s) and conv(s)
            else:
                states.append(pre(s))

        def run(j: int, h: torch.Tensor) -> torch.Tensor:
            src = self.sources[j]
            if reference:
                return src.reference_forward(h, blocks[j])
            return src(h, blocks[j], constant_input=j < 2 and constant[j])

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
