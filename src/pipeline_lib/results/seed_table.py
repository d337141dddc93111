"""The results table over seeds: per-seed rows, mean ± sd and a 95 % interval per model, comparisons.

Outputs (``results/table/``): ``results_per_seed.csv`` (one row per model and seed),
``results.csv`` (one row per model: ``valid_acc``/``test_auc`` are the means over seeds, with
``_sd``, ``_lo``, ``_hi`` beside them), ``results.md`` (the slide's shape: mean ± sd, then the
interval; the comparisons in words below), ``results.json`` and ``comparisons.csv``; plus the
flat DVC metrics ``results/metrics/<model>.json``.

Interval: with two or more seeds the Student-t interval of the mean over seeds (how far the
number moves with the training seed on these fixed images); with one seed a percentile
bootstrap over images (stratified by class) of that run's metric.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from . import stats
from ..io.atomic import write_csv, write_json, write_text
from .comparisons import TableConfig, compare_all, study_pairs
from ..io.errors import PipelineError
from .table import TIDY_COLUMNS, Column, estimator_note, fmt_pct, markdown_table, skipped_note, slide_table
from .seed_runs import ImageSet, load_run_metrics, load_test, load_val

METRICS = ("valid_acc", "test_auc")
SUMMARY_COLUMNS = (*TIDY_COLUMNS, "n_seeds",
                   *(f"{m}_{s}" for m in METRICS for s in ("sd", "lo", "hi")), "interval")
JSON_FIELDS = ("n_seeds", *(f"{m}{s}" for m in METRICS for s in ("", "_sd", "_lo", "_hi")), "params_count")
PER_SEED_COLUMNS = ("model", "seed", *TIDY_COLUMNS[1:])


def interval_caption(n_seeds: int, config: TableConfig) -> str:
    pct = round(100 * config.confidence)
    if n_seeds >= 2:
        return (f"Mean ± sd over {n_seeds} training seeds; [lo, hi]: the {pct} % Student-t interval of the mean "
                f"over seeds (t quantile with {n_seeds - 1} df × sd/√{n_seeds}), the spread from the training seed "
                "on these fixed images, cut to [0, 100] (an accuracy or AUC cannot leave it).")
    return (f"One training seed (no sd); [lo, hi]: the {pct} % percentile bootstrap interval over images "
            f"({config.bootstrap_resamples} resamples, stratified by class) of that run.")


def _interval(model: str, metric: str, values: list, val: ImageSet, test: ImageSet | None,
              config: TableConfig) -> tuple[float | None, float | None]:
    if len(values) >= 2:  # the t-interval knows nothing of [0, 1]: with 3 seeds it can pass 100 %
        lo, hi = stats.t_interval(values, config.confidence)
        return max(lo, 0.0), min(hi, 1.0)
    if metric == "valid_acc":
        return stats.bootstrap_interval(stats.accuracy_rows, val.labels, val.calls[model],
                                        n_resamples=config.bootstrap_resamples, seed=config.seed, level=config.confidence)
    return stats.bootstrap_interval(stats.auc_rows, test.labels, test.scores[model],
                                    n_resamples=config.bootstrap_resamples, seed=config.seed, level=config.confidence)


def summarise(runs: Mapping[tuple[str, int], dict], models: Sequence[str], seeds: Sequence[int], val: ImageSet,
              test: ImageSet | None, config: TableConfig) -> list[dict]:
    """One row per model: the first seed's descriptive fields, means, sd, interval (fractions)."""
    rows = []
    for model in models:
        per_seed = [runs[(model, int(s))] for s in seeds]
        row = {c: per_seed[0].get(c) for c in TIDY_COLUMNS}
        row["n_seeds"] = len(per_seed)
        walls = [m["wall_time_s"] for m in per_seed if m.get("wall_time_s") is not None]
        row["wall_time_s"] = float(np.mean(walls)) if walls else None
        for metric in METRICS:
            values = [m.get(metric) for m in per_seed]
            if any(v is None for v in values) or (metric == "test_auc" and test is None and len(values) < 2):
                row.update({metric: None, f"{metric}_sd": None, f"{metric}_lo": None, f"{metric}_hi": None})
                continue
            row[metric] = float(np.mean(values))
            row[f"{metric}_sd"] = float(np.std(values, ddof=1)) if len(values) >= 2 else None
            row[f"{metric}_lo"], row[f"{metric}_hi"] = _interval(model, metric, values, val, test, config)
        row["interval"] = "t over seeds" if len(per_seed) >= 2 else "bootstrap over images"
        rows.append(row)
    return rows


