"""The report's results table: the slide's table plus params count, wall time and device.

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
from ..results.table import NOTE, SLIDE_COLUMNS, TIDY_COLUMNS, Column, estimator_note, slide_table
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
    *SLIDE_COLUMNS,
    Column("Params", "params_count", _fmt_params),
    Column("Wall time s", "wall_time_s", _fmt_seconds),
    Column("Device", "device", _fmt_device, collapse_equal=True),
)


def report_table(metrics: Sequence[dict]) -> pd.DataFrame:
    """``build_table``'s rows and columns plus Params, Wall time s and Device (strings)."""
    return slide_table(metrics, REPORT_COLUMNS)


def table_note(table: pd.DataFrame, metrics: Sequence[dict] = ()) -> str | None:
    """The parentheses note when any cell uses it, and which SVM variant ran (from ``metrics``)."""
    notes = [NOTE if any("(" in str(v) for v in table.iloc[:, 1:].to_numpy().ravel()) else None, estimator_note(metrics)]
    return " ".join(n for n in notes if n) or None


__all__ = ["REPORT_COLUMNS", "TIDY_COLUMNS", "load_tidy", "report_table", "table_note"]
