"""The deep baselines: a 2-layer CNN from scratch and two ResNet transfer variants.

- ``cnn2``: (conv-BN-ReLU-maxpool) x 2, global pooling (average or max), linear classifier.
- ``resnet_ll``: a ResNet whose backbone is frozen (``requires_grad=False`` and kept in
  eval mode, so BN running statistics do not move); only the new last layer trains.
- ``resnet_fbp``: full back-propagation fine-tuning; ``param_groups`` gives the head and
  the backbone their own learning rates.
- ``head_norm`` (ResNets): a BatchNorm1d without affine parameters before the last layer,
  the usual linear probe (as in MAE's linear probing): it standardises the frozen features,
  as the StandardScaler does for the classical classifiers, and adds no trainable weight.

Every model has ``.features`` (images -> penultimate vector) and ``.classifier``
(vector -> logits); ``penultimate(model)`` returns the former, so fine-tuned features can
be extracted with ``pipeline_lib.features.extract.extract_features``. The caller resolves weights
(``none`` = random init, ``imagenet`` = a state dict) and passes ``backbone_state``.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..io.errors import PipelineError
from ..study.registry import spec

RESNET_ARCHS = ("resnet18", "resnet34", "resnet50")


class CNN2(nn.Module):
    """Two conv blocks (conv-BN-ReLU-maxpool), global pooling, linear head.

    ``pool="max"`` answers "is there a defect anywhere": a small local response survives
    global max pooling, while global averaging dilutes it by the image area.
    """

    def __init__(
        self,
        num_classes: int = 2,
        *,
        channels: Sequence[int] = (32, 64),
        kernel_size: int = 3,
        dropout: float = 0.0,
        pool: str = "avg",
        in_channels: int = 3,
    ):
        super().__init__()
        if pool not in ("avg", "max"):
            raise PipelineError(f"params.yaml: cnn2.pool: expected avg or max, got {pool!r}")
        if len(channels) != 2:
            raise PipelineError(f"params.yaml: cnn2.channels: expected two channel counts, got {list(channels)}")
        layers: list[nn.Module] = []
        previous = in_channels
        for width in channels:
            layers += [
                nn.Conv2d(previous, int(width), kernel_size, padding=kernel_size // 2, bias=False),
                nn.BatchNorm2d(int(width)),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            previous = int(width)
        layers += [nn.AdaptiveAvgPool2d(1) if pool == "avg" else nn.AdaptiveMaxPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.feature_dim = previous
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(previous, num_classes)) if dropout > 0 else nn.Linear(previous, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class ResNetClassifier(nn.Module):
    """A torchvision ResNet trunk (``fc`` removed) as ``.features`` plus a new linear head.

    With ``freeze_backbone`` the trunk's parameters do not train and ``train()`` keeps the
    trunk in eval mode, so its BatchNorm running statistics stay those it was given.
    """

    def __init__(
        self, backbone: nn.Module, feature_dim: int, num_classes: int, *, freeze_backbone: bool, head_norm: bool = False
    ):
        super().__init__()
        self.features = backbone
        self.feature_dim = feature_dim
        linear = nn.Linear(feature_dim, num_classes)
        self.classifier = nn.Sequential(nn.BatchNorm1d(feature_dim, affine=False), linear) if head_norm else linear
        self.freeze_backbone = freeze_backbone
        if freeze_backbone:
            for p in self.features.parameters():
                p.requires_grad_(False)
            self.features.eval()

    def train(self, mode: bool = True) -> "ResNetClassifier":
        super().train(mode)
        if self.freeze_backbone:
            self.features.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _resnet_trunk(arch: str, backbone_state: Mapping[str, torch.Tensor] | None) -> tuple[nn.Module, int]:
    import torchvision

    if arch not in RESNET_ARCHS:
        raise PipelineError(f"params.yaml: backbone arch {arch!r} is not supported (use one of {', '.join(RESNET_ARCHS)})")
    net = getattr(torchvision.models, arch)(weights=None)
    if backbone_state is not None:
        state = {k: v for k, v in backbone_state.items() if not k.startswith("fc.")}
        try:
            missing, unexpected = net.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # shape mismatches
            raise PipelineError(
                f"backbone weights do not fit {arch} ({str(exc).splitlines()[0]}); check features.arch against the weights file"
            ) from exc
        missing = [k for k in missing if not k.startswith("fc.")]
        if missing or unexpected:
            raise PipelineError(
                f"backbone weights do not fit {arch} (missing {missing[:3]}, unexpected {list(unexpected)[:3]}); "
                "check features.arch against the weights file"
            )
    feature_dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, feature_dim


def build_model(
    name: str,
    *,
    num_classes: int = 2,
    backbone_arch: str = "resnet18",
    backbone_state: Mapping[str, torch.Tensor] | None = None,
    image_size: int,
    **kwargs: Any,
) -> nn.Module:
    """A network of the registry (``registry.REGISTRY``). Seed torch first: random init follows the global RNG.

    ``kwargs`` go to the model (``cnn2``: ``channels``, ``kernel_size``, ``dropout``, ``pool``;
    ResNets: ``head_norm``;
    ``darts``/``enas``: ``genotype`` (dict), ``channels``, ``layers``, ``auxiliary``, ``drop_path``).
    ``backbone_state`` (ResNets only) is an ImageNet state dict, or None for random init.
    """
    if spec(name).builder is None:
        raise PipelineError(f"unknown deep model {name!r}: {spec(name).family}, not a network")
    if int(image_size) < 8:
        raise PipelineError(f"params.yaml: image_size {image_size} is too small for {name} (need >= 8 px)")
    if name == "cnn2":
        if backbone_state is not None:
            raise PipelineError("cnn2 trains from scratch; it takes no backbone weights")
        return CNN2(num_classes, **kwargs)
    if spec(name).family == "nas":  # the searched cell, retrained from scratch (kwargs: genotype, channels, ...)
        from ..nas.network import build_network

        return build_network(num_classes=num_classes, **kwargs)
    head_norm = kwargs.pop("head_norm", False)
    if kwargs:
        raise PipelineError(f"params.yaml: train.{name}.model: unexpected option(s) {sorted(kwargs)} (allowed: head_norm)")
    if not isinstance(head_norm, bool):
        raise PipelineError(f"params.yaml: train.{name}.model.head_norm: expected true or false, got {head_norm!r}")
    trunk, dim = _resnet_trunk(backbone_arch, backbone_state)
    return ResNetClassifier(trunk, dim, num_classes, freeze_backbone=(name == "resnet_ll"), head_norm=head_norm)


def param_groups(model: nn.Module, name: str, lr: float, backbone_lr: float | None = None) -> list[dict]:
    """Optimizer parameter groups; the head is always group 0 (its LR is the one logged).

    ``resnet_fbp``: head at ``lr``, backbone at ``backbone_lr`` (default ``lr``).
    ``resnet_ll``: the head only (the backbone is frozen). ``cnn2``: everything at ``lr``.
    """
    if name == "resnet_fbp":
        return [
            {"params": [p for p in model.classifier.parameters() if p.requires_grad], "lr": float(lr), "name": "head"},
            {
                "params": [p for p in model.features.parameters() if p.requires_grad],
                "lr": float(lr if backbone_lr is None else backbone_lr),
                "name": "backbone",
            },
        ]
    if name == "resnet_ll":
        return [{"params": [p for p in model.classifier.parameters() if p.requires_grad], "lr": float(lr), "name": "head"}]
    return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": float(lr), "name": "all"}]


def count_parameters(model: nn.Module) -> dict[str, int]:
    """``{"trainable": n, "total": n}`` parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": int(trainable), "total": int(total)}


def penultimate(model: nn.Module) -> nn.Module:
    """The module mapping images to the penultimate (pre-classifier) feature vector."""
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Module):
        raise TypeError(f"{type(model).__name__} has no .features module")
    return features
