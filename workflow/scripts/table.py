"""Adapter: rule table → pipeline_lib.results.write_table.

The rule's inputs are every model x seed; until the table gains its over-seed statistics this
writes the first seed's numbers (the seed the report's figures show)."""

from pipeline_lib.results import load_metrics, write_flat_metrics, write_table
from pipeline_lib.scripting import run_step


def main(step):
    first = f"/seed{step.param('study.seeds')[0]}/"
    metrics = load_metrics([path for path in step.input.metrics if first in path])
    write_table(metrics, step.output.csv, step.output.md, step.output.json)
    write_flat_metrics(metrics, step.output.metrics)
    step.log.info("results table:\n%s", open(step.output.md, encoding="utf-8").read())


run_step(snakemake, main)  # noqa: F821 (injected by Snakemake)
