"""The study's data in one process: generate → ingest → split, as the three rules run them.

For bench/ scripts that rebuild the built-in data under a scratch folder (a tuning sweep, a
speed run): the same configs, built from the same params.yaml sections, and the same library
entry points as ``workflow/scripts/{generate,ingest,split}.py``; only the data root moves.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from .chipgen import GenerateConfig, generate_dataset
from .ingest import IngestConfig, run_ingest
from .split import SplitConfig, make_split


def built_in_split(params: Mapping[str, Any], data_dir: str | os.PathLike, *, progress: bool = False) -> pd.DataFrame:
    """Generate the built-in chips into ``data_dir`` and return their split (the split rule's table).

    ``params`` is a whole params.yaml mapping; ``ingest.root`` and ``ingest.test_labels`` are
    replaced by ``data_dir`` and its labels file, everything else is read as the rules read it.
    """
    generate_dataset(data_dir, GenerateConfig.from_params(params["generate"]), progress=progress)
    return folder_split(params, data_dir, progress=progress)


def folder_split(params: Mapping[str, Any], data_dir: str | os.PathLike, *, progress: bool = False) -> pd.DataFrame:
    """Ingest and split the data folder ``data_dir`` (Nexperia's layout; its ``test_labels.csv``
    when present) with the ``ingest`` and ``split`` sections of ``params``."""
    data_dir = Path(data_dir)
    labels = data_dir / "test_labels.csv"
    ingest = replace(IngestConfig.from_params(params["ingest"]), root=str(data_dir),
                     test_labels=str(labels) if labels.exists() else None)
    manifest = run_ingest(ingest, progress=progress).manifest
    return make_split(manifest, SplitConfig.from_params(params["split"]), check_leakage=True)
