"""One resumable loop for the training loop and both architecture searches.

A run is a state folder, a fingerprint and an epoch function. This module owns everything
the three share, written once:

- ``fingerprint``: a short hash of everything that must match to resume (config, model,
  data sizes, ...); a checkpoint with another fingerprint means "start fresh", never "resume";
- ``Checkpoint``: the state file, saved atomically after every epoch (the old one stays until
  the new one is complete), read with ``weights_only=True`` (tensors and plain Python values
  only), stale temporaries of a killed writer removed, cleared once the outputs are written;
- ``Progress``: one progress/ETA logger (a tqdm bar within the epoch, a log line per epoch
  with its rate and the ETA of the run);
- ``run_epochs``: resume, the epochs, SIGTERM as a clean stop that keeps the last checkpoint.

Each method supplies a ``Resumable`` (its ``state_dict``/``load_state_dict`` hold whatever it
needs to continue bit for bit: model, optimizers, schedules, RNG states, best weights) and
what it does in one epoch, in the size of torchvision's ``train_one_epoch``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Protocol

import torch

from ..io.atomic import atomic_path
from ..io.errors import PipelineError

FORMAT = "nexperia-loop/1"


class TrainingInterrupted(SystemExit):
    """Raised on SIGTERM inside ``run_epochs`` so atomic writes clean up; exit status 143."""


class Resumable(Protocol):
    """What a method checkpoints: a plain dict of tensors and Python values, and back."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


# --- fingerprint -------------------------------------------------------------------------------


def plain(value: Any) -> Any:
    """``value`` as JSON-able data: dataclasses as dicts, keys as sorted strings, the rest repr."""
    if is_dataclass(value) and not isinstance(value, type):
        return plain(asdict(value))
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def hash_state_dict(state_dict: Mapping[str, Any]) -> str:
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


def model_identity(model: torch.nn.Module) -> dict[str, str]:
    """A model's architecture (its repr) and a hash of its current (initial) weights."""
    return {"architecture": repr(model), "weights": hash_state_dict(model.state_dict())}


def fingerprint(**parts: Any) -> str:
    """A short hash of everything that decides a run's trajectory (canonical JSON of ``parts``)."""
    text = json.dumps({"format": FORMAT, **plain(parts)}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --- the state folder ---------------------------------------------------------------------------


def cpu_copy(value: Any, *, copy: bool = True) -> Any:
    """Tensors moved to the CPU, recursively through dicts and lists; ``copy=False`` leaves
    tensors already on the CPU as they are (for writing them out at once: ``torch.save``
    serialises them before training touches them again)."""
    if torch.is_tensor(value):
        return value.detach().to("cpu", copy=copy)
    if isinstance(value, Mapping):
        return {k: cpu_copy(v, copy=copy) for k, v in value.items()}
    if isinstance(value, list):
        return [cpu_copy(v, copy=copy) for v in value]
    return value


@dataclass
class Checkpoint:
    """The resume state of one run, ``<state_dir>/<name>``; not a declared output (Snakemake
    deletes a failed job's outputs, and the state must survive that). ``state_dir`` None: a
    run without resume (nothing is read or written)."""

    state_dir: Path | str | None
    name: str = "checkpoint.pt"
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("pipeline.loop"))

    @property
    def path(self) -> Path:
        if self.state_dir is None:
            raise PipelineError("this run keeps no checkpoint (no state folder was given)")
        return Path(self.state_dir) / self.name

    def remove_stale_temps(self) -> list[Path]:
        """Temporaries a killed writer left behind (``.<name>.tmp-*`` from ``atomic_path``)."""
        folder = None if self.state_dir is None else Path(self.state_dir)
        stale = [p for p in folder.glob(".*.tmp-*") if p.is_file()] if folder and folder.is_dir() else []
        for tmp in stale:
            tmp.unlink(missing_ok=True)
            self.log.info("removed stale temporary %s (left by a killed run)", tmp)
        return stale

    def read(self) -> dict | None:
        """The saved checkpoint as it is (None when absent); PipelineError when unreadable."""
        if self.state_dir is None or not self.path.exists():
            return None
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any decoding failure is the same user problem
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise PipelineError(f"{self.path}: cannot load the checkpoint ({type(exc).__name__}: {first}); "
                                "delete it to start from scratch") from exc
        if not isinstance(saved, dict) or saved.get("format") != FORMAT:
            raise PipelineError(f"{self.path}: not a checkpoint of format {FORMAT}; delete it to start from scratch")
        return saved

    def load(self, run_fingerprint: str) -> dict | None:
        """The saved state when it belongs to this run; None when absent or another run's."""
        self.remove_stale_temps()
        saved = self.read()
        if saved is not None and saved.get("fingerprint") != run_fingerprint:
            self.log.info("checkpoint %s belongs to a different run (fingerprint %s, this run %s); starting fresh",
                          self.path, saved.get("fingerprint"), run_fingerprint)
            return None
        return saved

    def save(self, run_fingerprint: str, state: Mapping[str, Any]) -> None:
        """Write atomically: the old checkpoint stays until the new one is complete."""
        if self.state_dir is None:
            return
        Path(self.state_dir).mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp:
            # no copy on the CPU: ResNet FBP's 171 MB state was copied once per epoch for nothing
            torch.save({**cpu_copy(dict(state), copy=False), "format": FORMAT, "fingerprint": run_fingerprint}, tmp)

    def clear(self) -> None:
        """Remove the state once the run's outputs are safely written."""
        if self.state_dir is None:
            return
        self.path.unlink(missing_ok=True)
        self.remove_stale_temps()


