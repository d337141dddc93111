"""Adapter: rule train → pipeline_lib.models.end_to_end.train_and_evaluate."""

import pandas as pd

from pipeline_lib.models.end_to_end import BackboneConfig, NetworkConfig, train_and_evaluate
from pipeline_lib.runtime.devices import configure_threads
from pipeline_lib.results.metrics import skipped_test_images
from pipeline_lib.study.registry import spec
from pipeline_lib.step import run_step


def main(step):
    model = step.wildcards.model
    network = NetworkConfig.from_params(
        {"image_size": step.param("train.image_size"), "seed": step.seed, **step.param(f"train.{model}")},
        where=f"params.yaml: train.{model}",
    )
    backbone = None
    if spec(model).uses_backbone:
        backbone = BackboneConfig.from_params({k: step.param(f"features.{k}") for k in ("arch", "weights", "weights_file", "seed")})
    configure_threads(step.threads)
    train_and_evaluate(
        model, pd.read_parquet(step.input.split), network, step.model_outputs(), device=step.device(), backbone=backbone,
        split_source=step.input.split, test_skipped=skipped_test_images(step.input.ingest), log=step.log,
    )


run_step(snakemake, main)  # noqa: F821 (injected by Snakemake)
