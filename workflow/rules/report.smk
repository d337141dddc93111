# The report: the results table and every figure in one static HTML page,
# results/report/index.html (why static and not `snakemake --report`: pipeline_lib/report/__init__.py).
# Each figure rule writes <figure>.png and <figure>.json (caption, rule, git commit, params hash).

REPORT_DIR = "results/report"
FIG_DIR = f"{REPORT_DIR}/figures"
REPORT_HTML = f"{REPORT_DIR}/index.html"
# Networks whose training curves are drawn (anything with results/models/<model>/seed<s>/history.csv).
REPORT_HISTORY_MODELS = list(DEEP_MODELS) + NAS_METHODS
# The figures show the first seed's models (FIRST_SEED, common.smk); the table holds every seed.


rule report_tsne:
    """t-SNE of the validation features, pretrained vs fine-tuned ResNet, side by side."""
    input:
        pretrained="results/features/pretrained.parquet",
        finetuned=f"results/features/finetuned/seed{FIRST_SEED}.parquet",
    output:
        png=f"{FIG_DIR}/tsne.png",
        record=f"{FIG_DIR}/tsne.json",
        csv=f"{REPORT_DIR}/tsne.csv",
    params:
        code=code_of("report_tsne.py"),
        cfg=cfg("report.seed", "report.dpi", "report.tsne"),
    threads: JOB_THREADS
    log:
        "logs/report/tsne.log",
    benchmark:
        "benchmarks/report/tsne.tsv"
    conda:
        ENV
    script:
        "../scripts/report_tsne.py"


rule report_cam:
    """CAM or Grad-CAM of one trained network on good/bad train/val images, correct and wrong label,
    at an input size where the map has >= report.cam.min_cells cells a side, with the defect boxes."""
    input:
        model=f"results/models/{{model}}/seed{FIRST_SEED}/model.pt",
        split=SPLIT,
        # its defects.csv: the boxes drawn on the images. ancient: the root's own time says
        # nothing (issue 13); a change under it reruns ingest, then split, then this.
        root=ancient(DATA_ROOT),
    output:
        png=f"{FIG_DIR}/{{method}}_{{model}}.png",
        record=f"{FIG_DIR}/{{method}}_{{model}}.json",
    params:
        code=code_of("report_cam.py"),
        cfg=cfg("report.seed", "report.dpi", "report.cam"),
    wildcard_constraints:
        method="cam|gradcam",
        model="|".join(DEEP_MODELS),
    threads: JOB_THREADS
    log:
        "logs/report/{method}_{model}.log",
    benchmark:
        "benchmarks/report/{method}_{model}.tsv"
    conda:
        ENV
    script:
        "../scripts/report_cam.py"


rule report_roc:
    """Every model's ROC curve on test in one figure."""
    input:
        first_seed("results/models/{model}/seed{seed}/roc.csv", model=TABLE_MODELS),
    output:
        png=f"{FIG_DIR}/roc.png",
        record=f"{FIG_DIR}/roc.json",
    params:
        code=code_of("report_roc.py"),
        cfg=cfg("report.dpi"),
    threads: 1
    log:
        "logs/report/roc.log",
    benchmark:
        "benchmarks/report/roc.tsv"
    conda:
        ENV
    script:
        "../scripts/report_roc.py"


rule report_training:
    """Loss and accuracy per epoch of every trained network."""
    input:
        first_seed("results/models/{model}/seed{seed}/history.csv", model=REPORT_HISTORY_MODELS),
    output:
        png=f"{FIG_DIR}/training.png",
        record=f"{FIG_DIR}/training.json",
    params:
        code=code_of("report_training.py"),
        cfg=cfg("report.dpi"),
    threads: 1
    log:
        "logs/report/training.log",
    benchmark:
        "benchmarks/report/training.tsv"
    conda:
        ENV
    script:
        "../scripts/report_training.py"


rule report_alpha:
    """DARTS softmax(alpha) heatmap (used once the DARTS search rule exists)."""
    input:
        history=f"results/nas/darts/seed{FIRST_SEED}/alpha_history.csv",
    output:
        png=f"{FIG_DIR}/darts_alpha.png",
        record=f"{FIG_DIR}/darts_alpha.json",
    params:
        code=code_of("report_alpha.py"),
        cfg=cfg("report.dpi"),
    threads: 1
    log:
        "logs/report/darts_alpha.log",
    benchmark:
        "benchmarks/report/darts_alpha.tsv"
    conda:
        ENV
    script:
        "../scripts/report_alpha.py"


rule report_search:
    """The searches' per-epoch diagnostics against chance, and whether each cleared it."""
    input:
        unpack(search_histories),
    output:
        png=f"{FIG_DIR}/search_diagnostics.png",
        record=f"{FIG_DIR}/search_diagnostics.json",
    params:
        code=code_of("report_search.py"),
        cfg=cfg("report.dpi"),
    threads: 1
    log:
        "logs/report/search_diagnostics.log",
    benchmark:
        "benchmarks/report/search_diagnostics.tsv"
    conda:
        ENV
    script:
        "../scripts/report_search.py"


rule report:
    """One static, self-contained HTML page: the table first, then every figure with its caption."""
    input:
        unpack(report_inputs),
    output:
        html=REPORT_HTML,
    params:
        code=code_of("report_html.py"),
        cfg=cfg("report", "table"),
        figures=lambda wildcards: report_figure_entries(),
    threads: 1
    log:
        "logs/report/report.log",
    benchmark:
        "benchmarks/report/report.tsv"
    conda:
        ENV
    script:
        "../scripts/report_html.py"
