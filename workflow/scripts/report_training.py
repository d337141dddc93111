"""Adapter: rule report_training → pipeline_lib.report.figures.training_figure (loss/acc per epoch)."""

from pathlib import Path

from pipeline_lib.report.figures import read_history, save_png, training_figure
from pipeline_lib.report.provenance import make_record, write_record
from pipeline_lib.scripting import run_step


def main(step):
    histories = {Path(p).parent.name: read_history(p) for p in step.input}
    fig, details = training_figure(histories)
    save_png(fig, step.output.png, dpi=step.param("report.dpi"))
    best = "; ".join(
        f"{m}: {d['epochs']} epoch(s), highest val acc {100 * d['best_val_acc']:.1f}% at epoch {d['best_val_acc_epoch']}"
        for m, d in details.items()
    )
    caption = f"Training curves of every trained network: loss (left) and accuracy (right) per epoch on train and validation. {best}."
    record = make_record(
        title="Training curves",
        caption=caption,
        rule=step.rule,
        params=step.params.cfg,
        inputs=list(step.input),
        details=details,
    )
    write_record(step.output.record, record)
    step.log.info("training curves of %s", ", ".join(histories))


run_step(snakemake, main)  # noqa: F821 (injected by Snakemake)
