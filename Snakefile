# nexperia-repro: the whole study as one DAG.
#   make study                                   # built-in data, every stage
#   make study SMK_ARGS="--configfile config/full.yaml"   # the full-size study
# Parameters: params.yaml (validated against workflow/schemas/params.schema.yaml).

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
