"""The random-cell baseline: a cell drawn uniformly from the DARTS search space, one per seed.

Li & Talwalkar (2019) and Yu et al. (2020) found that a searched cell often does no better than a
random one. The random cell is retrained by the same rule and protocol as the DARTS and ENAS
cells, so the table shows whether a search picked anything a draw would not.

The space is DARTS's derived cells: ``darts_search.ops`` without ``none`` and ``darts_search.nodes``
intermediate nodes. Node ``i`` (state index ``2 + i``) takes two *distinct* inputs among the
states before it (both cell inputs and the earlier nodes), each pair equally likely, and an
operation per input, each equally likely; the output concatenates every node (as DARTS does).
Normal and reduction cells are drawn independently.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..io.errors import PipelineError
from .genotypes import Edge, Genotype


def candidate_ops(ops: Sequence[str]) -> list[str]:
    """The ops a derived cell may use: the search's list without ``none`` (never an edge)."""
    usable = [op for op in dict.fromkeys(ops) if op != "none"]
    if not usable:
        raise PipelineError("params.yaml darts_search.ops: the random cell needs at least one op other than 'none'")
    return usable


def _draw_cell(rng: np.random.Generator, ops: list[str], nodes: int) -> tuple[Edge, ...]:
    edges: list[Edge] = []
    for node in range(2, 2 + nodes):
        inputs = rng.choice(node, size=2, replace=False)  # a uniform unordered pair of distinct states
        for inp in sorted(int(i) for i in inputs):
            edges.append((ops[int(rng.integers(len(ops)))], inp))
    return tuple(edges)


def sample_genotype(ops: Sequence[str], nodes: int, seed: int) -> Genotype:
    """One uniformly random DARTS cell pair (normal, reduce) under ``seed`` (same seed, same cell)."""
    if int(nodes) < 1:
        raise PipelineError(f"params.yaml darts_search.nodes: the random cell needs >= 1 node, got {nodes}")
    usable = candidate_ops(ops)
    rng = np.random.default_rng(int(seed))
    normal, reduce = _draw_cell(rng, usable, int(nodes)), _draw_cell(rng, usable, int(nodes))
    concat = tuple(range(2, 2 + int(nodes)))
    return Genotype(normal=normal, normal_concat=concat, reduce=reduce, reduce_concat=concat, source="random",
                    meta={"seed": int(seed), "ops": usable, "nodes": int(nodes), "sampler": "uniform"})
