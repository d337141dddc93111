"""What ingest does about images that occur more than once.

Three levels of "the same image", from certain to likely:

1. identical bytes (``sha256``);
2. identical decoded pixels (``pixel_sha256``: a PNG re-save, a JPEG with a comment added);
3. look-alikes: perceptual hashes within ``ingest.near_duplicates.max_distance`` bits
   (:mod:`pipeline_lib.data.phash`: re-encodes, resizes, brightness, flips and rotations).

Levels 1 and 2 are certain, and are handled in this order:

* **Label conflicts** (:func:`resolve_label_conflicts`, ``ingest.label_conflicts``): copies
  that carry different known labels (train folders, or ``test_labels.csv`` for test
  images). ``fail`` names every copy; ``drop`` leaves *every* labelled copy out (listed in
  ``bad_files.csv``; an unlabelled test copy stays). Which label is right is never guessed, and never taken from sort order.
* **Duplicates** (:func:`resolve_duplicates`, ``ingest.duplicates``): copies that agree on
  the label but could land in two of train / validation / test. ``fail`` names them;
  ``dedupe`` keeps one copy per image: every test copy when there is one (all train copies
  are dropped: a test image's twin never stays in train/val), else the train copy whose path
  sorts first (the label is the same either way). Copies that are all test images stay.

Level 3 is a judgement of the hash: :func:`near_duplicates_table` lists every pair that
involves a train image (train-train pairs can end up across train/validation), and
:func:`check_near_duplicates` applies ``ingest.near_duplicates.policy`` (``fail`` names
them, ``warn`` goes on; the pairs are in ``results/ingest/near_duplicates.csv``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from ..io.errors import PipelineError, listing
from .phash import BITS, near_duplicate_pairs

LABEL_POLICIES = ("fail", "drop")
DUPLICATE_POLICIES = ("fail", "dedupe")
NEAR_POLICIES = ("fail", "warn")
BAD_FILES_COLUMNS = ("path", "problem", "reason")
NEAR_DUPLICATE_COLUMNS = ("path_a", "source_a", "label_a", "path_b", "source_b", "label_b", "distance", "transform")
_LABEL_NAMES = {0: "good", 1: "bad", -1: "unlabelled"}


@dataclass
class Duplicate:
    """A file left out (``dedupe``) because the same image is kept under another path."""

    path: str
    source: str
    kept: str
    sha256: str
    level: str = "bytes"  # "bytes" or "pixels"


@dataclass
class LabelConflict:
    """A copy left out (``label_conflicts: drop``) of an image that carries two labels."""

    path: str
    label: int
    others: str  # the other copies with their labels
    level: str


def _check_policy(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise PipelineError(f"{key} in params.yaml is {value!r}; expected one of {allowed}")


def _same_image_groups(manifest: pd.DataFrame):
    """(level, rows) for every image that occurs more than once (identical pixels, which
    includes identical bytes), in a fixed order."""
    key = "pixel_sha256" if "pixel_sha256" in manifest.columns else "sha256"
    repeated = manifest[key].duplicated(keep=False)
    for _, group in manifest.loc[repeated].groupby(key, sort=True):
        group = group.sort_values("path", kind="stable")
        yield ("bytes" if group["sha256"].nunique() == 1 else "pixels"), group


def _level_text(level: str) -> str:
    return "identical bytes" if level == "bytes" else "identical decoded pixels"


def _labelled(path: str, label: int) -> str:
    return f"{path} (label {label}, {_LABEL_NAMES.get(int(label), label)})"


def resolve_label_conflicts(
    manifest: pd.DataFrame, policy: str = "fail"
) -> tuple[pd.DataFrame, list[LabelConflict]]:
    """Apply ``ingest.label_conflicts`` (module docstring); unknown test labels (-1) agree
    with anything."""
    _check_policy("ingest.label_conflicts", policy, LABEL_POLICIES)
    described: list[str] = []
    dropped: list[LabelConflict] = []
    for level, group in _same_image_groups(manifest):
        known = group.loc[group["label"] != -1]
        if known["label"].nunique() < 2:
            continue
        copies = [_labelled(p, lab) for p, lab in zip(known["path"], known["label"])]
        described.append(f"{' and '.join(copies)} ({_level_text(level)})")
        for path, label in zip(known["path"], known["label"]):  # unlabelled copies stay
            others = [c for c, p in zip(copies, known["path"]) if p != path]
            dropped.append(LabelConflict(path, int(label), ", ".join(others), level))
    if not described:
        return manifest, []
    if policy == "fail":
        raise PipelineError(
            f"the same image carries two labels ({len(described)} image(s)): {listing(described)}; "
            "one label is wrong: move the file to its class folder or correct its row in the "
            "test labels file, or set ingest.label_conflicts: drop in params.yaml to leave out "
            "every copy"
        )
    drop = {c.path for c in dropped}
    return manifest.loc[~manifest["path"].isin(drop)].reset_index(drop=True), dropped


def resolve_duplicates(
    manifest: pd.DataFrame, policy: str = "fail"
) -> tuple[pd.DataFrame, list[Duplicate]]:
    """Apply ``ingest.duplicates`` to same-image groups that involve a train image.

    ``fail``: PipelineError naming every such group. ``dedupe``: the manifest without the
    dropped copies, and the dropped copies (rule in the module docstring). Run
    :func:`resolve_label_conflicts` first: a group with two labels is not a duplicate.
    """
    _check_policy("ingest.duplicates", policy, DUPLICATE_POLICIES)
    listed: list[str] = []
    dropped: list[Duplicate] = []
    for level, group in _same_image_groups(manifest):
        if not (group["source"] == "train").any():
            continue  # every copy is a test image: no leakage, every test id keeps a row
        is_test = group["source"] == "test"
        # keep: all test copies if any, else the first train copy by path
        order = group.assign(_t=~is_test).sort_values(["_t", "path"], kind="stable")
        keep = set(order.loc[is_test, "path"]) if is_test.any() else {order["path"].iloc[0]}
        kept = order["path"].iloc[0]
        dropped += [
            Duplicate(row.path, row.source, kept, row.sha256, level)
            for row in order.itertuples()
            if row.path not in keep
        ]
        copies = " = ".join(f"{p} ({s})" for p, s in zip(order["path"], order["source"]))
        listed.append(copies if level == "bytes" else f"{copies} [same pixels]")
    if not listed:
        return manifest, []
    if policy == "fail":
        raise PipelineError(
            f"{len(listed)} group(s) of identical images (same bytes or same decoded pixels) "
            f"would leak between train, validation and test: {listing(listed)}; remove the "
            "copies, or set ingest.duplicates: dedupe in params.yaml to keep one copy (the "
            "test copy if any)"
        )
    drop = {d.path for d in dropped}
    kept_manifest = manifest.loc[~manifest["path"].isin(drop)].reset_index(drop=True)
    dropped.sort(key=lambda d: d.path)
    return kept_manifest, dropped


def near_duplicates_table(
    manifest: pd.DataFrame, blocks: np.ndarray, *, max_distance: int, flips: bool = True
) -> pd.DataFrame:
    """Look-alike pairs (:data:`NEAR_DUPLICATE_COLUMNS`) among ``manifest``'s rows
    (``blocks`` aligned with them), every pair with at least one train image, sorted."""
    pairs = near_duplicate_pairs(
        blocks, (manifest["source"] == "test").to_numpy(), max_distance=max_distance, flips=flips
    )
    a = manifest.iloc[pairs["a"].to_numpy()].reset_index(drop=True)
    b = manifest.iloc[pairs["b"].to_numpy()].reset_index(drop=True)
    table = pd.DataFrame(
        {
            "path_a": a["path"], "source_a": a["source"], "label_a": a["label"].astype(int),
            "path_b": b["path"], "source_b": b["source"], "label_b": b["label"].astype(int),
            "distance": pairs["distance"].astype(int), "transform": pairs["transform"],
        },
        columns=list(NEAR_DUPLICATE_COLUMNS),
    )
    return table.sort_values(["path_a", "path_b"], kind="stable").reset_index(drop=True)


def describe_pair(row) -> str:
    turned = "" if row.transform == "none" else f", b turned by {row.transform}"
    return f"{row.path_a} ({row.source_a}) ~ {row.path_b} ({row.source_b}) (distance {row.distance}{turned})"


def check_near_duplicates(table: pd.DataFrame, policy: str, max_distance: int) -> None:
    """``fail``: PipelineError naming the pairs; ``warn``: nothing (the caller logs them)."""
    _check_policy("ingest.near_duplicates.policy", policy, NEAR_POLICIES)
    if policy == "warn" or table.empty:
        return
    raise PipelineError(
        f"{len(table)} pair(s) of near-duplicate images (perceptual hashes within "
        f"ingest.near_duplicates.max_distance = {max_distance} of {BITS} bits) could leak "
        f"between train, validation and test: {listing([describe_pair(r) for r in table.itertuples()])}; "
        "remove one image of each pair, or set ingest.near_duplicates.policy: warn in "
        "params.yaml to keep them (then listed in results/ingest/near_duplicates.csv), or "
        "lower max_distance if they are different chips"
    )


def bad_files_table(
    bad: Sequence, duplicates: Sequence[Duplicate], conflicts: Sequence[LabelConflict] = ()
) -> pd.DataFrame:
    """``path,problem,reason`` for every file left out of the manifest
    (``bad``/``duplicate``/``label_conflict``)."""
    rows = [(b.path, "bad", b.reason) for b in bad]
    rows += [
        (
            d.path,
            "duplicate",
            f"same {'content' if d.level == 'bytes' else 'decoded pixels'} (sha256 "
            f"{d.sha256[:12]}...) as {d.kept}, which is kept",
        )
        for d in duplicates
    ]
    rows += [
        (
            c.path,
            "label_conflict",
            f"labelled {c.label} ({_LABEL_NAMES.get(c.label, c.label)}) but {_level_text(c.level)} "
            f"as {c.others}; every copy left out (ingest.label_conflicts: drop)",
        )
        for c in conflicts
    ]
    return pd.DataFrame(sorted(rows), columns=list(BAD_FILES_COLUMNS), dtype=str)


def ingest_metrics(
    manifest: pd.DataFrame,
    bad: Sequence,
    duplicates: Sequence[Duplicate],
    conflicts: Sequence[LabelConflict] = (),
    *,
    near_duplicates: int = 0,
    test_files: int | None = None,
) -> dict[str, int]:
    """Counts for ``results/ingest/ingest_metrics.json``.

    ``images``: rows in the manifest; ``bad``: unusable files found; ``skipped``: bad files
    left out (``bad_images: skip``; with ``fail`` any bad file stops ingest);
    ``duplicates``: copies left out by ``duplicates: dedupe``; ``label_conflicts``: copies
    left out by ``label_conflicts: drop``; ``near_duplicates``: look-alike pairs kept
    (``policy: warn``); ``test_files``: files found in test/all_tests; ``test_skipped``:
    how many of them are not in the manifest (so not in predictions or the test AUC).
    """
    sources = manifest["source"].value_counts()
    n_test = int(sources.get("test", 0))
    test_files = n_test if test_files is None else int(test_files)
    return {
        "images": int(len(manifest)),
        "images_train": int(sources.get("train", 0)),
        "images_test": n_test,
        "bad": len(bad),
        "skipped": len(bad),
        "duplicates": len(duplicates),
        "label_conflicts": len(conflicts),
        "near_duplicates": int(near_duplicates),
        "test_files": test_files,
        "test_skipped": test_files - n_test,
    }
