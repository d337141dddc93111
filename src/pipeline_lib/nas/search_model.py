"""The DARTS search network: stem, stacked search cells, α as registered parameters.

The search space is ``ops`` (names of ``ops.OPS``; default ``DARTS_PRIMITIVES``, the
α columns in that order; ``darts_search.ops`` in params.yaml).
``alphas_normal`` and ``alphas_reduce`` (edges × ops, init 1e-3·N(0,1) as DARTS) are
``nn.Parameter``s of the model, so they are in ``state_dict()`` and in every checkpoint;
``arch_parameters()`` and ``weight_parameters()`` separate them for the two optimizers
(``parameters()`` yields both: never give it to the weight optimizer).

Reduction cells sit at ``layers // 3`` and ``2 * layers // 3`` (channels double there);
the classifier follows a global average pool, so any square input size works (odd sizes
included). ``stem_stride`` (default 1 = DARTS's CIFAR stem) can shrink large inputs.

Speed and memory switches (none changes the mathematics): ``channels_last`` (default
True; oneDNN's depthwise kernels are 1.5-2x faster in NHWC on CPU), ``recompute`` (default
True; the mixed ops' intermediates are recomputed in backward instead of kept, ~10x less
activation memory for ~1 extra forward; needed for double backward: False) and
``kept_cells`` (default 0; the last N cells keep their intermediates even so: their tensors
are the smallest, and their kernels the most dominated by fixed per-call costs). Inside
``search_cell.alpha_only_pass()`` the stem and the states that do not depend on α are
treated as constants.
"""

from __future__ import annotations

import contextlib
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..io.errors import PipelineError
from .derive import derive_genotype
from .genotypes import DARTS_PRIMITIVES, Genotype
from .ops import check_op_names
from .search_cell import SearchCell, edge_list, num_edges, source_major_order
from .search_passes import SearchBN, is_alpha_only


class SearchNetwork(nn.Module):
    def __init__(
        self,
        C: int = 16,
        num_classes: int = 2,
        layers: int = 8,
        nodes: int = 4,
        *,
        stem_multiplier: int = 3,
        stem_stride: int = 1,
        in_channels: int = 3,
        ops: Sequence[str] = DARTS_PRIMITIVES,
        channels_last: bool = True,
        recompute: bool = True,
        kept_cells: int = 0,
        seed: int | None = None,
    ):
        super().__init__()
        if layers < 1 or nodes < 1 or C < 2 or num_classes < 2:
            raise ValueError(f"bad search network size: C={C}, layers={layers}, nodes={nodes}, num_classes={num_classes}")
        self.primitives = check_op_names(ops, "darts_search.ops")
        if len(set(self.primitives)) != len(self.primitives) or set(self.primitives) <= {"none"}:
            raise PipelineError(f"darts_search.ops: {list(self.primitives)} must name distinct ops, at least one other than 'none'")
        self.config: dict[str, Any] = {
            "C": C, "num_classes": num_classes, "layers": layers, "nodes": nodes,
            "stem_multiplier": stem_multiplier, "stem_stride": stem_stride, "in_channels": in_channels,
            "ops": list(self.primitives),
        }  # fmt: skip
        self.C, self.num_classes, self.layers, self.nodes = C, num_classes, layers, nodes
        self.channels_last = channels_last
        # True: every forward runs edge by edge, op by op (slow; tests and benchmark only).
        self.reference_impl = False
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            self._build(C, num_classes, layers, nodes, stem_multiplier, stem_stride, in_channels)
        self.set_recompute(recompute, kept_cells=kept_cells)

    def set_recompute(self, enabled: bool, *, kept_cells: int | None = None) -> None:
        """Activation checkpointing of the mixed ops (less memory, ~1 extra forward), in every
        cell but the last ``kept_cells`` (unchanged when None): those keep their intermediates.
        The same values either way: the recomputation re-runs the same kernels on the same inputs."""
        if kept_cells is not None:
            if int(kept_cells) < 0:
                raise ValueError(f"kept_cells: {kept_cells}, expected >= 0")
            self.kept_cells = int(kept_cells)
        self.recompute = bool(enabled)
        recomputed = len(self.cells) - self.kept_cells  # the cells before: the largest tensors
        for i, cell in enumerate(self.cells):
            for module in cell.modules():
                if hasattr(module, "recompute"):
                    module.recompute = self.recompute and i < recomputed

    def _build(self, C, num_classes, layers, nodes, stem_multiplier, stem_stride, in_channels) -> None:
        C_curr = stem_multiplier * C
        self.stem_conv = nn.Conv2d(in_channels, C_curr, 3, stride=stem_stride, padding=1, bias=False)
        self.stem_bn = SearchBN(C_curr)  # affine, as DARTS's search stem
        C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        self.reduction_layers = (layers // 3, 2 * layers // 3)
        for i in range(layers):
            reduction = i in self.reduction_layers
            if reduction:
                C_curr *= 2
            cell = SearchCell(nodes, C_prev_prev, C_prev, C_curr, reduction, reduction_prev, self.primitives)
            reduction_prev = reduction
            self.cells.append(cell)
            C_prev_prev, C_prev = C_prev, cell.multiplier * C_curr
        self.classifier = nn.Linear(C_prev, num_classes)
        k = num_edges(nodes)
        self.alphas_normal = nn.Parameter(1e-3 * torch.randn(k, len(self.primitives)))
        self.alphas_reduce = nn.Parameter(1e-3 * torch.randn(k, len(self.primitives)))
        self.register_buffer("source_order", torch.tensor(source_major_order(nodes), dtype=torch.long), persistent=False)

    # --- parameters -----------------------------------------------------------------------
    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alphas_normal, self.alphas_reduce]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def alpha_softmax(self) -> dict[str, torch.Tensor]:
        """Current softmax(α) per cell type, detached on CPU (edges × ops)."""
        return {
            "normal": torch.softmax(self.alphas_normal.detach().float(), dim=-1).cpu(),
            "reduce": torch.softmax(self.alphas_reduce.detach().float(), dim=-1).cpu(),
        }

    def edges(self) -> list[tuple[int, int]]:
        """``(src_state, dst_state)`` of each α row."""
        return edge_list(self.nodes)

    def genotype(self, meta: dict[str, Any] | None = None) -> Genotype:
        w = self.alpha_softmax()
        return derive_genotype(w["normal"], w["reduce"], meta=meta, primitives=self.primitives)

    # --- forward --------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, *, reference: bool | None = None) -> torch.Tensor:
        """Logits. ``reference=True`` (default: ``self.reference_impl``) runs every edge op by
        op (the public code's structure; same mathematics, slow): tests and benchmark only."""
        if reference is None:
            reference = self.reference_impl
        w_normal = torch.softmax(self.alphas_normal, dim=-1)[self.source_order]
        w_reduce = torch.softmax(self.alphas_reduce, dim=-1)[self.source_order]
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad() if is_alpha_only() and not reference else contextlib.nullcontext():
            s0 = s1 = self.stem_bn(self.stem_conv(x))  # a constant in α-only passes
        free0 = free1 = True  # does the state not depend on α?
        for cell in self.cells:
            out = cell(s0, s1, w_reduce if cell.reduction else w_normal, reference=reference, alpha_free=(free0, free1))
            s0, s1, free0, free1 = s1, out, free1, False
        out = F.adaptive_avg_pool2d(s1, 1).flatten(1)
        return self.classifier(out)

    def loss(self, x: torch.Tensor, y: torch.Tensor, *, reference: bool | None = None) -> torch.Tensor:
        return F.cross_entropy(self(x, reference=reference), y)
