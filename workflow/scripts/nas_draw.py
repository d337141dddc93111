"""Adapter: rule nas_draw → pipeline_lib.nas.draw.draw_cell for both cell types."""

from pipeline_lib.nas.draw import draw_cell
from pipeline_lib.nas.genotypes import Genotype
from pipeline_lib.step import run_step


def main(step):
    genotype = Genotype.load(step.input.genotype)
    for cell in ("normal", "reduce"):
        draw_cell(genotype, cell, step.output[cell])


run_step(snakemake, main)  # noqa: F821 (injected by Snakemake)
