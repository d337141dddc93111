"""Adapter: rule ingest → pipeline_lib.ingest (scan, duplicates policy, report, metrics)."""

from pipeline_lib.atomic import write_csv, write_json
from pipeline_lib.ingest import (
    bad_files_table,
    ingest_metrics,
    resolve_duplicates,
    scan_dataset,
    write_manifest,
)
from pipeline_lib.scripting import run_step


def main(step):
    p = step.param("ingest")
    manifest, bad = scan_dataset(p["root"], test_labels=p["test_labels"], bad_images=p["bad_images"])
    manifest, duplicates = resolve_duplicates(manifest, p["duplicates"])
    for item in bad:
        step.log.warning("skipped %s: %s", item.path, item.reason)
    for item in duplicates:
        step.log.warning("dropped duplicate %s (kept %s)", item.path, item.kept)
    metrics = ingest_metrics(manifest, bad, duplicates)
    # Report and metrics first, the manifest last: downstream rules read only the manifest.
    write_csv(bad_files_table(bad, duplicates), step.output.bad_files)
    write_json(step.output.metrics, metrics)
    write_manifest(manifest, step.output.manifest)
    step.log.info(
        "manifest: %d images (%d bad skipped, %d duplicates dropped)",
        len(manifest), len(bad), len(duplicates),
    )


run_step(snakemake, main)  # noqa: F821 (injected by Snakemake)
