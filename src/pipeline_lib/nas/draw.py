"""Pictures of searched cells (matplotlib, Agg); the α heatmap is drawn by the report stage.

Matplotlib rather than graphviz: graphviz's ``dot`` binary is not part of the project's
pinned Python environment (nor of this machine), and a cell has at most a dozen nodes,
so a fixed layered layout reads as well as dot's. Outputs are written atomically.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..atomic import atomic_path  # noqa: E402
from .genotypes import Genotype  # noqa: E402

OP_COLOURS = {
    "skip_connect": "#7f7f7f",
    "max_pool_3x3": "#1f77b4",
    "avg_pool_3x3": "#17becf",
    "sep_conv_3x3": "#d62728",
    "sep_conv_5x5": "#ff7f0e",
    "dil_conv_3x3": "#2ca02c",
    "dil_conv_5x5": "#9467bd",
}


def _node_positions(nodes: int) -> dict[str, tuple[float, float]]:
    pos = {"c_{k-2}": (0.0, 0.8), "c_{k-1}": (0.0, 0.2)}
    for i in range(nodes):
        pos[str(i)] = (1.0 + i, 0.5 + (0.25 if i % 2 else -0.25))
    pos["c_{k}"] = (nodes + 1.0, 0.5)
    return pos


def _name(index: int) -> str:
    return {0: "c_{k-2}", 1: "c_{k-1}"}.get(index, str(index - 2))


def draw_cell(genotype: Genotype, cell: str, path: str | Path, *, title: str | None = None, dpi: int = 120) -> None:
    """One cell as a DAG: inputs left, intermediate nodes, output right; edges coloured by op."""
    edges = getattr(genotype, cell)
    concat = getattr(genotype, f"{cell}_concat")
    nodes = len(edges) // 2
    pos = _node_positions(nodes)
    fig, ax = plt.subplots(figsize=(2.2 + 1.3 * nodes, 3.2))
    for k, (op, index) in enumerate(edges):
        src, dst = pos[_name(index)], pos[str(k // 2)]
        colour = OP_COLOURS.get(op, "black")
        ax.annotate("", xy=dst, xytext=src, arrowprops=dict(arrowstyle="->", color=colour, lw=1.8,
                                                            connectionstyle=f"arc3,rad={0.15 if k % 2 else -0.15}"))
        mid = ((src[0] + dst[0]) / 2, (src[1] + dst[1]) / 2 + (0.06 if k % 2 else -0.06))
        ax.text(*mid, op, fontsize=7, color=colour, ha="center", va="center",
                bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.8))
    for node in concat:
        ax.annotate("", xy=pos["c_{k}"], xytext=pos[str(node - 2)],
                    arrowprops=dict(arrowstyle="->", color="#bbbbbb", lw=1, linestyle="--"))
    for name, (x, y) in pos.items():
        is_io = name.startswith("c_")
        ax.text(x, y, f"${name}$" if is_io else name, ha="center", va="center", fontsize=9,
                bbox=dict(boxstyle="round,pad=0.35", fc="#fde9b4" if is_io else "#cfe2f3", ec="black"))
    ax.set_xlim(-0.5, nodes + 1.5)
    ax.set_ylim(0.0, 1.0)
    ax.axis("off")
    ax.set_title(title or f"{genotype.source.upper()} {cell} cell")
    fig.tight_layout()
    _save(fig, path, dpi)


def _save(fig, path: str | Path, dpi: int) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
