# Shared by every stage: config validation, params plumbing, paths.
import copy
import inspect
from pathlib import Path

from snakemake.exceptions import WorkflowError

import pipeline_lib
from pipeline_lib.provenance.codedeps import job_code
from pipeline_lib.provenance.data_fingerprint import data_fingerprint
from pipeline_lib.data.datapaths import check_data_paths
from pipeline_lib.study import registry
from pipeline_lib.io.errors import PipelineError
from pipeline_lib.params import load_schema, lookup, validate_params

# The config as given (params.yaml + any --configfile/--config), before paths are normalised:
# the onsuccess DVC record compares it with params.yaml.
CONFIG_AS_GIVEN = copy.deepcopy(config)

try:
    validate_params(
        config,
        load_schema(Path(workflow.basedir) / "workflow/schemas/params.schema.yaml"),
        cache_dir=".snakemake/params_valid",  # a config already found valid is not checked again
    )
    # ingest.root, ingest.test_labels, features.weights_file: named errors before Snakemake's
    # MissingInputException; normalises ingest.root (./data/raw/builtin = data/raw/builtin/).
    check_data_paths(config)
except PipelineError as error:
    raise WorkflowError(f"ERROR: {error}") from None

# The environment of every job (cluster users: --sdm conda).
ENV = "../envs/pipeline.yaml"

# The code fingerprints below describe the library that runs: it must be this checkout's.
_SRC = Path(workflow.basedir) / "src"
_IMPORTED = Path(pipeline_lib.__file__).resolve().parent
if (_SRC / "pipeline_lib").is_dir() and _IMPORTED != (_SRC / "pipeline_lib").resolve():
    raise WorkflowError(
        f"ERROR: the pipeline_lib that Python imports ({_IMPORTED}) is not this checkout's ({_SRC / 'pipeline_lib'}): "
        f"run from this checkout's .venv (`make env`) or set PYTHONPATH={_SRC}"
    )

BUILTIN_ROOT = "data/raw/builtin"
DATA_ROOT = config["ingest"]["root"]
MANIFEST = "results/ingest/manifest.parquet"
SPLIT = "results/split/split.parquet"
# The study's models (pipeline_lib.study.registry): wildcard values, table rows, which params they read.
CLASSIFIERS = list(registry.CLASSIFIERS)
DEEP_MODELS = list(registry.DEEP_MODELS)  # the slide's row order
NAS_METHODS = list(registry.NAS_METHODS)
SEARCH_METHODS = list(registry.SEARCH_METHODS)
TABLE_MODELS = registry.table_models()
# The study's seeds (params.yaml study.seeds): every model, search and retrain runs once per seed,
# as the {seed} wildcard; the data, split and pretrained features have no seed wildcard.
SEEDS = [int(seed) for seed in config["study"]["seeds"]]
# Threads of every training, search, feature and figure job. One, so that Snakemake runs as
# many jobs as there are cores: the study's small networks use a second thread badly (one
# two-thread job did 0.5-1.0x the work of two one-thread jobs on 2 cores, bench/threads.py), and a two-thread
# job stalls whenever anything else holds a core (bench/README.md, "Threads and memory
# format"). Clusters and GPU servers raise it per rule: set-threads in profiles/slurm, profiles/local.
JOB_THREADS = 1
# Scheduling order (Snakemake `priority:`): the long jobs first, the searches before everything
# (each heads a search -> retrain chain), so that no long job is left to run alone on one core
# at the end. Without it the 3-seed study at 4ddf229 started one ENAS search in its 19th
# minute and ended with that seed's retrain alone for 2 of its 21 minutes.
PRIORITY_SEARCH, PRIORITY_LONG, PRIORITY_CHAIN = 3, 2, 1
# Report figures (CAM, t-SNE, ROC, training curves, cells) show the first seed's models.
FIRST_SEED = SEEDS[0]


wildcard_constraints:
    seed=r"\d+",


def per_seed(pattern, **wildcards):
    """``pattern`` ({seed} and any other wildcards) for every seed of the study."""
    return expand(pattern, seed=SEEDS, **wildcards)


def first_seed(pattern, **wildcards):
    """``pattern`` for the study's first seed: what the report's figures show."""
    return expand(pattern, seed=FIRST_SEED, **wildcards)


def cfg(*keys):
    """A rule's parameters as {dotted key: value}; keys may name wildcards ("classical.{clf}").

    All rules take their parameters this way, ``params`` = ``cfg(...)``, so Snakemake's
    params trigger sees the values and dvc.yaml (generated from the DAG) lists the same keys.
    """

    def resolve(wildcards):
        resolved = [key.format(**wildcards) for key in keys]
        return {key: _sorted(lookup(config, key)) for key in resolved}

    return resolve


def _sorted(value):
    """Mappings with their keys sorted: Snakemake's params trigger compares the params'
    representation, so a --configfile that repeats params.yaml's values in another order (or
    a merge that reorders keys) would otherwise rerun the job."""
    if isinstance(value, dict):
        return {key: _sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted(item) for item in value]
    return value


# Import names found in each file, by its sha256 (pipeline_lib.provenance.codedeps): a start
# parses only the files that changed since the last one.
CODEDEPS_CACHE = ".snakemake/codedeps"


