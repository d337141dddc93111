# Shared by every stage: config validation, params plumbing, paths.
from pathlib import Path

from snakemake.exceptions import WorkflowError

from pipeline_lib.errors import PipelineError
from pipeline_lib.params import load_schema, lookup, validate_params

try:
    validate_params(
        config, load_schema(Path(workflow.basedir) / "workflow/schemas/params.schema.yaml")
    )
except PipelineError as error:
    raise WorkflowError(f"ERROR: {error}") from None

# The environment every rule runs in (cluster users: --sdm conda).
ENV = "../envs/pipeline.yaml"

BUILTIN_ROOT = "data/raw/builtin"
DATA_ROOT = config["ingest"]["root"]
MANIFEST = "results/ingest/manifest.parquet"
SPLIT = "results/split/split.parquet"
CLASSIFIERS = ["lda", "rf", "lr", "svm"]


def cfg(*keys):
    """A rule's parameters as {dotted key: value}; keys may name wildcards ("classical.{clf}").

    Every rule passes its parameters this way (``params: cfg=cfg(...)``) so Snakemake's
    params trigger sees the values and dvc.yaml (generated from the DAG) lists the same keys.
    """

    def resolve(wildcards):
        resolved = [key.format(**wildcards) for key in keys]
        return {key: lookup(config, key) for key in resolved}

    return resolve
