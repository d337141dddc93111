"""The per-epoch learning-rate schedule of the architecture searches, written once.

DARTS anneals the weights' learning rate with one cosine over the search (``t0`` None); ENAS's
child uses SGDR, cosine restarts after ``t0``, ``t0*tmul``, ... epochs. Both set the rate at the
start of each epoch (the DARTS architect needs it as its unrolled step ξ). The training loop
uses ``torch.optim.lr_scheduler`` instead (``train_config.make_scheduler``).
"""

from __future__ import annotations

import math


def cosine_lr(epoch: int, epochs: int, lr_max: float, lr_min: float, t0: int | None = None, tmul: int = 2) -> float:
    """lr_min + ½(lr_max − lr_min)(1 + cos(π t / T)) for 0-based ``epoch``; with ``t0``, T restarts
    at t0, t0·tmul, ... (SGDR), else T = ``epochs``."""
    if t0 is None:
        period, t = max(epochs, 1), epoch
    else:
        period, t = t0, epoch
        while t >= period:
            t -= period
            period *= tmul
    return lr_min + 0.5 * (lr_max - lr_min) * (1.0 + math.cos(math.pi * t / period))


def set_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
