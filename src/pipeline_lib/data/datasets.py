"""Image datasets over the split table, shared by feature extraction and training."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import v2 as T

from ..io.errors import PipelineError

# torchvision's ImageNet statistics: the ResNet backbones expect them, and the
# from-scratch networks do not mind them.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def eval_transform(image_size: int) -> Callable:
    return T.Compose(
        [
            T.ToImage(),
            T.Resize((image_size, image_size), antialias=True),
            T.ToDtype(torch.float32, scale=True),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def train_transform(
    image_size: int,
    *,
    hflip: bool = False,
    vflip: bool = False,
    rotation_deg: float = 0.0,
    crop_scale: float = 1.0,
    cutout: int = 0,
) -> Callable:
    """The usual torchvision augmentations; all off by default (then equals eval_transform).

    ``cutout`` > 0 appends ``Cutout(cutout)`` after normalisation, as DARTS does.
    """
    steps: list = [T.ToImage()]
    if crop_scale < 1.0:
        steps.append(T.RandomResizedCrop(image_size, scale=(crop_scale, 1.0), antialias=True))
    else:
        steps.append(T.Resize((image_size, image_size), antialias=True))
    if hflip:
        steps.append(T.RandomHorizontalFlip())
    if vflip:
        steps.append(T.RandomVerticalFlip())
    if rotation_deg > 0:
        steps.append(T.RandomRotation(rotation_deg))
    steps += [T.ToDtype(torch.float32, scale=True), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if cutout > 0:
        steps.append(Cutout(cutout))
    return T.Compose(steps)


def train_transform_for(image_size: int, augment: Mapping[str, Any] | None = None) -> Callable:
    """``train_transform`` from a ``TrainConfig.augment`` mapping (missing keys: off)."""
    augment = dict(augment or {})
    return train_transform(
        image_size,
        hflip=bool(augment.get("hflip", False)),
        vflip=bool(augment.get("vflip", False)),
        rotation_deg=float(augment.get("rotation_deg", 0.0)),
        crop_scale=float(augment.get("crop_scale", 1.0)),
        cutout=int(augment.get("cutout", 0) or 0),
    )


class Cutout:
    """Zero one ``length`` x ``length`` square (clipped at the border) at a random centre
    of a (C, H, W) tensor, as DARTS's cutout. Random draws use torch's generator (the
    DataLoader seeds it per worker), or ``generator`` when given."""

    def __init__(self, length: int, generator: torch.Generator | None = None):
        if length < 0:
            raise ValueError(f"cutout length must be >= 0, got {length}")
        self.length = int(length)
        self.generator = generator

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if not isinstance(img, torch.Tensor):
            raise TypeError(f"Cutout needs a (C, H, W) tensor (put it after ToImage/ToDtype), got {type(img).__name__}")
        if self.length == 0:
            return img
        h, w = img.shape[-2], img.shape[-1]
        cy = int(torch.randint(h, (1,), generator=self.generator))
        cx = int(torch.randint(w, (1,), generator=self.generator))
        half = self.length // 2
        y1, y2 = max(cy - half, 0), min(cy + half, h)
        x1, x2 = max(cx - half, 0), min(cx + half, w)
        out = img.clone()
        out[..., y1:y2, x1:x2] = 0
        return out

    def __repr__(self) -> str:
        return f"Cutout(length={self.length})"


def load_rgb(path: str) -> Image.Image:
    """Open an image as 8-bit RGB; a file that cannot be decoded names itself.

    Pillow's own ``convert("RGB")`` clips 16/32-bit integer grey ("I;16*", "I": e.g.
    16-bit PNGs) at 255, which turns most of the image white; those are scaled from the
    16-bit range to 8 bits instead (value / 257, rounded), so 65535 maps to 255.
    """
    try:
        with Image.open(path) as img:
            if img.mode.startswith("I"):
                values = np.asarray(img).astype(np.float64)
                values = np.clip(values, 0, 65535) / 257.0
                grey = Image.fromarray(np.rint(values).astype(np.uint8))  # 2-D uint8: "L"
                return grey.convert("RGB")
            return img.convert("RGB")
    except (OSError, ValueError, SyntaxError) as exc:
        raise PipelineError(f"{path}: cannot be read as an image ({exc}); re-run ingest") from exc


# Steps whose output depends on the image alone (no random draw): what ``ChipImages.preload``
# may compute once per job instead of once per epoch.
_DETERMINISTIC = (T.ToImage, T.Resize, T.ToDtype, T.Normalize)
# Decoded images a dataset keeps in memory at most (built-in data: 1,000 images at 64 px are
# 12 MB as uint8); beyond it (33,000 images at 224 px: 5 GB) images are decoded every epoch.
PRELOAD_MAX_BYTES = 2 * 2**30


def split_transform(transform: Callable) -> tuple[Callable | None, Callable]:
    """``(fixed, rest)`` with ``rest(fixed(image)) == transform(image)`` bit for bit: ``fixed`` is
    the leading run of deterministic steps of a ``T.Compose`` that starts with ``ToImage``
    (decode-size tensor -> resized, maybe normalised), ``rest`` the steps from the first random
    one on. ``(None, transform)`` when nothing can be split off."""
    steps = list(getattr(transform, "transforms", ()))
    if not steps or not isinstance(steps[0], T.ToImage):
        return None, transform
    cut = next((i for i, step in enumerate(steps) if not isinstance(step, _DETERMINISTIC)), len(steps))
    return T.Compose(steps[:cut]), T.Compose(steps[cut:]) if cut < len(steps) else _unchanged


def _unchanged(image: torch.Tensor) -> torch.Tensor:
    return image


class ChipImages(Dataset):
    """Rows of the split table (``path``, ``label``) as (image tensor, label) pairs.

    ``preload()`` decodes every image once and keeps the deterministic part of the transform's
    output in memory (``split_transform``); each later access applies only the random steps
    (flips, crops, cutout), so an epoch no longer decodes and resizes every JPEG again. The
    items are bitwise the same either way, and the random steps draw the same numbers."""

    def __init__(self, frame: pd.DataFrame, transform: Callable):
        self.paths: Sequence[str] = frame["path"].tolist()
        self.labels = np.asarray(frame["label"], dtype=np.int64)
        self.transform = transform
        self._fixed, self._rest = split_transform(transform)
        self._images: list[torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def preload(self, max_bytes: int = PRELOAD_MAX_BYTES) -> int | None:
        """Decode (and resize) every image now; the bytes kept, or None when the transform has no
        deterministic head or the images would take more than ``max_bytes`` (estimated from the first)."""
        if self._fixed is None or not self.paths:
            return None
        first = self._fixed(load_rgb(self.paths[0]))
        if first.numel() * first.element_size() * len(self.paths) > max_bytes:
            return None
        self._images = [first] + [self._fixed(load_rgb(path)) for path in self.paths[1:]]
        return sum(image.numel() * image.element_size() for image in self._images)

    def __getitem__(self, index: int):
        if self._images is not None:
            return self._rest(self._images[index]), int(self.labels[index])
        return self.transform(load_rgb(self.paths[index])), int(self.labels[index])


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: derive numpy/random seeds from torch's per-worker seed."""
    import random

    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)
