"""The study's results table, from every model's metrics.json.

Slide shape: one row per classical classifier (LDA, RF, LR, SVM) with the value on
pretrained ResNet features and, in parentheses, on fine-tuned features (``58.0 (96.0)``);
then one row per other model (classical models on other features, CNNs, transfer
learning, NAS) in the order given. Percentages with 1-2 decimals; a missing value is "-".
Raw fractions are kept in a tidy CSV and a JSON for ``dvc metrics show``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import pandas as pd

from ..io.atomic import write_csv, write_json, write_text
from ..io.errors import PipelineError
from .metrics import validate_metrics
from ..study.registry import CLASSIFIERS, classifier_name

CLASSICAL_ROWS = tuple((clf, classifier_name(clf)) for clf in CLASSIFIERS)
TABLE_COLUMNS = ("Model", "Valid acc %", "Test AUC %")
TIDY_COLUMNS = (  # display_name: the row label of deep models, so the report shows the slide's names
    "model", "display_name", "family", "features", "valid_acc", "test_auc", "test_skipped", "params_count",
    "wall_time_s", "device",
    "estimator",  # the SVM rows: which variant ran (pipeline_lib.classical.svm_variants)
)
JSON_FIELDS = ("valid_acc", "test_auc", "params_count")
FLAT_FIELDS = ("valid_acc", "test_auc")  # the study's numbers, per model, for `dvc metrics show`
NOTE = "Parentheses: the same classifier on fine-tuned ResNet features."


def load_metrics(paths: Iterable[str | os.PathLike]) -> list[dict]:
    """Read and check each metrics.json; PipelineError naming a missing or invalid file."""
    out = []
    for p in paths:
        p = Path(p)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise PipelineError(f"{p}: metrics file not found; run that model's rule first") from exc
        except OSError as exc:
            raise PipelineError(f"{p}: cannot be read ({exc})") from exc
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PipelineError(f"{p}: not valid JSON ({exc}); re-run that model's rule") from exc
        out.append(validate_metrics(obj, p))
    _check_unique(out)
    return out


def _check_unique(metrics: Sequence[dict]) -> None:
    seen: set[str] = set()
    for m in metrics:
        if m["model"] in seen:
            raise PipelineError(f"model {m['model']!r} appears in more than one metrics file")
        seen.add(m["model"])


def fmt_pct(value: float | None) -> str:
    """0.58 -> "58.0", 0.6067 -> "60.67", None -> "-" (percent, 1-2 decimals)."""
    if value is None:
        return "-"
    text = f"{100.0 * float(value):.2f}"
    return text[:-1] if text.endswith("0") else text


@dataclass(frozen=True)
class Column:
    """One column of the slide-shaped table: header, metrics field, how a value is shown.

    ``collapse_equal``: a classical row shows one value instead of ``x (x)`` when the
    pretrained and fine-tuned values print the same (e.g. the device).
    """

    header: str
    field: str | None  # None: ``fmt`` gets the whole row (a cell built from several fields)
    fmt: Callable[[Any], str]
    collapse_equal: bool = False

    def _value(self, row: dict) -> Any:
        return row if self.field is None else row.get(self.field)

    def cell(self, pre: dict | None, fine: dict | None) -> str:
        base = self.fmt(self._value(pre)) if pre is not None else "-"
        if fine is None:
            return base
        other = self.fmt(self._value(fine))
        return base if self.collapse_equal and other == base else f"{base} ({other})"


SLIDE_COLUMNS = (Column("Valid acc %", "valid_acc", fmt_pct), Column("Test AUC %", "test_auc", fmt_pct))


def slide_table(metrics: Sequence[dict], columns: Sequence[Column] = SLIDE_COLUMNS) -> pd.DataFrame:
    """Rows in the slide's shape, one column per ``Column`` after ``Model`` (strings).

    A row per classical classifier (LDA, RF, LR, SVM) with the value on pretrained features
    and, in parentheses, on fine-tuned ones (only fine-tuned present: ``- (x)``); then one
    row per other model in the given order.
    """
    _check_unique(metrics)
    by_name = {m["model"]: m for m in metrics}
    used: set[str] = set()
    rows = []
    for clf, label in CLASSICAL_ROWS:
        pre, fine = by_name.get(f"{clf}_pretrained"), by_name.get(f"{clf}_finetuned")
        if pre is None and fine is None:
            continue
        used.update(m["model"] for m in (pre, fine) if m is not None)
        rows.append((label, *(c.cell(pre, fine) for c in columns)))
    for m in metrics:
        if m["model"] in used:
            continue
        rows.append((m.get("display_name") or m["model"], *(c.cell(m, None) for c in columns)))
    return pd.DataFrame(rows, columns=["Model", *(c.header for c in columns)])


def build_table(metrics: Sequence[dict]) -> pd.DataFrame:
    """The slide's table: columns Model, Valid acc %, Test AUC % (strings)."""
    return slide_table(metrics, SLIDE_COLUMNS)