# --- progress ----------------------------------------------------------------------------------


def format_eta(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}"


@dataclass
class Progress:
    """One progress/ETA logger for every loop: a bar within an epoch, a line per epoch."""

    log: logging.Logger
    epochs: int
    unit: str = "img"
    enabled: bool = True
    seconds: list[float] = field(default_factory=list)

    def bar(self, total: int, desc: str):
        """A tqdm bar on stderr (the rule's log too); in a log file a line every 30 s is plenty."""
        if not self.enabled:
            return None
        from tqdm import tqdm

        tty = bool(getattr(sys.stderr, "isatty", lambda: False)())
        return tqdm(total=total, desc=desc, unit=self.unit, file=sys.stderr, leave=False,
                    mininterval=0.5 if tty else 30.0, dynamic_ncols=tty)

    def epoch_done(self, epoch: int, seconds: float, items: int, summary: str) -> None:
        """``epoch`` 0-based; the ETA uses the mean of the last five epochs."""
        self.seconds.append(seconds)
        recent = self.seconds[-5:]
        remaining = (sum(recent) / len(recent)) * (self.epochs - epoch - 1)
        rate = items / max(seconds, 1e-9)
        # a search step can take seconds: "0 step/s" would say nothing
        speed = f"{rate:.0f} {self.unit}/s" if rate >= 1 or items == 0 else f"{seconds / items:.2f} s/{self.unit}"
        self.log.info("epoch %d/%d %s | %s, %.1f s | ETA %s", epoch + 1, self.epochs, summary, speed, seconds,
                      format_eta(remaining))


# --- the loop ----------------------------------------------------------------------------------


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """SIGTERM becomes ``TrainingInterrupted`` (main thread only), so cleanups run."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):  # noqa: ARG001
        raise TrainingInterrupted(128 + signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass
class Run:
    """One resumable run: where its state lives, what identifies it, what it resumes."""

    checkpoint: Checkpoint
    fingerprint: str
    state: Resumable
    epochs: int
    history: list[dict] = field(default_factory=list)
    resumed_from: int | None = None
    elapsed_before: float = 0.0

    def resume(self) -> int:
        """Load the checkpoint when it is this run's; the epoch to start from (0: fresh)."""
        saved = self.checkpoint.load(self.fingerprint)
        if saved is None:
            return 0
        try:
            self.state.load_state_dict(saved["state"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise PipelineError(f"{self.checkpoint.path}: checkpoint does not fit this run ({exc}); "
                                "delete it to start fresh") from exc
        self.history = [dict(row) for row in saved["history"]]
        self.elapsed_before = float(saved.get("elapsed_s", 0.0))
        self.resumed_from = int(saved["epoch"])
        self.checkpoint.log.info("resumed from epoch %d of %d (checkpoint %s)", self.resumed_from, self.epochs,
                                 self.checkpoint.path)
        return self.resumed_from

    def save(self, epoch_done: int, elapsed: float, finished: bool) -> None:
        self.checkpoint.save(self.fingerprint, {"epoch": epoch_done, "state": self.state.state_dict(),
                                                "history": self.history, "elapsed_s": self.elapsed_before + elapsed,
                                                "finished": finished})


def run_epochs(run: Run, epoch_fn: Callable[[int], dict], *, should_stop: Callable[[dict], bool] | None = None,
               stop_after: int | None = None, on_saved: Callable[[list[dict]], None] | None = None) -> list[dict]:
    """Resume ``run``, then ``row = epoch_fn(epoch)`` for each remaining epoch, checkpointing after each.

    ``should_stop(row)``: early stop after that epoch (kept in the checkpoint, so a rerun does not
    train on); ``stop_after``: end this call after that many epochs (a later call resumes);
    ``on_saved(history)``: after each checkpoint (e.g. write the history CSV).
    Returns the history, one row per epoch, resumed ones included.
    """
    start = run.resume()
    started = time.perf_counter()
    if run.history and run.history[-1].get("stopped_early"):
        return run.history
    ran = 0
    try:
        with sigterm_raises():
            for epoch in range(start, run.epochs):
                if stop_after is not None and ran >= stop_after:
                    break
                row = dict(epoch_fn(epoch))
                stop = bool(should_stop and should_stop(row)) and epoch + 1 < run.epochs
                if should_stop is not None:
                    row["stopped_early"] = stop
                run.history.append(row)
                run.save(epoch + 1, time.perf_counter() - started, finished=stop or epoch + 1 == run.epochs)
                if on_saved is not None:
                    on_saved(run.history)
                ran += 1
                if stop:
                    break
    except TrainingInterrupted:
        # the count of saved epochs, not the loop variable: the signal may land between an
        # epoch's checkpoint and the next epoch's start
        done = len(run.history)
        kept = f"checkpoint of epoch {done} in {run.checkpoint.state_dir} is kept, rerun to resume" if done \
            else "no epoch completed yet"
        run.checkpoint.log.warning("SIGTERM in epoch %d: stopping; %s", done + 1, kept)
        raise
    run.elapsed_before += time.perf_counter() - started
    return run.history
