"""The one training loop every network of the study uses (CNN, ResNet LL/FBP, DARTS/ENAS).

``fit(model, train_set, val_set, config, device=..., state_dir=..., ...)`` trains for
``config.epochs`` epochs with the optimizer/schedule of ``config``, evaluates on the
validation set after every epoch, keeps the best-on-validation weights (lowest val loss,
ties broken by higher val accuracy; the test set is never looked at), stops early after
``config.patience`` epochs without improvement, and writes a per-epoch metrics CSV
(``epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds``) for ``dvc plots``.

Resume: after every epoch the full training state (model, optimizer, scheduler, scaler,
best weights so far, early-stopping counter, history, and every RNG state including the
DataLoader generator's) is written atomically to ``state_dir/checkpoint.pt``. A rerun with
the same fingerprint (see ``checkpoint.fingerprint``) continues from it and, on CPU with
the same seed and threads, ends with bitwise the same weights as an uninterrupted run.

Hooks for the NAS networks: a model may return ``(logits, aux_logits)`` in training
mode (``config.aux_weight`` weighs the auxiliary loss); ``on_epoch_start(model, epoch,
epochs)`` (``epoch`` 0-based) runs before every epoch, resumed ones included, e.g. for a
drop-path ramp. The configuration (``TrainConfig``, optimizer and schedule) lives in
``train_config``, evaluation and prediction in ``evaluation``, the augmentations in ``data``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .atomic import write_csv
from .checkpoint import STATE_FORMAT, fingerprint, load_state, remove_stale_temps, save_state, state_path
from .devices import (
    capture_rng, describe_device, loader_generator, loader_options, loader_workers, precision, restore_rng, seed_everything,
)
from .errors import PipelineError
from .evaluation import eval_loader, evaluate_loader, split_logits
from .train_config import TrainConfig, make_optimizer, make_scheduler

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


class TrainingInterrupted(SystemExit):
    """Raised inside ``fit`` on SIGTERM so atomic writes clean up; exits with status 143."""


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


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into ``TrainingInterrupted`` (main thread only) so cleanups run."""
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


def make_loaders(
    train_set: Dataset, val_set: Dataset, config: TrainConfig, device: torch.device, generator: torch.Generator
) -> tuple[DataLoader, DataLoader]:
    """The training loader (shuffled by ``generator``) and the validation loader, with the
    workers and CUDA settings of ``devices.loader_options``."""
    workers = loader_workers(config.num_workers, device)
    train_loader = DataLoader(
        train_set,
        batch_size=config.batch_size,
        shuffle=True,
        generator=generator,
        # BatchNorm cannot train on a batch of one; drop such a last batch only.
        drop_last=len(train_set) % config.batch_size == 1,
        **loader_options(device, workers),
    )
    return train_loader, eval_loader(val_set, config.eval_batch_size or config.batch_size, workers, device)


def _format_eta(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h:d}:{m:02d}:{s:02d}"


