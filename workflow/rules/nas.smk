# Architecture search: DARTS and ENAS search on two halves of the training split (never
# val, never test), write a genotype JSON, and the one retrain rule trains it from scratch.
# Each runs once per study seed; the retrain of seed s trains the cell of seed s's search. The
# random-cell baseline draws one cell per seed from DARTS's space and is retrained the same way.


rule enas_search:
    """ENAS micro search under one study seed: LSTM controller, shared child weights, REINFORCE; choose the best sample."""
    input:
        split=SPLIT,
    output:
        genotype="results/nas/enas/seed{seed}/genotype.json",
        history="results/nas/enas/seed{seed}/search_history.csv",
        archs="results/nas/enas/seed{seed}/search_history.json",
    params:
        code=code_of("enas_search.py"),
        cfg=cfg("enas_search"),
        state_dir=lambda wildcards: f"{STATE_DIR}/nas/enas/seed{wildcards.seed}",
    threads: JOB_THREADS
    priority: PRIORITY_SEARCH
    resources:
        gpu=1,
    log:
        "logs/nas/enas_search_seed{seed}.log",
    benchmark:
        "benchmarks/nas/enas_search_seed{seed}.tsv"
    conda:
        ENV
    script:
        "../scripts/enas_search.py"


rule darts_search:
    """DARTS search (first or second order) under one study seed and the derived discrete cell as genotype JSON."""
    input:
        split=SPLIT,
    output:
        genotype="results/nas/darts/seed{seed}/genotype.json",
        alpha_history="results/nas/darts/seed{seed}/alpha_history.csv",
        history="results/nas/darts/seed{seed}/search_history.csv",
    params:
        code=code_of("darts_search.py"),
        cfg=cfg("darts_search"),
        state_dir=lambda wildcards: f"{STATE_DIR}/nas/darts/seed{wildcards.seed}",
    threads: JOB_THREADS
    priority: PRIORITY_SEARCH
    resources:
        gpu=1,
    log:
        "logs/nas/darts_search_seed{seed}.log",
    benchmark:
        "benchmarks/nas/darts_search_seed{seed}.tsv"
    conda:
        ENV
    script:
        "../scripts/darts_search.py"


rule random_cell:
    """The random-cell baseline: one cell drawn uniformly from the DARTS search space under one study seed."""
    output:
        genotype="results/nas/random/seed{seed}/genotype.json",
    params:
        code=code_of("random_cell.py"),
        cfg=cfg("darts_search.ops", "darts_search.nodes"),
    log:
        "logs/nas/random_cell_seed{seed}.log",
    benchmark:
        "benchmarks/nas/random_cell_seed{seed}.tsv"
    conda:
        ENV
    script:
        "../scripts/random_cell.py"


rule nas_retrain:
    """The cell of one seed's search (or random draw; its genotype JSON is the input) stacked and trained
    from scratch under the same seed, one training loop."""
    input:
        split=SPLIT,
        genotype="results/nas/{method}/seed{seed}/genotype.json",
        ingest=INGEST_METRICS,
    output:
        model="results/models/{method}/seed{seed}/model.pt",
        metrics="results/models/{method}/seed{seed}/metrics.json",
        predictions="results/models/{method}/seed{seed}/predictions.csv",
        val_predictions="results/models/{method}/seed{seed}/val_predictions.csv",
        roc="results/models/{method}/seed{seed}/roc.csv",
        history="results/models/{method}/seed{seed}/history.csv",
    params:
        code=code_of("nas_retrain.py"),
        cfg=cfg("nas_retrain"),
        state_dir=lambda wildcards: f"{STATE_DIR}/train/{wildcards.method}/seed{wildcards.seed}",
    wildcard_constraints:
        method="|".join(NAS_METHODS),
    threads: JOB_THREADS
    priority: PRIORITY_LONG
    resources:
        gpu=1,
    log:
        "logs/nas/{method}_retrain_seed{seed}.log",
    benchmark:
        "benchmarks/nas/{method}_retrain_seed{seed}.tsv"
    conda:
        ENV
    script:
        "../scripts/nas_retrain.py"


rule nas_draw:
    """One seed's searched (or random) normal and reduction cells, drawn."""
    input:
        genotype="results/nas/{method}/seed{seed}/genotype.json",
    output:
        normal="results/nas/{method}/seed{seed}/cell_normal.png",
        reduce="results/nas/{method}/seed{seed}/cell_reduce.png",
    wildcard_constraints:
        method="|".join(NAS_METHODS),
    params:
        code=code_of("nas_draw.py"),
    log:
        "logs/nas/{method}_draw_seed{seed}.log",
    benchmark:
        "benchmarks/nas/{method}_draw_seed{seed}.tsv"
    conda:
        ENV
    script:
        "../scripts/nas_draw.py"
