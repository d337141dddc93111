"""Adapter: rule report_cam → pipeline_lib.report.cam (CAM / Grad-CAM grid of one network)."""

import pandas as pd

from pipeline_lib.checkpoint import load_weights
from pipeline_lib.deep import load_trained
from pipeline_lib.devices import configure_threads
from pipeline_lib.report.cam import load_images, maps_for_samples, select_samples, to_display
from pipeline_lib.report.figures import cam_figure
from pipeline_lib.report.provenance import publish_figure
from pipeline_lib.scripting import run_step

METHODS = {"cam": "CAM", "gradcam": "Grad-CAM"}


def main(step):
    configure_threads(step.threads)
    method, model_name = step.wildcards.method, step.wildcards.model
    cam = step.param("report.cam")
    seed = step.param("report.seed")
    layer = cam["gradcam_layers"].get(model_name) if method == "gradcam" else None
    model = load_trained(step.input.model)
    _, meta = load_weights(step.input.model)
    image_size = int(meta["image_size"])
    samples = select_samples(pd.read_parquet(step.input.split), cam["samples_per_group"], seed)
    x = load_images(samples["path"].tolist(), image_size)
    maps = maps_for_samples(model, x, samples["label"].astype(int).tolist(), method=method, layer=layer)
    h, w = (int(v) for v in maps["map_size"])
    where = f"layer {layer}" if layer else "the maps entering global average pooling"
    title = f"{METHODS[method]} of {model_name} ({where}, {h}×{w} maps at {image_size} px)"
    fig = cam_figure(to_display(x), maps, samples, title=title, alpha=cam["overlay_alpha"])
    how = (
        "CAM: the last feature maps weighted by the linear layer's weights for the class"
        if method == "cam"
        else "Grad-CAM: feature maps weighted by the spatial mean of the class score's gradient, then ReLU"
    )
    caption = (
        f"{how}, computed on the trained {model_name} at {where} ({h}×{w}, upsampled to {image_size} px, "
        f"scaled to [0, 1]; red = high). Rows: {cam['samples_per_group']} random good and bad images each from train "
        f"and validation (seed {seed}); columns: the image, the map for its correct label, the map for the wrong label."
    )
    if h * w == 1:
        caption += f" At {image_size} px this layer is 1×1: the map has no spatial detail and is drawn blank (use larger images)."
    publish_figure(
        step,
        fig,
        title=f"{METHODS[method]} on {model_name}: good and bad, train and validation, correct and wrong label",
        caption=caption,
        details={"samples": samples["id"].astype(str).tolist(), "map_size": [h, w], "layer": layer, "image_size": image_size},
    )
    step.log.info("%s of %s on %d images (%dx%d maps)", METHODS[method], model_name, len(samples), h, w)


run_step(snakemake, main)  # noqa: F821 (injected by Snakemake)
