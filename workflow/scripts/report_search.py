"""Adapter: rule report_search → pipeline_lib.report.search_diagnostics (did the searches learn?)."""

from pipeline_lib.report.provenance import publish_figure
from pipeline_lib.report.search_diagnostics import read_search_history, search_diagnostics_figure
from pipeline_lib.step import run_step


def main(step):
    fig, details = search_diagnostics_figure(read_search_history(step.input.darts, "darts"),
                                             read_search_history(step.input.enas, "enas"))
    caption = (
        "The architecture searches per epoch, each on its own two class-balanced halves of the training split. "
        "Top: DARTS supernet accuracy on the weights' half and on α's half (held out from the weights), and the "
        "entropy of softmax(α) per edge (mean per cell type; dashed: ln(number of ops), α uniform). Bottom: ENAS "
        "child accuracy with shared weights (the controller's greedy cell on the held-out reward half; the sampled "
        "children while training), the controller's reward against its baseline, and the controller's entropy "
        "(dashed: every choice uniform). Chance is 0.5 (dashed). "
        + " ".join(d["verdict"] for d in details.values())
    )
    publish_figure(step, fig, title="Search diagnostics", caption=caption, details=details)
    for d in details.values():
        step.log.info("%s", d["verdict"])


run_step(snakemake, main)  # noqa: F821 (injected by Snakemake)