def code_of(script):
    """A rule's ``code`` params entry: {file: sha256} of the rule file that calls this, its
    ``script`` (in workflow/scripts/) and every pipeline_lib module the script imports
    (pipeline_lib.provenance.codedeps). Snakemake's params trigger then reruns exactly the jobs whose code
    changed; dvc.yaml lists the same files as deps; lineage records keep the hashes."""
    rule_file = Path(inspect.currentframe().f_back.f_code.co_filename)
    script_file = Path(workflow.basedir) / "workflow/scripts" / script
    return job_code(rule_file, script_file, root=workflow.basedir, src=_IMPORTED.parent, cache_dir=CODEDEPS_CACHE)


# from data.smk
def _outside_root_labels():
    labels = config["ingest"]["test_labels"]
    # A labels file inside the data root is covered by the root's fingerprint.
    return [labels] if labels and not Path(labels).is_relative_to(DATA_ROOT) else []


def ingest_inputs(wildcards):
    """The data root (and a labels file outside it) as ``ancient`` inputs: their times are
    ignored (dvc checkout, git clone rewrite them); their content reaches the rule through
    the ``data`` params entry (ingest_data)."""
    inputs = {"root": ancient(DATA_ROOT)}
    for labels in _outside_root_labels():
        inputs["test_labels"] = ancient(labels)
    return inputs


def ingest_data(wildcards):
    """Content fingerprint of the raw data (pipeline_lib.provenance.data_fingerprint): any file added,
    removed or changed under the root, in place or not, reruns ingest and what depends on it."""
    return data_fingerprint(DATA_ROOT, _outside_root_labels())


# from features.smk
def weights_inputs(wildcards):
    weights_file = config["features"]["weights_file"]
    return {"weights": weights_file} if weights_file else {}


# from classical.smk
def classical_features(wildcards):
    """The classifier's features: the pretrained ResNet's (one set, no seed) or that seed's fine-tuned FBP's."""
    if wildcards.features == "finetuned":
        return f"results/features/finetuned/seed{wildcards.seed}.parquet"
    return "results/features/pretrained.parquet"


# from train.smk
def train_params(wildcards):
    keys = ["train.image_size", registry.spec(wildcards.model).params]
    if registry.spec(wildcards.model).uses_backbone:
        keys += ["features.arch", "features.weights", "features.weights_file", "features.seed"]
    return cfg(*keys)(wildcards)


# from train.smk
def train_inputs(wildcards):
    inputs = {"split": SPLIT}
    if registry.spec(wildcards.model).uses_backbone:
        inputs.update(weights_inputs(wildcards))
    return inputs


# from report.smk
def cam_figures():
    cam = config["report"]["cam"]
    return [f"cam_{m}" for m in cam["cam_models"]] + [f"gradcam_{m}" for m in cam["gradcam_layers"]]


# from report.smk, localisation.smk
def explain_params(wildcards, *extra):
    """What the maps of {method} x {model} depend on: CAM or that network's Grad-CAM layer,
    the minimum map size and the seed (which images are drawn, the untrained twin)."""
    keys = ["report.seed", "report.cam.min_cells", *extra]
    if wildcards.method == "gradcam":
        keys.append(f"report.cam.gradcam_layers.{wildcards.model}")
    return cfg(*keys)(wildcards)


# from report.smk
def search_histories(wildcards):
    """The search histories the diagnostics figure reads: every search method under every study seed."""
    return {f"{method}_seed{seed}": f"results/nas/{method}/seed{seed}/search_history.csv"
            for method in SEARCH_METHODS for seed in SEEDS}


# from report.smk
def report_figure_entries():
    """The page's figures in order. Entries with "needs" are shown only when some rule of the
    workflow produces that file (so the NAS figures appear once the NAS rules are included).
    To add a figure drawn elsewhere: append dict(path=..., title=..., caption=..., made_by=<rule>, record=False)."""
    own = ["tsne", *cam_figures(), "roc", "training"]
    entries = [dict(path=f"{FIG_DIR}/{name}.png") for name in own]
    entries += [
        dict(path=f"{FIG_DIR}/darts_alpha.png", needs=f"results/nas/darts/seed{FIRST_SEED}/alpha_history.csv"),
        dict(path=f"{FIG_DIR}/search_diagnostics.png", needs=search_histories(None)[f"enas_seed{FIRST_SEED}"]),
        *(
            dict(
                path=f"results/nas/{nas}/seed{FIRST_SEED}/cell_{cell}.png",
                title=f"{nas.upper()} {cell} cell",
                caption=f"The {cell} cell found by the {nas.upper()} search of seed {FIRST_SEED} "
                f"(results/nas/{nas}/seed{FIRST_SEED}/genotype.json), "
                "drawn by nas_draw; nodes are states, edges the chosen operations.",
                made_by="nas_draw",
                record=False,
            )
            for nas in ("darts", "enas")
            for cell in ("normal", "reduce")
        ),
    ]
    producible = lambda path: any(r.is_producer(path) for r in workflow.rules if r.name != "report")
    return [
        {k: v for k, v in e.items() if k != "needs"}
        for e in entries
        if producible(e.get("needs", e["path"]))
    ]


# from report.smk
def report_inputs(wildcards):
    pngs = [e["path"] for e in report_figure_entries()]
    records = [e["path"].removesuffix(".png") + ".json" for e in report_figure_entries() if e.get("record", True)]
    return {"table": "results/table/results.csv", "comparisons": "results/table/comparisons.csv", "localisation": "results/table/localisation.json",
            "figures": pngs, "records": records}
