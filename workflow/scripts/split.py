"""Adapter: rule split → pipeline_lib.data.split.make_split."""

import pandas as pd

from pipeline_lib.io.atomic import write_parquet
from pipeline_lib.step import run_step
from pipeline_lib.data.split import SplitConfig, make_split


def main(step):
    config = SplitConfig.from_params(step.param("split"))
    # ingest already applied ingest.duplicates; this re-checks that no image crosses splits
    split = make_split(pd.read_parquet(step.input[0]), config, check_leakage=True)
    write_parquet(split, step.output[0])
    step.log.info("split sizes: %s", split["split"].value_counts().to_dict())


run_step(snakemake, main)  # noqa: F821 (injected by Snakemake)
