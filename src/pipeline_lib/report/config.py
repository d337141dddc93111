"""The ``report`` section of params.yaml as types: ``ReportConfig`` and its three subsections.

Each figure rule gets only the keys it reads (``report.seed``, ``report.tsne``, ``report.cam``,
``report.localisation``), so its adapter builds the subsection's type alone
(``TsneConfig.from_params(step.param("report.tsne"))``); the report rule builds the whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..io.errors import PipelineError
from ..study.stage_config import StageConfig, check_types


def _at_least(config: StageConfig, lo: float, *names: str) -> None:
    for name in names:
        if getattr(config, name) < lo:
            raise PipelineError(f"{config.WHERE}.{name}: {getattr(config, name)!r} is invalid; expected >= {lo}")


@dataclass(frozen=True)
class TsneConfig(StageConfig):
    """``report.tsne``: scikit-learn t-SNE of the validation features (``pipeline_lib.report.tsne``)."""

    WHERE = "report.tsne"

    perplexity: float = 30.0
    max_iter: int = 1000
    pca_components: int | None = 50  # None: t-SNE on the raw features

    def __post_init__(self) -> None:
        check_types(self, self.WHERE)
        if not self.perplexity > 0:
            raise PipelineError(f"{self.WHERE}.perplexity: {self.perplexity!r} is invalid; expected a number > 0")
        _at_least(self, 250, "max_iter")  # scikit-learn's floor
        if self.pca_components is not None:
            _at_least(self, 2, "pca_components")


@dataclass(frozen=True)
class CamConfig(StageConfig):
    """``report.cam``: which networks get CAM / Grad-CAM (at which layer), on how many images."""

    WHERE = "report.cam"

    samples_per_group: int = 2
    cam_models: tuple[str, ...] = ()
    gradcam_layers: dict[str, str] = field(default_factory=dict)  # network -> its named_modules path
    min_cells: int = 8
    overlay_alpha: float = 0.45

    def __post_init__(self) -> None:
        if isinstance(self.cam_models, list):  # YAML gives a list; a tuple keeps the config hashable
            object.__setattr__(self, "cam_models", tuple(self.cam_models))
        check_types(self, self.WHERE)
        _at_least(self, 1, "samples_per_group", "min_cells")
        for model, layer in self.gradcam_layers.items():
            if not isinstance(layer, str) or not layer:
                raise PipelineError(f"{self.WHERE}.gradcam_layers.{model}: {layer!r} is invalid; expected a layer path")
        if not 0 <= self.overlay_alpha <= 1:
            raise PipelineError(f"{self.WHERE}.overlay_alpha: {self.overlay_alpha!r} is invalid; expected 0..1")


@dataclass(frozen=True)
class LocalisationConfig(StageConfig):
    """``report.localisation``: scoring the maps against the generator's defect boxes."""

    WHERE = "report.localisation"

    tolerance_px: int = 3
    bootstrap_resamples: int = 2000
    batch_size: int = 32

    def __post_init__(self) -> None:
        check_types(self, self.WHERE)
        _at_least(self, 0, "tolerance_px")
        _at_least(self, 1, "bootstrap_resamples", "batch_size")


@dataclass(frozen=True)
class ReportConfig(StageConfig):
    """The whole ``report`` section: the figures' seed and resolution and the three subsections."""

    WHERE = "report"

    seed: int = 0
    dpi: int = 100
    tsne: TsneConfig = field(default_factory=TsneConfig)
    cam: CamConfig = field(default_factory=CamConfig)
    localisation: LocalisationConfig = field(default_factory=LocalisationConfig)

    def __post_init__(self) -> None:
        check_types(self, self.WHERE)
        _at_least(self, 0, "seed")
        _at_least(self, 1, "dpi")
