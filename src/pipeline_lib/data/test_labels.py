"""The optional test labels file of a data root: ``id,label`` (0 good, 1 bad), one row per test image.

``ingest.test_labels`` in params.yaml names it; :func:`read_test_labels` checks it against the
test images found and names the file and the fix in every error.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pandas as pd

from ..io.errors import PipelineError, listing
from .image_check import one_line


def read_test_labels(csv_path: str, test_ids: list[str]) -> dict[str, int]:
    path = Path(csv_path)
    where = f"test labels file {path.as_posix()}"
    hint = "fix it, or set ingest.test_labels in params.yaml to the right file (empty for none)"
    if not path.exists():
        raise PipelineError(f"{where} does not exist; {hint}")
    if not stat.S_ISREG(path.stat().st_mode):
        raise PipelineError(f"{where} is not a regular file; {hint}")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except Exception as exc:
        raise PipelineError(f"{where} cannot be read as CSV ({one_line(exc)}); {hint}") from exc
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
            f"{where}: {len(dup)} id(s) listed more than once: {listing(dup)}; keep one row per id"
        )
    invalid = [f"{i}={v!r}" for i, v in zip(ids, labels) if v not in ("0", "1")]
    if invalid:
        raise PipelineError(
            f"{where}: {len(invalid)} label(s) not 0 (good) or 1 (bad): {listing(invalid)}"
        )
    known = set(test_ids)
    unknown = sorted(set(ids) - known)
    if unknown:
        raise PipelineError(
            f"{where}: {len(unknown)} id(s) match no image in test/all_tests (ids are file "
            f"names without extension): {listing(unknown)}"
        )
    labelled = dict(zip(ids, (int(v) for v in labels)))
    missing = [i for i in test_ids if i not in labelled]
    if missing:
        raise PipelineError(
            f"{where}: {len(missing)} of {len(test_ids)} test image(s) have no label: "
            f"{listing(missing)}; label every test image or use no labels file"
        )
    return labelled
