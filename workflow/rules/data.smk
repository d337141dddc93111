# Raw data → manifest → train/val/test split.

# Ingest's counts; every model's metrics.json copies test_skipped from it.
INGEST_METRICS = "results/ingest/ingest_metrics.json"


rule generate:
    """The built-in procedural chip dataset in Nexperia's layout (used when ingest.root is it)."""
    output:
        directory(BUILTIN_ROOT),
    params:
        code=code_of("generate.py"),
        cfg=cfg("generate"),
    log:
        "logs/generate.log",
    benchmark:
        "benchmarks/generate.tsv"
    conda:
        ENV
    script:
        "../scripts/generate.py"


rule ingest:
    """Scan the layout, open and check every image, apply the label-conflict, duplicate and
    near-duplicate policies, write the manifest."""
    input:
        unpack(ingest_inputs),
    output:
        manifest=MANIFEST,
        bad_files="results/ingest/bad_files.csv",
        near_duplicates="results/ingest/near_duplicates.csv",
        metrics=INGEST_METRICS,
    params:
        code=code_of("ingest.py"),
        cfg=cfg("ingest"),
        data=ingest_data,
    threads: 2
    log:
        "logs/ingest.log",
    benchmark:
        "benchmarks/ingest.tsv"
    conda:
        ENV
    script:
        "../scripts/ingest.py"


rule split:
    """Seeded stratified validation split (val_good + val_bad) held out of train."""
    input:
        MANIFEST,
    output:
        SPLIT,
    params:
        code=code_of("split.py"),
        cfg=cfg("split"),
    log:
        "logs/split.log",
    benchmark:
        "benchmarks/split.tsv"
    conda:
        ENV
    script:
        "../scripts/split.py"
