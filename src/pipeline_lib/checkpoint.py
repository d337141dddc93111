"""Checkpoints: the training loop's resume state and the final model weights.

Everything is written atomically (``pipeline_lib.atomic.atomic_path``) and read with
``torch.load(..., weights_only=True)``: a checkpoint holds only tensors and plain
Python values (RNG states included, see ``devices.capture_rng``), never pickled objects.

Resume state lives in a ``state_dir`` that is *not* a Snakemake output (Snakemake deletes
the outputs of a failed job; the state must survive that). Whether a checkpoint belongs to
the current run is decided by a fingerprint (``fingerprint``) over the training config,
the model's architecture and initial weights, the parameter groups, the dataset sizes and
anything else the caller adds; a mismatch means "start fresh", never "resume".
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from .atomic import atomic_path
from .errors import PipelineError

STATE_FORMAT = "nexperia-train-state/1"
STATE_FILE = "checkpoint.pt"


def state_path(state_dir: str | os.PathLike) -> Path:
    return Path(state_dir) / STATE_FILE


def hash_state_dict(state_dict: Mapping[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and raw bytes of every tensor (order-independent)."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        value = state_dict[name]
        digest.update(name.encode())
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            digest.update(repr(value).encode())
    return digest.hexdigest()


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return _plain(asdict(value))
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def fingerprint(
    *,
    config: Any,
    model: torch.nn.Module,
    param_groups: Iterable[Mapping[str, Any]] | None = None,
    n_train: int | None = None,
    n_val: int | None = None,
    device_type: str = "cpu",
    extra: Any = None,
) -> str:
    """A short hash of everything that decides the training trajectory.

    Two runs with equal fingerprints produce the same weights (on CPU, bitwise), so a
    checkpoint with the same fingerprint may be resumed. The model enters through its
    ``repr`` (architecture) and the hash of its *initial* weights (seeded init or
    ImageNet backbone); parameter groups through their sizes and hyper-parameters.
    """
    groups = []
    for group in param_groups or []:
        groups.append(
            {
                "n_params": sum(p.numel() for p in group["params"]),
                **{k: _plain(v) for k, v in group.items() if k != "params"},
            }
        )
    payload = {
        "config": _plain(config),
        "architecture": repr(model),
        "initial_weights": hash_state_dict(model.state_dict()),
        "param_groups": groups,
        "n_train": n_train,
        "n_val": n_val,
        "device_type": device_type,
        "extra": _plain(extra),
        "format": STATE_FORMAT,
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save_state(path: str | os.PathLike, state: Mapping[str, Any]) -> None:
    """Write a checkpoint atomically: the old one stays until the new one is complete."""
    with atomic_path(path) as tmp:
        torch.save(dict(state), tmp)


def load_state(path: str | os.PathLike) -> dict | None:
    """Read a checkpoint (``weights_only=True``); None if absent; PipelineError if unreadable."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any decoding failure is the same user problem
        raise PipelineError(
            f"{path}: cannot load training checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "delete it to start training from scratch"
        ) from exc
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise PipelineError(
            f"{path}: not a training checkpoint of format {STATE_FORMAT}; delete it to start training from scratch"
        )
    return state


def remove_stale_temps(directory: str | os.PathLike) -> list[Path]:
    """Delete temporaries a killed writer left behind (``.<name>.tmp-*`` from atomic_path)."""
    directory = Path(directory)
    removed = []
    if directory.is_dir():
        for tmp in directory.glob(".*.tmp-*"):
            if tmp.is_file():
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
    return removed


def clear_state(state_dir: str | os.PathLike) -> None:
    """Remove the resume checkpoint (after the job's outputs are safely written)."""
    state_path(state_dir).unlink(missing_ok=True)
    remove_stale_temps(state_dir)


# --- final model weights ---------------------------------------------------------------------


def save_weights(path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor], *, meta: Mapping[str, Any] | None = None) -> None:
    """The model's best weights as ``{"state_dict": ..., "meta": {...}}``, atomically."""
    payload = {
        "format": "nexperia-weights/1",
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        "meta": _plain(dict(meta or {})),
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
