"""Penultimate-layer ResNet features for the classical classifiers.

Backbones: torchvision's ``resnet18`` (512-d) and ``resnet50`` (2048-d) with ``fc``
replaced by ``nn.Identity()``. Weights are either ``none`` (random init, seeded) or
``imagenet``, read from an explicit file (``features.weights_file``, a DVC-tracked path) or
from the torch hub cache. Nothing is ever downloaded: a missing file is a PipelineError
that names the path looked at and the URL to fetch it from.

Input pipeline (``extract_features``): images are decoded by PIL exactly as
``data.load_rgb`` + ``data.eval_transform`` do (``pil_to_tensor`` then an antialiased
bilinear resize of the uint8 tensor, per image), but in a background thread (or
``num_workers`` DataLoader processes) that stays a couple of batches ahead of the
forward pass; the uint8 -> float scaling and the ImageNet normalisation run once per batch
with the same torchvision functionals. The result is bitwise identical to feeding
``ChipImages(frame, eval_transform(size))`` through the model (see the tests), only
faster. ``jpeg_draft=True`` additionally lets libjpeg decode large JPEGs at a reduced DCT
scale (>= the target size) before the resize: much cheaper when the files are several
times larger than ``image_size``, but *not* numerically identical to the eval transform,
so it is off by default.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import sys
import threading
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn
from torchvision import models

try:  # torchvision >= 0.29 deprecates its decoders (pinned here); without them PIL decodes
    from torchvision.io import ImageReadMode, decode_jpeg
except ImportError:  # pragma: no cover
    ImageReadMode = decode_jpeg = None  # type: ignore[assignment,misc]
from torchvision.transforms.v2 import functional as TF

from .atomic import atomic_path, write_json
from .data import IMAGENET_MEAN, IMAGENET_STD, load_rgb, seed_worker
from .errors import PipelineError

# arch -> (constructor, ImageNet weights enum member, feature dimension)
ARCHS: dict[str, tuple[Callable[..., nn.Module], Any, int]] = {
    "resnet18": (models.resnet18, models.ResNet18_Weights.IMAGENET1K_V1, 512),
    "resnet50": (models.resnet50, models.ResNet50_Weights.IMAGENET1K_V1, 2048),
}
WEIGHT_MODES = ("none", "imagenet")
log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- weights


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


def weights_record_path(features_path: str | os.PathLike) -> Path:
    """``results/features/pretrained.parquet`` -> ``results/features/pretrained.weights.json``."""
    p = Path(features_path)
    return p.with_name(p.name.removesuffix(".parquet") + ".weights.json")


def write_weights_record(record: WeightsRecord, path: str | os.PathLike) -> None:
    write_json(path, record.to_dict())


# --------------------------------------------------------------------------- input pipeline


_JPEG_MAGIC = b"\xff\xd8\xff"


def _decode_pil(path: str, jpeg_draft: bool) -> torch.Tensor:
    if not jpeg_draft:
        return TF.pil_to_tensor(load_rgb(path))
    from PIL import Image

    try:
        with Image.open(path) as img:
            if img.format == "JPEG":
                img.draft("RGB", (jpeg_draft, jpeg_draft))
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
    shapes = {tuple(t.shape) for t in imgs}
    if len(shapes) == 1:  # the usual case: one resize call for the batch (same kernel per image)
        batch = torch.stack(imgs)  # type: ignore[arg-type]
        return TF.resize(batch, [image_size, image_size], antialias=True)
    return torch.stack([TF.resize(t, [image_size, image_size], antialias=True) for t in imgs])  # type: ignore[arg-type]


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


def extract_features(
    model: nn.Module,
    frame: pd.DataFrame,
    *,
    image_size: int,
    batch_size: int,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    progress: bool | Any = True,
    prefetch: int | None = None,
    jpeg_draft: bool = False,
) -> np.ndarray:
    """Features [N, D] float32 for the rows of a split/manifest frame (column ``path``).

    ``model`` is any module mapping a normalised image batch to [B, D] (or [B, D, 1, 1]):
    a ``build_backbone`` ResNet or a fine-tuned network's backbone. It is run in eval mode
    under ``torch.inference_mode()`` with channels_last inputs; its train/eval mode is
    restored afterwards. Rows come back in frame order. Thread count is the caller's
    (``torch.set_num_threads``).

    Decoding: ``num_workers>0`` uses DataLoader worker processes. With ``num_workers=0``,
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
    if prefetch is None:
        prefetch = 0 if device.type == "cpu" else 2
    fast = not jpeg_draft and (n == 0 or _check_fast_decode(paths[0]))
    if not fast and not jpeg_draft:
        log.warning("%s: torchvision's JPEG decoder disagrees with PIL here; decoding with PIL", paths[0])
    dataset = _DecodedBatches(paths, image_size, batch_size, jpeg_draft, fast)
    if num_workers > 0:
        loader: Any = torch.utils.data.DataLoader(
            dataset,
            batch_size=None,
            shuffle=False,
            num_workers=num_workers,
            worker_init_fn=seed_worker,
            pin_memory=device.type == "cuda",
            prefetch_factor=max(1, prefetch),
        )
        batches: Iterator[torch.Tensor] = iter(loader)
    elif prefetch > 0:
        batches = _thread_batches(dataset, prefetch)
    else:
        batches = (dataset[i] for i in range(len(dataset)))

    out: np.ndarray | None = None
    bar = None
    pfile = _progress_file(progress)
    if pfile is not None:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, unit="img", desc="features", file=pfile, dynamic_ncols=True, mininterval=1.0)
    was_training = model.training
    model.eval()
    model.to(device=device, memory_format=torch.channels_last)
    start = 0
    try:
        with torch.inference_mode():
            for u8 in batches:
                feats = model(preprocess_batch(u8, device))
                feats = feats.reshape(feats.shape[0], -1).to("cpu", torch.float32).numpy()
                if out is None:
                    out = np.empty((n, feats.shape[1]), dtype=np.float32)
                out[start : start + len(feats)] = feats
                start += len(feats)
                if bar is not None:
                    bar.update(len(feats))
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


# --------------------------------------------------------------------------- Parquet


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


# --------------------------------------------------------------------------- one call


def compute_features(
    frame: pd.DataFrame,
    *,
    arch: str = "resnet18",
    weights: str = "none",
    seed: int,
    image_size: int,
    batch_size: int,
    weights_file: str | os.PathLike | None = None,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    progress: bool | Any = True,
    jpeg_draft: bool = False,
) -> tuple[pd.DataFrame, WeightsRecord]:
    """Backbone + extraction + ``features_frame`` in one call (what the features rule needs)."""
    model, record = build_backbone(arch, weights, seed=seed, weights_file=weights_file)
    X = extract_features(
        model,
        frame,
        image_size=image_size,
        batch_size=batch_size,
        num_workers=num_workers,
        device=device,
        progress=progress,
        jpeg_draft=jpeg_draft,
    )
    return features_frame(frame, X), record


def save_features(df: pd.DataFrame, record: WeightsRecord, path: str | os.PathLike) -> None:
    """Write ``{name}.parquet`` and its ``{name}.weights.json`` next to it."""
    write_features(df, path)
    write_weights_record(record, weights_record_path(path))
