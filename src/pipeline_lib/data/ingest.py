"""Ingest: scan a Nexperia-layout data root into a validated manifest.

Layout::

    <root>/train/good_0/*   label 0 (good)
    <root>/train/bad_1/*    label 1 (bad)
    <root>/test/all_tests/* label -1, or from an optional ``id,label`` CSV

Every image is read once (the same bytes give the sha256 and are fully decoded, so
truncated or corrupt files are caught here and not halfway through training). Only the
``train/`` and ``test/`` subtrees are scanned; other files in the root are ignored.

Data paths from params (``ingest.root``, ``ingest.test_labels``) are confined to the data
root ``data/`` of the working directory when relative (``../../etc`` is refused); an
absolute path is taken as the explicit choice it is (:func:`confine_data_path`).

Checks on every file (:mod:`pipeline_lib.data.image_check`): only regular files are opened (a
named pipe, socket or device is a bad file, named), a decoder warning (Pillow's, or libjpeg's
"Corrupt JPEG data") makes the file bad, and so does a side below ``ingest.min_side``.
What happens to images found more than once (label conflicts, duplicates, look-alikes) is
:mod:`pipeline_lib.data.leakage`; :func:`run_ingest` does all of it in order.
"""

from __future__ import annotations

import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import ImageFile
from tqdm import tqdm

from ..io.atomic import write_parquet
from .datapaths import DATA_ROOT, confine_data_path  # noqa: F401 (re-exported)
from ..io.errors import PipelineError, listing
from ..study.stage_config import StageConfig, check_types
from .image_check import inspect_image, record_decoder_warnings
from .leakage import (  # noqa: F401 (re-exported: ingest's public names)
    BAD_FILES_COLUMNS, NEAR_DUPLICATE_COLUMNS, Duplicate, LabelConflict, bad_files_table, check_near_duplicates,
    DUPLICATE_POLICIES, LABEL_POLICIES, NEAR_POLICIES, describe_pair, ingest_metrics, near_duplicates_table,
    resolve_duplicates, resolve_label_conflicts,
)
from .phash import MAX_DISTANCE
from .test_labels import read_test_labels

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp"})

# Class folders: (source, folder relative to root, label). Test labels come from the CSV.
_FOLDERS = (
    ("train", "train/good_0", 0),
    ("train", "train/bad_1", 1),
    ("test", "test/all_tests", -1),
)
_KNOWN_SUBFOLDERS = {"train": {"good_0", "bad_1"}, "test": {"all_tests"}}

# Operating-system clutter that is never data (besides hidden ".*" files).
_IGNORED_NAMES = frozenset({"thumbs.db", "desktop.ini"})

MANIFEST_COLUMNS = (
    "id", "path", "source", "label", "sha256", "pixel_sha256", "width", "height", "mode", "bytes",
)
_DTYPES = {"label": "int8", "width": "int32", "height": "int32", "bytes": "int64"}

_BAD_POLICIES = ("fail", "skip")


