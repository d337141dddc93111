# nexperia-repro: the whole study as one DAG.
#   make study                                   # built-in data, every stage
#   make study SMK_ARGS="--configfile config/full.yaml"   # the full-size study
# Parameters: params.yaml (validated against workflow/schemas/params.schema.yaml).

import sys

from snakemake.utils import min_version

min_version("9.0")


configfile: "params.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/classical.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/nas.smk"
include: "workflow/rules/table.smk"
include: "workflow/rules/localisation.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        TABLE,
        LOCALISATION_TABLE,
        REPORT_HTML,


onsuccess:
    # DVC's record of this run (pipeline_lib.provenance.dvc_record): dvc.lock then matches the workspace.
    from pipeline_lib.provenance.dvc_record import commit_after_run

    jobs = [(job.rule.name, dict(job.wildcards_dict)) for job in workflow.dag.jobs if job.output]
    print(commit_after_run(jobs, CONFIG_AS_GIVEN, workflow.basedir), file=sys.stderr)
