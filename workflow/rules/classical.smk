# LDA, Random Forest, Logistic Regression and SVM on ResNet features.


rule classical:
    """One scikit-learn classifier on one feature set: valid acc, test AUC, predictions."""
    input:
        "results/features/{features}.parquet",
        ingest=INGEST_METRICS,
    output:
        metrics="results/models/{clf}_{features}/metrics.json",
        predictions="results/models/{clf}_{features}/predictions.csv",
        roc="results/models/{clf}_{features}/roc.csv",
    params:
        code=code_of("classical.py"),
        cfg=cfg("classical.seed", "classical.{clf}"),
    wildcard_constraints:
        clf="|".join(CLASSIFIERS),
        features="pretrained|finetuned",
    threads: 2  # n_jobs of the forest and of the SVM's calibration folds
    log:
        "logs/classical/{clf}_{features}.log",
    benchmark:
        "benchmarks/classical/{clf}_{features}.tsv"
    conda:
        ENV
    script:
        "../scripts/classical.py"
