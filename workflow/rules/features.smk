# ResNet penultimate features (pretrained backbone) for train/val/test.


rule features:
    """Penultimate features of the pretrained ResNet, one row per image."""
    input:
        unpack(weights_inputs),
        split=SPLIT,
    output:
        features="results/features/pretrained.parquet",
        weights="results/features/pretrained.weights.json",
    params:
        code=code_of("features.py"),
        cfg=cfg("features"),
    threads: JOB_THREADS
    resources:
        gpu=1,
    log:
        "logs/features/pretrained.log",
    benchmark:
        "benchmarks/features/pretrained.tsv"
    conda:
        ENV
    script:
        "../scripts/features.py"
