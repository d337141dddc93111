"""A trained network's weights file (``model.pt``): the best weights and what made them.

Written atomically (``pipeline_lib.io.atomic.atomic_path``) and read with
``torch.load(..., weights_only=True)``: only tensors and plain Python values, never pickled
objects. (The resume state of a run that is still training is ``pipeline_lib.training.loop``'s.)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch

from ..io.atomic import atomic_path
from ..io.errors import PipelineError
from .loop import plain


def save_weights(path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor], *, meta: Mapping[str, Any] | None = None) -> None:
    """The model's best weights as ``{"state_dict": ..., "meta": {...}}``, atomically."""
    payload = {
        "format": "nexperia-weights/1",
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        "meta": plain(dict(meta or {})),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_weights(path: str | os.PathLike) -> tuple[dict, dict]:
    """``(state_dict, meta)`` from ``save_weights``; PipelineError naming the file otherwise."""
    path = Path(path)
    if not path.exists():
        raise PipelineError(f"{path}: model weights file is missing; re-run the training rule")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise PipelineError(f"{path}: cannot load model weights ({type(exc).__name__}); re-run the training rule") from exc
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise PipelineError(f"{path}: not a model weights file written by this pipeline; re-run the training rule")
    return dict(payload["state_dict"]), dict(payload.get("meta") or {})
