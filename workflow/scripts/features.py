"""Adapter: rule features → pipeline_lib.features.extract.compute_features (pretrained backbone)."""

import pandas as pd

from pipeline_lib.io.atomic import write_json
from pipeline_lib.features.backbones import feature_dim
from pipeline_lib.runtime.devices import configure_threads
from pipeline_lib.features.store import write_features
from pipeline_lib.features.extract import FeaturesConfig, compute_features
from pipeline_lib.step import run_step


def main(step):
    cfg = FeaturesConfig.from_params(step.param("features"))
    configure_threads(step.threads)
    split = pd.read_parquet(step.input.split)
    # float32 features, one row per image: checked before the forward passes
    step.require_space({step.output.features: 4 * len(split) * feature_dim(cfg.arch)}, "the features table")
    frame, record = compute_features(split, cfg, device=step.device())
    if record.mode == "none":
        step.log.warning("features.weights is 'none': a randomly initialised (seeded) %s, not ImageNet", cfg.arch)
    write_features(frame, step.output.features)
    write_json(step.output.weights, record.to_dict())
    step.log.info("features: %d images x %d dims, weights %s", len(frame), len(frame["feature"].iloc[0]), record.mode)


run_step(snakemake, main)  # noqa: F821 (injected by Snakemake)
