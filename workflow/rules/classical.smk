# LDA, Random Forest, Logistic Regression and SVM on ResNet features.


rule classical:
    """One scikit-learn classifier on one feature set under one study seed (its random_state; the
    fine-tuned features are that seed's FBP's): valid acc, test AUC, val and test predictions."""
    input:
        classical_features,
        ingest=INGEST_METRICS,
    output:
        metrics="results/models/{clf}_{features}/seed{seed}/metrics.json",
        predictions="results/models/{clf}_{features}/seed{seed}/predictions.csv",
        val_predictions="results/models/{clf}_{features}/seed{seed}/val_predictions.csv",
        roc="results/models/{clf}_{features}/seed{seed}/roc.csv",
    params:
        code=code_of("classical.py"),
        cfg=cfg("classical.{clf}"),
    wildcard_constraints:
        clf="|".join(CLASSIFIERS),
        features="pretrained|finetuned",
    threads: JOB_THREADS  # n_jobs of the forest and of the SVM's calibration folds
    log:
        "logs/classical/{clf}_{features}_seed{seed}.log",
    benchmark:
        "benchmarks/classical/{clf}_{features}_seed{seed}.tsv"
    conda:
        ENV
    script:
        "../scripts/classical.py"