def tidy_frame(metrics: Sequence[dict]) -> pd.DataFrame:
    """One row per model with the raw numbers (fractions, not percentages)."""
    return pd.DataFrame([{c: m.get(c) for c in TIDY_COLUMNS} for m in metrics], columns=list(TIDY_COLUMNS))


def metrics_json(metrics: Sequence[dict]) -> dict:
    """``{model: {valid_acc, test_auc, params_count}}`` for ``dvc metrics show``.

    Wall times are left out so the file only changes when the results do.
    """
    return {m["model"]: {f: m.get(f) for f in JSON_FIELDS} for m in metrics}


def write_flat_metrics(metrics: Sequence[dict], paths: Iterable[str | os.PathLike]) -> None:
    """One small flat JSON per model (``<dir>/<model>.json``: valid_acc, test_auc), the DVC metrics.

    One file per row because ``dvc metrics show`` prints a row per file and a column per key:
    one file holding every model would print one row of ~30 columns.
    """
    by_name = {m["model"]: m for m in metrics}
    for path in paths:
        model = Path(path).stem
        if model not in by_name:
            raise PipelineError(f"{path}: no metrics for model {model!r} among the table's inputs")
        write_json(path, {f: by_name[model].get(f) for f in FLAT_FIELDS})


def skipped_note(metrics: Sequence[dict]) -> str | None:
    """A sentence when ingest left test images out: the test AUC is over fewer images."""
    skipped = {m.get("test_skipped") for m in metrics} - {None, 0}
    if not skipped:
        return None
    counts = " or ".join(str(n) for n in sorted(skipped))
    return (
        f"Test AUC without {counts} test image(s) that ingest left out (unreadable or conflicting "
        "labels: results/ingest/bad_files.csv); they have no prediction."
    )


def estimator_note(metrics: Sequence[dict]) -> str | None:
    """The caption line saying which SVM ran (``estimator`` of the svm_* metrics), or None."""
    ran = {m["features"]: m["estimator"] for m in metrics if m["model"].startswith("svm_") and m.get("estimator")}
    if not ran:
        return None
    if len(set(ran.values())) == 1:
        return f"SVM: {next(iter(ran.values()))}."
    return "SVM: " + "; ".join(f"{text} on {features} features" for features, text in sorted(ran.items())) + "."


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def markdown_table(table: pd.DataFrame, *, note: bool | None = None) -> str:
    """A GitHub Markdown table (numbers right-aligned), plus the parentheses note when used."""
    cols = list(table.columns)
    lines = [
        "| " + " | ".join(_md_escape(c) for c in cols) + " |",
        "| " + " | ".join(["---"] + ["---:"] * (len(cols) - 1)) + " |",
    ]
    for row in table.itertuples(index=False):
        lines.append("| " + " | ".join(_md_escape(v) for v in row) + " |")
    if note is None:
        note = any("(" in str(v) for v in table.iloc[:, 1:].to_numpy().ravel())
    text = "\n".join(lines) + "\n"
    if note:
        text += f"\n{NOTE}\n"
    return text


def write_table(
    metrics: Sequence[dict],
    csv_path: str | os.PathLike,
    md_path: str | os.PathLike,
    json_path: str | os.PathLike,
) -> pd.DataFrame:
    """Write the tidy CSV, the slide-shaped Markdown and the metrics JSON; return the table."""
    table = build_table(metrics)
    write_csv(tidy_frame(metrics), csv_path)
    note = "\n".join(n for n in (estimator_note(metrics), skipped_note(metrics)) if n)
    write_text(md_path, markdown_table(table) + (f"\n{note}\n" if note else ""))
    write_json(json_path, metrics_json(metrics))
    return table
