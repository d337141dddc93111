"""Every DARTS search setting (the ``darts_search`` section of params.yaml), as one type."""

from __future__ import annotations

from dataclasses import dataclass

from ..io.errors import PipelineError
from ..study.stage_config import StageConfig
from .architect import ORDERS
from .genotypes import DARTS_PRIMITIVES


@dataclass(frozen=True)
class DartsConfig(StageConfig):
    """The search's data, network, loop and both optimizers; defaults follow DARTS (CIFAR-10).

    ``image_size`` and ``max_images`` choose the data (the adapter reads them);
    ``balance_classes`` draws every minibatch of both halves with a balanced sampler (every
    image is used, no class is discarded); ``channels``, ``layers``, ``nodes``, ``ops``,
    ``stem_stride`` build the ``SearchNetwork``; the rest drive ``darts_search.search``, where
    the first ``warmup_epochs`` train the weights only (α frozen, as PC-DARTS and P-DARTS).
    The resume fingerprint takes the whole object.
    """

    WHERE = "darts_search"

    # data
    image_size: int = 32
    seed: int = 0  # the study seed: the darts_search rule gives its {seed} wildcard (params.yaml study.seeds)
    max_images: int | None = None
    balance_classes: bool = False
    # network (the search space)
    channels: int = 16
    layers: int = 8
    nodes: int = 4
    stem_stride: int = 1  # 2 halves the input once in the stem (DARTS's CIFAR stem: 1)
    ops: tuple[str, ...] = DARTS_PRIMITIVES
    # memory for speed: the last N cells keep their intermediates instead of recomputing them
    # in backward (0: every cell recomputes; >= layers: none does). Same results either way.
    kept_cells: int = 0
    # loop
    order: str = "first"
    epochs: int = 50
    warmup_epochs: int = 0  # epochs of weight steps only before α moves (PC-DARTS: 15 of 50)
    batch_size: int = 64
    max_steps_per_epoch: int | None = None
    num_workers: int = 0  # the halves are decoded tensors in memory: no worker processes by default
    # weights: SGD with momentum, cosine learning rate per epoch, gradient clipping
    w_lr: float = 0.025
    w_lr_min: float = 0.001
    w_momentum: float = 0.9
    w_weight_decay: float = 3e-4
    grad_clip: float = 5.0
    # α: Adam; xi None = the current weight learning rate (second order)
    alpha_lr: float = 3e-4
    alpha_betas: tuple[float, float] = (0.5, 0.999)
    alpha_weight_decay: float = 1e-3
    xi: float | None = None

    def __post_init__(self) -> None:
        # YAML gives lists; tuples keep the frozen config hashable and its fingerprint stable
        object.__setattr__(self, "ops", tuple(self.ops))
        object.__setattr__(self, "alpha_betas", tuple(self.alpha_betas))
        if self.order not in ORDERS:
            raise PipelineError(f"darts_search.order: {self.order!r}, expected one of {ORDERS}")
        if int(self.kept_cells) < 0:
            raise PipelineError(f"darts_search.kept_cells: {self.kept_cells}, expected >= 0")
        if int(self.epochs) < 1:
            raise PipelineError(f"darts_search.epochs: {self.epochs}, expected >= 1")
        if not 0 <= int(self.warmup_epochs) < int(self.epochs):
            raise PipelineError(f"darts_search.warmup_epochs: {self.warmup_epochs}, expected 0 <= warmup_epochs < epochs "
                                f"({self.epochs}): α must get at least one epoch")
        if int(self.stem_stride) not in (1, 2, 4):
            raise PipelineError(f"darts_search.stem_stride: {self.stem_stride}, expected 1, 2 or 4")