def _cpu_copy(state_dict: Mapping[str, torch.Tensor]) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in state_dict.items()}


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
    prec = precision(device, amp=config.amp)
    device_label = describe_device(device, amp=config.amp)
    started = time.perf_counter()

    groups = list(param_groups) if param_groups is not None else [
        {"params": [p for p in model.parameters() if p.requires_grad], "lr": float(config.lr), "name": "all"}
    ]
    if not any(len(list(g["params"])) for g in groups):
        raise PipelineError("the model has no trainable parameters; check the model name / freezing options")
    run_fp = fingerprint(
        config=config,
        model=model,
        param_groups=groups,
        n_train=len(train_set),
        n_val=len(val_set),
        device_type=device.type,
        extra=fingerprint_extra,
    )

    seed_everything(config.seed)
    generator = loader_generator(config.seed)
    model = prec.prepare_model(model)
    optimizer = make_optimizer(groups, config)
    scheduler = make_scheduler(optimizer, config)
    scaler = prec.make_scaler()

    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    for stale in remove_stale_temps(state_dir):
        log.info("removed stale temporary %s (left by a killed run)", stale)
    ckpt = state_path(state_dir)

    history: list[dict] = []
    best: dict | None = None
    best_state: dict | None = None
    bad_epochs = 0
    stopped_early = False
    finished = False
    elapsed_before = 0.0
    start_epoch = 0
    resumed_from: int | None = None

    saved = load_state(ckpt)
    if saved is not None and saved.get("fingerprint") != run_fp:
        log.info(
            "checkpoint %s belongs to a different run (fingerprint %s, this run %s); starting fresh",
            ckpt,
            saved.get("fingerprint"),
            run_fp,
        )
        saved = None
    if saved is not None:
        try:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            if scheduler is not None and saved.get("scheduler") is not None:
                scheduler.load_state_dict(saved["scheduler"])
            if scaler is not None and saved.get("scaler") is not None:
                scaler.load_state_dict(saved["scaler"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise PipelineError(f"{ckpt}: checkpoint does not fit this model ({exc}); delete it to start fresh") from exc
        best_state = saved["best_state"]
        best = dict(saved["best"]) if saved.get("best") else None
        bad_epochs = int(saved["bad_epochs"])
        history = [dict(h) for h in saved["history"]]
        stopped_early = bool(saved["stopped_early"])
        finished = bool(saved["finished"])
        elapsed_before = float(saved["elapsed_s"])
        start_epoch = resumed_from = int(saved["epoch"])
        restore_rng(saved["rng"], generator)
        log.info(
            "resumed from epoch %d of %d (checkpoint %s%s)",
            start_epoch,
            config.epochs,
            ckpt,
            ", training already finished" if finished else "",
        )
        del saved

    train_loader, val_loader = make_loaders(train_set, val_set, config, device, generator)
    n_per_epoch = len(train_loader) * config.batch_size if train_loader.drop_last else len(train_set)
    params_to_clip = [p for g in optimizer.param_groups for p in g["params"]]
    loss_weights = _loss_weights(config, train_set, device)
    is_tty = bool(getattr(sys.stderr, "isatty", lambda: False)())

    if start_epoch == 0:
        log.info(
            "training %d epochs on %s (%d train / %d val images, batch %d, %s, lr %s, schedule %s); state in %s",
            config.epochs,
            device_label,
            len(train_set),
            len(val_set),
            config.batch_size,
            config.optimizer,
            ", ".join(f"{g.get('name', i)} {g['lr']:g}" for i, g in enumerate(optimizer.param_groups)),
            config.schedule,
            state_dir,
        )

    epoch = start_epoch
    try:
        with _sigterm_raises():
            for epoch in range(start_epoch, config.epochs):
                if finished:
                    break
                if on_epoch_start is not None:
                    on_epoch_start(model, epoch, config.epochs)
                t0 = time.perf_counter()
                model.train()
                total_loss = torch.zeros((), dtype=torch.float64, device=device)
                correct = torch.zeros((), dtype=torch.int64, device=device)
                seen = 0
                lr_now = float(optimizer.param_groups[0]["lr"])
                bar = _progress(progress, n_per_epoch, f"epoch {epoch + 1}/{config.epochs}", is_tty)
                for images, labels in train_loader:
                    images = prec.to_input(images)
                    labels = labels.to(device, non_blocking=True)
                    optimizer.zero_grad(set_to_none=True)
                    with prec.autocast():
                        output = model(images)
                    logits, aux = split_logits(output)
                    loss_main = F.cross_entropy(logits.float(), labels, weight=loss_weights)
                    loss = loss_main
                    if aux is not None and config.aux_weight > 0:
                        loss = loss + config.aux_weight * F.cross_entropy(aux.float(), labels, weight=loss_weights)
                    if scaler is not None:
                        scaler.scale(loss).backward()
                        if config.grad_clip:
                            scaler.unscale_(optimizer)
                            nn.utils.clip_grad_norm_(params_to_clip, config.grad_clip)
                        scaler.step(optimizer)
                        scaler.update()
                    else:
                        loss.backward()
                        if config.grad_clip:
                            nn.utils.clip_grad_norm_(params_to_clip, config.grad_clip)
                        optimizer.step()
                    n = labels.numel()
                    total_loss += loss_main.detach().double() * n
                    correct += (logits.detach().argmax(1) == labels).sum()
                    seen += n
                    if bar is not None:
                        bar.update(n)
                if bar is not None:
                    bar.close()
                train_loss = float(total_loss.item() / max(seen, 1))
                train_acc = float(correct.item() / max(seen, 1))
                if not math.isfinite(train_loss):
                    raise PipelineError(
                        f"training diverged (train loss {train_loss} in epoch {epoch + 1}); lower lr in params.yaml"
                    )
                val_loss, val_acc = evaluate_loader(model, val_loader, prec)
                if scheduler is not None:
                    scheduler.step()
                seconds = time.perf_counter() - t0
                history.append(
                    {
                        "epoch": epoch + 1,
                        "train_loss": train_loss,
                        "train_acc": train_acc,
                        "val_loss": val_loss,
                        "val_acc": val_acc,
                        "lr": lr_now,
                        "seconds": seconds,
                    }
                )
                improved = _is_better(val_loss, val_acc, best)
                if improved:
                    best = {"epoch": epoch + 1, "val_loss": val_loss, "val_acc": val_acc}
                    best_state = _cpu_copy(model.state_dict())
                    bad_epochs = 0
                else:
                    bad_epochs += 1
                if config.patience > 0 and bad_epochs >= config.patience and epoch + 1 < config.epochs:
                    stopped_early = True
                finished = stopped_early or epoch + 1 >= config.epochs
                save_state(
                    ckpt,
                    {
                        "format": STATE_FORMAT,
                        "fingerprint": run_fp,
                        "epoch": epoch + 1,
                        "model": _cpu_copy(model.state_dict()),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict() if scheduler is not None else None,
                        "scaler": scaler.state_dict() if scaler is not None else None,
                        "best_state": best_state,
                        "best": best,
                        "bad_epochs": bad_epochs,
                        "history": history,
                        "stopped_early": stopped_early,
                        "finished": finished,
                        "elapsed_s": elapsed_before + (time.perf_counter() - started),
                        "rng": capture_rng(generator),
                    },
                )
                if history_csv is not None:
                    write_csv(_history_frame(history), history_csv)
                mean_epoch = sum(h["seconds"] for h in history[-5:]) / len(history[-5:])
                remaining = 0 if finished else config.epochs - (epoch + 1)
                log.info(
                    "epoch %d/%d train_loss %.4f acc %.3f | val_loss %.4f acc %.3f%s | lr %.3g | %.0f img/s, %.1f s | ETA %s",
                    epoch + 1,
                    config.epochs,
                    train_loss,
                    train_acc,
                    val_loss,
                    val_acc,
                    " *" if improved else "",
                    lr_now,
                    seen / max(seconds, 1e-9),
                    seconds,
                    _format_eta(mean_epoch * remaining),
                )
                if stopped_early:
                    log.info(
                        "early stop: val loss did not improve for %d epochs (best epoch %d)", config.patience, best["epoch"]
                    )
    except TrainingInterrupted:
        done = len(history)  # not the loop variable: the signal may land between a checkpoint and the next epoch
        log.warning(
            "SIGTERM in epoch %d: stopping; %s",
            done + 1,
            f"checkpoint of epoch {done} in {state_dir} is kept, rerun to resume" if done else "no epoch completed yet",
        )
        raise

    if best_state is None or best is None:
        raise PipelineError("no epoch produced a finite validation loss; check the data and lower lr in params.yaml")
    if history_csv is not None:
        write_csv(_history_frame(history), history_csv)
    if restore_best:
        model.load_state_dict(best_state)
    return FitResult(
        best_state_dict=best_state,
        best_epoch=int(best["epoch"]),
        best_val_loss=float(best["val_loss"]),
        best_val_acc=float(best["val_acc"]),
        epochs_run=len(history),
        history=_history_frame(history),
        stopped_early=stopped_early,
        wall_time_s=elapsed_before + (time.perf_counter() - started),
        device=device_label,
        resumed_from=resumed_from,
    )


def _progress(enabled: bool, total: int, desc: str, is_tty: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    # In a log file (not a tty) a bar line every 30 s is plenty; the epoch line has the rest.
    return tqdm(
        total=total,
        desc=desc,
        unit="img",
        file=sys.stderr,
        leave=False,
        mininterval=0.5 if is_tty else 30.0,
        dynamic_ncols=is_tty,
    )
