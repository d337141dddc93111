"""Hyper-parameters of the one training loop: ``TrainConfig``, its optimizer and LR schedule.

A ``params.yaml`` section (``train.<model>.loop``, ``nas_retrain.loop``) maps onto
``TrainConfig`` one to one; ``from_params`` (``StageConfig``) names a wrong or missing key.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import torch

from ..io.errors import PipelineError
from ..study.stage_config import StageConfig, is_int as _is_int, is_number as _is_number

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "step", "constant")
CLASS_WEIGHTS = ("none", "balanced")
AUGMENT_KEYS = {"hflip": bool, "vflip": bool, "rotation_deg": float, "crop_scale": float, "cutout": int}


@dataclass
class TrainConfig(StageConfig):
    """Hyper-parameters of one training run (a params.yaml section maps onto it one to one).

    ``backbone_lr`` is the backbone group's LR for fine-tuning (None = ``lr``);
    ``patience`` 0 disables early stopping; ``grad_clip`` None/0 disables clipping;
    ``schedule`` is stepped once per epoch (cosine anneals to ``min_lr`` over ``epochs``);
    ``augment`` keys: hflip, vflip, rotation_deg, crop_scale, cutout (px; 0 = off);
    ``amp`` allows mixed precision on CUDA (never used on CPU);
    ``channels_last``: the memory format of weights and batches; None = channels_last on
    CUDA only, true = on the CPU too (faster for the small-channel networks, see
    ``runtime.devices.precision``);
    ``class_weight: balanced`` weighs the training loss by n / (classes * n_class), so a
    mostly-good training set does not teach "always good" (the validation split is balanced).
    """

    epochs: int
    batch_size: int
    lr: float
    backbone_lr: float | None = None
    optimizer: str = "sgd"
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: str = "cosine"
    step_size: int = 10
    gamma: float = 0.1
    min_lr: float = 0.0
    patience: int = 0
    grad_clip: float | None = None
    seed: int = 0
    num_workers: int | None = None  # None: devices.loader_workers (the job's threads on CUDA, 0 on CPU)
    aux_weight: float = 0.0
    augment: dict = field(default_factory=dict)
    eval_batch_size: int | None = None
    amp: bool = True
    channels_last: bool | None = None
    class_weight: str = "none"

    WHERE = "params.yaml: train"

    def __post_init__(self) -> None:
        if self.augment is None:  # `augment:` left empty in params.yaml
            self.augment = {}

    def check(self, where: str) -> None:
        self.validate(source=where)

    def validate(self, *, source: str = "params.yaml: train") -> "TrainConfig":
        def bad(key: str, expected: str) -> PipelineError:
            return PipelineError(f"{source}.{key}: {getattr(self, key)!r} is invalid; expected {expected}")

        for key in ("epochs", "batch_size"):
            if not _is_int(getattr(self, key)) or getattr(self, key) < 1:
                raise bad(key, "an integer >= 1")
        for key in ("lr",):
            if not _is_number(self.lr) or not self.lr > 0:
                raise bad(key, "a number > 0")
        if self.backbone_lr is not None and (not _is_number(self.backbone_lr) or self.backbone_lr < 0):
            raise bad("backbone_lr", "null or a number >= 0")
        if self.optimizer not in OPTIMIZERS:
            raise bad("optimizer", " | ".join(OPTIMIZERS))
        if self.schedule not in SCHEDULES:
            raise bad("schedule", " | ".join(SCHEDULES))
        if self.class_weight not in CLASS_WEIGHTS:
            raise bad("class_weight", " | ".join(CLASS_WEIGHTS))
        for key in ("momentum", "weight_decay", "min_lr", "aux_weight"):
            if not _is_number(getattr(self, key)) or getattr(self, key) < 0:
                raise bad(key, "a number >= 0")
        for key in ("patience", "seed"):
            if not _is_int(getattr(self, key)) or getattr(self, key) < 0:
                raise bad(key, "an integer >= 0")
        if self.num_workers is not None and (not _is_int(self.num_workers) or self.num_workers < 0):
            raise bad("num_workers", "null (the job's threads on CUDA) or an integer >= 0")
        if not _is_int(self.step_size) or self.step_size < 1:
            raise bad("step_size", "an integer >= 1")
        if not _is_number(self.gamma) or not 0 < self.gamma <= 1:
            raise bad("gamma", "a number in (0, 1]")
        if self.grad_clip is not None and (not _is_number(self.grad_clip) or self.grad_clip < 0):
            raise bad("grad_clip", "null or a number >= 0")
        if self.eval_batch_size is not None and (not _is_int(self.eval_batch_size) or self.eval_batch_size < 1):
            raise bad("eval_batch_size", "null or an integer >= 1")
        if self.channels_last is not None and not isinstance(self.channels_last, bool):
            raise bad("channels_last", "null (on CUDA only), true or false")
        if not isinstance(self.augment, Mapping):
            raise bad("augment", "a mapping")
        for key, value in self.augment.items():
            if key not in AUGMENT_KEYS:
                raise PipelineError(f"{source}.augment.{key}: unknown key (allowed: {', '.join(sorted(AUGMENT_KEYS))})")
            if AUGMENT_KEYS[key] is bool and not isinstance(value, bool):
                raise PipelineError(f"{source}.augment.{key}: {value!r} is invalid; expected true or false")
            if AUGMENT_KEYS[key] is not bool and (not _is_number(value) or value < 0):
                raise PipelineError(f"{source}.augment.{key}: {value!r} is invalid; expected a number >= 0")
        crop = self.augment.get("crop_scale", 1.0)
        if not 0 < crop <= 1:
            raise PipelineError(f"{source}.augment.crop_scale: {crop!r} is invalid; expected a number in (0, 1]")
        return self



def make_optimizer(groups: Sequence[Mapping[str, Any]], config: TrainConfig) -> torch.optim.Optimizer:
    groups = [dict(g) for g in groups]
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            groups,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=bool(config.nesterov and config.momentum > 0),
            weight_decay=config.weight_decay,
        )
    cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return cls(groups, lr=config.lr, weight_decay=config.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig):
    """Stepped once per epoch; None for a constant LR."""
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs, eta_min=config.min_lr)
    if config.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma)
    return None
