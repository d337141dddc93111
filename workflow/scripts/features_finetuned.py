"""Adapter: rule features_finetuned → features of the fine-tuned ResNet FBP's penultimate layer."""

import pandas as pd

from pipeline_lib.io.atomic import write_json
from pipeline_lib.runtime.devices import configure_threads
from pipeline_lib.features.backbones import feature_dim, sha256_file
from pipeline_lib.features.store import features_frame, write_features
from pipeline_lib.features.extract import extract_features
from pipeline_lib.models.end_to_end import load_trained
from pipeline_lib.models.networks import penultimate
from pipeline_lib.step import run_step


def main(step):
    configure_threads(step.threads)
    split = pd.read_parquet(step.input.split)
    step.require_space({step.output.features: 4 * len(split) * feature_dim(step.param("features.arch"))},
                       "the fine-tuned features table")
    backbone = penultimate(load_trained(step.input.model))
    X = extract_features(
        backbone,
        split,
        image_size=step.param("train.image_size"),
        batch_size=step.param("features.batch_size"),
        device=step.device(),
    )
    write_features(features_frame(split, X), step.output.features)
    record = {"arch": step.param("features.arch"), "mode": "finetuned", "path": step.input.model,
              "sha256": sha256_file(step.input.model), "url": None}
    write_json(step.output.weights, record)
    step.log.info("fine-tuned features: %d images x %d dims", *X.shape)


run_step(snakemake, main)  # noqa: F821 (injected by Snakemake)
