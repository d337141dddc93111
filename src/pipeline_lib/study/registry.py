"""The study's models, named once: family, display name, params section, builder, features.

Read by the rules (``common.smk``: the wildcard values and the params each training job takes),
the adapters, the results table (row labels and order) and the report. Torch-free, because the
Snakefile imports it at every start: builders are named as ``"module:function"`` and imported
only when a network is built.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from ..io.errors import PipelineError

FAMILIES = ("classical", "cnn", "transfer", "nas")


@dataclass(frozen=True)
class ModelSpec:
    """One model of the study.

    ``params``: the ``params.yaml`` section that configures it; ``uses_backbone``: it also reads
    ``features.arch/weights/weights_file/seed`` (the ResNet weights behind the features);
    ``builder``: ``"module:function"`` building the network (deep models); ``features``:
    ``"module:function"`` giving the penultimate-feature extractor of a trained network.
    """

    name: str
    family: str
    display_name: str
    params: str
    uses_backbone: bool = False
    builder: str | None = None
    features: str | None = None

    def build(self, **kwargs: Any):
        if self.builder is None:
            raise PipelineError(f"model {self.name!r} ({self.family}) is not a network")
        return resolve(self.builder)(self.name, **kwargs)


CLASSIFIERS = ("lda", "rf", "lr", "svm")
FEATURE_SETS = ("pretrained", "finetuned")
DEEP_MODELS = ("resnet_ll", "cnn2", "resnet_fbp")  # the slide's row order
NAS_METHODS = ("darts", "enas", "random")  # random: a cell drawn uniformly from the DARTS space (nas.random_cell)
SEARCH_METHODS = ("darts", "enas")  # the methods with a search rule of their own

_CLASSICAL_NAMES = {"lda": "LDA", "rf": "RF", "lr": "LR", "svm": "SVM"}
_BUILD = "pipeline_lib.models.networks:build_model"
_FEATURES = "pipeline_lib.models.networks:penultimate"

REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        *(ModelSpec(f"{clf}_{fs}", "classical", _CLASSICAL_NAMES[clf], f"classical.{clf}")
          for fs in FEATURE_SETS for clf in CLASSIFIERS),
        ModelSpec("resnet_ll", "transfer", "ResNet LL", "train.resnet_ll", True, _BUILD, _FEATURES),
        ModelSpec("cnn2", "cnn", "2-layer CNN", "train.cnn2", False, _BUILD, _FEATURES),
        ModelSpec("resnet_fbp", "transfer", "ResNet FBP", "train.resnet_fbp", True, _BUILD, _FEATURES),
        ModelSpec("darts", "nas", "DARTS", "nas_retrain", False, _BUILD, _FEATURES),
        ModelSpec("enas", "nas", "ENAS", "nas_retrain", False, _BUILD, _FEATURES),
        ModelSpec("random", "nas", "Random cell", "nas_retrain", False, _BUILD, _FEATURES),
    )
}


def spec(name: str) -> ModelSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise PipelineError(f"unknown model {name!r} (known: {', '.join(REGISTRY)})") from None


def classifier_name(clf: str) -> str:
    """The table's row label of a classical classifier (``lda`` → ``LDA``)."""
    return _CLASSICAL_NAMES[clf]


def table_models() -> list[str]:
    """Every model of the results table, in the slide's order."""
    return list(REGISTRY)


def resolve(reference: str) -> Callable:
    """``"package.module:function"`` → the function (imported now, not when the registry loads)."""
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)
