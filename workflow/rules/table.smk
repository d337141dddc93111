# The study's results table over seeds (pipeline_lib.results.seed_table): per-seed rows, mean ± sd and a 95 %
# interval per model, and the paired comparisons; results/metrics/<model>.json are the DVC metrics.
# Its inputs are every model x seed: metrics, validation predictions (paired comparisons) and test
# predictions, plus the split table, whose labelled test rows are the test labels (as for test_auc).

TABLE = multiext("results/table/results.", "csv", "md", "json")


rule table:
    """Every model over every seed in one table (CSV, Markdown, JSON), per-seed rows, comparisons."""
    input:
        metrics=per_seed("results/models/{model}/seed{seed}/metrics.json", model=TABLE_MODELS),
        val_predictions=per_seed("results/models/{model}/seed{seed}/val_predictions.csv", model=TABLE_MODELS),
        predictions=per_seed("results/models/{model}/seed{seed}/predictions.csv", model=TABLE_MODELS),
        split=SPLIT,
    output:
        csv="results/table/results.csv",
        md="results/table/results.md",
        json="results/table/results.json",
        per_seed="results/table/results_per_seed.csv",
        comparisons="results/table/comparisons.csv",
        metrics=expand("results/metrics/{model}.json", model=TABLE_MODELS),
    params:
        code=code_of("table.py"),
        cfg=cfg("study.seeds", "table", "report.seed"),
        models=TABLE_MODELS,
    log:
        "logs/table.log",
    benchmark:
        "benchmarks/table.tsv"
    conda:
        ENV
    script:
        "../scripts/table.py"
