"""ResNet backbones for features and fine-tuning, and where their weights come from.

Weights are ``none`` (random init, seeded) or ``imagenet``, read from an explicit file
(``features.weights_file``, e.g. DVC-tracked) or from the torch hub cache. Nothing is
ever downloaded: a missing file is a PipelineError naming the path looked at and the URL.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision import models

from ..io.errors import PipelineError

# arch -> (constructor, ImageNet weights enum member, feature dimension)
ARCHS: dict[str, tuple[Callable[..., nn.Module], Any, int]] = {
    "resnet18": (models.resnet18, models.ResNet18_Weights.IMAGENET1K_V1, 512),
    "resnet50": (models.resnet50, models.ResNet50_Weights.IMAGENET1K_V1, 2048),
}
WEIGHT_MODES = ("none", "imagenet")
log = logging.getLogger(__name__)




@dataclass(frozen=True)
class WeightsRecord:
    """Which weights produced a features file (written as ``{name}.weights.json``)."""

    arch: str
    mode: str  # "none" | "imagenet"
    path: str | None  # weights file read (None for "none")
    sha256: str | None  # of that file (None for "none")
    url: str | None  # where the ImageNet file comes from (None for "none")

    def to_dict(self) -> dict:
        return asdict(self)


def _check_arch(arch: str) -> tuple[Callable[..., nn.Module], Any, int]:
    if arch not in ARCHS:
        raise PipelineError(
            f"features.arch: unknown architecture {arch!r}; expected one of {', '.join(ARCHS)}"
        )
    return ARCHS[arch]


def feature_dim(arch: str) -> int:
    return _check_arch(arch)[2]


def imagenet_url(arch: str) -> str:
    """torchvision's IMAGENET1K_V1 download URL for ``arch``."""
    return _check_arch(arch)[1].url


def hub_cache_path(arch: str) -> Path:
    """Where torchvision would cache the ImageNet weights: ``<hub dir>/checkpoints/<file>``."""
    name = os.path.basename(urlparse(imagenet_url(arch)).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_weights_file(arch: str, mode: str, weights_file: str | os.PathLike | None = None) -> Path | None:
    """The file to read for (arch, mode); None for ``none``. Never downloads."""
    _check_arch(arch)
    if mode not in WEIGHT_MODES:
        raise PipelineError(
            f"features.weights: unknown mode {mode!r}; expected one of {', '.join(WEIGHT_MODES)}"
        )
    if mode == "none":
        if weights_file:
            raise PipelineError(
                f"features.weights_file is set ({weights_file}) but features.weights is 'none'; "
                "set features.weights: imagenet to use the file, or features.weights_file: null"
            )
        return None
    if weights_file:
        path = Path(weights_file)
        if not path.is_file():
            raise PipelineError(
                f"{path}: weights file (features.weights_file) not found; fix the path, "
                f"download it from {imagenet_url(arch)}, or set features.weights: none"
            )
        return path
    path = hub_cache_path(arch)
    if not path.is_file():
        raise PipelineError(
            f"{path}: ImageNet weights for {arch} not found (nothing is downloaded); download "
            f"{imagenet_url(arch)} to that path, or set features.weights_file to a copy of it, "
            "or set features.weights: none for random weights"
        )
    return path


def _load_state_dict(model: nn.Module, path: Path) -> None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip/EOF errors all mean "not a weights file"
        raise PipelineError(
            f"{path}: cannot be read as a PyTorch state dict ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); replace the file"
        ) from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PipelineError(f"{path}: does not contain a state dict of tensors; replace the file")
    # The classifier head is dropped: features come from the penultimate layer, so an
    # ImageNet (1000-class) or a fine-tuned (2-class) head both load.
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise PipelineError(
            f"{path}: not a valid state dict for this architecture ({first}); "
            "check features.arch and the weights file"
        ) from exc


def build_backbone(
    arch: str = "resnet18",
    weights: str = "none",
    *,
    seed: int,
    weights_file: str | os.PathLike | None = None,
) -> tuple[nn.Module, WeightsRecord]:
    """A ResNet with ``fc = Identity`` in eval mode, and the record of its weights.

    ``weights="none"``: random init from ``seed`` (global RNG state is left untouched).
    ``weights="imagenet"``: ``weights_file`` if given, else the torch hub cache file.
    """
    ctor, enum, _ = _check_arch(arch)
    path = resolve_weights_file(arch, weights, weights_file)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ctor(weights=None)
    model.fc = nn.Identity()
    if path is None:
        record = WeightsRecord(arch=arch, mode="none", path=None, sha256=None, url=None)
    else:
        _load_state_dict(model, path)
        record = WeightsRecord(
            arch=arch, mode=weights, path=Path(path).as_posix(), sha256=sha256_file(path), url=enum.url
        )
    model.eval()
    return model, record
