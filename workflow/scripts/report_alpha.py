"""Adapter: rule report_alpha → pipeline_lib.report.figures.alpha_figure (DARTS softmax(α) heatmap)."""

from pipeline_lib.report.figures import alpha_figure, read_alpha_history, save_png
from pipeline_lib.report.provenance import make_record, write_record
from pipeline_lib.scripting import run_step


def main(step):
    fig, details = alpha_figure(read_alpha_history(step.input.history))
    save_png(fig, step.output.png, dpi=step.param("report.dpi"))
    caption = (
        f"DARTS architecture weights softmax(α) after epoch {details['epoch']}, one heatmap per cell type: "
        "rows are the cell's edges (source state → node), columns the candidate operations; "
        "the derived cell keeps the strongest non-zero operations."
    )
    record = make_record(
        title="DARTS α heatmap",
        caption=caption,
        rule=step.rule,
        params=step.params.cfg,
        inputs=list(step.input),
        details=details,
    )
    write_record(step.output.record, record)


run_step(snakemake, main)  # noqa: F821 (injected by Snakemake)
