# Deep baselines: 2-layer CNN from scratch, ResNet LL (last layer) and ResNet FBP (full
# backpropagation), all through the one training loop; then features of the fine-tuned ResNet.

# Resume state: not a declared output (Snakemake deletes the outputs of an incomplete job).
STATE_DIR = ".state"


rule train:
    """Train one network under one study seed on train, select on val (never test), predict val and test."""
    input:
        unpack(train_inputs),
        ingest=INGEST_METRICS,
    output:
        model="results/models/{model}/seed{seed}/model.pt",
        metrics="results/models/{model}/seed{seed}/metrics.json",
        predictions="results/models/{model}/seed{seed}/predictions.csv",
        val_predictions="results/models/{model}/seed{seed}/val_predictions.csv",
        roc="results/models/{model}/seed{seed}/roc.csv",
        history="results/models/{model}/seed{seed}/history.csv",
    params:
        code=code_of("train.py"),
        cfg=train_params,
        state_dir=lambda wildcards: f"{STATE_DIR}/train/{wildcards.model}/seed{wildcards.seed}",
    wildcard_constraints:
        model="|".join(DEEP_MODELS),
    threads: JOB_THREADS
    priority: PRIORITY_LONG
    resources:
        gpu=1,
    log:
        "logs/train/{model}_seed{seed}.log",
    benchmark:
        "benchmarks/train/{model}_seed{seed}.tsv"
    conda:
        ENV
    script:
        "../scripts/train.py"


rule features_finetuned:
    """Penultimate features of one seed's fine-tuned ResNet (FBP), for the classifiers' second column."""
    input:
        split=SPLIT,
        model="results/models/resnet_fbp/seed{seed}/model.pt",
    output:
        features="results/features/finetuned/seed{seed}.parquet",
        weights="results/features/finetuned/seed{seed}.weights.json",
    params:
        code=code_of("features_finetuned.py"),
        cfg=cfg("train.image_size", "features.arch", "features.batch_size"),
    threads: JOB_THREADS
    priority: PRIORITY_CHAIN
    resources:
        gpu=1,
    log:
        "logs/features/finetuned_seed{seed}.log",
    benchmark:
        "benchmarks/features/finetuned_seed{seed}.tsv"
    conda:
        ENV
    script:
        "../scripts/features_finetuned.py"
