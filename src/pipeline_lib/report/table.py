"""The report's results table: the slide's table (mean ± sd over seeds, 95 % interval) plus params count, wall time and device.

Rows and columns come from ``pipeline_lib.results.table.slide_table`` (classical classifiers on
pretrained features, the fine-tuned-feature value in parentheses; then every other model),
with three more ``Column``s that follow the same rule: ``pretrained (fine-tuned)``.
The input is the table stage's tidy ``results.csv`` (one row per model, raw fractions).
"""

from __future__ import annotations

import math
import os
from typing import Sequence

import pandas as pd

from ..io.errors import PipelineError
from ..results.table import NOTE, TIDY_COLUMNS, Column, estimator_note, slide_table
from ..results.seed_table import INTERVAL_COLUMNS, TableConfig, interval_caption
from .inputs import read_csv_checked



def _none_if_nan(value):
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def load_tidy(path: str | os.PathLike) -> list[dict]:
    """The table stage's ``results.csv`` as metrics dicts (NaN -> None)."""
    frame = read_csv_checked(path, ("model", "valid_acc", "test_auc"), what="results table", producer="the table rule")
    rows = []
    for record in frame.to_dict(orient="records"):
        rows.append({k: _none_if_nan(v) for k, v in record.items()})
    if not rows:
        raise PipelineError(f"{path}: the results table is empty; re-run the table rule")
    return rows


def _fmt_params(value) -> str:
    value = _none_if_nan(value)
    return "-" if value is None else f"{int(value):,}"


def _fmt_seconds(value) -> str:
    value = _none_if_nan(value)
    return "-" if value is None else f"{float(value):.1f}"


def _fmt_device(value) -> str:
    value = _none_if_nan(value)
    return "-" if value is None else str(value)


REPORT_COLUMNS = (
    *INTERVAL_COLUMNS,  # mean ± sd over seeds, then the 95 % interval (pipeline_lib.results.seed_table)
    Column("Params", "params_count", _fmt_params),
    Column("Wall time s", "wall_time_s", _fmt_seconds),
    Column("Device", "device", _fmt_device, collapse_equal=True),
)


def report_table(metrics: Sequence[dict]) -> pd.DataFrame:
    """``build_table``'s rows and columns plus Params, Wall time s and Device (strings)."""
    return slide_table(metrics, REPORT_COLUMNS)


def table_note(table: pd.DataFrame, metrics: Sequence[dict] = (), caption: str | None = None) -> str | None:
    """The interval ``caption``, the parentheses note when any cell uses it, and which SVM variant
    ran (from ``metrics``)."""
    notes = [caption, NOTE if any("(" in str(v) for v in table.iloc[:, 1:].to_numpy().ravel()) else None,
             estimator_note(metrics)]
    return " ".join(n for n in notes if n) or None


def interval_note(metrics: Sequence[dict], config: TableConfig | None) -> str | None:
    """The table's interval caption (``seed_table.interval_caption``) for the seeds in ``metrics``;
    None for a table without ``n_seeds`` or without the ``table`` params."""
    counts = [m.get("n_seeds") for m in metrics]
    if config is None or not counts or any(c is None for c in counts):
        return None
    return interval_caption(int(min(counts)), config)


def load_comparisons(path: str | os.PathLike) -> list[str]:
    """The sentences of the table stage's ``comparisons.csv``, in its order."""
    frame = read_csv_checked(path, ("model_a", "model_b", "sentence"), what="paired comparisons", producer="the table rule")
    return [str(s) for s in frame["sentence"]]


__all__ = ["REPORT_COLUMNS", "TIDY_COLUMNS", "interval_note", "load_comparisons", "load_tidy", "report_table",
           "table_note"]
