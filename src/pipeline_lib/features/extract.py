"""Penultimate-layer ResNet features for the classical classifiers.

Backbones: torchvision's ``resnet18`` (512-d) and ``resnet50`` (2048-d) with ``fc``
replaced by ``nn.Identity()``. Weights are either ``none`` (random init, seeded) or
``imagenet``, read from an explicit file (``features.weights_file``, a DVC-tracked path) or
from the torch hub cache. Nothing is ever downloaded: a missing file is a PipelineError
that names the path looked at and the URL to fetch it from.

Input pipeline (``extract_features``): JPEGs are decoded a batch at a time by
libjpeg-turbo through ``torchvision.io.decode_jpeg`` -- pixel-identical to PIL's decode in
``data.load_rgb`` (checked by the tests and on each run's first image; other formats and
undecodable files go through PIL) -- stacked into channels_last uint8, resized with the
same antialiased bilinear kernel as ``eval_transform`` (one call per batch), then scaled
and normalised once per batch with the same torchvision functionals. On CPU this runs
inline between forward passes; on CUDA a background thread (or ``num_workers`` DataLoader
processes) stays ahead of the forward pass. The result is bitwise identical to feeding
``ChipImages(frame, eval_transform(size))`` through the model (see the tests), only
faster. ``jpeg_draft=True`` additionally lets libjpeg decode large JPEGs at a reduced DCT
scale (>= the target size) before the resize: much cheaper when the files are several
times larger than ``image_size``, but *not* numerically identical to the eval transform,
so it is off by default.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import warnings
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

try:  # torchvision >= 0.29 deprecates its decoders (pinned here); without them PIL decodes
    from torchvision.io import ImageReadMode, decode_jpeg
except ImportError:  # pragma: no cover
    ImageReadMode = decode_jpeg = None  # type: ignore[assignment,misc]
from torchvision.transforms.v2 import functional as TF

from .backbones import WeightsRecord, build_backbone
from ..data.datasets import IMAGENET_MEAN, IMAGENET_STD, load_rgb
from ..runtime.devices import loader_options, loader_workers
from ..io.errors import PipelineError
from .store import features_frame
from ..study.stage_config import StageConfig

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- input pipeline


_JPEG_MAGIC = b"\xff\xd8\xff"


def _decode_pil(path: str, draft_size: int = 0) -> torch.Tensor:
    """PIL decode as ``data.load_rgb``; ``draft_size`` > 0 lets libjpeg decode at a reduced
    DCT scale that is still >= draft_size (not pixel-identical to the full decode)."""
    if not draft_size:
        return TF.pil_to_tensor(load_rgb(path))
    from PIL import Image

    try:
        with Image.open(path) as img:
            if img.format == "JPEG":
                img.draft("RGB", (draft_size, draft_size))
            rgb = img.convert("RGB")
    except (OSError, ValueError) as exc:
        raise PipelineError(f"{path}: cannot be read as an image ({exc}); re-run ingest") from exc
    return TF.pil_to_tensor(rgb)


def _tv_decode(data):
    """torchvision's libjpeg-turbo decode, without its per-call deprecation warning
    (torchvision 0.29 deprecates its decoders; the version is pinned)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return decode_jpeg(data, mode=ImageReadMode.UNCHANGED)


def _fast_rgb(img: torch.Tensor) -> torch.Tensor | None:
    if img.shape[0] == 1:
        return img.expand(3, -1, -1)
    return img if img.shape[0] == 3 else None


def _read_jpeg_bytes(path: str) -> torch.Tensor | None:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    if not data.startswith(_JPEG_MAGIC):
        return None
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def _decode_jpeg_fast(path: str) -> torch.Tensor | None:
    """libjpeg-turbo through torchvision.io: RGB uint8 [3,H,W], or None to use PIL.

    Pixel-identical to PIL's decode + ``convert("RGB")`` for 1- and 3-component JPEGs
    (both are libjpeg-turbo with the default islow IDCT and fancy upsampling; the tests and
    a per-run spot check compare them); other files (PNG, CMYK JPEG, unreadable) go to PIL,
    which also produces the error message for files that cannot be decoded.
    """
    data = _read_jpeg_bytes(path) if decode_jpeg is not None else None
    if data is None:
        return None
    try:
        return _fast_rgb(_tv_decode(data))
    except RuntimeError:
        return None


