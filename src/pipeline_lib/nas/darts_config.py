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

    ``image_size``, ``max_images`` and ``balance_classes`` choose the data (the adapter reads
    them); ``channels``, ``layers``, ``nodes``, ``ops`` build the ``SearchNetwork``; the rest
    drive ``darts_search.search``. The resume fingerprint takes the whole object.
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
    ops: tuple[str, ...] = DARTS_PRIMITIVES
    # memory for speed: the last N cells keep their intermediates instead of recomputing them
    # in backward (0: every cell recomputes; >= layers: none does). Same results either way.
    kept_cells: int = 0
    # loop
    order: str = "first"
    epochs: int = 50
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
