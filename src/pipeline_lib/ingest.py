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

Exact duplicates (same content sha256) are leakage when a copy could land in training and
another in validation or test. :func:`resolve_duplicates` applies ``ingest.duplicates``:
``fail`` names them; ``dedupe`` keeps one copy per content: every test copy when there is one
(all train copies are dropped: a test image's twin never stays in train/val), else the
train copy whose path sorts first. Copies that are all in test are not leakage and stay.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFile, UnidentifiedImageError
from tqdm import tqdm

from .atomic import write_parquet
from .errors import PipelineError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp"})

# Pillow format names the extensions above may hold (content decides, not the name).
_PIL_FORMATS = ("JPEG", "PNG", "BMP")

# Class folders: (source, folder relative to root, label). Test labels come from the CSV.
_FOLDERS = (
    ("train", "train/good_0", 0),
    ("train", "train/bad_1", 1),
    ("test", "test/all_tests", -1),
)
_KNOWN_SUBFOLDERS = {"train": {"good_0", "bad_1"}, "test": {"all_tests"}}

# Operating-system clutter that is never data (besides hidden ".*" files).
_IGNORED_NAMES = frozenset({"thumbs.db", "desktop.ini"})

MANIFEST_COLUMNS = ("id", "path", "source", "label", "sha256", "width", "height", "mode", "bytes")
_DTYPES = {"label": "int8", "width": "int32", "height": "int32", "bytes": "int64"}

_MAX_LISTED = 10
_BAD_POLICIES = ("fail", "skip")
_DUPLICATE_POLICIES = ("fail", "dedupe")
DATA_ROOT = "data"
BAD_FILES_COLUMNS = ("path", "problem", "reason")


@dataclass
class BadFile:
    """A file inside a class folder that is not a usable image, and why."""

    path: str
    reason: str


@dataclass
class Duplicate:
    """A file left out (``dedupe``) because its exact content is kept under another path."""

    path: str
    source: str
    kept: str
    sha256: str


@dataclass
class _Decoded:
    sha256: str
    width: int
    height: int
    mode: str
    nbytes: int


def _ignored(name: str) -> bool:
    return name.startswith(".") or name.lower() in _IGNORED_NAMES


def _listing(items: list[str], limit: int = _MAX_LISTED) -> str:
    shown = "; ".join(items[:limit])
    if len(items) > limit:
        shown += f"; and {len(items) - limit} more"
    return shown


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def confine_data_path(
    path: str | os.PathLike, *, key: str, data_root: str | os.PathLike = DATA_ROOT
) -> Path:
    """``path`` unchanged if absolute or inside ``data_root`` (both relative to the working
    directory); PipelineError naming ``key`` if a relative path escapes it (``..``)."""
    given = Path(path)
    if given.is_absolute():
        return given
    base = os.path.normpath(os.fspath(data_root))
    norm = os.path.normpath(os.fspath(given))
    if norm != base and not norm.startswith(base + os.sep):
        raise PipelineError(
            f"{key} in params.yaml is {os.fspath(path)!r}, which resolves to {norm!r} outside "
            f"the data root {base}/; relative data paths must stay inside {base}/ (e.g. "
            f"{base}/raw/<name>); give an absolute path to use a folder elsewhere on purpose"
        )
    return given


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


def _decode(path: Path) -> _Decoded | str:
    """Hash and fully decode one file; a string is the reason it is bad."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"cannot be read ({_one_line(exc.strerror or exc)})"
    if not data:
        return "empty file (0 bytes)"
    digest = hashlib.sha256(data).hexdigest()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. DecompressionBombWarning, EXIF chatter
            with Image.open(io.BytesIO(data), formats=_PIL_FORMATS) as img:
                img.load()
                width, height = img.size
                mode = img.mode
    except UnidentifiedImageError:
        return "not a JPEG, PNG or BMP image (content not recognised)"
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, EOFError...
        return f"cannot be decoded ({type(exc).__name__}: {_one_line(exc)})"
    if width < 1 or height < 1:
        return f"image has no pixels ({width}x{height})"
    return _Decoded(digest, width, height, mode, len(data))


def _read_test_labels(csv_path: str, test_ids: list[str]) -> dict[str, int]:
    path = Path(csv_path)
    where = f"test labels file {path.as_posix()}"
    hint = "fix it, or set ingest.test_labels in params.yaml to the right file (empty for none)"
    if not path.is_file():
        raise PipelineError(f"{where} does not exist; {hint}")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except Exception as exc:
        raise PipelineError(f"{where} cannot be read as CSV ({_one_line(exc)}); {hint}") from exc
    table.columns = [str(c).strip() for c in table.columns]
    if not {"id", "label"} <= set(table.columns):
        raise PipelineError(
            f"{where} has columns {list(table.columns)} but needs 'id,label' (label 0 good, "
            f"1 bad); {hint}"
        )
    ids = table["id"].str.strip()
    labels = table["label"].str.strip()
    dup = sorted(set(ids[ids.duplicated()]))
    if dup:
        raise PipelineError(
            f"{where}: {len(dup)} id(s) listed more than once: {_listing(dup)}; keep one row per id"
        )
    invalid = [f"{i}={v!r}" for i, v in zip(ids, labels) if v not in ("0", "1")]
    if invalid:
        raise PipelineError(
            f"{where}: {len(invalid)} label(s) not 0 (good) or 1 (bad): {_listing(invalid)}"
        )
    known = set(test_ids)
    unknown = sorted(set(ids) - known)
    if unknown:
        raise PipelineError(
            f"{where}: {len(unknown)} id(s) match no image in test/all_tests (ids are file "
            f"names without extension): {_listing(unknown)}"
        )
    labelled = dict(zip(ids, (int(v) for v in labels)))
    missing = [i for i in test_ids if i not in labelled]
    if missing:
        raise PipelineError(
            f"{where}: {len(missing)} of {len(test_ids)} test image(s) have no label: "
            f"{_listing(missing)}; label every test image or use no labels file"
        )
    return labelled


def scan_dataset(
    root: str | os.PathLike,
    *,
    test_labels: str | None = None,
    bad_images: str = "fail",
    progress: bool = True,
) -> tuple[pd.DataFrame, list[BadFile]]:
    """Scan ``root`` into the manifest (columns as in docs/ARCHITECTURE.md) and the bad files.

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

    candidates: list[tuple[str, int, Path]] = []  # (source, label, path)
    bad: list[BadFile] = []
    n_files = 0
    for source, rel, label in _FOLDERS:
        images, others = _list_folder(root / rel)
        candidates += [(source, label, p) for p in images]
        n_files += len(images) + len(others)
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
            f"{_listing(clashes)}; rename or remove the duplicates"
        )

    test_ids = [p.stem for source, _, p in candidates if source == "test"]
    labels_by_id = _read_test_labels(test_labels, test_ids) if test_labels else {}

    # Threads: reading and Pillow's decoders release the GIL.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = max(1, min(8, cores or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool, tqdm(
        total=len(candidates),
        desc="ingest",
        unit="img",
        file=sys.stderr,
        disable=not progress,
        dynamic_ncols=True,
        mininterval=1.0,
    ) as bar:
        results = []
        for result in pool.map(_decode, [p for _, _, p in candidates]):
            results.append(result)
            bar.update(1)

    rows = []
    for (source, label, p), result in zip(candidates, results):
        if isinstance(result, str):
            bad.append(BadFile(p.as_posix(), result))
            continue
        if source == "test" and test_labels:
            label = labels_by_id[p.stem]
        rows.append(
            (p.stem, p.as_posix(), source, label, result.sha256, result.width,
             result.height, result.mode, result.nbytes)
        )
    bad.sort(key=lambda b: b.path)

    if bad and bad_images == "fail":
        raise PipelineError(
            f"{len(bad)} bad file(s) among {n_files} files under {root.as_posix()}: "
            + _listing([f"{b.path} ({b.reason})" for b in bad])
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
    manifest = manifest.sort_values(["source", "path"], kind="stable").reset_index(drop=True)
    return manifest, bad


def resolve_duplicates(
    manifest: pd.DataFrame, policy: str = "fail"
) -> tuple[pd.DataFrame, list[Duplicate]]:
    """Apply ``ingest.duplicates`` to exact-content duplicates that involve a train image.

    ``fail``: PipelineError naming every such group. ``dedupe``: the manifest without the
    dropped copies, and the dropped copies (rule in the module docstring).
    """
    if policy not in _DUPLICATE_POLICIES:
        raise PipelineError(
            f"ingest.duplicates in params.yaml is {policy!r}; expected one of {_DUPLICATE_POLICIES}"
        )
    repeated = manifest["sha256"].duplicated(keep=False)
    if not repeated.any():
        return manifest, []
    groups = manifest.loc[repeated].groupby("sha256", sort=True)
    listed: list[str] = []
    dropped: list[Duplicate] = []
    for sha, group in groups:
        if not (group["source"] == "train").any():
            continue  # every copy is a test image: no leakage, every test id keeps a row
        is_test = group["source"] == "test"
        # keep: all test copies if any, else the first train copy by path
        order = group.assign(_t=~is_test).sort_values(["_t", "path"], kind="stable")
        keep = order.loc[is_test] if is_test.any() else order.iloc[:1]
        kept = keep["path"].iloc[0]
        for _, row in order.iterrows():
            if row["path"] in set(keep["path"]):
                continue
            dropped.append(Duplicate(row["path"], row["source"], kept, sha))
        listed.append(" = ".join(f"{p} ({s})" for p, s in zip(order["path"], order["source"])))
    if not listed:
        return manifest, []
    if policy == "fail":
        raise PipelineError(
            f"{len(listed)} group(s) of identical images (same sha256) would leak between "
            f"train, validation and test: {_listing(listed)}; remove the copies, or set "
            "ingest.duplicates: dedupe in params.yaml to keep one copy (the test copy if any)"
        )
    drop = {d.path for d in dropped}
    kept_manifest = manifest.loc[~manifest["path"].isin(drop)].reset_index(drop=True)
    dropped.sort(key=lambda d: d.path)
    return kept_manifest, dropped


def bad_files_table(bad: list[BadFile], duplicates: list[Duplicate]) -> pd.DataFrame:
    """``path,problem,reason`` for every file left out of the manifest (``bad``/``duplicate``)."""
    rows = [(b.path, "bad", b.reason) for b in bad]
    rows += [
        (d.path, "duplicate", f"same content (sha256 {d.sha256[:12]}...) as {d.kept}, which is kept")
        for d in duplicates
    ]
    return pd.DataFrame(sorted(rows), columns=list(BAD_FILES_COLUMNS), dtype=str)


def ingest_metrics(
    manifest: pd.DataFrame, bad: list[BadFile], duplicates: list[Duplicate]
) -> dict[str, int]:
    """Counts for ``results/ingest/ingest_metrics.json``.

    ``images``: rows in the manifest; ``bad``: unusable files found; ``skipped``: bad files
    left out (``bad_images: skip``; with ``fail`` any bad file stops ingest);
    ``duplicates``: copies left out by ``duplicates: dedupe``.
    """
    sources = manifest["source"].value_counts()
    return {
        "images": int(len(manifest)),
        "images_train": int(sources.get("train", 0)),
        "images_test": int(sources.get("test", 0)),
        "bad": len(bad),
        "skipped": len(bad),
        "duplicates": len(duplicates),
    }


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
