"""The cell genotype shared by DARTS and ENAS, and its JSON file format.

A cell has two inputs (indices 0 and 1: the outputs of the two previous cells) and
``len(nodes)`` intermediate nodes (indices 2, 3, ...). Each node sums exactly two
edges; an edge is ``(op, input_index)`` with ``input_index`` < the node's own index.
The cell output concatenates the nodes listed in ``*_concat``:
- DARTS: every intermediate node.
- ENAS: the nodes no other node uses (ENAS's "unused nodes are concatenated"); the
  retrain network's next-cell preprocessing (1x1 conv + BN) is ENAS's projection.
ENAS's ``identity`` op is stored as ``skip_connect`` (the same function), so one op
table serves both searches.

File format (``format`` = ``nexperia-genotype/1``)::

    {"format": "nexperia-genotype/1", "source": "darts" | "enas",
     "normal": [[op, input], [op, input], ...],   # 2 edges per node, node by node
     "normal_concat": [2, 3, 4, 5],
     "reduce": [...], "reduce_concat": [...],
     "meta": {...}}                               # free-form: search order, epochs, skip count
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..io.atomic import write_json
from ..io.errors import PipelineError

FORMAT = "nexperia-genotype/1"

# DARTS's search space, the default of ``darts_search.ops`` (the α columns follow the list).
DARTS_PRIMITIVES = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
# ENAS micro's search space; "identity" is written as skip_connect in genotypes.
ENAS_PRIMITIVES = ("sep_conv_3x3", "sep_conv_5x5", "avg_pool_3x3", "max_pool_3x3", "identity")
ENAS_TO_GENOTYPE_OP = {"identity": "skip_connect"}

Edge = tuple[str, int]


@dataclass(frozen=True)
class Genotype:
    normal: tuple[Edge, ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[Edge, ...]
    reduce_concat: tuple[int, ...]
    source: str = "darts"
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for kind in ("normal", "reduce"):
            validate_cell(getattr(self, kind), getattr(self, f"{kind}_concat"), kind)

    @property
    def nodes(self) -> int:
        return len(self.normal) // 2

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "source": self.source,
            "normal": [list(e) for e in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [list(e) for e in self.reduce],
            "reduce_concat": list(self.reduce_concat),
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str = "genotype") -> "Genotype":
        if data.get("format") != FORMAT:
            raise PipelineError(f"{where}: format is {data.get('format')!r}, expected {FORMAT!r}")
        try:
            return cls(
                normal=tuple((str(op), int(i)) for op, i in data["normal"]),
                normal_concat=tuple(int(i) for i in data["normal_concat"]),
                reduce=tuple((str(op), int(i)) for op, i in data["reduce"]),
                reduce_concat=tuple(int(i) for i in data["reduce_concat"]),
                source=str(data.get("source", "darts")),
                meta=dict(data.get("meta", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PipelineError(f"{where}: malformed genotype ({exc})") from exc

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "Genotype":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise PipelineError(f"{path}: cannot read genotype JSON ({exc})") from exc
        return cls.from_dict(data, where=str(path))


def validate_cell(edges, concat, kind: str) -> None:
    if len(edges) == 0 or len(edges) % 2:
        raise PipelineError(f"genotype {kind} cell: needs 2 edges per node, got {len(edges)} edges")
    nodes = len(edges) // 2
    for k, (op, inp) in enumerate(edges):
        node = 2 + k // 2
        # the names themselves are checked against ``ops.OPS`` where a network is built
        # (this module stays free of torch); "none" never is an edge of a derived cell
        if not isinstance(op, str) or not op or op == "none":
            raise PipelineError(f"genotype {kind} cell: edge {k} has op {op!r}, expected an op name of nas/ops.py other than 'none'")
        if not 0 <= inp < node:
            raise PipelineError(f"genotype {kind} cell: node {node} takes input {inp}, must be in [0, {node})")
    if not concat or any(not 2 <= c < 2 + nodes for c in concat):
        raise PipelineError(f"genotype {kind} cell: concat {list(concat)} must name nodes in [2, {2 + nodes})")


def count_skip_connects(genotype: Genotype, cell: str = "normal") -> int:
    """Skip-connects in a cell: DARTS's known collapse shows up as this count growing."""
    return sum(op == "skip_connect" for op, _ in getattr(genotype, cell))
