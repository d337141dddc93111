"""The report's figures (matplotlib, Agg backend), each saved atomically as a PNG.

- ``tsne_figure``: the two t-SNE embeddings side by side, coloured by class.
- ``cam_figure``: a grid, one row per sample (train/val x good/bad): the image, the map
  for the correct label and the map for the wrong label, overlaid on the image.
- ``roc_figure``: every model's test ROC curve in one plot (models without test labels
  are left out and named in the caption).
- ``training_figure``: loss and accuracy per epoch (train and val) of every network.
- ``alpha_figure``: DARTS' softmax(alpha) of the last epoch, one heatmap (edge x op) per cell.

Each function returns ``(figure, details)``; ``details`` feeds the caption.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..io.atomic import atomic_path  # noqa: E402
from ..io.errors import PipelineError  # noqa: E402
from .cam import LABEL_NAMES  # noqa: E402
from .inputs import read_csv_checked  # noqa: E402

CLASS_COLORS = {0: "#1f77b4", 1: "#d62728"}
DPI = 100


def save_png(fig, path: str | os.PathLike, dpi: int = DPI) -> None:
    """Atomic PNG without a timestamp or software tag (same figure -> same bytes)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


# --------------------------------------------------------------------------- t-SNE


def tsne_figure(frame: pd.DataFrame, titles: Mapping[str, str], scores: Mapping[str, float | None]):
    """``frame``: ``features,label,x,y`` (the t-SNE CSV); one panel per feature set."""
    names = list(dict.fromkeys(frame["features"]))
    fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), 4.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        part = frame[frame["features"] == name]
        for label in (0, 1):
            pts = part[part["label"] == label]
            ax.scatter(pts["x"], pts["y"], s=14, alpha=0.8, c=CLASS_COLORS[label], label=f"{LABEL_NAMES[label]} ({len(pts)})")
        score = scores.get(name)
        suffix = "" if score is None else f"\nsilhouette {round(score, 2) + 0.0:.2f}"
        ax.set_title(f"{titles.get(name, name)}{suffix}", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- CAM grids


def _draw_boxes(ax, boxes: np.ndarray | None) -> None:
    """Defect boxes (x0, y0, x1, y1 in the shown image's pixels, x1/y1 exclusive) as outlines."""
    from matplotlib.patches import Rectangle

    for x0, y0, x1, y1 in np.asarray(boxes if boxes is not None else [], float).reshape(-1, 4):
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="white", lw=1.2, ls="--"))


def cam_figure(
    images: np.ndarray,
    maps: Mapping[str, np.ndarray],
    samples: pd.DataFrame,
    *,
    title: str,
    alpha: float = 0.45,
    boxes: Sequence[np.ndarray | None] | None = None,
):
    """Rows: samples; columns: image, map for the correct label, map for the wrong label.

    ``boxes`` (per sample, in the shown image's pixels, or None): the defects, drawn as
    dashed outlines on every panel; each map's maximum is marked with a white cross.
    """
    n = len(samples)
    fig, axes = plt.subplots(n, 3, figsize=(7.2, 2.4 * n + 0.5), squeeze=False)
    for row, (ax_img, ax_ok, ax_bad) in enumerate(axes):
        sample = samples.iloc[row]
        label = int(sample["label"])
        p_bad = float(maps["prob_bad"][row])
        ax_img.imshow(images[row])
        ax_img.set_title(f"{sample['split']} · {LABEL_NAMES[label]} · {sample['id']}\np(bad)={p_bad:.2f}", fontsize=8)
        for ax, key, cls, tag in ((ax_ok, "correct", label, "correct"), (ax_bad, "wrong", 1 - label, "wrong")):
            heat = maps[key][row]
            ax.imshow(images[row].mean(axis=2), cmap="gray", vmin=0, vmax=1)
            ax.imshow(heat, cmap="jet", alpha=alpha, vmin=0, vmax=1)
            if heat.max() > heat.min():
                y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
                ax.plot([x], [y], marker="x", color="white", ms=7, mew=2)
            ax.set_title(f"w.r.t. {LABEL_NAMES[cls]} ({tag} label)", fontsize=8)
        for ax in (ax_img, ax_ok, ax_bad):
            _draw_boxes(ax, None if boxes is None else boxes[row])
            ax.set_xlim(-0.5, images[row].shape[1] - 0.5)
            ax.set_ylim(images[row].shape[0] - 0.5, -0.5)
            ax.set_xticks([])
            ax.set_yticks([])
    height = 2.4 * n + 0.5
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / height))
    return fig


# --------------------------------------------------------------------------- ROC


def read_roc(path: str | os.PathLike) -> pd.DataFrame:
    return read_csv_checked(path, ("fpr", "tpr"), what="ROC file", producer="that model's rule")


