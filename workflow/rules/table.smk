# The study's results table (slide shape); results/metrics/<model>.json are the DVC metrics.
# Its inputs are every model x seed: metrics, validation predictions (paired comparisons) and test predictions.

TABLE = multiext("results/table/results.", "csv", "md", "json")


rule table:
    """Every model's metrics in one table: CSV, Markdown and JSON."""
    input:
        metrics=per_seed("results/models/{model}/seed{seed}/metrics.json", model=TABLE_MODELS),
        val_predictions=per_seed("results/models/{model}/seed{seed}/val_predictions.csv", model=TABLE_MODELS),
        predictions=per_seed("results/models/{model}/seed{seed}/predictions.csv", model=TABLE_MODELS),
    output:
        csv="results/table/results.csv",
        md="results/table/results.md",
        json="results/table/results.json",
        metrics=expand("results/metrics/{model}.json", model=TABLE_MODELS),
    params:
        code=code_of("table.py"),
        cfg=cfg("study.seeds"),
    log:
        "logs/table.log",
    benchmark:
        "benchmarks/table.tsv"
    conda:
        ENV
    script:
        "../scripts/table.py"
