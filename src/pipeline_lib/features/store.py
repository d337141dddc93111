"""The features Parquet format: ``id``, ``split``, ``label``, ``feature`` (fixed-size list<float32>).

Deliberately free of torch: the classical classifiers read features without paying
torch's import (seconds per job on 2 cores).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..io.atomic import atomic_path
from ..io.errors import PipelineError



def features_frame(frame: pd.DataFrame, X: np.ndarray) -> pd.DataFrame:
    """``id``, ``split``, ``label`` (int8) and ``feature`` (fixed_size_list<float32>[D])."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    if X.ndim != 2 or X.shape[0] != len(frame):
        raise ValueError(f"features shape {X.shape} does not match {len(frame)} rows")
    missing = [c for c in ("id", "split", "label") if c not in frame.columns]
    if missing:
        raise PipelineError(f"split table: column(s) {', '.join(missing)} missing; re-run the split stage")
    dim = X.shape[1]
    values = pa.array(X.reshape(-1), type=pa.float32())
    feature = pa.FixedSizeListArray.from_arrays(values, dim)
    return pd.DataFrame(
        {
            "id": frame["id"].astype(str).to_numpy(),
            "split": frame["split"].astype(str).to_numpy(),
            "label": frame["label"].to_numpy().astype(np.int8),
            "feature": pd.Series(
                pd.arrays.ArrowExtensionArray(feature), dtype=pd.ArrowDtype(feature.type)
            ),
        }
    )


def features_table(df: pd.DataFrame) -> pa.Table:
    """A ``features_frame`` as an Arrow table with the contract's schema.

    No pandas metadata is stored: pandas cannot rebuild an ArrowDtype for a fixed-size
    list from it, and plain ``pd.read_parquet`` then yields numpy arrays per row.
    """
    feature = pa.array(df["feature"].array) if isinstance(df["feature"].dtype, pd.ArrowDtype) else None
    if feature is None or not pa.types.is_fixed_size_list(feature.type):
        X = np.stack([np.asarray(v, dtype=np.float32) for v in df["feature"]]) if len(df) else np.zeros((0, 0), np.float32)
        feature = pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1), type=pa.float32()), X.shape[1])
    if isinstance(feature, pa.ChunkedArray):
        feature = feature.combine_chunks()
    if feature.type.value_type != pa.float32():
        feature = feature.cast(pa.list_(pa.float32(), feature.type.list_size))
    return pa.table(
        {
            "id": pa.array(df["id"].astype(str).tolist(), type=pa.string()),
            "split": pa.array(df["split"].astype(str).tolist(), type=pa.string()),
            "label": pa.array(np.asarray(df["label"], dtype=np.int8), type=pa.int8()),
            "feature": feature,
        }
    )


def write_features(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Atomic Parquet write of a ``features_frame`` (schema: see ``features_table``)."""
    table = features_table(df)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def load_features(path: str | os.PathLike) -> tuple[pd.DataFrame, np.ndarray]:
    """(meta frame with ``id``/``split``/``label``, X [N, D] float32) from a features file."""
    path = Path(path)
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise PipelineError(f"{path}: cannot be read as a features Parquet file ({exc}); re-run features") from exc
    needed = ("id", "split", "label", "feature")
    missing = [c for c in needed if c not in table.column_names]
    if missing:
        raise PipelineError(f"{path}: column(s) {', '.join(missing)} missing; re-run features")
    col = table.column("feature").combine_chunks()
    n = len(col)
    if pa.types.is_fixed_size_list(col.type):
        dim = col.type.list_size
    elif pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
        lengths = pc_list_lengths(col)
        dim = int(lengths[0]) if n else 0
        if n and not np.all(lengths == dim):
            raise PipelineError(f"{path}: feature vectors have different lengths; re-run features")
    else:
        raise PipelineError(f"{path}: column 'feature' is {col.type}, expected a list of float32")
    if col.null_count:
        raise PipelineError(f"{path}: column 'feature' has null rows; re-run features")
    flat = col.flatten().to_numpy(zero_copy_only=False)
    X = np.ascontiguousarray(flat, dtype=np.float32).reshape(n, dim)
    meta = table.select(["id", "split", "label"]).to_pandas()
    meta["label"] = meta["label"].astype(np.int8)
    return meta, X


def pc_list_lengths(col: pa.Array) -> np.ndarray:
    import pyarrow.compute as pc

    return pc.list_value_length(col).to_numpy(zero_copy_only=False)

