"""Tune the built-in study on the validation split: one row of valid acc / AUC per setting.

Runs the study's own library code (generate -> ingest -> split -> features -> classical ->
cnn2 / ResNet LL / ResNet FBP -> fine-tuned features -> classical) outside Snakemake, with
``params.yaml`` deep-merged with the given override files, so settings can be compared in
one process (on CPU, or on a GPU to sweep faster). Selection is made on ``valid_acc`` only;
the test AUC is printed for the record, never used to choose.

    python bench/tune_builtin.py --work /tmp/tune --override NAME|FILE [--override ...] \
        [--models cnn2 resnet_ll resnet_fbp] [--genotype darts=results/nas/darts/seed0/genotype.json]
        [--device cuda] [--out row.json]

``--override`` takes a YAML file or a name from ``bench/tune/overrides.yaml``; ``--genotype
NAME=FILE`` retrains a searched cell (``nas_retrain`` settings) after the models. The
sweeps run so far, their settings and results: ``bench/tune/README.md``.

Prints one JSON row per model and a summary line; ``--out`` writes all rows.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from pipeline_lib.data.builtin import built_in_split
from pipeline_lib.classical.classifiers import fit_and_evaluate
from pipeline_lib.models.end_to_end import BackboneConfig, ModelOutputs, NetworkConfig, load_trained, train_and_evaluate
from pipeline_lib.features.store import features_frame
from pipeline_lib.features.extract import FeaturesConfig, compute_features, extract_features
from pipeline_lib.models.networks import penultimate
from pipeline_lib.nas.genotypes import Genotype
from pipeline_lib.study.registry import CLASSIFIERS, spec

ROOT = Path(__file__).resolve().parents[1]
NAMED_OVERRIDES = ROOT / "bench" / "tune" / "overrides.yaml"


def deep_merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_override(ref: str) -> dict:
    """A YAML file, or a named entry of bench/tune/overrides.yaml."""
    path = Path(ref)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return yaml.safe_load(path.read_text()) or {}
    named = yaml.safe_load(NAMED_OVERRIDES.read_text())
    if ref not in named:
        raise SystemExit(f"--override {ref}: neither a YAML file nor a name in {NAMED_OVERRIDES}")
    return named[ref] or {}


def classical_rows(p: dict, frame: pd.DataFrame, X, features_name: str) -> list[dict]:
    rows = []
    for clf in CLASSIFIERS:
        result = fit_and_evaluate(clf, p["classical"][clf], p["study"]["seeds"][0], frame, X, features_name=features_name)
        rows.append(result.metrics)
    return rows


def train_row(model: str, split: pd.DataFrame, network: dict, work: Path, device: torch.device,
              backbone: BackboneConfig | None = None, genotype: dict | None = None) -> dict:
    """One network through ``deep.train_and_evaluate``, with the configs the train / nas_retrain rules build."""
    out = work / "out" / model
    outputs = ModelOutputs(model=out / "model.pt", metrics=out / "metrics.json", predictions=out / "pred.csv",
                           roc=out / "roc.csv", history=out / "history.csv", state_dir=work / "state" / model)
    started = time.perf_counter()
    metrics = train_and_evaluate(model, split, NetworkConfig.from_params(network), outputs, device=device,
                                 backbone=backbone, genotype=genotype, log=logging.getLogger("tune"), progress=False)
    metrics["seconds"] = round(time.perf_counter() - started, 1)
    return metrics


def run(p: dict, work: Path, models: list[str], device: torch.device, genotypes: dict[str, Path]) -> list[dict]:
    data_dir = work / "data"
    t0 = time.perf_counter()
    split = built_in_split(p, data_dir)  # what the generate, ingest and split rules run, on this setting's data folder
    rows: list[dict] = []
    f = p["features"]
    frame, _ = compute_features(split, FeaturesConfig.from_params(f), device=device, progress=False)
    rows += classical_rows(p, frame, np.stack(frame["feature"].to_numpy()), "pretrained")
    t = p["train"]
    for model in models:
        backbone = BackboneConfig.from_params({k: f[k] for k in ("arch", "weights", "weights_file", "seed")}) \
            if spec(model).uses_backbone else None
        network = {"image_size": t["image_size"], "seed": p["study"]["seeds"][0], **t[model]}
        rows.append(train_row(model, split, network, work, device, backbone=backbone))
        if model == "resnet_fbp":
            X = extract_features(penultimate(load_trained(work / "out" / model / "model.pt")), split,
                                 image_size=p["train"]["image_size"], batch_size=f["batch_size"],
                                 device=device, progress=False)
            rows += classical_rows(p, features_frame(split, X), X, "finetuned")
    for method, path in genotypes.items():
        rows.append(train_row(method, split, {**p["nas_retrain"], "seed": p["study"]["seeds"][0]}, work, device, genotype=Genotype.load(path).to_dict()))
    logging.getLogger("tune").info("setting done in %.0f s", time.perf_counter() - t0)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--override", action="append", default=[], metavar="NAME|FILE")
    ap.add_argument("--models", nargs="*", default=["cnn2", "resnet_ll", "resnet_fbp"])
    ap.add_argument("--genotype", action="append", default=[], metavar="NAME=FILE")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    torch.set_num_threads(args.threads)
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    for ref in args.override:
        p = deep_merge(p, load_override(ref))
    genotypes = dict((g.split("=", 1)[0], Path(g.split("=", 1)[1])) for g in args.genotype)
    rows = run(p, args.work, args.models, torch.device(args.device), genotypes)
    keep = ("model", "valid_acc", "test_auc", "best_epoch", "epochs_run", "seconds", "device")
    summary = [{k: r.get(k) for k in keep if k in r} for r in rows]
    for r in summary:
        print(json.dumps(r))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"overrides": [str(o) for o in args.override], "rows": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
