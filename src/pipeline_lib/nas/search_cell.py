"""The DARTS search cell: every edge a ``ops.MixedOp``, Σ_k softmax(α)_k·op_k over the listed ops.

Mathematics (Liu et al. 2019): node ``i`` = Σ_{j<i} MixedOp_{(i,j)}(h_j, w[(i,j)]), with
``w`` = softmax(α) over the ops of the search space (``darts_search.ops``, any names of
``ops.OPS``; default ``genotypes.DARTS_PRIMITIVES``) and search-time BN with
``affine=False``. Edges are numbered as in DARTS: node 0's edges from inputs 0, 1, then
node 1's from 0, 1, 2, and so on (α row ``e`` = edge ``e``).

Implementation (same mathematics, far fewer and larger kernels than 14 ``MixedOp``s of 8
small modules each, ~600 kernels per cell in the public code): the cell evaluates all E
edges *leaving one state* together (``SourceOps``), which is exact because they all read
the same tensor. The ops with a batched kernel (``search_fused``: pools, identity,
factorized reduce, sep and dil convs) run as one group each for all E edges; any other op
of ``ops.OPS`` runs as its own module, edge by edge (``search_fused.GenericOp``): the
mixed output is fused(known ops) + Σ generic(other ops).

- memory: each op group is recomputed in backward instead of kept (``recompute_call``),
  and in α-only passes states that do not depend on α are constants (``_ConstantMix``).

``SourceOps.reference_forward`` computes the same thing with ``ops.MixedOp`` itself, edge
by edge and op by op, on the same parameters (``torch.func.functional_call`` over each
group's ``edge_state``), as the public code does; tests check the two agree (outputs and
gradients).

BN running statistics: search BN always normalises with batch statistics in training mode
(as DARTS); running statistics (used only in eval mode) are updated unless the pass runs
inside ``frozen_bn_stats()``, which the architect uses for its α-step passes (unrolled,
w±, first-order validation) so that only the weight step's batches enter them. Those pass
modes and the recomputation live in ``search_passes``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .ops import MixedOp, reduce_phases
from .search_fused import Features, build_groups
from .search_passes import SearchBN, frozen_bn_stats, is_alpha_only, recompute_call, search_bn


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
        return out if out is not None else module.zeros(x)

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


def _columns(w: torch.Tensor, cols: tuple[int, ...]) -> torch.Tensor:
    """w[:, cols]; a view when the columns are consecutive (they usually are)."""
    if list(cols) == list(range(cols[0], cols[0] + len(cols))):
        return w[:, cols[0] : cols[0] + len(cols)]
    return w[:, list(cols)]


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
    """The mixed ops of all E edges leaving one state (see the module docstring): one
    ``search_fused`` group per op (pools and identity share one), keyed by op name
    (``shared`` for the shared group) in ``groups``; ``cols[key]`` are its α columns.

    With ``recompute`` each group is its own recomputation unit: backward holds one
    group's intermediates at a time.
    """

    def __init__(self, C: int, fanout: int, stride: int, primitives: tuple[str, ...]):
        super().__init__()
        if stride == 2 and C % 2:
            raise ValueError(f"a reduction cell needs an even channel count, got {C}")
        self.C, self.E, self.stride, self.primitives = C, fanout, stride, tuple(primitives)
        # Recompute intermediates in backward instead of keeping them (activation
        # checkpointing): activations shrink ~10x for about one extra forward of the mixed
        # ops. Set by SearchNetwork(recompute=...).
        self.recompute = False
        self.groups = nn.ModuleDict(build_groups(self.primitives, C, fanout, stride))
        column = {name: k for k, name in enumerate(self.primitives)}
        self.cols = {key: tuple(column[n] for n in g.ops) for key, g in self.groups.items()}

    def zeros(self, x: torch.Tensor) -> torch.Tensor:
        """The output when every op is ``none``."""
        s = self.stride
        return x[:, :, ::s, ::s].repeat(1, self.E, 1, 1).mul(0.0)

    def forward(self, x: torch.Tensor, w: torch.Tensor, *, constant_input: bool = False) -> torch.Tensor:
        """``x`` (B, C, H, W), ``w`` (E, ops) softmax weights → (B, E·C, H', W'), edge-major
        channel blocks (block e = MixedOp of outgoing edge e). Works in NCHW and in
        channels_last (the output follows x's memory format).

        ``constant_input=True``: only α's gradient is wanted and ``x`` does not depend on α
        (inputs of the first cells in an α-only pass). The op outputs are then constants:
        computed without a graph, recomputed in backward for ∂/∂α (``_ConstantMix``)."""
        if constant_input:
            return _ConstantMix.apply(x.detach(), w, self)
        call = recompute_call if (self.recompute and torch.is_grad_enabled()) else _call
        terms = (call(group, x, _columns(w, self.cols[key])) for key, group in self.groups.items())
        out = next(terms, None)
        if out is None:
            return self.zeros(x)
        for i, term in enumerate(terms):
            # the first sum is a new tensor: no group's own output is modified in place
            out = out + term if i == 0 else out.add_(term)
        return out

    def constant_features(self, x: torch.Tensor) -> Features:
        """Unweighted op outputs without a graph, one group at a time, as (tensor, α
        columns, shared): per-edge (B, E·C) blocks of one op, or the (B, k·C) outputs
        shared by every edge."""
        with torch.no_grad(), frozen_bn_stats():
            for key, group in self.groups.items():
                for t, idx, shared in group.features(x):
                    yield t, tuple(self.cols[key][i] for i in idx), shared

    # The same mathematics with ops.MixedOp, edge by edge and op by op ---------------------
    def edge_state(self, e: int) -> dict[str, torch.Tensor]:
        """Edge ``e``'s ``MixedOp`` state (``_ops.{column}.…``): views of the batched
        parameters and buffers, or the generic ops' own."""
        column = {name: k for k, name in enumerate(self.primitives)}
        state = {}
        for group in self.groups.values():
            for name, op_state in group.edge_state(e).items():
                state.update({f"_ops.{column[name]}.{k}": v for k, v in op_state.items()})
        return state

    def reference_forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Σ_k w[e,k]·op_k(x) for each edge by ``ops.MixedOp`` (every op separately, incl.
        ``none``), on this module's parameters."""
        if "_template" not in self.__dict__:  # not a submodule: its tensors are all replaced
            with torch.device("meta"):
                self.__dict__["_template"] = search_bn(MixedOp(self.C, self.stride, self.primitives))
        template = self.__dict__["_template"]
        template.train(self.training)
        outs = [functional_call(template, self.edge_state(e), (x, w[e]), strict=True) for e in range(self.E)]
        return torch.cat(outs, 1)


class SearchCell(nn.Module):
    """Preprocessing (ReLU-conv1x1-BN, or FactorizedReduce after a reduction cell), then
    ``nodes`` intermediate nodes fed by mixed edges; output = concat of all nodes."""

    def __init__(
        self, nodes: int, C_prev_prev: int, C_prev: int, C: int, reduction: bool, reduction_prev: bool, primitives: tuple[str, ...]
    ):
        super().__init__()
        self.nodes, self.C, self.reduction = nodes, C, reduction
        self.preprocess0 = SearchFactorizedReduce(C_prev_prev, C) if reduction_prev else SearchReLUConvBN(C_prev_prev, C)
        self.preprocess1 = SearchReLUConvBN(C_prev, C)
        self.sources = nn.ModuleList(
            SourceOps(C, source_fanout(nodes, j), 2 if reduction and j < 2 else 1, primitives) for j in range(nodes + 1)
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
