"""Pictures of a search: the cells of a Genotype.

Cells (``draw_cell``): with graphviz's ``dot`` binary on PATH (``shutil.which("dot")``)
the cell is laid out by dot, as DARTS's own ``visualize.py`` does; without it (it is no
Python package and not part of the pinned environment) a fixed layered matplotlib layout
is drawn instead: inputs c_{k-2}, c_{k-1} on the left, intermediate nodes in the middle,
the output c_{k} on the right, each edge labelled and coloured by its op. A cell has at
most a dozen nodes, so both read equally well; ``engine=`` forces one.

The report's softmax(α) heatmap is ``report.figures.alpha_figure``.

Matplotlib runs on the Agg backend; every PNG is written atomically.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..io.atomic import atomic_path  # noqa: E402
from ..io.errors import PipelineError  # noqa: E402
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
CELLS = ("normal", "reduce")


def _state_name(index: int) -> str:
    return {0: "c_{k-2}", 1: "c_{k-1}"}.get(index, str(index - 2))


def cell_dot(genotype: Genotype, cell: str) -> str:
    """The cell as graphviz DOT source (DARTS visualize.py's layout)."""
    edges = getattr(genotype, cell)
    concat = getattr(genotype, f"{cell}_concat")
    nodes = len(edges) // 2
    lines = [
        "digraph cell {",
        '  rankdir=LR; bgcolor="white";',
        '  node [style="rounded,filled", shape=rect, fontname=Helvetica, fontsize=16, height=0.5, penwidth=2];',
        '  edge [fontname=Helvetica, fontsize=14, penwidth=1.5];',
        '  "c_{k-2}" [fillcolor=darkseagreen2]; "c_{k-1}" [fillcolor=darkseagreen2];',
    ]
    lines += [f'  "{i}" [fillcolor=lightblue];' for i in range(nodes)]
    lines.append('  "c_{k}" [fillcolor=palegoldenrod];')
    for k, (op, index) in enumerate(edges):
        colour = OP_COLOURS.get(op, "black")
        lines.append(f'  "{_state_name(index)}" -> "{k // 2}" [label="{op}", color="{colour}", fontcolor="{colour}"];')
    lines += [f'  "{c - 2}" -> "c_{{k}}" [color=gray];' for c in concat]
    lines.append("}")
    return "\n".join(lines) + "\n"


def draw_cell(
    genotype: Genotype,
    cell: str,
    path: str | Path,
    *,
    title: str | None = None,
    dpi: int = 120,
    engine: str = "auto",
) -> str:
    """Draw ``genotype``'s ``cell`` ("normal" or "reduce") to a PNG; returns the engine used
    ("dot" or "matplotlib"). ``engine``: "auto" (dot when installed), "dot", "matplotlib"."""
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
    dot = shutil.which("dot")
    if engine == "dot" and dot is None:
        raise PipelineError("graphviz's dot binary is not installed; draw with engine='matplotlib'")
    if engine in ("auto", "dot") and dot is not None:
        source = cell_dot(genotype, cell)
        with atomic_path(path) as tmp:
            done = subprocess.run([dot, "-Tpng", f"-Gdpi={dpi}", "-o", str(tmp)], input=source, text=True, capture_output=True)
            if done.returncode != 0:
                raise PipelineError(f"{path}: graphviz dot failed ({done.stderr.strip()[:200]})")
        return "dot"
    _draw_cell_matplotlib(genotype, cell, path, title=title, dpi=dpi)
    return "matplotlib"


def _draw_cell_matplotlib(genotype: Genotype, cell: str, path, *, title: str | None, dpi: int) -> None:
    edges = getattr(genotype, cell)
    concat = getattr(genotype, f"{cell}_concat")
    nodes = len(edges) // 2
    pos = {"c_{k-2}": (0.0, 0.8), "c_{k-1}": (0.0, 0.2), "c_{k}": (nodes + 1.0, 0.5)}
    for i in range(nodes):
        pos[str(i)] = (1.0 + i, 0.5 + (0.25 if i % 2 else -0.25))
    fig, ax = plt.subplots(figsize=(2.4 + 1.4 * nodes, 3.4))
    for k, (op, index) in enumerate(edges):
        src, dst = pos[_state_name(index)], pos[str(k // 2)]
        colour = OP_COLOURS.get(op, "black")
        bend = 0.15 if k % 2 else -0.15
        ax.annotate(
            "", xy=dst, xytext=src,
            arrowprops=dict(arrowstyle="->", color=colour, lw=1.8, connectionstyle=f"arc3,rad={bend}", shrinkA=14, shrinkB=14),
        )  # fmt: skip
        mid = ((src[0] + dst[0]) / 2, (src[1] + dst[1]) / 2 + (0.07 if k % 2 else -0.07))
        ax.text(*mid, op, fontsize=7, color=colour, ha="center", va="center",
                bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.85))  # fmt: skip
    for c in concat:
        ax.annotate("", xy=pos["c_{k}"], xytext=pos[str(c - 2)],
                    arrowprops=dict(arrowstyle="->", color="#aaaaaa", lw=1, linestyle="--", shrinkA=14, shrinkB=14))  # fmt: skip
    for name, (x, y) in pos.items():
        is_io = name.startswith("c_")
        ax.text(x, y, f"${name}$" if is_io else name, ha="center", va="center", fontsize=10,
                bbox=dict(boxstyle="round,pad=0.35", fc="#d8eed8" if is_io else "#cfe2f3", ec="black"))  # fmt: skip
    ax.set_xlim(-0.5, nodes + 1.5)
    ax.set_ylim(0.0, 1.0)
    ax.axis("off")
    ax.set_title(title or f"{genotype.source.upper()} {cell} cell")
    fig.tight_layout()
    _save(fig, path, dpi)


def _save(fig, path: str | Path, dpi: int) -> None:
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
    finally:
        plt.close(fig)
