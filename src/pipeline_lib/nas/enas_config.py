"""Every ENAS micro-search hyperparameter (``enas_search.settings`` in params.yaml)."""

from __future__ import annotations

from dataclasses import dataclass

from ..io.errors import PipelineError
from ..study.stage_config import StageConfig


@dataclass(frozen=True)
class EnasConfig(StageConfig):
    """Every ENAS hyperparameter; defaults follow the official micro search (CIFAR-10)."""

    # child search space / network
    num_nodes: int = 5  # B
    channels: int = 20  # ENAS child_out_filters (doubled at each reduction)
    num_layers: int = 6  # normal cells (ENAS child_num_layers)
    num_reductions: int = 2
    stem_stride: int = 1  # 2 halves large inputs once in the stem (not in ENAS)
    dropout: float = 0.1  # 1 - ENAS child_keep_prob (0.9)
    # child training
    optimizer: str = "sgd"  # sgd (ENAS: Nesterov momentum) | adam (lr_max/lr_min then Adam's rates)
    balance_classes: bool = False  # every minibatch drawn by a class-balanced sampler (every image used)
    warmup_epochs: int = 0  # child epochs before the controller's first step (its initial policy samples)
    batch_size: int = 160
    reward_batch_size: int | None = None  # None: batch_size (as in ENAS)
    max_child_steps: int | None = None  # minibatches per child epoch, over repeated passes if needed (None: one pass)
    lr_max: float = 0.05
    lr_min: float = 0.0005
    lr_t0: int | None = None  # cosine restarts every lr_t0 epochs, x lr_tmul (ENAS: 10, 2); None: one cosine
    lr_tmul: int = 2
    momentum: float = 0.9
    weight_decay: float = 2e-4  # = ENAS l2_reg 1e-4 (TF adds l2 * sum w^2: gradient 2 * l2 * w)
    grad_clip: float | None = 5.0
    # controller
    controller_hidden: int = 64
    tanh_constant: float | None = 1.1
    op_tanh_reduce: float = 2.5
    temperature: float | None = None
    controller_lr: float = 3.5e-3
    baseline_decay: float = 0.99
    baseline_init: float = 0.0
    entropy_weight: float = 1e-4
    controller_steps: int = 30  # ENAS controller_train_steps
    controller_samples: int = 10  # ENAS controller_num_aggregate
    # final choice
    n_candidates: int = 10
    candidate_batches: int = 2
    # data loading
    num_workers: int = 0
    channels_last: bool = True  # ~2x faster on CPU (measured: shared child fwd+bwd 0.67 -> 0.32 s)
    log_archs: int = 10  # sampled architectures kept per epoch in the history

    def __post_init__(self) -> None:
        positive = ["num_nodes", "channels", "batch_size", "controller_hidden", "controller_samples",
                    "n_candidates", "candidate_batches", "lr_tmul"]
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise PipelineError(f"enas.{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("num_layers", "num_reductions", "controller_steps", "num_workers", "log_archs"):
            if int(getattr(self, name)) < 0:
                raise PipelineError(f"enas.{name}: must be >= 0, got {getattr(self, name)}")
        if self.num_reductions and self.channels % 2:
            raise PipelineError(f"enas.channels: must be even with reduction cells, got {self.channels}")
        if self.optimizer not in ("sgd", "adam"):
            raise PipelineError(f"enas.optimizer: must be sgd or adam, got {self.optimizer!r}")
        if int(self.warmup_epochs) < 0:
            raise PipelineError(f"enas.warmup_epochs: must be >= 0, got {self.warmup_epochs}")
        if self.stem_stride not in (1, 2, 4):
            raise PipelineError(f"enas.stem_stride: must be 1, 2 or 4, got {self.stem_stride}")
        if not 0.0 <= self.dropout < 1.0:
            raise PipelineError(f"enas.dropout: must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.baseline_decay < 1.0:
            raise PipelineError(f"enas.baseline_decay: must be in [0, 1), got {self.baseline_decay}")
        if self.lr_max <= 0 or self.lr_min < 0 or self.lr_min > self.lr_max:
            raise PipelineError(
                f"enas.lr_max/lr_min: need 0 <= lr_min <= lr_max and lr_max > 0, got {self.lr_min}, {self.lr_max}"
            )
        if self.controller_lr <= 0:
            raise PipelineError(f"enas.controller_lr: must be > 0, got {self.controller_lr}")
        if self.temperature is not None and self.temperature <= 0:
            raise PipelineError(f"enas.temperature: must be > 0 or null, got {self.temperature}")
        if self.op_tanh_reduce <= 0:
            raise PipelineError(f"enas.op_tanh_reduce: must be > 0, got {self.op_tanh_reduce}")
        for name in ("reward_batch_size", "max_child_steps", "lr_t0"):
            v = getattr(self, name)
            if v is not None and int(v) < 1:
                raise PipelineError(f"enas.{name}: must be >= 1 or null, got {v}")

    WHERE = "enas"

    @property
    def reward_bs(self) -> int:
        return self.reward_batch_size or self.batch_size
