"""Class activation maps: CAM (Zhou et al. 2016) and Grad-CAM (Selvaraju et al. 2017).

- ``class_activation_map``: for networks ending in global average pooling + a linear layer
  (ResNet, and ``cnn2``): ``CAM_c(i, j) = sum_k w[c, k] * A_k(i, j)`` where ``A`` are the
  feature maps entering the pooling and ``w`` the linear layer's weights. The maps are
  found with a forward pre-hook on the last ``AdaptiveAvgPool2d``; that the network really
  is GAP + linear is checked (the logits must equal ``mean(CAM) + bias``).
- ``grad_cam``: any layer named by its ``named_modules`` path (``features.layer4`` of a
  ResNet classifier, ``features.6`` = the last conv block's ReLU in ``cnn2``). A forward
  hook keeps the layer's output ``A``; autograd gives ``dy_c/dA``; the map is
  ``ReLU(sum_k alpha_k A_k)`` with ``alpha_k`` the spatial mean of the gradient.

Both return raw maps at the layer's resolution, [B, h, w]; ``upsample`` and ``normalize``
make them image-sized in [0, 1] for overlays.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..io.errors import PipelineError

LABEL_NAMES = {0: "good", 1: "bad"}


def find_module(model: nn.Module, name: str) -> nn.Module:
    """The sub-module at ``name`` (``named_modules`` path); PipelineError listing candidates."""
    modules = dict(model.named_modules())
    if name not in modules:
        convs = [n for n, m in modules.items() if isinstance(m, (nn.Conv2d, nn.ReLU, nn.Sequential)) and n][-6:]
        raise PipelineError(
            f"params.yaml: report.cam.gradcam_layers: the network has no layer {name!r} (e.g. {', '.join(convs)})"
        )
    return modules[name]


def _class_index(class_idx: int | Sequence[int] | torch.Tensor, batch: int) -> torch.Tensor:
    idx = torch.as_tensor(class_idx, dtype=torch.long).reshape(-1)
    if idx.numel() == 1:
        idx = idx.expand(batch)
    if idx.numel() != batch:
        raise ValueError(f"{idx.numel()} class indices for a batch of {batch}")
    return idx


def _linear_head(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The head as one affine map of the pooled features: (weight [C, K], bias [C]).

    A linear layer, or (the ResNet linear probe) an eval-mode BatchNorm1d then a linear
    layer: ``W (f - mu) / s + b`` is again affine in ``f``, so CAM is defined for it too.
    """
    head = getattr(model, "classifier", None)
    candidates = [m for m in (head.modules() if head is not None else model.modules()) if isinstance(m, nn.Linear)]
    if not candidates:
        raise PipelineError("CAM needs a network ending in a linear layer (model.classifier)")
    fc = candidates[-1]
    weight = fc.weight.detach().float()
    bias = fc.bias.detach().float() if fc.bias is not None else torch.zeros(weight.shape[0])
    norms = [m for m in head.modules() if isinstance(m, nn.BatchNorm1d)] if head is not None else []
    if norms:  # the check in class_activation_map catches any other head layout
        bn = norms[-1]  # eval mode: BN(f) = gamma (f - mean) / sqrt(var + eps) + beta
        scale = torch.rsqrt(bn.running_var.float() + bn.eps)
        offset = -bn.running_mean.float() * scale
        if bn.affine:
            gamma, beta = bn.weight.detach().float(), bn.bias.detach().float()
            scale, offset = scale * gamma, offset * gamma + beta
        bias = bias + weight @ offset
        weight = weight * scale
    return weight, bias


def last_gap(model: nn.Module) -> nn.Module:
    pools = [m for m in model.modules() if isinstance(m, nn.AdaptiveAvgPool2d)]
    if not pools:
        raise PipelineError("CAM needs a network ending in global average pooling + linear; use Grad-CAM for this one")
    size = pools[-1].output_size
    if size not in (1, (1, 1), [1, 1]):
        raise PipelineError(
            f"CAM needs a network ending in global average pooling + linear (its pooling outputs {size}); use Grad-CAM"
        )
    return pools[-1]


