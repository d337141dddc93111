# Do the explanation maps fall on the defect? CAM / Grad-CAM of each network (and of an
# untrained twin) on the bad validation and test images, scored against the generator's
# defect boxes (data/raw/builtin/defects.csv). On data without boxes the rules record why.

LOCALISATION_DIR = "results/localisation"
LOCALISATION_TABLE = multiext("results/table/localisation.", "csv", "md", "json")


rule localisation:
    """Per bad validation/test image: pointing game and energy in box of one network's map."""
    input:
        model=f"results/models/{{model}}/seed{FIRST_SEED}/model.pt",  # the first seed's network, as in the report
        split=SPLIT,
        root=ancient(DATA_ROOT),  # defects.csv; a change under the root reaches this through split
    output:
        csv=f"{LOCALISATION_DIR}/{{method}}_{{model}}.csv",
        meta=f"{LOCALISATION_DIR}/{{method}}_{{model}}.json",
    params:
        code=code_of("localisation.py"),
        cfg=lambda wildcards: explain_params(wildcards, "report.localisation"),
    wildcard_constraints:
        method="cam|gradcam",
        model="|".join(DEEP_MODELS),
    threads: JOB_THREADS
    log:
        "logs/localisation/{method}_{model}.log",
    benchmark:
        "benchmarks/localisation/{method}_{model}.tsv"
    conda:
        ENV
    script:
        "../scripts/localisation.py"


rule localisation_table:
    """Every network's scores with 95 % bootstrap intervals, beside untrained and chance: CSV, Markdown, JSON."""
    input:
        csvs=expand(f"{LOCALISATION_DIR}/{{name}}.csv", name=cam_figures()),
        metas=expand(f"{LOCALISATION_DIR}/{{name}}.json", name=cam_figures()),
    output:
        csv="results/table/localisation.csv",
        md="results/table/localisation.md",
        json="results/table/localisation.json",
    params:
        code=code_of("localisation_table.py"),
        cfg=cfg("report.seed", "report.localisation"),
    log:
        "logs/localisation/table.log",
    benchmark:
        "benchmarks/localisation/table.tsv"
    conda:
        ENV
    script:
        "../scripts/localisation_table.py"
