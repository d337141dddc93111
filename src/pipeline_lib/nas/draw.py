"""Pictures of a search: the cells of a Genotype, and softmax(α) over the epochs.

Cells (``draw_cell``): with graphviz's ``dot`` binary on PATH (``shutil.which("dot")``)
the cell is laid out by dot, as DARTS's own ``visualize.py`` does; without it (it is no
Python package and not part of the pinned environment) a fixed layered matplotlib layout
is drawn instead: inputs c_{k-2}, c_{k-1} on the left, intermediate nodes in the middle,
the output c_{k} on the right, each edge labelled and coloured by its op. A cell has at
most a dozen nodes, so both read equally well; ``engine=`` forces one.

α over epochs (``draw_alpha_history``): one heatmap per cell type, rows = (edge, op),
columns = epochs (0 = initialisation), from the history rows ``darts_search`` writes
(CSV ``epoch,cell,edge,src,dst,op,weight``).

Matplotlib runs on the Agg backend; every PNG is written atomically.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterable, Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..atomic import atomic_path  # noqa: E402
from ..errors import PipelineError  # noqa: E402
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


def draw_genotype(genotype: Genotype, normal_path: str | Path, reduce_path: str | Path, **kwargs: Any) -> str:
    """Both cells; returns the engine used."""
    draw_cell(genotype, "normal", normal_path, **kwargs)
    return draw_cell(genotype, "reduce", reduce_path, **kwargs)


def _history_rows(history) -> list[Mapping[str, Any]]:
    if hasattr(history, "history_rows"):  # darts_search.SearchResult
        return history.history_rows()
    if isinstance(history, (str, Path)):
        import pandas as pd

        try:
            history = pd.read_csv(history)
        except (OSError, ValueError) as exc:
            raise PipelineError(f"{history}: cannot read the α history CSV ({exc}); re-run the DARTS search") from exc
    if hasattr(history, "to_dict"):  # DataFrame
        return history.to_dict("records")
    return list(history)


def draw_alpha_history(history, path: str | Path, *, dpi: int = 110, ops: Iterable[str] | None = None) -> None:
    """softmax(α) over the epochs as a heatmap per cell type (rows: edge x op, columns:
    epoch). ``history``: a SearchResult, the CSV path, a DataFrame, or the row dicts;
    ``ops``: the rows' op order (default: as they appear, i.e. the search space's)."""
    import numpy as np

    rows = _history_rows(history)
    need = {"epoch", "cell", "edge", "src", "dst", "op", "weight"}
    if not rows or not need <= set(rows[0]):
        raise PipelineError(f"{path}: α history needs rows with {sorted(need)}")
    ops = list(dict.fromkeys(r["op"] for r in rows)) if ops is None else list(ops)
    epochs = sorted({int(r["epoch"]) for r in rows})
    edges = sorted({(int(r["edge"]), int(r["src"]), int(r["dst"])) for r in rows})
    col = {e: i for i, e in enumerate(epochs)}
    op_index = {op: i for i, op in enumerate(ops)}
    data = {cell: np.full((len(edges) * len(ops), len(epochs)), np.nan) for cell in CELLS}
    edge_pos = {e[0]: i for i, e in enumerate(edges)}
    for r in rows:
        if r["cell"] in data and r["op"] in op_index:
            data[r["cell"]][edge_pos[int(r["edge"])] * len(ops) + op_index[r["op"]], col[int(r["epoch"])]] = float(r["weight"])
    labels = [f"{dst}←{src} {op}" for _, src, dst in edges for op in ops]
    height = max(4.0, 0.11 * len(labels) + 1.5)
    fig, axes = plt.subplots(1, 2, figsize=(2 * (3.2 + 0.12 * len(epochs)), height), sharey=True)
    vmax = float(np.nanmax([np.nanmax(d) for d in data.values()]))
    image = None
    for ax, cell in zip(axes, CELLS):
        image = ax.imshow(data[cell], aspect="auto", cmap="viridis", vmin=0.0, vmax=vmax, interpolation="nearest")
        ax.set_title(f"{cell} cell")
        ax.set_xlabel("epoch")
        step = max(1, len(epochs) // 10)
        ax.set_xticks(range(0, len(epochs), step), [str(e) for e in epochs[::step]])
        for k in range(1, len(edges)):
            ax.axhline(k * len(ops) - 0.5, color="white", lw=0.6)
    axes[0].set_yticks(range(len(labels)), labels, fontsize=5)
    fig.colorbar(image, ax=list(axes), fraction=0.03, label="softmax(α)")
    fig.suptitle("DARTS softmax(α) per edge and op over the search")
    _save(fig, path, dpi)


def _save(fig, path: str | Path, dpi: int) -> None:
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
    finally:
        plt.close(fig)
