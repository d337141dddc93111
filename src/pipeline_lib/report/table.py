"""The report's results table: the slide's table plus params count, wall time and device.

Rows and the first three columns come from ``pipeline_lib.results.build_table`` (classical
classifiers on pretrained features, the fine-tuned-feature value in parentheses; then every
other model). The extra columns follow the same rule: ``pretrained (fine-tuned)``.
The input is the table stage's tidy ``results.csv`` (one row per model, raw fractions).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import pandas as pd

from ..errors import PipelineError
from ..results import CLASSICAL_ROWS, NOTE, TIDY_COLUMNS, build_table

EXTRA_COLUMNS = ("Params", "Wall time s", "Device")


def _none_if_nan(value):
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def load_tidy(path: str | os.PathLike) -> list[dict]:
    """The table stage's ``results.csv`` as metrics dicts (NaN -> None)."""
    path = Path(path)
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError as exc:
        raise PipelineError(f"{path}: results table not found; run the table rule first") from exc
    except (OSError, ValueError) as exc:
        raise PipelineError(f"{path}: cannot be read as CSV ({exc}); re-run the table rule") from exc
    missing = [c for c in ("model", "valid_acc", "test_auc") if c not in frame.columns]
    if missing:
        raise PipelineError(f"{path}: column(s) {', '.join(missing)} missing; re-run the table rule")
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


def _pair(pre: dict | None, fine: dict | None, field: str, fmt) -> str:
    base = fmt(pre.get(field)) if pre is not None else "-"
    if fine is None:
        return base
    other = fmt(fine.get(field))
    if field == "device" and other == base:
        return base
    return f"{base} ({other})"


def report_table(metrics: Sequence[dict]) -> pd.DataFrame:
    """``build_table``'s columns plus Params, Wall time s and Device (strings)."""
    table = build_table(metrics)
    by_name = {m["model"]: m for m in metrics}
    used: set[str] = set()
    extra_rows: list[tuple[str, str, str]] = []
    fields = (("params_count", _fmt_params), ("wall_time_s", _fmt_seconds), ("device", _fmt_device))
    # the same walk as build_table: classical rows first, then the rest in the given order
    labels = []
    for clf, label in CLASSICAL_ROWS:
        pre, fine = by_name.get(f"{clf}_pretrained"), by_name.get(f"{clf}_finetuned")
        if pre is None and fine is None:
            continue
        used.update(m["model"] for m in (pre, fine) if m is not None)
        labels.append(label)
        # only fine-tuned present: "- (x)", as build_table shows it
        extra_rows.append(tuple(_pair(pre, fine, f, fmt) for f, fmt in fields))
    for m in metrics:
        if m["model"] in used:
            continue
        labels.append(m.get("display_name") or m["model"])
        extra_rows.append(tuple(fmt(m.get(f)) for f, fmt in fields))
    if labels != [str(v) for v in table["Model"]]:
        raise RuntimeError(f"report table rows {labels} do not match results.build_table {list(table['Model'])}")
    extra = pd.DataFrame(extra_rows, columns=list(EXTRA_COLUMNS))
    return pd.concat([table.reset_index(drop=True), extra], axis=1)


def table_note(table: pd.DataFrame) -> str | None:
    """The parentheses note when any cell uses it."""
    return NOTE if any("(" in str(v) for v in table.iloc[:, 1:].to_numpy().ravel()) else None


__all__ = ["EXTRA_COLUMNS", "TIDY_COLUMNS", "load_tidy", "report_table", "table_note"]