def roc_figure(curves: Mapping[str, pd.DataFrame]) -> tuple[object, dict]:
    """All non-empty curves in one plot, legend with each curve's AUC (trapezoid)."""
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    cmap = plt.get_cmap("tab20")
    drawn, skipped = {}, []
    for i, (model, frame) in enumerate(curves.items()):
        if len(frame) == 0:
            skipped.append(model)
            continue
        fpr, tpr = frame["fpr"].to_numpy(float), frame["tpr"].to_numpy(float)
        auc = float(np.trapezoid(tpr, fpr))
        drawn[model] = auc
        style = "--" if model.endswith("_finetuned") else "-"
        width = 1.3 if model.endswith(("_pretrained", "_finetuned")) else 2.2  # classical thin, networks thick
        ax.plot(fpr, tpr, style, color=cmap(i % 20), lw=width, label=f"{model} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    if drawn:
        ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8)
    else:
        ax.text(0.5, 0.5, "no test labels: no ROC curves", ha="center", va="center")
    ax.set_title("ROC on test (bad = positive)", fontsize=10)
    fig.tight_layout()
    return fig, {"auc": drawn, "without_labels": skipped}


# --------------------------------------------------------------------------- training curves

HISTORY_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc")


def read_history(path: str | os.PathLike) -> pd.DataFrame:
    frame = read_csv_checked(path, HISTORY_COLUMNS, what="training history", producer="that model's rule")
    if len(frame) == 0:
        raise PipelineError(f"{path}: no epochs recorded; re-run that model's rule")
    return frame


def training_figure(histories: Mapping[str, pd.DataFrame]) -> tuple[object, dict]:
    """One row per network: loss (train, val) and accuracy (train, val) per epoch."""
    n = len(histories)
    if n == 0:
        raise PipelineError("training curves: no networks given")
    fig, axes = plt.subplots(n, 2, figsize=(9, 2.6 * n + 0.3), squeeze=False)
    details = {}
    for (model, h), (ax_loss, ax_acc) in zip(histories.items(), axes):
        epochs = h["epoch"].to_numpy()
        marker = "o" if len(h) <= 20 else None
        ax_loss.plot(epochs, h["train_loss"], marker=marker, label="train")
        ax_loss.plot(epochs, h["val_loss"], marker=marker, label="val")
        ax_loss.set_ylabel("loss")
        ax_loss.set_title(f"{model}: loss", fontsize=9)
        ax_acc.plot(epochs, 100 * h["train_acc"], marker=marker, label="train")
        ax_acc.plot(epochs, 100 * h["val_acc"], marker=marker, label="val")
        ax_acc.set_ylabel("accuracy %")
        ax_acc.set_title(f"{model}: accuracy", fontsize=9)
        for ax in (ax_loss, ax_acc):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        best = int(h["val_acc"].to_numpy().argmax())
        details[model] = {"epochs": int(len(h)), "best_val_acc": float(h["val_acc"].iloc[best]), "best_val_acc_epoch": int(epochs[best])}
    fig.tight_layout()
    return fig, details


# --------------------------------------------------------------------------- DARTS alpha

ALPHA_COLUMNS = ("epoch", "cell", "edge", "src", "dst", "op", "weight")


def read_alpha_history(path: str | os.PathLike) -> pd.DataFrame:
    frame = read_csv_checked(path, ALPHA_COLUMNS, what="DARTS alpha history", producer="the DARTS search")
    if len(frame) == 0:
        raise PipelineError(f"{path}: no rows; re-run the DARTS search")
    return frame


def alpha_figure(history: pd.DataFrame, epoch: int | None = None) -> tuple[object, dict]:
    """softmax(alpha) at ``epoch`` (default: the last), one heatmap per cell type."""
    epoch = int(history["epoch"].max()) if epoch is None else int(epoch)
    last = history[history["epoch"] == epoch]
    cells = list(dict.fromkeys(last["cell"]))
    ops = list(dict.fromkeys(last["op"]))
    fig, axes = plt.subplots(1, len(cells), figsize=(4.8 * len(cells), 0.35 * last["edge"].nunique() + 2.2), squeeze=False)
    for ax, cell in zip(axes[0], cells):
        part = last[last["cell"] == cell]
        grid = part.pivot_table(index="edge", columns="op", values="weight", aggfunc="first").reindex(columns=ops)
        names = part.drop_duplicates("edge").set_index("edge").loc[grid.index]
        im = ax.imshow(grid.to_numpy(float), aspect="auto", cmap="viridis", vmin=0)
        ax.set_xticks(range(len(ops)), ops, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(grid)), [f"{s}→{d}" for s, d in zip(names["src"], names["dst"])], fontsize=7)
        ax.set_title(f"{cell} cell, epoch {epoch}", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig, {"epoch": epoch, "cells": cells, "ops": ops}


def check_png(path: str | os.PathLike) -> bytes:
    """The bytes of a PNG figure; PipelineError naming the file when missing or not a PNG."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise PipelineError(f"{path}: figure not found; run the rule that draws it (snakemake {path})") from exc
    except OSError as exc:
        raise PipelineError(f"{path}: figure cannot be read ({exc})") from exc
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise PipelineError(f"{path}: not a PNG file; re-run the rule that draws it")
    return data


__all__: Sequence[str] = [
    "alpha_figure", "cam_figure", "check_png", "read_alpha_history", "read_history", "read_roc",
    "roc_figure", "save_png", "training_figure", "tsne_figure",
]
