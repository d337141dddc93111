"""Device choice, threads, precision and seeding: everything that decides *where* and *how
reproducibly* a network runs, with explicit arguments and no hidden globals of our own.

- ``select_device(gpus_granted)``: CUDA only when the rule was granted a GPU *and* one is
  visible; otherwise CPU (the offline default, bitwise reproducible at fixed threads).
- ``precision(device)``: on CUDA, autocast bf16 where supported (else fp16 with a
  GradScaler) and channels_last; on CPU, plain float32, channels_last only when asked
  (``channels_last=True``: it speeds up small-channel networks on one CPU thread, slows the
  ResNet down; bench/README.md, "Threads and memory format").
- ``seed_everything(seed)``: python ``random``, numpy, torch (CPU and CUDA), plus
  deterministic algorithms where torch has them. ``loader_generator(seed)`` is the seeded
  generator for DataLoader shuffling (workers use ``pipeline_lib.data.datasets.seed_worker``).
- ``loader_workers`` / ``loader_options``: how many DataLoader workers a job uses (its
  threads on CUDA, none on the CPU) and the CUDA-only loader settings.
"""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass
from typing import Any, ContextManager

import numpy as np
import torch


def select_device(gpus_granted: int) -> torch.device:
    """``cuda`` when the rule got ``gpus_granted >= 1`` and CUDA is visible, else ``cpu``."""
    if int(gpus_granted or 0) >= 1 and torch.cuda.is_available():
        return torch.device("cuda", 0)
    return torch.device("cpu")


def configure_threads(threads: int) -> int:
    """Use ``threads`` intra-op CPU threads (the rule's ``threads:``); returns what torch uses."""
    threads = max(1, int(threads))
    torch.set_num_threads(threads)
    return torch.get_num_threads()


def loader_workers(num_workers: int | None, device: torch.device | str) -> int:
    """DataLoader worker processes: ``num_workers`` when params set it; else, on CUDA, the
    job's CPU threads (``torch.get_num_threads()``, set from the rule's ``threads:`` by
    ``configure_threads``): there the CPU only decodes and augments, and one core decodes
    ~300 images/s at 224 px (bench/scale/README.md), far below what a GPU consumes. On the
    CPU none: decoding inline costs a few % of a forward pass, and worker processes would
    compete with torch's threads for the same cores (bench/README.md, bench_features)."""
    if num_workers is not None:
        return int(num_workers)
    return torch.get_num_threads() if torch.device(device).type == "cuda" else 0


def loader_options(device: torch.device | str, num_workers: int) -> dict[str, Any]:
    """DataLoader keyword arguments for ``num_workers`` workers on ``device``.

    CUDA: ``pin_memory`` (page-locked batches, so the ``non_blocking`` copies overlap) and
    ``persistent_workers`` (no worker start-up every epoch). Not on the CPU: there a resumed
    run must draw the same worker seeds as an uninterrupted one, which needs fresh workers
    each epoch (their seeds come from the checkpointed loader generator)."""
    cuda = torch.device(device).type == "cuda"
    options: dict[str, Any] = {"num_workers": int(num_workers), "pin_memory": cuda}
    if num_workers > 0:
        from ..data.datasets import seed_worker

        options.update(worker_init_fn=seed_worker, persistent_workers=cuda)
    return options


@dataclass(frozen=True)
class Precision:
    """How a device computes: autocast dtype (None = float32), GradScaler, memory format."""

    device: torch.device
    autocast_dtype: torch.dtype | None
    use_scaler: bool
    channels_last: bool

    def autocast(self) -> ContextManager[Any]:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def make_scaler(self):
        """A GradScaler for fp16 autocast, else None (bf16 and fp32 need none)."""
        if not self.use_scaler:
            return None
        return torch.amp.GradScaler(self.device.type)

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    @property
    def label(self) -> str:
        if self.autocast_dtype is None:
            return "fp32"
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.autocast_dtype, str(self.autocast_dtype))


def precision(device: torch.device, *, amp: bool = True, channels_last: bool | None = None) -> Precision:
    """The precision policy for ``device``; ``amp=False`` forces float32 everywhere.

    ``channels_last``: None = on CUDA only; True / False = on every device / nowhere."""
    device = torch.device(device)
    if device.type != "cuda":
        return Precision(device, None, False, bool(channels_last))
    channels_last = True if channels_last is None else bool(channels_last)
    if not amp:
        return Precision(device, None, False, channels_last)
    if torch.cuda.is_bf16_supported():
        return Precision(device, torch.bfloat16, False, channels_last)
    return Precision(device, torch.float16, True, channels_last)


def describe_device(device: torch.device, *, amp: bool = True) -> str:
    """The ``device`` string for metrics.json: ``cpu`` or e.g. ``cuda (NVIDIA H200, bf16)``."""
    device = torch.device(device)
    if device.type != "cuda":
        return "cpu"
    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda ({torch.cuda.get_device_name(index)}, {precision(device, amp=amp).label})"


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy and torch (CPU + all CUDA devices); deterministic kernels.

    ``torch.use_deterministic_algorithms(True, warn_only=True)`` makes torch pick
    deterministic kernels where they exist and warn (not fail) where they don't.
    """
    seed = int(seed)
    # cuBLAS needs this set before its first use to be deterministic; harmless on CPU.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if hasattr(torch, "use_deterministic_algorithms"):
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


def loader_generator(seed: int) -> torch.Generator:
    """The seeded generator a training DataLoader shuffles with (its state is checkpointed)."""
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return generator


# --- RNG state as checkpoint-friendly values (tensors and plain types only, so that
# ``torch.load(..., weights_only=True)`` can read them back) -------------------------------


def capture_rng(generator: torch.Generator | None = None) -> dict:
    """Every RNG state the training loop depends on, including the loader's generator."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "kind": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
        "cuda": [s for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
        "loader": generator.get_state() if generator is not None else None,
    }
    return state


def restore_rng(state: dict, generator: torch.Generator | None = None) -> None:
    """Inverse of ``capture_rng`` (CUDA states are restored only when CUDA is visible)."""
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npst = state["numpy"]
    np.random.set_state(
        (
            npst["kind"],
            npst["keys"].numpy().astype(np.uint32),
            int(npst["pos"]),
            int(npst["has_gauss"]),
            float(npst["cached_gaussian"]),
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    cuda_states = state.get("cuda") or []
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])
    if generator is not None and state.get("loader") is not None:
        generator.set_state(state["loader"].cpu())
