"""Reading the report's CSV inputs with one-line errors that name the file and the fix."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import pandas as pd

from ..io.errors import PipelineError


def read_csv_checked(path: str | os.PathLike, columns: Sequence[str], *, what: str, producer: str) -> pd.DataFrame:
    """``path`` as a DataFrame with at least ``columns``.

    ``what`` names the file in the "not found" error ("ROC file"); ``producer`` is the step
    that writes it ("that model's rule"), named in every error's fix.
    """
    path = Path(path)
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError as exc:
        raise PipelineError(f"{path}: {what} not found; run {producer} first") from exc
    except (OSError, ValueError) as exc:
        raise PipelineError(f"{path}: cannot be read as CSV ({exc}); re-run {producer}") from exc
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise PipelineError(f"{path}: column(s) {', '.join(missing)} missing; re-run {producer}")
    return frame
