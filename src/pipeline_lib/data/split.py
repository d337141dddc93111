"""Split: a seeded, stratified hold-out of validation images from the train source.

``val_good`` good and ``val_bad`` bad training images become ``val``; the rest of the
train source stays ``train``; every test image is ``test``. The result depends only on
the set of rows and the seed (rows are sorted by id first), and each class draws from
its own random stream, so changing ``val_bad`` does not reshuffle the good images.

Leakage guard (``check_leakage=True`` / :func:`check_no_leakage`): an image whose decoded
pixels (``pixel_sha256``, which covers identical bytes) land in two different splits is an
error naming the files. Ingest's ``ingest.duplicates`` policy removes such twins before;
this catches a manifest that bypassed it.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..io.errors import PipelineError
from ..study.stage_config import StageConfig, check_types
from .ingest import MANIFEST_COLUMNS

_CLASS_NAMES = {0: "good", 1: "bad"}


def _count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise PipelineError(f"split.{name} in params.yaml is {value!r}; expected an integer >= 0")
    return int(value)


@dataclass(frozen=True)
class SplitConfig(StageConfig):
    """The ``split`` section: the seed and how many good and bad training images become ``val``."""

    WHERE = "split"

    seed: int
    val_good: int
    val_bad: int

    def __post_init__(self) -> None:
        for name in ("seed", "val_good", "val_bad"):  # numpy integers too, kept as plain ints
            object.__setattr__(self, name, _count(name, getattr(self, name)))
        check_types(self, self.WHERE)


def check_no_leakage(frame: pd.DataFrame) -> None:
    """PipelineError naming the files if one image (pixels) appears under two ``split`` values."""
    key = "pixel_sha256" if "pixel_sha256" in frame.columns else "sha256"
    n_splits = frame.groupby(key, sort=False)["split"].nunique()
    leaking = n_splits.index[n_splits > 1]
    if len(leaking) == 0:
        return
    rows = frame.loc[frame[key].isin(leaking)].sort_values([key, "path"], kind="stable")
    groups = [
        " = ".join(f"{p} ({s})" for p, s in zip(g["path"], g["split"]))
        for _, g in rows.groupby(key, sort=True)
    ]
    shown = "; ".join(groups[:10]) + (f"; and {len(groups) - 10} more" if len(groups) > 10 else "")
    raise PipelineError(
        f"split: {len(groups)} image(s) with identical content (same pixels) fall in different "
        f"splits, which leaks between train, validation and test: {shown}; set "
        "ingest.duplicates in params.yaml (fail or dedupe) and re-run ingest"
    )


def make_split(manifest: pd.DataFrame, config: SplitConfig, *, check_leakage: bool = False) -> pd.DataFrame:
    """The manifest's rows with a ``split`` column (``train``/``val``/``test``).

    Rows come back sorted by (source, path, id), whatever the input order.
    ``check_leakage``: raise if identical content lands in two splits (:func:`check_no_leakage`).
    """
    seed = config.seed
    wanted = {0: config.val_good, 1: config.val_bad}
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise PipelineError(f"manifest lacks column(s) {missing}; re-run ingest")
    if manifest["id"].duplicated().any():
        dup = sorted(manifest.loc[manifest["id"].duplicated(), "id"].unique())[:10]
        raise PipelineError(f"manifest has duplicate ids {dup}; re-run ingest")
    sources = set(manifest["source"].unique())
    if not sources <= {"train", "test"}:
        raise PipelineError(
            f"manifest has unknown source(s) {sorted(sources - {'train', 'test'})}; re-run ingest"
        )

    frame = manifest.loc[:, list(MANIFEST_COLUMNS)].sort_values("id", kind="stable")
    frame = frame.reset_index(drop=True)
    is_train = frame["source"] == "train"
    train_labels = set(frame.loc[is_train, "label"].unique().tolist())
    if not train_labels <= {0, 1}:
        raise PipelineError(
            f"manifest has train labels {sorted(train_labels)}; expected only 0 (good) and "
            "1 (bad); re-run ingest"
        )

    split = np.where(is_train, "train", "test").astype(object)
    for label, n_val in wanted.items():
        rows = np.flatnonzero(is_train & (frame["label"] == label))
        name = _CLASS_NAMES[label]
        if n_val >= len(rows):
            raise PipelineError(
                f"split: class '{name}' (label {label}) has {len(rows)} training image(s) but "
                f"split.val_{name}={n_val} asks for {n_val} validation image(s) and at least one "
                f"must stay in training; lower split.val_{name} in params.yaml to at most "
                f"{max(len(rows) - 1, 0)}"
            )
        rng = np.random.default_rng([seed, label])
        split[rng.choice(rows, size=n_val, replace=False)] = "val"

    frame["split"] = pd.Series(split, dtype=frame["source"].dtype)
    if check_leakage:
        check_no_leakage(frame)
    frame = frame.sort_values(["source", "path", "id"], kind="stable").reset_index(drop=True)
    return frame
