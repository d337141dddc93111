"""Adapter: rule report_training → pipeline_lib.report.figures.training_figure (loss/acc per epoch)."""

from pathlib import Path

from pipeline_lib.report.figures import read_history, training_figure
from pipeline_lib.report.provenance import publish_figure
from pipeline_lib.step import run_step


def main(step):
    histories = {Path(p).parent.parent.name: read_history(p) for p in step.input}  # results/models/<model>/seed<s>/
    fig, details = training_figure(histories)
    best = "; ".join(
        f"{m}: {d['epochs']} epoch(s), highest val acc {100 * d['best_val_acc']:.1f}% at epoch {d['best_val_acc_epoch']}"
        for m, d in details.items()
    )
    seed = Path(step.input[0]).parent.name.removeprefix("seed")
    caption = f"Training curves of every trained network (study seed {seed}): loss (left) and accuracy (right) per epoch on train and validation. {best}."
    publish_figure(step, fig, title="Training curves", caption=caption, details=details)
    step.log.info("training curves of %s", ", ".join(histories))


run_step(snakemake, main)  # noqa: F821 (injected by Snakemake)
