"""Did the architecture searches learn anything? Their per-epoch diagnostics against chance.

Both searches write, per epoch, into ``search_history.csv`` (``nas.search_eval``): the
accuracy on a class-balanced subset of their own held-out half of the training split, with BN
statistics recomputed on the weights' half for the weights as they are (DARTS: the supernet on
α's half; ENAS: the shared-weight child with the controller's greedy cell on the reward half),
as a count ``heldout_correct`` of ``heldout_n``, and an entropy with its maximum ``entropy_max``
(DARTS: softmax(α) per edge, mean per cell type, max ln(number of ops); ENAS: the
controller's summed entropy, max its value with every choice uniform).

- ``search_verdict(history)``: one sentence on whether the last epoch's held-out accuracy
  is above chance, 0.5 on the class-balanced halves (exact one-sided binomial test,
  ``scipy.stats.binomtest``, at ``ALPHA``). The report prints it, also when the search did
  not clear chance.
- ``search_diagnostics_figure(darts, enas)``: accuracy and entropy per epoch for each
  search and every study seed (one colour per seed), with chance and maximal entropy drawn;
  its details give each seed's verdict and how many seeds cleared chance.

Torch-free (pandas, scipy, matplotlib): the report job never imports the search code.
"""

from __future__ import annotations

import os
from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from scipy.stats import binomtest  # noqa: E402

from ..io.errors import PipelineError  # noqa: E402
from .inputs import read_csv_checked  # noqa: E402

CHANCE = 0.5  # the held-out score is on a class-balanced subset (search_eval.balanced_indices)
ALPHA = 0.05  # significance level of the verdict
HELDOUT_COLUMNS = ("epoch", "heldout_acc", "heldout_correct", "heldout_n", "entropy_max")
COLUMNS = {
    "darts": HELDOUT_COLUMNS + ("train_half_acc", "entropy_normal", "entropy_reduce"),
    "enas": HELDOUT_COLUMNS + ("child_acc", "reward_mean", "baseline", "entropy_mean", "greedy_entropy"),
}
HELDOUT_NAME = {"darts": "the supernet on α's half", "enas": "the child with the controller's greedy cell on the reward half"}


def read_search_history(path: str | os.PathLike, method: str) -> pd.DataFrame:
    """A search's ``search_history.csv`` with the diagnostics columns (clear error otherwise)."""
    frame = read_csv_checked(path, COLUMNS[method], what=f"{method.upper()} search history",
                             producer=f"the {method}_search rule")
    if len(frame) == 0:
        raise PipelineError(f"{path}: no epochs recorded; re-run the {method}_search rule")
    return frame


def heldout_test(row: Mapping) -> object:
    """Exact one-sided binomial test of the held-out count against chance (``binomtest`` result)."""
    return binomtest(int(row["heldout_correct"]), int(row["heldout_n"]), CHANCE, alternative="greater")


def search_verdict(history: pd.DataFrame, method: str | None = None, seed: int | None = None) -> str:
    """One sentence: did the search's held-out accuracy at its final epoch clear chance?"""
    method = method or ("darts" if "entropy_normal" in history.columns else "enas")
    last = history.sort_values("epoch").iloc[-1]
    k, n = int(last["heldout_correct"]), int(last["heldout_n"])
    p = heldout_test(last).pvalue
    which = "" if seed is None else f", seed {seed}"
    head = (f"{method.upper()} search{which}, epoch {int(last['epoch'])}: {HELDOUT_NAME[method]} classifies "
            f"{k}/{n} = {100 * k / n:.1f} % of its held-out images correctly (chance {100 * CHANCE:.0f} %, "
            f"one-sided exact binomial p = {p:.2g})")
    if p < ALPHA:
        return f"{head}: above chance at the {ALPHA:g} level."
    return (f"{head}: NOT distinguishable from chance at the {ALPHA:g} level, so its cell is not evidence "
            "that the search learned anything from the data.")


