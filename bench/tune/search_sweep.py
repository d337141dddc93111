"""Sweep the DARTS / ENAS search budgets on the built-in data: held-out accuracy, entropy, wall.

Runs the search rules' own library code on the *training split's two halves only* (never
val, never test): generate -> ingest -> split (cached under --work), then one search per
setting, ``params.yaml``'s ``darts_search`` / ``enas_search`` section deep-merged with
``--set key=value`` overrides (YAML values; ``settings.channels=16`` for ENAS's nested keys).
Prints one markdown row per run: setting, held-out accuracy at the last epoch with its count,
the verdict's one-sided binomial p, the entropy, wall and CPU seconds, and the load average.

    PYTHONPATH=src python bench/tune/search_sweep.py --work /tmp/sd darts --set epochs=6 --set max_images=400
    PYTHONPATH=src python bench/tune/search_sweep.py --work /tmp/sd enas --set epochs=8
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import pandas as pd
import torch
import yaml
from torch.utils.data import TensorDataset

from pipeline_lib.data.builtin import built_in_split as make_built_in_split
from pipeline_lib.runtime.allocator import retain_freed_memory
from pipeline_lib.runtime.devices import configure_threads
from pipeline_lib.nas import darts_search, enas_search
from pipeline_lib.nas.darts_config import DartsConfig
from pipeline_lib.nas.search_data import as_tensors, train_halves
from pipeline_lib.report.search_diagnostics import heldout_test

ROOT = Path(__file__).resolve().parents[2]


def built_in_split(p: dict, work: Path) -> pd.DataFrame:
    """The default study's split of the built-in data (made once under ``work``)."""
    cached = work / "split.parquet"
    if cached.exists():
        return pd.read_parquet(cached)
    split = make_built_in_split(p, work / "data")
    split.to_parquet(cached)
    return split


def set_key(section: dict, assignment: str) -> None:
    key, value = assignment.split("=", 1)
    *parents, leaf = key.split(".")
    for k in parents:
        section = section[k]
    section[leaf] = yaml.safe_load(value)


def run_darts(p: dict, split: pd.DataFrame, work: Path) -> pd.DataFrame:
    cfg = DartsConfig.from_params(p)
    a, b = train_halves(split, seed=cfg.seed, max_images=cfg.max_images)
    result = darts_search.search(darts_search.build_network(cfg), TensorDataset(*as_tensors(a, cfg.image_size)),
                                 TensorDataset(*as_tensors(b, cfg.image_size)), cfg, progress=False)
    return pd.DataFrame([{k: v for k, v in r.items() if not isinstance(v, (dict, list))} for r in result.epoch_log])


def run_enas(p: dict, split: pd.DataFrame, work: Path) -> pd.DataFrame:
    a, b = train_halves(split, seed=p["seed"], max_images=p["max_images"])
    state = work / f"enas_state_{os.getpid()}_{time.time_ns()}"
    _, history = enas_search.search(as_tensors(a, p["image_size"]), as_tensors(b, p["image_size"]), num_classes=2,
                                    epochs=p["epochs"], seed=p["seed"], state_dir=state, config={**p["settings"], "balance_classes": p["balance_classes"]},
                                    progress=False)
    return pd.DataFrame([{k: v for k, v in r.items() if k != "sampled_archs"} for r in history])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("method", choices=("darts", "enas"))
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--set", action="append", default=[], help="key=value over the method's params.yaml section")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=None, help="study seed (default: the first of params.yaml study.seeds)")
    args = ap.parse_args(argv)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    args.work.mkdir(parents=True, exist_ok=True)
    split = built_in_split(params, args.work)
    # the searches take the study seed as the rule's {seed} wildcard does
    section = {**copy.deepcopy(params[f"{args.method}_search"]),
               "seed": params["study"]["seeds"][0] if args.seed is None else args.seed}
    for assignment in args.set:
        set_key(section, assignment)
    configure_threads(args.threads)
    retain_freed_memory()  # as the search jobs run (step.run_step)
    wall, cpu = time.perf_counter(), time.process_time()
    history = (run_darts if args.method == "darts" else run_enas)(section, split, args.work)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    last = history.iloc[-1]
    entropy = (f"{last['entropy_normal']:.2f}/{last['entropy_reduce']:.2f} of {last['entropy_max']:.2f}"
               if args.method == "darts" else f"{last['entropy_mean']:.2f} of {last['entropy_max']:.2f}")
    curve = " ".join(f"{v:.2f}" for v in history["heldout_acc"])
    print(f"| {args.method} {' '.join(args.set) or 'default'} | {last['heldout_acc']:.3f} "
          f"({int(last['heldout_correct'])}/{int(last['heldout_n'])}) | {heldout_test(last).pvalue:.3g} | {curve} | "
          f"{entropy} | {wall:.0f} | {cpu:.0f} | {os.getloadavg()[0]:.2f} |", flush=True)
    history.to_csv(args.work / f"{args.method}_{time.time_ns()}.csv", index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