def decode_batch(
    paths: Sequence[str], image_size: int, *, jpeg_draft: bool = False, fast: bool = True
) -> torch.Tensor:
    """Images as a uint8 [B, 3, S, S] tensor, each equal to ``decode_image``."""
    imgs: list[torch.Tensor | None] = [None] * len(paths)
    if fast and not jpeg_draft and decode_jpeg is not None:
        raw = [_read_jpeg_bytes(p) for p in paths]
        idx = [i for i, r in enumerate(raw) if r is not None]
        if idx:
            try:  # one call for the batch; a failure sends the batch image by image
                decoded = _tv_decode([raw[i] for i in idx])
            except RuntimeError:
                decoded = [_decode_jpeg_fast(paths[i]) for i in idx]
            for i, img in zip(idx, decoded):
                imgs[i] = None if img is None else _fast_rgb(img)
    for i, img in enumerate(imgs):
        if img is None:
            imgs[i] = _decode_pil(paths[i], image_size if jpeg_draft else 0)
    size = [image_size, image_size]
    shapes = {tuple(t.shape) for t in imgs}  # type: ignore[union-attr]
    if len(shapes) == 1:  # the usual case: one resize call for the batch (same kernel per image)
        return TF.resize(_stack_channels_last(imgs), size, antialias=True)  # type: ignore[arg-type]
    return _stack_channels_last([TF.resize(t, size, antialias=True) for t in imgs])  # type: ignore[arg-type]


def _stack_channels_last(imgs: Sequence[torch.Tensor]) -> torch.Tensor:
    """[3,H,W] images (HWC views, as decoders return them) -> [B,3,H,W] in channels_last
    memory: one plain copy per image, and the layout the resize and the network prefer."""
    return torch.stack([t.permute(1, 2, 0) for t in imgs]).permute(0, 3, 1, 2)


def decode_image(path: str, image_size: int, *, jpeg_draft: bool = False, fast: bool = True) -> torch.Tensor:
    """One image as a uint8 [3, S, S] tensor, numerically identical to eval_transform's
    ToImage + Resize (unless ``jpeg_draft``, see the module docstring)."""
    return decode_batch([path], image_size, jpeg_draft=jpeg_draft, fast=fast)[0]


def _check_fast_decode(path: str) -> bool:
    """Spot check on the run's first image: does the fast decoder agree with PIL?"""
    fast = _decode_jpeg_fast(path)
    if fast is None:
        return True
    try:
        ref = TF.pil_to_tensor(load_rgb(path))
    except PipelineError:
        return True  # PIL will raise it properly later
    return ref.shape == fast.shape and torch.equal(ref, fast)


class _DecodedBatches(torch.utils.data.Dataset):
    """Item ``i`` = batch ``i`` of decoded uint8 images (for DataLoader workers)."""

    def __init__(
        self, paths: Sequence[str], image_size: int, batch_size: int, jpeg_draft: bool, fast: bool = True
    ):
        self.paths, self.size, self.bs = list(paths), image_size, batch_size
        self.draft, self.fast = jpeg_draft, fast

    def __len__(self) -> int:
        return (len(self.paths) + self.bs - 1) // self.bs

    def __getitem__(self, index: int) -> torch.Tensor:
        chunk = self.paths[index * self.bs : (index + 1) * self.bs]
        return decode_batch(chunk, self.size, jpeg_draft=self.draft, fast=self.fast)


def _thread_batches(dataset: _DecodedBatches, prefetch: int) -> Iterator[torch.Tensor]:
    """Yield ``dataset[i]`` in order, decoded by one background thread ``prefetch`` ahead.

    PIL releases the GIL while decoding and torch while computing, so decoding overlaps
    with the forward pass of the previous batch.
    """
    q: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
    stop = threading.Event()
    done = object()

    def work() -> None:
        try:
            for i in range(len(dataset)):
                if stop.is_set():
                    return
                q.put(dataset[i])
            q.put(done)
        except BaseException as exc:  # handed to the consumer, re-raised there
            q.put(exc)

    thread = threading.Thread(target=work, name="feature-decode", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)


def _normalize_batch(u8: torch.Tensor) -> torch.Tensor:
    """Same ops as eval_transform's ToDtype(scale=True) + Normalize, on a whole batch."""
    x = TF.to_dtype(u8, torch.float32, scale=True)
    return TF.normalize(x, list(IMAGENET_MEAN), list(IMAGENET_STD))


