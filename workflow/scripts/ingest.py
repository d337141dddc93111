"""Adapter: rule ingest → pipeline_lib.data.ingest.run_ingest (scan, labels, duplicates, look-alikes)."""

from pipeline_lib.io.atomic import write_csv, write_json
from pipeline_lib.data.ingest import IngestConfig, run_ingest, write_manifest
from pipeline_lib.step import run_step


def main(step):
    result = run_ingest(IngestConfig.from_params(step.param("ingest")))
    for level, message in result.messages:
        step.log.log(level, "%s", message)
    # Reports and metrics first, the manifest last: downstream rules read only the manifest.
    write_csv(result.bad_files, step.output.bad_files)
    write_csv(result.near_duplicates, step.output.near_duplicates)
    write_json(step.output.metrics, result.metrics)
    write_manifest(result.manifest, step.output.manifest)
    m = result.metrics
    step.log.info(
        "manifest: %d images (%d bad skipped, %d duplicates dropped, %d label conflicts left out, "
        "%d near-duplicate pairs)",
        m["images"], m["skipped"], m["duplicates"], m["label_conflicts"], m["near_duplicates"],
    )


run_step(snakemake, main)  # noqa: F821 (injected by Snakemake)
