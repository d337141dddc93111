"""Adapter: rule report_cam → pipeline_lib.report.cam (CAM / Grad-CAM grid of one network)."""

import numpy as np
import pandas as pd

from pipeline_lib.training.checkpoint import load_weights
from pipeline_lib.models.end_to_end import load_trained
from pipeline_lib.runtime.devices import configure_threads
from pipeline_lib.report.config import CamConfig
from pipeline_lib.report.cam import load_images, maps_for_samples, select_samples, to_display
from pipeline_lib.report.explain import called_bad, explanation_plan, image_size_of
from pipeline_lib.report.figures import cam_figure
from pipeline_lib.report.provenance import publish_figure
from pipeline_lib.report.localisation import METHOD_NAMES, dense_description, read_boxes
from pipeline_lib.step import run_step


def shown_boxes(samples: pd.DataFrame, boxes, size: int) -> list:
    """Each sample's defect boxes scaled from its image's pixels to the ``size`` px shown."""
    out = []
    for image in samples.itertuples(index=False):
        found = boxes.get(str(image.id))
        if found is None:
            out.append(None)
            continue
        h, w = image_size_of(image.path)
        out.append(found * np.array([size / w, size / h, size / w, size / h]))
    return out


def main(step):
    configure_threads(step.threads)
    method, model_name = step.wildcards.method, step.wildcards.model
    cam = CamConfig.from_params(step.param("report.cam"))
    seed = step.param("report.seed")
    layer = cam.gradcam_layers.get(model_name) if method == "gradcam" else None
    size = int(load_weights(step.input.model)[1]["image_size"])
    trained = load_trained(step.input.model)
    model, n_dense, (h, w) = explanation_plan(trained, method=method, layer=layer, size=size, min_cells=cam.min_cells)
    samples = select_samples(pd.read_parquet(step.input.split), cam.samples_per_group, seed)
    x = load_images(samples["path"].tolist(), size)
    maps = maps_for_samples(model, x, samples["label"].astype(int).tolist(), method=method, layer=layer)
    maps["prob_bad"] = called_bad(trained, samples["path"].tolist(), size=size, batch_size=len(samples))
    truth = read_boxes(step.input.root)
    where = f"layer {layer}" if layer else "the maps entering global average pooling"
    title = f"{METHOD_NAMES[method]} of {model_name} ({where}, {h}×{w} maps at {size} px{', dense' if n_dense else ''})"
    fig = cam_figure(to_display(x), maps, samples, title=title, alpha=cam.overlay_alpha,
                     boxes=shown_boxes(samples, truth.boxes, size))
    how = (
        "CAM: the last feature maps weighted by the linear layer's weights for the class"
        if method == "cam"
        else "Grad-CAM: feature maps weighted by the spatial mean of the class score's gradient, then ReLU"
    )
    dense = dense_description(n_dense)
    fed = f"at its {size} px" + (
        f", {dense} (stride replaced by dilation: the same weights on a finer grid, so the map has at least "
        f"{cam.min_cells}×{cam.min_cells} cells; p(bad) above each image: the network as trained)" if dense else "")
    caption = (
        f"{how}, computed on the trained {model_name} at {where} {fed}: {h}×{w} cells, upsampled and scaled to "
        f"[0, 1] (red = high; white cross = the map's maximum). Rows: {cam.samples_per_group} random good and bad "
        f"images each from train and validation (seed {seed}); columns: the image, the map for its correct label, "
        "the map for the wrong label. "
    )
    caption += ("Dashed white boxes: the generator's defect boxes." if truth.boxes else f"No defect boxes: {truth.note}.")
    publish_figure(
        step,
        fig,
        title=f"{METHOD_NAMES[method]} on {model_name}: good and bad, train and validation, correct and wrong label",
        caption=caption,
        details={"samples": samples["id"].astype(str).tolist(), "map_size": [h, w], "layer": layer,
                 "image_size": size, "dense_stages": n_dense},
    )
    step.log.info("%s of %s on %d images (%dx%d maps at %d px)", METHOD_NAMES[method], model_name, len(samples), h, w, size)


run_step(snakemake, main)  # noqa: F821 (injected by Snakemake)