def preprocess_batch(u8: torch.Tensor, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 [B,3,S,S] -> normalised float32, channels_last, on ``device``."""
    # channels_last on the uint8 batch (4x less to copy); the elementwise ops keep it
    x = u8.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
    return _normalize_batch(x).contiguous(memory_format=torch.channels_last)


def _progress_file(progress: Any):
    if progress is True:
        return sys.stderr
    if progress in (False, None):
        return None
    return progress  # a file-like object (e.g. a rule's log file)


def _batch_stream(dataset: _DecodedBatches, num_workers: int, prefetch: int, device: torch.device) -> Iterator[torch.Tensor]:
    """Decoded uint8 batches in order: worker processes, one prefetch thread, or inline."""
    if num_workers > 0:
        loader: Any = torch.utils.data.DataLoader(
            dataset, batch_size=None, shuffle=False, prefetch_factor=max(1, prefetch), **loader_options(device, num_workers)
        )
        return iter(loader)
    if prefetch > 0:
        return _thread_batches(dataset, prefetch)
    return (dataset[i] for i in range(len(dataset)))


@torch.inference_mode()
def _forward_all(model: nn.Module, batches: Iterator[torch.Tensor], n: int, device: torch.device,
                 bar: Any) -> tuple[np.ndarray | None, int]:
    """(features [n, D] float32 in batch order, rows filled); None when no batch came."""
    out: np.ndarray | None = None
    start = 0
    for u8 in batches:
        feats = model(preprocess_batch(u8, device))
        feats = feats.reshape(feats.shape[0], -1).to("cpu", torch.float32).numpy()
        if out is None:
            out = np.empty((n, feats.shape[1]), dtype=np.float32)
        out[start : start + len(feats)] = feats
        start += len(feats)
        if bar is not None:
            bar.update(len(feats))
    return out, start


def extract_features(
    model: nn.Module,
    frame: pd.DataFrame,
    *,
    image_size: int,
    batch_size: int,
    num_workers: int | None = None,
    device: str | torch.device = "cpu",
    progress: bool | Any = True,
    prefetch: int | None = None,
    jpeg_draft: bool = False,
) -> np.ndarray:
    """Features [N, D] float32 for the rows of a split/manifest frame (column ``path``).

    ``model`` is any module mapping a normalised image batch to [B, D] (or [B, D, 1, 1]):
    a ``build_backbone`` ResNet or a fine-tuned network's backbone. It is moved (in place)
    to ``device`` and channels_last memory, run in eval mode under
    ``torch.inference_mode()``, and its train/eval mode is restored afterwards. Rows come back in frame order. Thread count is the caller's
    (``torch.set_num_threads``).

    Decoding: ``num_workers>0`` uses DataLoader worker processes (None: ``devices.loader_workers``,
    the job's threads on CUDA, none on the CPU). With ``num_workers=0``,
    ``prefetch`` batches are decoded ahead by one background thread; the default
    (``None``) is 0 on CPU -- decode inline, because a decode thread competing with
    torch's busy-waiting OpenMP threads for the same cores makes the forward pass slower
    and erratic -- and 2 on an accelerator, where the CPU is otherwise idle.
    """
    if batch_size < 1:
        raise PipelineError(f"features.batch_size: must be >= 1, got {batch_size}")
    if image_size < 1:
        raise PipelineError(f"features.image_size: must be >= 1, got {image_size}")
    if "path" not in frame.columns:
        raise PipelineError("split table: column 'path' missing; re-run the split stage")
    paths = frame["path"].astype(str).tolist()
    n = len(paths)
    device = torch.device(device)
    num_workers = loader_workers(num_workers, device)
    if prefetch is None:
        prefetch = 0 if device.type == "cpu" else 2
    fast = not jpeg_draft and (n == 0 or _check_fast_decode(paths[0]))
    if not fast and not jpeg_draft:
        log.warning("%s: torchvision's JPEG decoder disagrees with PIL here; decoding with PIL", paths[0])
    batches = _batch_stream(_DecodedBatches(paths, image_size, batch_size, jpeg_draft, fast), num_workers, prefetch,
                            device)
    bar = None
    pfile = _progress_file(progress)
    if pfile is not None:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, unit="img", desc="features", file=pfile, dynamic_ncols=True, mininterval=1.0)
    was_training = model.training
    model.eval()
    model.to(device=device, memory_format=torch.channels_last)
    try:
        out, start = _forward_all(model, batches, n, device, bar)
    finally:
        if bar is not None:
            bar.close()
        close = getattr(batches, "close", None)
        if close is not None:
            close()
        model.train(was_training)
    if out is None:  # empty frame: dimension unknown for a generic module
        return np.zeros((0, 0), dtype=np.float32)
    assert start == n, (start, n)
    return out


# --------------------------------------------------------------------------- one call


@dataclass(frozen=True)
class FeaturesConfig(StageConfig):
    """The ``features`` section: which backbone (and weights) and how images reach it."""

    WHERE = "features"

    arch: str = "resnet18"
    weights: str = "none"
    weights_file: str | None = None
    image_size: int = 64
    batch_size: int = 32
    seed: int = 0


def compute_features(
    frame: pd.DataFrame,
    config: FeaturesConfig,
    *,
    num_workers: int | None = None,
    device: str | torch.device = "cpu",
    progress: bool | Any = True,
    jpeg_draft: bool = False,
) -> tuple[pd.DataFrame, WeightsRecord]:
    """Backbone + extraction + ``features_frame`` in one call (what the features rule needs)."""
    model, record = build_backbone(config.arch, config.weights, seed=config.seed, weights_file=config.weights_file)
    X = extract_features(
        model,
        frame,
        image_size=config.image_size,
        batch_size=config.batch_size,
        num_workers=num_workers,
        device=device,
        progress=progress,
        jpeg_draft=jpeg_draft,
    )
    return features_frame(frame, X), record

