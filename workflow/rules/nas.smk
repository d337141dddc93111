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
