"""dvc.yaml rendered from the Snakemake job DAG, so the two can never drift.

Each Snakemake job becomes one DVC stage whose command runs exactly that job
(``--allowed-rules`` keeps upstream rules out: DVC has already reproduced them) and
whose deps, outs and params are the job's inputs, outputs and ``params: cfg`` keys.
The reading of the DAG lives in ``workflow/tools/dvc_sync.py`` (it needs Snakemake);
this module is pure data → YAML.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any

import yaml

HEADER = (
    "# GENERATED from the Snakefile by `python workflow/tools/dvc_sync.py`; do not edit.\n"
    "# tests/provenance/test_dvc.py fails when this file and the Snakemake DAG disagree.\n"
)


def stage_name(rule: str, wildcards: dict[str, str]) -> str:
    """The DVC stage of one Snakemake job: the rule and its wildcard values, joined by ``_``
    (the study seed as ``seed<n>``: ``train_cnn2_seed0``)."""
    return "_".join([rule, *(f"seed{v}" if k == "seed" else str(v) for k, v in wildcards.items())])


@dataclass(frozen=True)
class Job:
    rule: str
    wildcards: dict[str, str]
    inputs: list[str]
    outputs: list[str]
    params: list[str]  # dotted params.yaml keys
    code: list[str] = field(default_factory=list)  # rule file, script, library modules (codedeps)

    @property
    def stage_name(self) -> str:
        return stage_name(self.rule, self.wildcards)


METRICS_DIR = "results/metrics/"


def is_metrics(path: str) -> bool:
    """The flat per-model files made from the results table; every other output (each model's
    metrics.json included) is an ordinary cached out, so `dvc push` carries it."""
    return path.startswith(METRICS_DIR) and path.endswith(".json")


def render(jobs: list[Job]) -> dict[str, Any]:
    stages: dict[str, Any] = {}
    outputs: list[str] = []
    for job in sorted(jobs, key=lambda j: j.stage_name):
        targets = " ".join(shlex.quote(o) for o in job.outputs)
        stage: dict[str, Any] = {
            # targets first: --allowed-rules takes several values
            "cmd": f"snakemake --cores all {targets} --allowed-rules {job.rule}",
            "deps": sorted(set(job.inputs) | set(job.code)),
        }
        if job.params:
            stage["params"] = sorted(job.params)
        outs = [o for o in job.outputs if not is_metrics(o)]
        metrics = [o for o in job.outputs if is_metrics(o)]
        if outs:
            stage["outs"] = outs
        if metrics:
            # Cached like every out: pushed to the remote and pulled into a fresh clone
            # (`results/` is git-ignored); `dvc metrics diff HEAD~1` reads old ones from the cache.
            stage["metrics"] = metrics
        stages[job.stage_name] = stage
        outputs.extend(job.outputs)
    document: dict[str, Any] = {"stages": stages}
    plots = plot_definitions(sorted(outputs))
    if plots:
        document["plots"] = plots
    return document


def plot_definitions(outputs: list[str]) -> list[dict[str, Any]]:
    """`dvc plots show/diff` views: ROC on test, training curves, t-SNE, and the report's PNGs."""

    def matching(suffix: str, columns: str | list[str]) -> dict[str, Any]:
        # fresh list per file: shared objects would become YAML anchors
        return {o: columns if isinstance(columns, str) else list(columns) for o in outputs if o.endswith(suffix)}

    candidates = [
        ("roc", matching("/roc.csv", "tpr"), {"template": "simple", "x": "fpr", "title": "ROC on test",
                                              "x_label": "false positive rate", "y_label": "true positive rate"}),
        ("loss", matching("/history.csv", ["train_loss", "val_loss"]), {"x": "epoch", "title": "Training curves: loss"}),
        ("accuracy", matching("/history.csv", ["train_acc", "val_acc"]), {"x": "epoch", "title": "Training curves: accuracy"}),
        ("tsne", matching("/tsne.csv", "y"), {"template": "scatter", "x": "x", "title": "t-SNE of validation features"}),
    ]
    plots: list[dict[str, Any]] = [{name: {**spec, "y": y}} for name, y, spec in candidates if y]
    plots += [{png: {}} for png in outputs if png.endswith(".png")]
    return plots


def dump(document: dict[str, Any]) -> str:
    return HEADER + yaml.safe_dump(document, sort_keys=False, default_flow_style=False, width=1000)
