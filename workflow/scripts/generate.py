"""Adapter: rule generate → pipeline_lib.data.chipgen.generate_dataset."""

from pipeline_lib.data.chipgen import generate_dataset
from pipeline_lib.step import run_step


def main(step):
    p = step.param("generate")
    summary = generate_dataset(step.output[0], **p)
    step.log.info("built-in dataset: %s", summary)


run_step(snakemake, main)  # noqa: F821 (injected by Snakemake)
