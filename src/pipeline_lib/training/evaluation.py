"""Evaluation and prediction with the loop's device/precision handling (no training)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..runtime.devices import Precision, loader_generator, loader_options, loader_workers, precision


def split_logits(output: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(output, (tuple, list)):
        main = output[0]
        aux = output[1] if len(output) > 1 else None
        return main, aux
    return output, None


def eval_loader(dataset: Dataset, batch_size: int, num_workers: int | None, device: torch.device) -> DataLoader:
    """In order; ``num_workers`` None: ``devices.loader_workers`` (the job's threads on CUDA)."""
    # Its own generator: drawing worker seeds must not touch the global RNG the training
    # trajectory depends on.
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        generator=loader_generator(0),
        **loader_options(device, loader_workers(num_workers, device)),
    )


@torch.no_grad()
def evaluate(
    model: nn.Module, dataset: Dataset, *, batch_size: int, device: torch.device | str, num_workers: int | None = None, amp: bool = True
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on a labelled dataset (eval mode)."""
    device = torch.device(device)
    prec = precision(device, amp=amp)
    return evaluate_loader(model, eval_loader(dataset, batch_size, num_workers, device), prec)


@torch.no_grad()
def evaluate_loader(model: nn.Module, loader: DataLoader, prec: Precision) -> tuple[float, float]:
    model.eval()
    total_loss = torch.zeros((), dtype=torch.float64, device=prec.device)
    correct = torch.zeros((), dtype=torch.int64, device=prec.device)
    n = 0
    for images, labels in loader:
        images = prec.to_input(images)
        labels = labels.to(prec.device, non_blocking=True)
        with prec.autocast():
            logits, _ = split_logits(model(images))
        logits = logits.float()
        total_loss += F.cross_entropy(logits, labels, reduction="sum").double()
        correct += (logits.argmax(1) == labels).sum()
        n += labels.numel()
    if n == 0:
        return float("nan"), float("nan")
    return float(total_loss.item() / n), float(correct.item() / n)


@torch.no_grad()
def forward_all(
    model: nn.Module, dataset: Dataset, *, batch_size: int, device: torch.device | str, num_workers: int | None = None,
    amp: bool = True, channels_last: bool | None = None,
) -> torch.Tensor:
    """``model``'s (main) output for every item of ``dataset``, in dataset order, eval mode, float32
    on ``device``; an empty tensor for an empty dataset."""
    device = torch.device(device)
    prec = precision(device, amp=amp, channels_last=channels_last)
    model = prec.prepare_model(model)
    model.eval()
    chunks: list[torch.Tensor] = []
    for images, _ in eval_loader(dataset, batch_size, num_workers, device):
        with prec.autocast():
            output, _ = split_logits(model(prec.to_input(images)))
        chunks.append(output.float())
    return torch.cat(chunks) if chunks else torch.zeros(0, device=device)


def predict_proba(
    model: nn.Module, dataset: Dataset, *, batch_size: int, device: torch.device | str, num_workers: int | None = None,
    amp: bool = True, channels_last: bool | None = None,
) -> np.ndarray:
    """P(class 1 = bad) for every item of ``dataset``, in dataset order (float64 array)."""
    logits = forward_all(model, dataset, batch_size=batch_size, device=device, num_workers=num_workers, amp=amp,
                         channels_last=channels_last)
    if logits.numel() == 0:
        return np.zeros(0, dtype=np.float64)
    return torch.softmax(logits, dim=1)[:, 1].cpu().numpy().astype(np.float64)
