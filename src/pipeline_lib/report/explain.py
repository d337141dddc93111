"""Explanation maps at a resolution that can localise, and their scores on many images.

A ResNet trained at 64 px ends in a 2×2 ``layer4``: upsampled, four colour blocks that
cannot point at a defect a few pixels wide. The maps are therefore computed on the same
network fed a larger copy of each image: ``explanation_size`` picks the smallest input
``trained_px × 2^k`` at which the map has at least ``min_cells`` × ``min_cells`` cells
(the network is convolutional with global pooling, so it runs at any size; the rule
reports how many of the images it still calls bad there). The map is then upsampled to
the image's own pixels, where the boxes are.

``score_images`` runs one network over the bad images in batches (progress with rate and
ETA on stderr, i.e. in the rule's log) and scores each map (``report.localisation``).
"""

from __future__ import annotations

import sys
from typing import Mapping

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm

from ..errors import PipelineError
from .cam import compute_maps, find_module, last_gap, load_images, upsample
from .localisation import score_map

BAD = 1  # class index of "bad"
MAX_SCALE = 8  # the largest input, as a multiple of the training size


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


def explanation_size(
    model: nn.Module, *, method: str, layer: str | None, trained_px: int, min_cells: int
) -> tuple[int, tuple[int, int]]:
    """The smallest ``trained_px × 2^k`` input (k >= 0) whose map has >= ``min_cells`` per side."""
    size = int(trained_px)
    while True:
        cells = map_cells(model, method=method, layer=layer, size=size)
        if min(cells) >= min_cells:
            return size, cells
        if size * 2 > MAX_SCALE * trained_px:
            where = f"layer {layer}" if method == "gradcam" else "its CAM layer"
            raise PipelineError(
                f"params.yaml: report.cam.min_cells={min_cells}: {where} has only {cells[0]}×{cells[1]} cells even at "
                f"{size} px ({MAX_SCALE}× the {trained_px} px it was trained at); lower min_cells or pick an earlier layer"
            )
        size *= 2


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
) -> pd.DataFrame:
    """Per image (``images``: id, split, path): the bad-class map's scores and p(bad)."""
    rows = []
    bar = tqdm(total=len(images), desc=desc, unit="img", file=sys.stderr, mininterval=2.0, dynamic_ncols=True)
    with bar:
        for start in range(0, len(images), batch_size):
            part = images.iloc[start:start + batch_size]
            x = load_images(part["path"].tolist(), size)
            raw, logits = compute_maps(model, x, BAD, method=method, layer=layer)
            p_bad = torch.softmax(logits.float(), dim=1)[:, BAD].numpy()
            for i, image in enumerate(part.itertuples(index=False)):
                heat = upsample(raw[i:i + 1], image_size_of(image.path))[0].numpy()
                rows.append({"id": image.id, "split": image.split, **score_map(heat, boxes[image.id], tolerance),
                             "p_bad": float(p_bad[i])})
            bar.update(len(part))
    return pd.DataFrame(rows)
