"""Adapter: rule table → pipeline_lib.results.table.write_table."""

from pipeline_lib.results.table import load_metrics, write_flat_metrics, write_table
from pipeline_lib.step import run_step


def main(step):
    metrics = load_metrics(list(step.input))
    write_table(metrics, step.output.csv, step.output.md, step.output.json)
    write_flat_metrics(metrics, step.output.metrics)
    step.log.info("results table:\n%s", open(step.output.md, encoding="utf-8").read())


run_step(snakemake, main)  # noqa: F821 (injected by Snakemake)
