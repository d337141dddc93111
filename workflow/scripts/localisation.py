"""Adapter: rule localisation → pipeline_lib.report.explain (one network's maps scored on the defect boxes)."""

import pandas as pd

from pipeline_lib.io.atomic import write_csv, write_json
from pipeline_lib.training.checkpoint import load_weights
from pipeline_lib.models.end_to_end import load_trained
from pipeline_lib.runtime.devices import configure_threads
from pipeline_lib.study.registry import spec
from pipeline_lib.report.config import LocalisationConfig
from pipeline_lib.report.explain import called_bad, densify, explanation_plan, score_images
from pipeline_lib.report.localisation import IMAGE_COLUMNS, read_boxes
from pipeline_lib.step import run_step


def main(step):
    configure_threads(step.threads)
    method, model_name = step.wildcards.method, step.wildcards.model
    loc, seed = LocalisationConfig.from_params(step.param("report.localisation")), step.param("report.seed")
    layer = step.param(f"report.cam.gradcam_layers.{model_name}") if method == "gradcam" else None
    size = int(load_weights(step.input.model)[1]["image_size"])
    trained = load_trained(step.input.model)
    model, n_dense, (h, w) = explanation_plan(trained, method=method, layer=layer, size=size,
                                              min_cells=step.param("report.cam.min_cells"))
    meta = dict(model=model_name, display_name=spec(model_name).display_name, method=method,
                layer=layer or "CAM", input_px=size, dense_stages=n_dense, map_h=h, map_w=w,
                tolerance_px=loc.tolerance_px, untrained_seed=seed)
    truth = read_boxes(step.input.root)
    split = pd.read_parquet(step.input.split)
    images = split[split["split"].isin(["val", "test"]) & split["id"].astype(str).isin(list(truth.boxes))]
    images = images.assign(id=images["id"].astype(str)).sort_values("id", kind="stable")
    meta.update(note=truth.note, n_images=int(len(images)))
    if truth.boxes and images.empty:
        meta["note"] = "no bad validation or test image has a defect box"
    frames = []
    if not images.empty:
        # The network's decisions on the good validation images, as trained and as evaluated for the maps
        # (the bad images' come with their maps).
        good = split[(split["split"] == "val") & (split["label"] == 0)].sort_values("id", kind="stable")
        for key, net in (("good_called_bad", trained), ("map_good_called_bad", model)):
            if net is trained and key != "good_called_bad":  # not densified: the same decisions
                meta[key] = meta["good_called_bad"]
                continue
            p_good = called_bad(net, good["path"].tolist(), size=size, batch_size=loc.batch_size)
            meta[key] = float((p_good > 0.5).mean()) if len(p_good) else None
        meta["n_good"] = int(len(good))
        untrained = load_trained(step.input.model, untrained_seed=seed)
        networks = (("trained", trained, model), ("untrained", untrained, densify(untrained, n_dense)))
        for network, coarse, dense in networks:
            scores = score_images(dense, images, truth.boxes, method=method, layer=layer, size=size,
                                  tolerance=loc.tolerance_px, batch_size=loc.batch_size,
                                  desc=f"{method} {model_name} ({network})", decider=coarse)
            frames.append(scores.assign(network=network))
            step.log.info("%s network: pointing %.3f, energy %.3f over %d images", network,
                          scores["pointing"].mean(), scores["energy"].mean(), len(scores))
    else:
        step.log.info("no scores: %s", meta["note"])
    per_image = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(IMAGE_COLUMNS))
    write_csv(per_image[list(IMAGE_COLUMNS)], step.output.csv)
    write_json(step.output.meta, meta)


run_step(snakemake, main)  # noqa: F821 (injected by Snakemake)
