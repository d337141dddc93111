"""Adapter: rule report_roc → pipeline_lib.report.figures.roc_figure (every model's test ROC)."""

from pathlib import Path

from pipeline_lib.report.figures import read_roc, roc_figure
from pipeline_lib.report.provenance import publish_figure
from pipeline_lib.step import run_step


def main(step):
    curves = {Path(p).parent.parent.name: read_roc(p) for p in step.input}  # results/models/<model>/seed<s>/
    fig, details = roc_figure(curves)
    missing = details["without_labels"]
    caption = (
        f"ROC curves on the test split of every model in the table, study seed {Path(step.input[0]).parent.name.removeprefix('seed')} "
        f"({len(details['auc'])} curves; bad = positive class; "
        "dashed: classifier on fine-tuned features; legend: area under each curve)."
        + (f" Without test labels, so not drawn: {', '.join(missing)}." if missing else "")
    )
    publish_figure(step, fig, title="ROC curves on test, every model", caption=caption, details=details)
    step.log.info("ROC: %d curves, %d models without test labels", len(details["auc"]), len(missing))


run_step(snakemake, main)  # noqa: F821 (injected by Snakemake)