def _one_of(where: str, value, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise PipelineError(f"{where} in params.yaml is {value!r}; expected one of {allowed}")


@dataclass(frozen=True)
class NearDuplicatesConfig(StageConfig):
    """``ingest.near_duplicates``: look-alikes by perceptual hash (:mod:`pipeline_lib.data.phash`)."""

    WHERE = "ingest.near_duplicates"

    policy: str = "fail"
    max_distance: int = 12
    flips: bool = True

    def __post_init__(self) -> None:
        check_types(self, self.WHERE)
        _one_of(f"{self.WHERE}.policy", self.policy, NEAR_POLICIES)
        if not 0 <= self.max_distance <= MAX_DISTANCE:
            raise PipelineError(f"{self.WHERE}.max_distance: {self.max_distance} is invalid; expected 0..{MAX_DISTANCE}")


@dataclass(frozen=True)
class IngestConfig(StageConfig):
    """The ``ingest`` section: where the data is, and what to do with bad files and repeated images."""

    WHERE = "ingest"

    root: str
    test_labels: str | None = None
    bad_images: str = "fail"
    min_side: int = 1
    label_conflicts: str = "fail"
    duplicates: str = "fail"
    near_duplicates: NearDuplicatesConfig = field(default_factory=NearDuplicatesConfig)

    def __post_init__(self) -> None:
        check_types(self, self.WHERE)
        for key, allowed in (("bad_images", _BAD_POLICIES), ("label_conflicts", LABEL_POLICIES),
                             ("duplicates", DUPLICATE_POLICIES)):
            _one_of(f"{self.WHERE}.{key}", getattr(self, key), allowed)
        if self.min_side < 1:
            raise PipelineError(f"{self.WHERE}.min_side: {self.min_side} is invalid; expected an integer >= 1")


@dataclass
class BadFile:
    """A file inside a class folder that is not a usable image, and why."""

    path: str
    reason: str


@dataclass
class Scan:
    """What :func:`scan_images` found: the manifest, the bad files, each manifest row's DCT
    block (:mod:`pipeline_lib.data.phash`, row-aligned) and the number of files in test/all_tests."""

    manifest: pd.DataFrame
    bad: list[BadFile]
    blocks: np.ndarray
    test_files: int


@dataclass
class IngestResult:
    """Everything rule ingest writes, and what its log says."""

    manifest: pd.DataFrame
    bad_files: pd.DataFrame
    near_duplicates: pd.DataFrame
    metrics: dict[str, int]
    messages: list[tuple[int, str]] = field(default_factory=list)  # (logging level, text)


def _ignored(name: str) -> bool:
    return name.startswith(".") or name.lower() in _IGNORED_NAMES


def _check_layout(root: Path) -> None:
    if not root.exists():
        raise PipelineError(
            f"data root {root.as_posix()} does not exist; set ingest.root in params.yaml to the "
            "folder that holds train/good_0, train/bad_1 and test/all_tests"
        )
    if not root.is_dir():
        raise PipelineError(
            f"data root {root.as_posix()} is not a folder; set ingest.root in params.yaml to the "
            "folder that holds train/good_0, train/bad_1 and test/all_tests"
        )
    for _, rel, _ in _FOLDERS:
        folder = root / rel
        if not folder.is_dir():
            raise PipelineError(
                f"{folder.as_posix()}: expected folder is missing; the data root must hold "
                "train/good_0 (good), train/bad_1 (bad) and test/all_tests (test images) - "
                "check ingest.root in params.yaml"
            )
    for top, known in _KNOWN_SUBFOLDERS.items():
        for entry in sorted((root / top).iterdir(), key=lambda p: p.name):
            if _ignored(entry.name):
                continue
            if entry.is_dir() and entry.name not in known:
                raise PipelineError(
                    f"{entry.as_posix()}: unexpected folder under {top}/ (only "
                    f"{', '.join(sorted(known))} are known); move or remove it"
                )
            if entry.is_file() and entry.suffix.lower() in IMAGE_EXTENSIONS:
                raise PipelineError(
                    f"{entry.as_posix()}: image outside a class folder; move it into "
                    f"{' or '.join(f'{top}/{k}' for k in sorted(known))}"
                )


def _list_folder(folder: Path) -> tuple[list[Path], list[Path]]:
    """(image-extension files, other files) in a class folder, sorted by name."""
    images: list[Path] = []
    others: list[Path] = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if _ignored(entry.name):
            continue
        if entry.is_dir():
            raise PipelineError(
                f"{entry.as_posix()}: unexpected folder inside a class folder (images must "
                f"sit directly in {folder.as_posix()}); move its images up or remove it"
            )
        if entry.suffix.lower() in IMAGE_EXTENSIONS:
            images.append(entry)
        else:
            others.append(entry)
    if not images and not others:
        raise PipelineError(
            f"{folder.as_posix()}: class folder is empty; it must hold the "
            f"{', '.join(sorted(IMAGE_EXTENSIONS))} images of that class"
        )
    return images, others


def _candidates(root: Path) -> tuple[list[tuple[str, int, Path]], list[BadFile], int, int]:
    """(source, label, path) of every image-extension file, the other files as bad files,
    the number of files, and the number of files in test/all_tests."""
    candidates: list[tuple[str, int, Path]] = []
    bad: list[BadFile] = []
    n_files = n_test = 0
    for source, rel, label in _FOLDERS:
        images, others = _list_folder(root / rel)
        candidates += [(source, label, p) for p in images]
        n_files += len(images) + len(others)
        n_test += len(images) + len(others) if source == "test" else 0
        bad += [
            BadFile(
                p.as_posix(),
                f"unexpected file type {p.suffix.lower() or '(no extension)'!r} in a class "
                f"folder (expected {', '.join(sorted(IMAGE_EXTENSIONS))})",
            )
            for p in others
        ]
    seen: dict[str, Path] = {}
    clashes: list[str] = []
    for _, _, p in candidates:
        if p.stem in seen:
            clashes.append(f"{p.stem!r} ({seen[p.stem].as_posix()} and {p.as_posix()})")
        else:
            seen[p.stem] = p
    if clashes:
        raise PipelineError(
            f"{len(clashes)} duplicate image id(s) under {root.as_posix()} (an id is the file "
            f"name without extension and must be unique across train and test): "
            f"{listing(clashes)}; rename or remove the duplicates"
        )
    return candidates, bad, n_files, n_test


def _inspect_all(paths: list[Path], min_side: int, progress: bool) -> list:
    # Threads: reading and Pillow's decoders release the GIL.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = max(1, min(8, cores or 1))
    with record_decoder_warnings(), ThreadPoolExecutor(max_workers=workers) as pool, tqdm(
        total=len(paths),
        desc="ingest",
        unit="img",
        file=sys.stderr,
        disable=not progress,
        dynamic_ncols=True,
        mininterval=1.0,
    ) as bar:
        results = []
        for result in pool.map(lambda p: inspect_image(p, min_side=min_side), paths):
            results.append(result)
            bar.update(1)
    return results


def scan_images(
    root: str | os.PathLike,
    *,
    test_labels: str | None = None,
    bad_images: str = "fail",
    min_side: int = 1,
    progress: bool = True,
) -> Scan:
    """Scan ``root``: the manifest (columns as in docs/ARCHITECTURE.md), the bad files and
    what the duplicate checks need (:class:`Scan`).

    ``bad_images="fail"`` raises :class:`PipelineError` listing every unusable file;
    ``"skip"`` leaves them out of the manifest and returns them instead.
    """
    if bad_images not in _BAD_POLICIES:
        raise PipelineError(
            f"ingest.bad_images in params.yaml is {bad_images!r}; expected one of {_BAD_POLICIES}"
        )
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True; ingest needs it False")
    root = confine_data_path(root, key="ingest.root")
    if test_labels:
        test_labels = os.fspath(confine_data_path(test_labels, key="ingest.test_labels"))
    _check_layout(root)
    candidates, bad, n_files, n_test = _candidates(root)
    test_ids = [p.stem for source, _, p in candidates if source == "test"]
    labels_by_id = read_test_labels(test_labels, test_ids) if test_labels else {}
    results = _inspect_all([p for _, _, p in candidates], min_side, progress)

    rows, blocks = [], []
    for (source, label, p), result in zip(candidates, results):
        if isinstance(result, str):
            bad.append(BadFile(p.as_posix(), result))
            continue
        if source == "test" and test_labels:
            label = labels_by_id[p.stem]
        rows.append(
            (p.stem, p.as_posix(), source, label, result.sha256, result.pixel_sha256,
             result.width, result.height, result.mode, result.nbytes)
        )
        blocks.append(result.block)
    bad.sort(key=lambda b: b.path)

    if bad and bad_images == "fail":
        raise PipelineError(
            f"{len(bad)} bad file(s) among {n_files} files under {root.as_posix()}: "
            + listing([f"{b.path} ({b.reason})" for b in bad])
            + "; fix or remove them, or set ingest.bad_images: skip in params.yaml to leave "
            "them out"
        )

    manifest = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    for col, dtype in _DTYPES.items():
        manifest[col] = manifest[col].astype(dtype)
    for _, rel, _ in _FOLDERS:
        prefix = (root / rel).as_posix() + "/"
        if not manifest["path"].str.startswith(prefix).any():
            raise PipelineError(
                f"{(root / rel).as_posix()}: no usable image left after skipping bad files; "
                "every class folder needs at least one readable image"
            )
    manifest = manifest.sort_values(["source", "path"], kind="stable")
    stacked = np.stack(blocks)[manifest.index.to_numpy()]
    return Scan(manifest.reset_index(drop=True), bad, stacked, n_test)


def scan_dataset(
    root: str | os.PathLike,
    *,
    test_labels: str | None = None,
    bad_images: str = "fail",
    min_side: int = 1,
    progress: bool = True,
) -> tuple[pd.DataFrame, list[BadFile]]:
    """:func:`scan_images`'s manifest and bad files."""
    scan = scan_images(
        root, test_labels=test_labels, bad_images=bad_images, min_side=min_side, progress=progress
    )
    return scan.manifest, scan.bad


def run_ingest(config: IngestConfig, *, progress: bool = True) -> IngestResult:
    """Rule ingest on its config (the ``ingest`` section): scan, label conflicts, duplicates,
    near duplicates, in that order (:mod:`pipeline_lib.data.leakage`)."""
    near = config.near_duplicates
    scan = scan_images(
        config.root, test_labels=config.test_labels, bad_images=config.bad_images,
        min_side=config.min_side, progress=progress,
    )
    blocks = dict(zip(scan.manifest["path"], scan.blocks))
    manifest, conflicts = resolve_label_conflicts(scan.manifest, config.label_conflicts)
    manifest, duplicates = resolve_duplicates(manifest, config.duplicates)
    pairs = near_duplicates_table(
        manifest, np.stack([blocks[path] for path in manifest["path"]]),
        max_distance=near.max_distance, flips=near.flips,
    )
    check_near_duplicates(pairs, near.policy, near.max_distance)

    messages = [(logging.WARNING, f"skipped {b.path}: {b.reason}") for b in scan.bad]
    messages += [(logging.WARNING, f"left out {c.path}: labelled {c.label}, the same image as {c.others}")
                 for c in conflicts]
    messages += [(logging.WARNING, f"dropped duplicate {d.path} (kept {d.kept})") for d in duplicates]
    messages += [(logging.WARNING, f"near duplicates: {describe_pair(r)}") for r in pairs.itertuples()]
    metrics = ingest_metrics(
        manifest, scan.bad, duplicates, conflicts, near_duplicates=len(pairs), test_files=scan.test_files
    )
    if metrics["test_skipped"]:
        messages.append((
            logging.WARNING,
            f"test set: {metrics['test_files']} → {metrics['images_test']} images "
            f"({metrics['test_skipped']} left out, listed in bad_files.csv): they get no "
            "prediction and are not in the test AUC",
        ))
    return IngestResult(manifest, bad_files_table(scan.bad, duplicates, conflicts), pairs, metrics, messages)


def check_manifest(df: pd.DataFrame) -> None:
    """Raise if ``df`` does not have the manifest's columns (in order) and dtypes."""
    if list(df.columns[: len(MANIFEST_COLUMNS)]) != list(MANIFEST_COLUMNS):
        raise ValueError(f"manifest columns {list(df.columns)} != {list(MANIFEST_COLUMNS)}")
    for col, dtype in _DTYPES.items():
        if df[col].dtype != np.dtype(dtype):
            raise ValueError(f"manifest column {col} has dtype {df[col].dtype}, not {dtype}")


def write_manifest(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write the manifest atomically as Parquet (validated first)."""
    check_manifest(df)
    write_parquet(df, path)
