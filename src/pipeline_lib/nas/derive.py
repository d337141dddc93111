"""α → Genotype, DARTS's rule (``model_search.py: genotype()``).

For every intermediate node: each incoming edge's strength is its largest softmax weight
over the ops other than ``none``; keep the 2 strongest edges (ties: the lower source index
wins, as Python's stable sort does in the public code), each with its argmax op excluding
``none`` (ties: the op listed first in the search space, default ``DARTS_PRIMITIVES``). Edges of a node are stored
strongest first. Both cells concatenate every intermediate node.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from ..io.errors import PipelineError
from .genotypes import DARTS_PRIMITIVES, Genotype, count_skip_connects


def nodes_for_edges(n_edges: int) -> int:
    """Invert 2 + 3 + ... + (n + 1) = n_edges."""
    nodes, total = 0, 0
    while total < n_edges:
        total += 2 + nodes
        nodes += 1
    if total != n_edges:
        raise PipelineError(f"α has {n_edges} edge rows, which is no DARTS cell (2, 5, 9, 14, 20, ...)")
    return nodes


def derive_cell(weights: torch.Tensor, primitives: Sequence[str] = DARTS_PRIMITIVES) -> list[tuple[str, int]]:
    """Edges ``[(op, src), ...]`` (2 per node) from softmax weights of shape (edges, ops)."""
    w = torch.as_tensor(weights).detach().to("cpu", torch.float64)
    if w.dim() != 2 or w.shape[1] != len(primitives):
        raise PipelineError(f"α weights have shape {tuple(w.shape)}, expected (edges, {len(primitives)})")
    keep = [k for k, name in enumerate(primitives) if name != "none"]
    if not keep:
        raise PipelineError(f"the search space {list(primitives)} has no op other than 'none' to derive a cell from")
    nodes = nodes_for_edges(w.shape[0])
    gene: list[tuple[str, int]] = []
    start = 0
    for i in range(nodes):
        n_in = 2 + i
        rows = w[start : start + n_in][:, keep].tolist()  # plain floats: exact, deterministic ties
        strength = [max(r) for r in rows]
        chosen = sorted(range(n_in), key=lambda j: (-strength[j], j))[:2]
        for j in chosen:
            best = max(range(len(keep)), key=lambda k: (rows[j][k], -k))
            gene.append((primitives[keep[best]], j))
        start += n_in
    return gene


def derive_genotype(
    weights_normal: torch.Tensor,
    weights_reduce: torch.Tensor,
    *,
    meta: Mapping[str, Any] | None = None,
    primitives: Sequence[str] = DARTS_PRIMITIVES,
) -> Genotype:
    """A ``Genotype(source="darts")`` from softmax(α) of both cell types (op columns in the
    order of ``primitives``, the search space)."""
    normal = derive_cell(weights_normal, primitives)
    reduce = derive_cell(weights_reduce, primitives)
    nodes = len(normal) // 2
    concat = tuple(range(2, 2 + nodes))
    geno = Genotype(
        normal=tuple(normal),
        normal_concat=concat,
        reduce=tuple(reduce),
        reduce_concat=tuple(range(2, 2 + len(reduce) // 2)),
        source="darts",
        meta=dict(meta or {}),
    )
    geno.meta["normal_skip_connects"] = count_skip_connects(geno, "normal")
    geno.meta["reduce_skip_connects"] = count_skip_connects(geno, "reduce")
    return geno
