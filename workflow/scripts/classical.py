"""Adapter: rule classical → pipeline_lib.classical.classifiers.fit_and_evaluate."""

from pathlib import Path

from pipeline_lib.classical.classifiers import fit_and_evaluate
from pipeline_lib.features.store import load_features
from pipeline_lib.results.metrics import skipped_test_images, write_model_outputs
from pipeline_lib.step import run_step


def main(step):
    clf, features = step.wildcards.clf, step.wildcards.features
    meta, X = load_features(step.input[0])
    result = fit_and_evaluate(
        clf, step.param(f"classical.{clf}"), step.seed, meta, X, features_name=features,
        test_skipped=skipped_test_images(step.input.ingest),
        n_jobs=step.threads,
    )
    write_model_outputs(Path(step.output.metrics).parent, result.metrics, result.predictions, result.roc,
                        result.val_predictions)
    step.log.info("%s: valid acc %s, test AUC %s", result.metrics["model"], result.metrics["valid_acc"], result.metrics["test_auc"])
    if "estimator" in result.metrics:
        step.log.info("%s ran as: %s", result.metrics["model"], result.metrics["estimator"])


run_step(snakemake, main)  # noqa: F821 (injected by Snakemake)