def _panel(ax, runs: Mapping[int, pd.DataFrame], lines, reference: float, reference_label: str, title: str,
           ylabel: str, top: float | None = None) -> None:
    """One panel over every seed: ``lines`` as (column, label, plot style) per epoch, one colour per
    seed, and a dashed reference level (chance or maximum entropy); accuracies get the [0, 1] axis,
    entropies start at 0. The legend names each line style once and each seed's colour once."""
    colours = {seed: f"C{i % 10}" for i, seed in enumerate(runs)}
    for seed, frame in runs.items():
        for column, _, style in lines:
            ax.plot(frame["epoch"], frame[column], color=colours[seed], **style)
    handles = [Line2D([], [], color="black", label=label, **style) for _, label, style in lines]
    handles += [Line2D([], [], color=colour, lw=3, label=f"seed {seed}") for seed, colour in colours.items()]
    handles.append(ax.axhline(reference, color="grey", ls="--", lw=1, label=reference_label))
    ax.set_ylim(0, top) if top is not None else ax.set_ylim(bottom=0)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(handles=handles, fontsize=6, ncol=2)


def _details(method: str, runs: Mapping[int, pd.DataFrame]) -> dict:
    """Per seed: the verdict and the last epoch's held-out accuracy and p; and how many seeds cleared chance."""
    seeds = {}
    for seed, history in runs.items():
        last = history.sort_values("epoch").iloc[-1]
        seeds[str(seed)] = {"verdict": search_verdict(history, method, seed), "epochs": int(len(history)),
                            "heldout_acc": float(last["heldout_acc"]), "heldout_p": float(heldout_test(last).pvalue)}
    cleared = sum(d["heldout_p"] < ALPHA for d in seeds.values())
    return {"seeds": seeds, "cleared": cleared, "n_seeds": len(seeds),
            "summary": f"{method.upper()}: {cleared} of {len(seeds)} seeds above chance on the held-out half."}


def search_diagnostics_figure(darts: Mapping[int, pd.DataFrame], enas: Mapping[int, pd.DataFrame]) -> tuple[object, dict]:
    """2 x 2 over every seed (``{seed: search history}`` per search): per search, accuracy (chance
    0.5 dashed) and entropy (its maximum dashed) per epoch."""
    fig, ((d_acc, d_ent), (e_acc, e_ent)) = plt.subplots(2, 2, figsize=(11, 7.2))
    solid, dashed, dotted = dict(marker="o", ms=3), dict(marker="s", ms=3, ls="--"), dict(ls=":")
    first = next(iter(darts.values())), next(iter(enas.values()))
    _panel(d_acc, darts, [("train_half_acc", "weights' half (trained on)", dashed),
                          ("heldout_acc", "α's half (held out from w)", solid)],
           CHANCE, "chance 0.5", "DARTS supernet accuracy (BN recalibrated, balanced)", "accuracy", top=1)
    _panel(d_ent, darts, [("entropy_normal", "normal cell (mean over edges)", solid),
                          ("entropy_reduce", "reduction cell (mean over edges)", dashed)],
           float(first[0]["entropy_max"].iloc[0]), "ln(n ops): α uniform", "DARTS entropy of softmax(α) per edge", "nats")
    _panel(e_acc, enas, [("heldout_acc", "greedy child, held-out half", solid),
                         ("child_acc", "sampled children while training", dict(marker=".", ls="-.")),
                         ("reward_mean", "controller reward (mean)", dashed),
                         ("baseline", "reward baseline", dotted)],
           CHANCE, "chance 0.5", "ENAS child accuracy and controller reward", "accuracy / reward", top=1)
    _panel(e_ent, enas, [("entropy_mean", "sampled architectures (mean)", solid),
                         ("greedy_entropy", "greedy architecture", dashed)],
           float(first[1]["entropy_max"].iloc[0]), "maximum: every choice uniform", "ENAS controller entropy", "nats")
    fig.tight_layout()
    return fig, {"darts": _details("darts", darts), "enas": _details("enas", enas)}
