# Architecture search: DARTS and ENAS search on two halves of the training split (never
# val, never test), write a genotype JSON, and the one retrain rule trains it from scratch.


rule enas_search:
    """ENAS micro search: LSTM controller, shared child weights, REINFORCE; choose the best sample."""
    input:
        split=SPLIT,
    output:
        genotype="results/nas/enas/genotype.json",
        history="results/nas/enas/search_history.csv",
        archs="results/nas/enas/search_history.json",
    params:
        code=code_of("enas_search.py"),
        cfg=cfg("enas_search"),
        state_dir=f"{STATE_DIR}/nas/enas",
    threads: 2
    resources:
        gpu=1,
    log:
        "logs/nas/enas_search.log",
    benchmark:
        "benchmarks/nas/enas_search.tsv"
    conda:
        ENV
    script:
        "../scripts/enas_search.py"


rule darts_search:
    """DARTS search (first or second order) and the derived discrete cell as genotype JSON."""
    input:
        split=SPLIT,
    output:
        genotype="results/nas/darts/genotype.json",
        alpha_history="results/nas/darts/alpha_history.csv",
        history="results/nas/darts/search_history.csv",
    params:
        code=code_of("darts_search.py"),
        cfg=cfg("darts_search"),
        state_dir=f"{STATE_DIR}/nas/darts",
    threads: 2
    resources:
        gpu=1,
    log:
        "logs/nas/darts_search.log",
    benchmark:
        "benchmarks/nas/darts_search.tsv"
    conda:
        ENV
    script:
        "../scripts/darts_search.py"




rule nas_retrain:
    """The searched cell (its genotype JSON is the input) stacked and trained from scratch, one training loop."""
    input:
        split=SPLIT,
        genotype="results/nas/{method}/genotype.json",
        ingest=INGEST_METRICS,
    output:
        model="results/models/{method}/model.pt",
        metrics="results/models/{method}/metrics.json",
        predictions="results/models/{method}/predictions.csv",
        roc="results/models/{method}/roc.csv",
        history="results/models/{method}/history.csv",
    params:
        code=code_of("nas_retrain.py"),
        cfg=cfg("nas_retrain"),
        state_dir=lambda wildcards: f"{STATE_DIR}/train/{wildcards.method}",
    wildcard_constraints:
        method="|".join(NAS_METHODS),
    threads: 2
    resources:
        gpu=1,
    log:
        "logs/nas/{method}_retrain.log",
    benchmark:
        "benchmarks/nas/{method}_retrain.tsv"
    conda:
        ENV
    script:
        "../scripts/nas_retrain.py"


rule nas_draw:
    """The searched normal and reduction cells, drawn."""
    input:
        genotype="results/nas/{method}/genotype.json",
    output:
        normal="results/nas/{method}/cell_normal.png",
        reduce="results/nas/{method}/cell_reduce.png",
    wildcard_constraints:
        method="|".join(NAS_METHODS),
    params:
        code=code_of("nas_draw.py"),
    log:
        "logs/nas/{method}_draw.log",
    benchmark:
        "benchmarks/nas/{method}_draw.tsv"
    conda:
        ENV
    script:
        "../scripts/nas_draw.py"
