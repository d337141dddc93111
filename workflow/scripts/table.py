"""Adapter: rule table → pipeline_lib.results.seed_table (every model over every seed, with intervals and comparisons)."""

from pathlib import Path

from pipeline_lib.io.errors import PipelineError
from pipeline_lib.results.seed_runs import expected_files
from pipeline_lib.results.seed_table import TableConfig, TablePaths, build_seed_table, write_flat_seed_metrics, write_seed_table
from pipeline_lib.step import run_step

ROOT = "results/models"


def main(step):
    models, seeds = list(step.params.models), [int(s) for s in step.param("study.seeds")]
    given = {Path(p) for key in ("metrics", "val_predictions", "predictions") for p in getattr(step.input, key)}
    if not_given := [p for p in expected_files(ROOT, models, seeds) if p not in given]:
        raise PipelineError(f"rule table: {not_given[0]} is not among its inputs; fix workflow/rules/table.smk")
    config = TableConfig.from_params({**step.param("table"), "seed": step.param("report.seed")})
    per_seed, rows, comparisons = build_seed_table(ROOT, models, seeds, step.input.split, config)
    paths = TablePaths(step.output.per_seed, step.output.csv, step.output.md, step.output.json, step.output.comparisons)
    markdown = write_seed_table(per_seed, rows, comparisons, paths, config)
    write_flat_seed_metrics(rows, step.output.metrics)
    step.log.info("results table (%d models x %d seeds):\n%s", len(models), len(seeds), markdown)


run_step(snakemake, main)  # noqa: F821 (injected by Snakemake)
