"""Adapter: rule nas_retrain → pipeline_lib.models.end_to_end.train_and_evaluate with the searched genotype."""

import pandas as pd

from pipeline_lib.models.end_to_end import NetworkConfig, train_and_evaluate
from pipeline_lib.runtime.devices import configure_threads
from pipeline_lib.results.metrics import skipped_test_images
from pipeline_lib.nas.genotypes import Genotype
from pipeline_lib.step import run_step


def main(step):
    method = step.wildcards.method
    network = NetworkConfig.from_params({**step.param("nas_retrain"), "seed": step.seed}, where="params.yaml: nas_retrain")
    genotype = Genotype.load(step.input.genotype)
    configure_threads(step.threads)
    step.log.info("retraining the %s cell (seed %d) from scratch: %s", method, step.seed, genotype.to_dict())
    train_and_evaluate(
        method, pd.read_parquet(step.input.split), network, step.model_outputs(), device=step.device(),
        genotype=genotype.to_dict(), split_source=step.input.split, test_skipped=skipped_test_images(step.input.ingest),
        log=step.log,
    )


run_step(snakemake, main)  # noqa: F821 (injected by Snakemake)
