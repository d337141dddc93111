"""Explanation maps at a resolution that can localise, and their scores on many images.

A ResNet trained at 64 px ends in a 2×2 ``layer4``: upsampled, four colour blocks that
cannot point at a defect a few pixels wide. Feeding it larger images gives more cells but
another classifier: at 128 px the study's ResNet FBP calls 97 % of the good validation
chips bad. So the network keeps its input size and is *evaluated densely* instead
(``densify``, the atrous trick of DeepLab): the stride 2 of its last stages is removed
and every later 3×3 convolution dilated to match, so the same weights are applied at
every position of a finer grid. Every 2^k-th cell of the dense map is exactly the
original map (``tests/report/test_localisation.py`` checks it); the cells between are the same
network's response half-way between them. Only the global pooling then averages over more
positions, so the decisions move a little; the rule reports them. ``explanation_plan``
densifies the fewest stages that give the map ``min_cells`` × ``min_cells`` cells.

``score_images`` runs one network over the bad images in batches (progress with rate and
ETA on stderr, i.e. in the rule's log) and scores each map (``report.localisation``).
"""

from __future__ import annotations

import copy
import sys
from typing import Mapping

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm

from ..io.errors import PipelineError
from .cam import compute_maps, find_module, last_gap, load_images, upsample
from .localisation import score_map

BAD = 1  # class index of "bad"


@torch.no_grad()
def map_cells(model: nn.Module, *, method: str, layer: str | None, size: int) -> tuple[int, int]:
    """(h, w) of the map for a ``size`` px input: the layer's output (Grad-CAM) or what
    enters the global average pooling (CAM), probed with one blank image."""
    model.eval()
    module = last_gap(model) if method == "cam" else find_module(model, layer or "")
    seen: dict[str, tuple[int, int]] = {}

    def keep(mod, inputs, output=None):
        t = inputs[0] if method == "cam" else output
        seen["hw"] = tuple(int(v) for v in t.shape[-2:])

    handle = module.register_forward_pre_hook(keep) if method == "cam" else module.register_forward_hook(keep)
    try:
        model(torch.zeros(1, 3, size, size))
    finally:
        handle.remove()
    return seen["hw"]


STAGES = ("layer2", "layer3", "layer4")  # the ResNet stages that start with a stride 2


def _dilate(conv: nn.Conv2d, dilation: int) -> None:
    """Stride 1; a 3×3 convolution dilated (padding kept equal to the dilation)."""
    conv.stride = (1, 1)
    if conv.kernel_size != (1, 1):
        conv.dilation, conv.padding = (dilation, dilation), (dilation, dilation)


def densify(model: nn.Module, n_stages: int) -> nn.Module:
    """A copy of a ResNet classifier whose last ``n_stages`` stages run at stride 1,
    later convolutions dilated so each sees what it saw before (output stride / 2^n)."""
    trunk = getattr(model, "features", None)
    if n_stages == 0:
        return model
    if not all(isinstance(getattr(trunk, s, None), nn.Sequential) for s in STAGES):
        raise PipelineError(f"{type(model).__name__}: only ResNet stages can be evaluated densely")
    dense = copy.deepcopy(model)
    dilation = 1
    for stage in STAGES[len(STAGES) - n_stages:]:
        before, dilation = dilation, dilation * 2
        for block in getattr(dense.features, stage):
            convs = [m for name, m in block.named_children() if name.startswith("conv")]
            strided = [k for k, c in enumerate(convs) if c.stride != (1, 1)]
            first_dense = strided[0] + 1 if strided else 0  # the stage's first block: its strided conv
            for k, conv in enumerate(convs):  # reads the previous grid, everything after it the new one
                _dilate(conv, dilation if k >= first_dense else before)
            if block.downsample is not None:
                block.downsample[0].stride = (1, 1)
    return dense.eval()


def explanation_plan(
    model: nn.Module, *, method: str, layer: str | None, size: int, min_cells: int
) -> tuple[nn.Module, int, tuple[int, int]]:
    """(model to explain, dense stages, map cells): the fewest densified stages whose map
    has at least ``min_cells`` cells a side at the network's own ``size`` px."""
    for n_stages in range(len(STAGES) + 1):
        candidate = densify(model, n_stages) if n_stages else model
        cells = map_cells(candidate, method=method, layer=layer, size=size)
        if min(cells) >= min_cells:
            return candidate, n_stages, cells
        if getattr(model, "features", None) is None or not hasattr(model.features, "layer4"):
            break  # not a ResNet: nothing to densify
    where = f"layer {layer}" if method == "gradcam" else "its CAM layer"
    raise PipelineError(
        f"params.yaml: report.cam.min_cells={min_cells}: {where} has only {cells[0]}×{cells[1]} cells at {size} px "
        "(even evaluated densely where it can be); lower min_cells or pick an earlier layer"
    )


def image_size_of(path: str) -> tuple[int, int]:
    """(height, width) of an image file, from its header."""
    with Image.open(path) as im:
        return im.height, im.width


@torch.no_grad()
def called_bad(model: nn.Module, paths: list[str], *, size: int, batch_size: int) -> np.ndarray:
    """p(bad) of each image fed at ``size`` px: does the network still decide there as trained?"""
    model.eval()
    out = [torch.softmax(model(load_images(paths[i:i + batch_size], size)).float(), dim=1)[:, BAD]
           for i in range(0, len(paths), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros(0)


def score_images(
    model: nn.Module,
    images: pd.DataFrame,
    boxes: Mapping[str, np.ndarray],
    *,
    method: str,
    layer: str | None,
    size: int,
    tolerance: int,
    batch_size: int,
    desc: str,
    decider: nn.Module | None = None,
) -> pd.DataFrame:
    """Per image (``images``: id, split, path): the bad-class map's scores, ``p_bad_map``
    (p(bad) of ``model``, which made the map) and ``p_bad`` (of ``decider``, the network as
    trained when ``model`` is its dense evaluation; default ``model``)."""
    rows = []
    bar = tqdm(total=len(images), desc=desc, unit="img", file=sys.stderr, mininterval=2.0, dynamic_ncols=True)
    with bar:
        for start in range(0, len(images), batch_size):
            part = images.iloc[start:start + batch_size]
            x = load_images(part["path"].tolist(), size)
            raw, logits = compute_maps(model, x, BAD, method=method, layer=layer)
            p_map = torch.softmax(logits.float(), dim=1)[:, BAD].numpy()
            if decider is None or decider is model:
                p_bad = p_map
            else:
                with torch.no_grad():
                    p_bad = torch.softmax(decider.eval()(x).float(), dim=1)[:, BAD].numpy()
            for i, image in enumerate(part.itertuples(index=False)):
                heat = upsample(raw[i:i + 1], image_size_of(image.path))[0].numpy()
                rows.append({"id": image.id, "split": image.split, **score_map(heat, boxes[image.id], tolerance),
                             "p_bad": float(p_bad[i]), "p_bad_map": float(p_map[i])})
            bar.update(len(part))
    return pd.DataFrame(rows)
