# The study's results table (slide shape); results/metrics/<model>.json are the DVC metrics.

TABLE = multiext("results/table/results.", "csv", "md", "json")


rule table:
    """Every model's metrics in one table: CSV, Markdown and JSON."""
    input:
        expand("results/models/{model}/metrics.json", model=TABLE_MODELS),
    output:
        csv="results/table/results.csv",
        md="results/table/results.md",
        json="results/table/results.json",
        metrics=expand("results/metrics/{model}.json", model=TABLE_MODELS),
    params:
        code=code_of("table.py"),
    log:
        "logs/table.log",
    benchmark:
        "benchmarks/table.tsv"
    conda:
        ENV
    script:
        "../scripts/table.py"
