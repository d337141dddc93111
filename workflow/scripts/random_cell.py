"""Adapter: rule random_cell → pipeline_lib.nas.random_cell.sample_genotype (the random-cell baseline)."""

from pipeline_lib.nas.random_cell import sample_genotype
from pipeline_lib.step import run_step


def main(step):
    genotype = sample_genotype(step.param("darts_search.ops"), step.param("darts_search.nodes"), step.seed)
    genotype.save(step.output.genotype)
    step.log.info("random cell of seed %d: %s", step.seed, genotype.to_dict())


run_step(snakemake, main)  # noqa: F821 (injected by Snakemake)
