"""Every model's run per seed, read for the results table: metrics and per-image predictions.

Layout (issue 17): ``<root>/<model>/seed<seed>/`` holds ``metrics.json``, ``predictions.csv``
(test: ``id,prob_bad``) and ``val_predictions.csv`` (``id,label,prob_bad``; label 0 good / 1 bad,
one row per validation image; an optional ``pred`` 0/1 column is the model's own call, else a
call is ``prob_bad > 0.5``). The test labels come from the split table
(``results/split/split.parquet``: ``split == "test"`` rows labelled 0/1), as each model's
``test_auc`` is computed; hidden test labels (-1) leave the test numbers null.

Every expected file is checked before any is read, so a missing seed stops the table with one
line naming the file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from ..io.errors import PipelineError
from .metrics import validate_metrics
from .stats import THRESHOLD

RUN_FILES = ("metrics.json", "val_predictions.csv", "predictions.csv")


def run_dir(root: str | os.PathLike, model: str, seed: int) -> Path:
    return Path(root) / model / f"seed{int(seed)}"


def expected_files(root: str | os.PathLike, models: Sequence[str], seeds: Sequence[int]) -> list[Path]:
    """Every file the table reads, model by model, seed by seed (the rule's input list)."""
    return [run_dir(root, m, s) / name for m in models for s in seeds for name in RUN_FILES]


def check_present(paths: Iterable[str | os.PathLike]) -> None:
    """PipelineError naming the first missing file (and how many more are missing)."""
    missing = [Path(p) for p in paths if not Path(p).is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more missing)" if len(missing) > 1 else ""
        raise PipelineError(
            f"{missing[0]}: missing{more}; run that model's rule for every seed in params.yaml study.seeds"
        )


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PipelineError(f"{path}: not valid JSON ({exc}); re-run that model's rule") from exc


def _read_csv(path: Path, columns: Sequence[str]) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype={"id": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise PipelineError(f"{path}: not a readable CSV ({exc}); re-run that model's rule") from exc
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise PipelineError(f"{path}: column(s) {', '.join(missing)} missing; re-run that model's rule")
    if frame["id"].duplicated().any():
        raise PipelineError(f"{path}: duplicate ids; re-run that model's rule")
    return frame


def load_run_metrics(root, models: Sequence[str], seeds: Sequence[int]) -> dict[tuple[str, int], dict]:
    """``{(model, seed): metrics}``; each metrics.json's ``seed`` must be its folder's seed."""
    check_present(expected_files(root, models, seeds))
    out = {}
    for model in models:
        for seed in seeds:
            path = run_dir(root, model, seed) / "metrics.json"
            metrics = validate_metrics(_read_json(path), path)
            if metrics["model"] != model or metrics.get("seed") != int(seed):
                raise PipelineError(f"{path}: holds model {metrics['model']!r} seed {metrics.get('seed')!r}, "
                                    f"expected {model!r} seed {seed}; re-run that model's rule")
            out[(model, int(seed))] = metrics
    return out


@dataclass
class ImageSet:
    """One image set (validation or labelled test) and every model's per-seed outputs on it.

    ``scores[model]``: (seeds, images) prob_bad in ``ids`` order; ``calls[model]``: 0/1 calls."""

    name: str
    ids: np.ndarray
    labels: np.ndarray
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    calls: dict[str, np.ndarray] = field(default_factory=dict)


def _aligned(frame: pd.DataFrame, ids: np.ndarray, path: Path) -> pd.DataFrame:
    indexed = frame.set_index("id")
    lost = np.setdiff1d(ids, indexed.index.to_numpy())
    if lost.size:
        raise PipelineError(f"{path}: no prediction for {lost.size} image(s) (e.g. {lost[0]}); re-run that model's rule")
    return indexed.loc[ids]


def load_val(root, models: Sequence[str], seeds: Sequence[int]) -> ImageSet:
    """Every run's validation predictions, aligned by id; the labels must agree across runs."""
    ref: pd.DataFrame | None = None
    out: ImageSet | None = None
    for model in models:
        probs, calls = [], []
        for seed in seeds:
            path = run_dir(root, model, seed) / "val_predictions.csv"
            frame = _read_csv(path, ("id", "label", "prob_bad"))
            if ref is None:
                ref = frame.sort_values("id", kind="stable").reset_index(drop=True)
                out = ImageSet("validation", ref["id"].to_numpy(), ref["label"].to_numpy(np.int64))
            if len(frame) != len(ref):
                raise PipelineError(f"{path}: {len(frame)} validation rows, other runs have {len(ref)}; re-run that model's rule")
            rows = _aligned(frame, out.ids, path)
            if not np.array_equal(rows["label"].to_numpy(np.int64), out.labels):
                raise PipelineError(f"{path}: validation labels differ from the other runs'; re-run that model's rule")
            probs.append(rows["prob_bad"].to_numpy(np.float64))
            calls.append(rows["pred"].to_numpy(np.int64) if "pred" in rows.columns else (probs[-1] > THRESHOLD).astype(np.int64))
        out.scores[model], out.calls[model] = np.vstack(probs), np.vstack(calls)
    return out


def test_labels(split_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(ids, labels) of the labelled test images of the split table, sorted by id."""
    try:
        split = pd.read_parquet(split_path, columns=["id", "label", "split"])
    except (OSError, ValueError) as exc:  # missing file, not parquet, a column missing
        raise PipelineError(f"{split_path}: cannot read id/label/split ({exc}); re-run the split stage") from exc
    test = split[(split["split"] == "test") & split["label"].isin([0, 1])].sort_values("id", kind="stable")
    return test["id"].astype(str).to_numpy(), test["label"].to_numpy(np.int64)


def load_test(root, models: Sequence[str], seeds: Sequence[int], split_path) -> ImageSet | None:
    """Every run's test probabilities on the labelled test images; None when no test label is known."""
    ids, labels = test_labels(split_path)
    if len(np.unique(labels)) < 2:
        return None
    out = ImageSet("test", ids, labels)
    for model in models:
        rows = []
        for seed in seeds:
            path = run_dir(root, model, seed) / "predictions.csv"
            rows.append(_aligned(_read_csv(path, ("id", "prob_bad")), ids, path)["prob_bad"].to_numpy(np.float64))
        out.scores[model] = np.vstack(rows)
    return out