@torch.no_grad()
def class_activation_map(
    model: nn.Module, x: torch.Tensor, class_idx: int | Sequence[int] | torch.Tensor, *, check: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """(CAM [B, h, w] for the chosen class of each image, logits [B, C]). Model in eval mode."""
    model.eval()
    gap, (head_weight, head_bias) = last_gap(model), _linear_head(model)
    captured: dict[str, torch.Tensor] = {}

    def keep_input(module, inputs):
        captured["maps"] = inputs[0].detach()

    handle = gap.register_forward_pre_hook(keep_input)
    try:
        logits = model(x)
    finally:
        handle.remove()
    maps = captured["maps"].float()  # [B, K, h, w]
    idx = _class_index(class_idx, x.shape[0]).to(maps.device)
    weights = head_weight.to(maps.device)[idx]  # [B, K]
    if weights.shape[1] != maps.shape[1]:
        raise PipelineError(
            f"CAM: {maps.shape[1]} feature maps but the linear layer takes {weights.shape[1]} inputs: the network does "
            "not end in global average pooling + linear; use Grad-CAM"
        )
    cam = torch.einsum("bk,bkhw->bhw", weights, maps)
    if check:  # GAP + linear means: logit_c = mean(CAM_c) + b_c
        bias = head_bias.to(maps.device)[idx]
        expect = logits.float().gather(1, idx[:, None])[:, 0]
        if not torch.allclose(cam.mean(dim=(1, 2)) + bias, expect, rtol=1e-3, atol=1e-3):
            raise PipelineError("CAM: the network does not end in global average pooling + linear; use Grad-CAM")
    return cam, logits.detach()


def grad_cam(
    model: nn.Module, x: torch.Tensor, class_idx: int | Sequence[int] | torch.Tensor, layer: str | nn.Module
) -> tuple[torch.Tensor, torch.Tensor]:
    """(Grad-CAM [B, h, w] at ``layer`` for the chosen class of each image, logits [B, C])."""
    model.eval()
    module = find_module(model, layer) if isinstance(layer, str) else layer
    captured: dict[str, torch.Tensor] = {}

    def keep_output(mod, inputs, output):
        captured["maps"] = output

    handle = module.register_forward_hook(keep_output)
    try:
        with torch.enable_grad():
            # a frozen backbone has no grad path through its weights: ask for one via the input
            x = x.detach().clone().requires_grad_(True)
            logits = model(x)
            if "maps" not in captured:
                raise PipelineError(f"Grad-CAM: layer {layer!r} was not used in the forward pass")
            maps = captured["maps"]
            idx = _class_index(class_idx, x.shape[0]).to(logits.device)
            score = logits.gather(1, idx[:, None]).sum()  # images are independent in eval mode
            (grads,) = torch.autograd.grad(score, maps)
    finally:
        handle.remove()
    if maps.dim() != 4:
        raise PipelineError(f"Grad-CAM: layer {layer!r} outputs shape {tuple(maps.shape)}, expected [B, C, h, w]")
    alpha = grads.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((alpha * maps).sum(dim=1))
    return cam.detach().float(), logits.detach()


def compute_maps(
    model: nn.Module, x: torch.Tensor, class_idx, *, method: str, layer: str | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(raw map [B, h, w], logits [B, C]) of ``method`` (cam | gradcam) for the given class(es)."""
    if method == "cam":
        return class_activation_map(model, x, class_idx)
    if method == "gradcam":
        if not layer:
            raise PipelineError("Grad-CAM needs a layer (report.cam.gradcam_layers)")
        return grad_cam(model, x, class_idx, layer)
    raise ValueError(f"unknown method {method!r} (cam | gradcam)")


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[B, h, w] -> [B, H, W], bilinear."""
    return F.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]


def normalize(maps: torch.Tensor, eps: float = 1e-12, rtol: float = 1e-5) -> torch.Tensor:
    """Each map min-max scaled to [0, 1]; a flat map becomes all zeros.

    "Flat" is relative to the map's magnitude: an upsampled 1x1 map (a ResNet's layer4 on
    small images) varies only by float rounding, which must not be stretched into a pattern.
    """
    flat = maps.reshape(maps.shape[0], -1)
    lo = flat.min(dim=1).values[:, None, None]
    hi = flat.max(dim=1).values[:, None, None]
    span = hi - lo
    varies = span > rtol * torch.maximum(hi.abs(), lo.abs()) + eps
    out = (maps - lo) / span.clamp_min(eps)
    return torch.where(varies, out, torch.zeros_like(out))


def select_samples(split_frame: pd.DataFrame, per_group: int, seed: int) -> pd.DataFrame:
    """``per_group`` random images from each of train/good, train/bad, val/good, val/bad (seeded)."""
    missing = [c for c in ("id", "path", "label", "split") if c not in split_frame.columns]
    if missing:
        raise PipelineError(f"split table: column(s) {', '.join(missing)} missing; re-run the split stage")
    rng = np.random.default_rng(seed)
    parts = []
    for split in ("train", "val"):
        for label in (0, 1):
            group = split_frame[(split_frame["split"] == split) & (split_frame["label"] == label)]
            group = group.sort_values("id", kind="stable")
            if len(group) == 0:
                raise PipelineError(f"split table: no {split} images labelled {LABEL_NAMES[label]}; check the split")
            take = rng.choice(len(group), size=min(per_group, len(group)), replace=False)
            parts.append(group.iloc[np.sort(take)])
    return pd.concat(parts, ignore_index=True)


def load_images(paths: Sequence[str], image_size: int) -> torch.Tensor:
    """The eval transform's tensors (ImageNet-normalised) for the given images, [B, 3, S, S]."""
    from ..data.datasets import eval_transform, load_rgb

    transform = eval_transform(image_size)
    return torch.stack([transform(load_rgb(p)) for p in paths])


def to_display(x: torch.Tensor) -> np.ndarray:
    """ImageNet-normalised [B, 3, S, S] -> [B, S, S, 3] floats in [0, 1] for plotting."""
    from ..data.datasets import IMAGENET_MEAN, IMAGENET_STD

    mean = torch.tensor(IMAGENET_MEAN)[None, :, None, None]
    std = torch.tensor(IMAGENET_STD)[None, :, None, None]
    return (x.detach().cpu() * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def maps_for_samples(
    model: nn.Module, x: torch.Tensor, labels: Sequence[int], *, method: str, layer: str | None = None
) -> dict[str, np.ndarray]:
    """Maps for the correct and the wrong label of each image, image-sized in [0, 1].

    Returns ``correct``/``wrong`` [B, S, S], ``prob_bad`` [B] and ``map_size`` (h, w).
    """
    labels_t = torch.as_tensor(list(labels), dtype=torch.long)
    out: dict[str, np.ndarray] = {}
    for key, cls in (("correct", labels_t), ("wrong", 1 - labels_t)):
        raw, logits = compute_maps(model, x, cls, method=method, layer=layer)
        out[key] = normalize(upsample(raw, tuple(x.shape[-2:]))).numpy()
        out["map_size"] = np.asarray(raw.shape[-2:])
        out["prob_bad"] = torch.softmax(logits.float(), dim=1)[:, 1].numpy()
    return out
