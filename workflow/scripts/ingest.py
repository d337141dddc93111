"""Adapter: rule ingest → pipeline_lib.ingest.scan_dataset."""

from pipeline_lib.ingest import scan_dataset, write_manifest
from pipeline_lib.scripting import run_step


def main(step):
    p = step.param("ingest")
    manifest, bad = scan_dataset(p["root"], test_labels=p["test_labels"], bad_images=p["bad_images"])
    for item in bad:
        step.log.warning("skipped %s: %s", item.path, item.reason)
    write_manifest(manifest, step.output[0])
    step.log.info("manifest: %d images (%d skipped)", len(manifest), len(bad))


run_step(snakemake, main)  # noqa: F821 (injected by Snakemake)