def per_seed_frame(runs: Mapping[tuple[str, int], dict], models: Sequence[str], seeds: Sequence[int]) -> pd.DataFrame:
    rows = [{"model": m, "seed": int(s), **{c: runs[(m, int(s))].get(c) for c in TIDY_COLUMNS[1:]}}
            for m in models for s in seeds]
    return pd.DataFrame(rows, columns=list(PER_SEED_COLUMNS))


def _mean_sd(field: str):
    def fmt(row: dict) -> str:
        mean, sd = row.get(field), row.get(f"{field}_sd")
        return fmt_pct(mean) if sd is None or mean is None else f"{fmt_pct(mean)} ± {fmt_pct(sd)}"
    return fmt


def _ci(field: str):
    def fmt(row: dict) -> str:
        lo, hi = row.get(f"{field}_lo"), row.get(f"{field}_hi")
        return "-" if lo is None or hi is None else f"[{fmt_pct(lo)}, {fmt_pct(hi)}]"
    return fmt


# the slide's columns, each with its interval beside it (``field=None``: the cell reads the whole row)
INTERVAL_COLUMNS = (
    Column("Valid acc %", None, _mean_sd("valid_acc")), Column("Valid acc 95 % CI", None, _ci("valid_acc")),
    Column("Test AUC %", None, _mean_sd("test_auc")), Column("Test AUC 95 % CI", None, _ci("test_auc")),
)


def _none_if_nan(frame: pd.DataFrame) -> list[dict]:
    return [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
            for r in frame.to_dict(orient="records")]


def table_notes(rows: Sequence[dict], config: TableConfig) -> str:
    n_seeds = min(r["n_seeds"] for r in rows)
    notes = [interval_caption(n_seeds, config), estimator_note(rows), skipped_note(rows)]
    return "\n".join(n for n in notes if n)


@dataclass(frozen=True)
class TablePaths:
    per_seed: str | os.PathLike
    csv: str | os.PathLike
    md: str | os.PathLike
    json: str | os.PathLike
    comparisons: str | os.PathLike


def build_seed_table(root, models: Sequence[str], seeds: Sequence[int], split_path, config: TableConfig):
    """Read every run (each expected file checked first) → (per-seed frame, summary rows, comparisons)."""
    if not seeds:
        raise PipelineError("params.yaml study.seeds: empty; list at least one seed")
    runs = load_run_metrics(root, models, seeds)
    val = load_val(root, models, seeds)
    test = load_test(root, models, seeds, split_path)
    rows = summarise(runs, models, seeds, val, test, config)
    comparisons = compare_all(study_pairs(), val, test, config)
    return per_seed_frame(runs, models, seeds), rows, comparisons


def write_seed_table(per_seed: pd.DataFrame, rows: Sequence[dict], comparisons: pd.DataFrame, paths: TablePaths,
                     config: TableConfig) -> str:
    """Write every table file; return the Markdown."""
    write_csv(per_seed, paths.per_seed)
    write_csv(pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS)), paths.csv)
    write_csv(comparisons, paths.comparisons)
    md = markdown_table(slide_table(rows, INTERVAL_COLUMNS)) + f"\n{table_notes(rows, config)}\n"
    if len(comparisons):
        md += "\nPaired comparisons (same images, seeds averaged):\n\n" + "".join(
            f"- {s}\n" for s in comparisons["sentence"])
    write_text(paths.md, md)
    write_json(paths.json, {r["model"]: {k: r.get(k) for k in JSON_FIELDS} for r in rows})
    return md


def write_flat_seed_metrics(rows: Sequence[dict], paths) -> None:
    """``results/metrics/<model>.json``: the means and sd over seeds (flat, for ``dvc metrics show``)."""
    by_name = {r["model"]: r for r in rows}
    for path in paths:
        model = Path(path).stem
        if model not in by_name:
            raise PipelineError(f"{path}: no metrics for model {model!r} among the table's inputs")
        write_json(path, {k: by_name[model].get(k) for k in ("valid_acc", "valid_acc_sd", "test_auc", "test_auc_sd")})


__all__ = ["TableConfig", "TablePaths", "build_seed_table", "write_seed_table", "write_flat_seed_metrics",
           "summarise", "per_seed_frame", "interval_caption", "INTERVAL_COLUMNS", "SUMMARY_COLUMNS"]
