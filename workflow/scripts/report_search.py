"""Adapter: rule report_search → pipeline_lib.report.search_diagnostics (did the searches learn?)."""

from pipeline_lib.report.provenance import publish_figure
from pipeline_lib.report.search_diagnostics import read_search_history, search_diagnostics_figure
from pipeline_lib.step import run_step


def histories(step, method: str) -> dict:
    """``{seed: history}`` of one search, from the inputs named ``<method>_seed<seed>``."""
    prefix = f"{method}_seed"
    return {int(name[len(prefix):]): read_search_history(path, method)
            for name, path in step.input.items() if name.startswith(prefix)}


def main(step):
    fig, details = search_diagnostics_figure(histories(step, "darts"), histories(step, "enas"))
    caption = (
        "The architecture searches per epoch and study seed (one colour per seed), each on its own two "
        "halves of the training split; accuracies are on class-balanced subsets of a half, with BN statistics "
        "recomputed on the weights' half for the weights of that epoch. "
        "Top: DARTS supernet accuracy on the weights' half and on α's half (held out from the weights), and the "
        "entropy of softmax(α) per edge (mean per cell type; dashed: ln(number of ops), α uniform). Bottom: ENAS "
        "child accuracy with shared weights (the controller's greedy cell on the held-out reward half; the sampled "
        "children while training), the controller's reward against its baseline, and the controller's entropy "
        "(dashed: every choice uniform). Chance is 0.5 (dashed). "
        + " ".join(d["summary"] for d in details.values()) + " "
        + " ".join(seed["verdict"] for d in details.values() for seed in d["seeds"].values())
    )
    publish_figure(step, fig, title="Search diagnostics", caption=caption, details=details)
    for d in details.values():
        step.log.info("%s", d["summary"])
        for seed in d["seeds"].values():
            step.log.info("%s", seed["verdict"])


run_step(snakemake, main)  # noqa: F821 (injected by Snakemake)
