"""Adapter: rule train → pipeline_lib.deep.train_and_evaluate."""

import pandas as pd

from pipeline_lib.deep import train_and_evaluate
from pipeline_lib.devices import configure_threads
from pipeline_lib.metrics import skipped_test_images
from pipeline_lib.scripting import run_step
from pipeline_lib.train_config import TrainConfig


def main(step):
    model = step.wildcards.model
    spec = step.param(f"train.{model}")
    loop = dict(spec["loop"], seed=step.param("train.seed"))
    config = TrainConfig.from_mapping(loop, source=f"params.yaml: train.{model}.loop")
    configure_threads(step.threads)
    backbone = {}
    if model.startswith("resnet"):
        backbone = dict(
            backbone_arch=step.param("features.arch"),
            backbone_weights=step.param("features.weights"),
            weights_file=step.param("features.weights_file"),
            backbone_seed=step.param("features.seed"),
        )
    train_and_evaluate(
        model,
        pd.read_parquet(step.input.split),
        config,
        image_size=step.param("train.image_size"),
        **step.model_outputs(),
        device=step.device(),
        model_kwargs=spec["model"],
        split_source=step.input.split,
        test_skipped=skipped_test_images(step.input.ingest),
        log=step.log,
        **backbone,
    )


run_step(snakemake, main)  # noqa: F821 (injected by Snakemake)
