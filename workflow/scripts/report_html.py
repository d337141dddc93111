"""Adapter: rule report → pipeline_lib.report.html (the static, self-contained HTML page)."""

from pipeline_lib.report.config import ReportConfig
from pipeline_lib.report.html import FigureEntry, render_report, write_report
from pipeline_lib.report.localisation import read_json_checked
from pipeline_lib.report.provenance import git_commit, params_sha256
from pipeline_lib.report.table import interval_note, load_comparisons, load_tidy, report_table, table_note
from pipeline_lib.results.comparisons import TableConfig
from pipeline_lib.step import run_step


def main(step):
    metrics = load_tidy(step.input.table)
    table = report_table(metrics)
    figures = [FigureEntry(**entry) for entry in step.params.figures]
    cfg = step.params.cfg
    report = ReportConfig.from_params(cfg.get("report"))
    table_config = TableConfig.from_params({**cfg["table"], "seed": report.seed}) if cfg.get("table") else None
    caption = interval_note(metrics, table_config)
    comparisons = getattr(step.input, "comparisons", None)
    page = render_report(
        table,
        figures,
        note=table_note(table, metrics, caption),
        comparisons=load_comparisons(comparisons) if comparisons else (),
        git_commit=git_commit(),
        params_sha256=params_sha256(step.params.cfg),
        localisation=read_json_checked(loc) if (loc := getattr(step.input, "localisation", None)) else None,
    )
    write_report(step.output.html, page)
    step.log.info("report: %d table rows, %d figures, %.1f kB", len(table), len(figures), len(page) / 1024)


run_step(snakemake, main)  # noqa: F821 (injected by Snakemake)
