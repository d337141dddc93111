"""Adapter: rule nas_retrain → pipeline_lib.deep.train_and_evaluate with the searched genotype."""

import pandas as pd

from pipeline_lib.deep import train_and_evaluate
from pipeline_lib.devices import configure_threads
from pipeline_lib.metrics import skipped_test_images
from pipeline_lib.nas.genotypes import Genotype
from pipeline_lib.scripting import run_step
from pipeline_lib.train_config import TrainConfig


def main(step):
    p = step.param("nas_retrain")
    method = step.wildcards.method
    genotype = Genotype.load(step.input.genotype)
    config = TrainConfig.from_mapping(dict(p["loop"], seed=p["seed"]), source="params.yaml: nas_retrain.loop")
    configure_threads(step.threads)
    step.log.info("retraining the %s cell from scratch: %s", method, genotype.to_dict())
    train_and_evaluate(
        method,
        pd.read_parquet(step.input.split),
        config,
        image_size=p["image_size"],
        **step.model_outputs(),
        device=step.device(),
        model_kwargs=dict(p["model"], genotype=genotype.to_dict()),
        split_source=step.input.split,
        test_skipped=skipped_test_images(step.input.ingest),
        log=step.log,
    )


run_step(snakemake, main)  # noqa: F821 (injected by Snakemake)
