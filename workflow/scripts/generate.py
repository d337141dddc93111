"""Adapter: rule generate → pipeline_lib.data.chipgen.generate_dataset."""

from pipeline_lib.data.chipgen import GenerateConfig, generate_dataset
from pipeline_lib.step import run_step


def main(step):
    summary = generate_dataset(step.output[0], GenerateConfig.from_params(step.param("generate")))
    step.log.info("built-in dataset: %s", summary)


run_step(snakemake, main)  # noqa: F821 (injected by Snakemake)
