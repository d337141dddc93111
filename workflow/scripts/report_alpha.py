"""Adapter: rule report_alpha → pipeline_lib.report.figures.alpha_figure (DARTS softmax(α) heatmap)."""

from pipeline_lib.report.figures import alpha_figure, read_alpha_history
from pipeline_lib.report.provenance import publish_figure
from pipeline_lib.step import run_step


def main(step):
    fig, details = alpha_figure(read_alpha_history(step.input.history))
    caption = (
        f"DARTS architecture weights softmax(α) after epoch {details['epoch']}, one heatmap per cell type: "
        "rows are the cell's edges (source state → node), columns the candidate operations; "
        "the derived cell keeps the strongest non-zero operations."
    )
    publish_figure(step, fig, title="DARTS α heatmap", caption=caption, details=details)


run_step(snakemake, main)  # noqa: F821 (injected by Snakemake)
