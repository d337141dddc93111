"""Adapter: rule localisation_table → pipeline_lib.report.localisation (scores with intervals, sentences)."""

from pipeline_lib.report.config import LocalisationConfig
from pipeline_lib.report.localisation import write_table
from pipeline_lib.step import run_step


def main(step):
    rows, note = write_table(
        step.input.csvs, step.input.metas, LocalisationConfig.from_params(step.param("report.localisation")),
        seed=step.param("report.seed"),
        csv_path=step.output.csv, md_path=step.output.md, json_path=step.output.json,
    )
    step.log.info("localisation table: %d rows%s", len(rows), f" (note: {note})" if note else "")


run_step(snakemake, main)  # noqa: F821 (injected by Snakemake)
