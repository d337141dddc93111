"""The one training loop every network of the study uses (CNN, ResNet LL/FBP, DARTS/ENAS cells).

``fit(model, train_set, val_set, config, device=..., state_dir=..., ...)`` trains for
``config.epochs`` epochs with the optimizer/schedule of ``config``, evaluates on the
validation set after every epoch, keeps the best-on-validation weights (lowest val loss,
ties broken by higher val accuracy; the test set is never looked at), stops early after
``config.patience`` epochs without improvement, and writes a per-epoch metrics CSV
(``epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds``) for ``dvc plots``.

Resume, progress and SIGTERM come from ``pipeline_lib.training.loop`` (shared with the DARTS and ENAS
searches): after every epoch the full state (model, optimizer, scheduler, scaler, best weights
so far, early-stopping counter, and every RNG state including the DataLoader generator's) is
saved; a rerun with the same fingerprint continues and, on CPU with the same seed and threads,
ends with bitwise the same weights as an uninterrupted run.

Hooks for the NAS networks: a model may return ``(logits, aux_logits)`` in training
mode (``config.aux_weight`` weighs the auxiliary loss); ``on_epoch_start(model, epoch,
epochs)`` (``epoch`` 0-based) runs before every epoch, resumed ones included, e.g. for a
drop-path ramp. The configuration (``TrainConfig``, optimizer and schedule) lives in
``train_config``, evaluation and prediction in ``evaluation``, the augmentations in ``data``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..io.atomic import write_csv
from ..runtime.devices import (
    Precision, capture_rng, describe_device, loader_generator, loader_options, loader_workers, precision, restore_rng,
    seed_everything,
)
from ..io.errors import PipelineError
from .evaluation import eval_loader, evaluate_loader, split_logits
from .loop import Checkpoint, Progress, Run, TrainingInterrupted, cpu_copy, fingerprint, model_identity, run_epochs
from .config import TrainConfig, make_optimizer, make_scheduler

__all__ = ["FitResult", "TrainingInterrupted", "balanced_class_weights", "fit", "train_one_epoch"]

HISTORY_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]


# --- results -------------------------------------------------------------------------------------


@dataclass
class FitResult:
    """What ``fit`` returns. Epoch numbers are 1-based, as in the history CSV."""

    best_state_dict: dict
    best_epoch: int
    best_val_loss: float
    best_val_acc: float
    epochs_run: int
    history: pd.DataFrame
    stopped_early: bool
    wall_time_s: float
    device: str
    resumed_from: int | None = None


# --- building blocks -----------------------------------------------------------------------------


def balanced_class_weights(labels: Sequence[int] | np.ndarray, num_classes: int = 2) -> torch.Tensor:
    """n / (num_classes * n_c) per class c (scikit-learn's ``class_weight="balanced"``)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).astype(np.float64)
    if (counts == 0).any():
        raise PipelineError(f"class_weight balanced: a class has no training images (counts {counts.astype(int).tolist()})")
    return torch.tensor(counts.sum() / (num_classes * counts), dtype=torch.float32)


def _loss_weights(config: TrainConfig, train_set: Dataset, device: torch.device) -> torch.Tensor | None:
    if config.class_weight == "none":
        return None
    labels = getattr(train_set, "labels", None)
    if labels is None:
        raise PipelineError(f"class_weight {config.class_weight!r} needs a training set with a .labels array")
    return balanced_class_weights(labels).to(device)


def _history_frame(history: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(history, columns=HISTORY_COLUMNS)
    return frame.astype({"epoch": "int64"}) if len(frame) else frame


def _is_better(val_loss: float, val_acc: float, best: dict | None) -> bool:
    if not math.isfinite(val_loss):
        return False
    if best is None:
        return True
    if val_loss < best["val_loss"]:
        return True
    return val_loss == best["val_loss"] and val_acc > best["val_acc"]


# --- the loop ------------------------------------------------------------------------------------


class TrainState:
    """Everything ``fit`` resumes from (``loop.Resumable``)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any,
                 generator: torch.Generator):
        self.model, self.optimizer, self.scheduler, self.scaler, self.generator = model, optimizer, scheduler, scaler, generator
        self.best: dict | None = None
        self.best_state: dict | None = None
        self.bad_epochs = 0

    def record(self, epoch: int, val_loss: float, val_acc: float) -> bool:
        """Keep the weights when this epoch is the best on validation so far; True if it is."""
        if not _is_better(val_loss, val_acc, self.best):
            self.bad_epochs += 1
            return False
        self.best = {"epoch": epoch, "val_loss": val_loss, "val_acc": val_acc}
        self.best_state = cpu_copy(self.model.state_dict())
        self.bad_epochs = 0
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "best": self.best, "best_state": self.best_state, "bad_epochs": self.bad_epochs,
                "rng": capture_rng(self.generator)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.best = dict(state["best"]) if state.get("best") else None
        self.best_state = state["best_state"]
        self.bad_epochs = int(state["bad_epochs"])
        restore_rng(state["rng"], self.generator)


def _backward_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: Any, grad_clip: float | None) -> None:
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if scaler is not None:
        scaler.scale(loss).backward()
        if grad_clip:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(params, grad_clip)
        scaler.step(optimizer)
        scaler.update()
        return
    loss.backward()
    if grad_clip:
        nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, prec: Precision, *,
                    config: TrainConfig, scaler: Any = None, loss_weights: torch.Tensor | None = None,
                    bar: Any = None) -> tuple[float, float, int]:
    """One pass over ``loader``: (mean train loss, train accuracy, images seen)."""
    model.train()
    total_loss = torch.zeros((), dtype=torch.float64, device=prec.device)
    correct = torch.zeros((), dtype=torch.int64, device=prec.device)
    seen = 0
    for images, labels in loader:
        images = prec.to_input(images)
        labels = labels.to(prec.device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with prec.autocast():
            output = model(images)
        logits, aux = split_logits(output)
        loss_main = F.cross_entropy(logits.float(), labels, weight=loss_weights)
        loss = loss_main
        if aux is not None and config.aux_weight > 0:
            loss = loss + config.aux_weight * F.cross_entropy(aux.float(), labels, weight=loss_weights)
        _backward_step(loss, optimizer, scaler, config.grad_clip)
        total_loss += loss_main.detach().double() * labels.numel()
        correct += (logits.detach().argmax(1) == labels).sum()
        seen += labels.numel()
        if bar is not None:
            bar.update(labels.numel())
    return float(total_loss.item() / max(seen, 1)), float(correct.item() / max(seen, 1)), seen


def make_loaders(
    train_set: Dataset, val_set: Dataset, config: TrainConfig, device: torch.device, generator: torch.Generator
) -> tuple[DataLoader, DataLoader]:
    """The training loader (shuffled by ``generator``) and the validation loader, with the
    workers and CUDA settings of ``devices.loader_options``."""
    workers = loader_workers(config.num_workers, device)
    train_loader = DataLoader(
        train_set, batch_size=config.batch_size, shuffle=True, generator=generator,
        # BatchNorm cannot train on a batch of one; drop such a last batch only.
        drop_last=len(train_set) % config.batch_size == 1,
        **loader_options(device, workers),
    )
    return train_loader, eval_loader(val_set, config.eval_batch_size or config.batch_size, workers, device)


def _groups(model: nn.Module, param_groups: Sequence[Mapping[str, Any]] | None, config: TrainConfig) -> list[dict]:
    groups = [dict(g) for g in param_groups] if param_groups is not None else [
        {"params": [p for p in model.parameters() if p.requires_grad], "lr": float(config.lr), "name": "all"}
    ]
    if not any(len(list(g["params"])) for g in groups):
        raise PipelineError("the model has no trainable parameters; check the model name / freezing options")
    return groups


def _run_fingerprint(model, groups, config, train_set, val_set, device, extra) -> str:
    summary = [{"n_params": sum(p.numel() for p in g["params"]), **{k: v for k, v in g.items() if k != "params"}}
               for g in groups]
    return fingerprint(config=config, model=model_identity(model), param_groups=summary, n_train=len(train_set),
                       n_val=len(val_set), device_type=device.type, extra=extra)


def fit(
    model: nn.Module,
    train_set: Dataset,
    val_set: Dataset,
    config: TrainConfig,
    *,
    device: torch.device | str,
    state_dir: str | Path,
    history_csv: str | Path | None = None,
    log: logging.Logger | None = None,
    param_groups: Sequence[Mapping[str, Any]] | None = None,
    on_epoch_start: Callable[[nn.Module, int, int], None] | None = None,
    fingerprint_extra: Any = None,
    restore_best: bool = True,
    progress: bool = True,
) -> FitResult:
    """Train ``model`` (in place) and return the best-on-validation weights and the history.

    ``param_groups``: optimizer groups (e.g. ``models.param_groups``); default: every
    trainable parameter at ``config.lr``. The first group's LR is logged as ``lr``.
    ``state_dir``: where the resume checkpoint lives (not a Snakemake output).
    ``fingerprint_extra``: anything else that identifies the run (model name, split hash);
    a checkpoint whose fingerprint differs is ignored (logged) and training starts fresh.
    ``restore_best``: load the best weights into ``model`` before returning.
    Seed torch (``seed_everything``) *before* building the model so a rerun builds the same
    initial weights; ``fit`` reseeds with ``config.seed`` for the training randomness.
    """
    config.validate()
    log = log or logging.getLogger("pipeline.train")
    device = torch.device(device)
    prec = precision(device, amp=config.amp, channels_last=config.channels_last)
    groups = _groups(model, param_groups, config)
    run_fp = _run_fingerprint(model, groups, config, train_set, val_set, device, fingerprint_extra)
    seed_everything(config.seed)
    generator = loader_generator(config.seed)
    model = prec.prepare_model(model)
    optimizer = make_optimizer(groups, config)
    state = TrainState(model, optimizer, make_scheduler(optimizer, config), prec.make_scaler(), generator)
    run = Run(Checkpoint(state_dir, log=log), run_fp, state, config.epochs)
    train_loader, val_loader = make_loaders(train_set, val_set, config, device, generator)
    loss_weights = _loss_weights(config, train_set, device)
    meter = Progress(log, config.epochs, enabled=progress)
    log.info("training %d epochs on %s (%d train / %d val images, batch %d, %s, lr %s, schedule %s); state in %s",
             config.epochs, describe_device(device, amp=config.amp), len(train_set), len(val_set), config.batch_size,
             config.optimizer, ", ".join(f"{g.get('name', i)} {g['lr']:g}" for i, g in enumerate(optimizer.param_groups)),
             config.schedule, state_dir)

    def one_epoch(epoch: int) -> dict:
        if on_epoch_start is not None:
            on_epoch_start(model, epoch, config.epochs)
        t0, lr_now = time.perf_counter(), float(optimizer.param_groups[0]["lr"])
        bar = meter.bar(len(train_loader.dataset), f"epoch {epoch + 1}/{config.epochs}")
        train_loss, train_acc, seen = train_one_epoch(model, train_loader, optimizer, prec, config=config,
                                                      scaler=state.scaler, loss_weights=loss_weights, bar=bar)
        if bar is not None:
            bar.close()
        if not math.isfinite(train_loss):
            raise PipelineError(f"training diverged (train loss {train_loss} in epoch {epoch + 1}); lower lr in params.yaml")
        val_loss, val_acc = evaluate_loader(model, val_loader, prec)
        if state.scheduler is not None:
            state.scheduler.step()
        improved = state.record(epoch + 1, val_loss, val_acc)
        row = {"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss,
               "val_acc": val_acc, "lr": lr_now, "seconds": time.perf_counter() - t0}
        meter.epoch_done(epoch, row["seconds"], seen, f"train_loss {train_loss:.4f} acc {train_acc:.3f} | val_loss "
                         f"{val_loss:.4f} acc {val_acc:.3f}{' *' if improved else ''} | lr {lr_now:.3g}")
        return row

    history = run_epochs(run, one_epoch, should_stop=lambda row: config.patience > 0 and state.bad_epochs >= config.patience,
                         on_saved=lambda rows: history_csv is not None and write_csv(_history_frame(rows), history_csv))
    return _finish(run, state, history, history_csv, restore_best, log, config, describe_device(device, amp=config.amp))


def _finish(run: Run, state: TrainState, history: list[dict], history_csv, restore_best: bool, log: logging.Logger,
            config: TrainConfig, device_label: str) -> FitResult:
    if state.best_state is None or state.best is None:
        raise PipelineError("no epoch produced a finite validation loss; check the data and lower lr in params.yaml")
    stopped_early = bool(history and history[-1].get("stopped_early"))
    if stopped_early:
        log.info("early stop: val loss did not improve for %d epochs (best epoch %d)", config.patience, state.best["epoch"])
    if history_csv is not None:
        write_csv(_history_frame(history), history_csv)
    if restore_best:
        state.model.load_state_dict(state.best_state)
    return FitResult(
        best_state_dict=state.best_state, best_epoch=int(state.best["epoch"]), best_val_loss=float(state.best["val_loss"]),
        best_val_acc=float(state.best["val_acc"]), epochs_run=len(history), history=_history_frame(history),
        stopped_early=stopped_early, wall_time_s=run.elapsed_before,
        device=device_label, resumed_from=run.resumed_from,
    )
