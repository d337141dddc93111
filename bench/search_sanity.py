"""Search sanity benchmark: do DARTS and ENAS learn on data where they must? (issue 28)

Runs each search with the study's own settings (``params.yaml``'s ``darts_search`` /
``enas_search`` sections, with ``--set`` overrides) on the two sets of
``pipeline_lib.nas.sanity_sets`` (scikit-learn's digits, parity as the class; noise with a
planted 3x3 patch), and, as the calibration, the 2-layer CNN of the study (``CNN2``, max
pooling, Adam 1e-3) trained on the same weights' half for the same number of weight steps.
Every score is on the held-out half's class-balanced subset (chance 0.5), the searches' with
BN recalibrated on the weights' half (``search_eval.heldout_scores``). Prints one markdown row
per (set, model): held-out count, one-sided binomial p, weight steps, CPU seconds.

    PYTHONPATH=src python bench/search_sanity.py --threads 1
    PYTHONPATH=src python bench/search_sanity.py --sets digits --methods darts --set darts.epochs=2
"""

from __future__ import annotations

import argparse
import copy
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from scipy.stats import binomtest

from pipeline_lib.models.networks import CNN2
from pipeline_lib.nas import darts_search, enas_search
from pipeline_lib.nas.darts_config import DartsConfig
from pipeline_lib.nas.sanity_sets import digits_halves, planted_patch_halves
from pipeline_lib.nas.search_eval import balanced_indices, dataset_labels, score
from pipeline_lib.runtime.allocator import retain_freed_memory
from pipeline_lib.runtime.devices import configure_threads

ROOT = Path(__file__).resolve().parents[1]
SETS = {"digits": digits_halves, "patch": planted_patch_halves}


def run_darts(p: dict, a, b, seed: int) -> dict:
    cfg = DartsConfig.from_params({**p, "seed": seed})
    result = darts_search.search(darts_search.build_network(cfg), a, b, cfg, progress=False)
    last = result.epoch_log[-1]
    return {"correct": last["heldout_correct"], "n": last["heldout_n"], "steps": sum(r["steps"] for r in result.epoch_log),
            "entropy": f"{last['entropy_normal']:.4f} of {last['entropy_max']:.4f}"}


def run_enas(p: dict, a, b, seed: int) -> dict:
    state = Path(tempfile.mkdtemp(prefix="enas_sanity_"))
    try:
        _, history = enas_search.search(a, b, num_classes=2, epochs=p["epochs"], seed=seed, state_dir=state,
                                        config={**p["settings"], "balance_classes": p["balance_classes"]},
                                        progress=False)
    finally:
        shutil.rmtree(state, ignore_errors=True)
    last = history[-1]
    return {"correct": last["heldout_correct"], "n": last["heldout_n"], "steps": sum(r["child_steps"] for r in history),
            "entropy": f"{last['entropy_mean'] or 0:.2f} of {last['entropy_max']:.2f}"}


def run_cnn2(a, b, steps: int, seed: int, batch_size: int = 16) -> dict:
    """The calibration: the study's 2-layer CNN, ``steps`` Adam steps on the weights' half."""
    torch.manual_seed(seed)
    model = CNN2(channels=(32, 64), kernel_size=5, pool="max")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    x, y = a.tensors
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(y), (batch_size,), generator=gen)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    subset = torch.utils.data.Subset(b, balanced_indices(dataset_labels(b), seed).tolist())
    s = score(model, subset, batch_size=64, device=torch.device("cpu"))
    return {"correct": s["correct"], "n": s["n"], "steps": steps, "entropy": ""}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    ap.add_argument("--methods", nargs="+", default=["darts", "enas"], choices=["darts", "enas"])
    ap.add_argument("--n", type=int, default=300, help="images per half")
    ap.add_argument("--size", type=int, default=32, help="image side in px (overrides the sections' image_size)")
    ap.add_argument("--set", action="append", default=[], help="method.key=value over params.yaml, e.g. darts.epochs=2")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    sections = {m: copy.deepcopy(params[f"{m}_search"]) for m in ("darts", "enas")}
    for assignment in args.set:
        key, value = assignment.split("=", 1)
        method, *parents, leaf = key.split(".")
        node = sections[method]
        for k in parents:
            node = node[k]
        node[leaf] = yaml.safe_load(value)
    configure_threads(args.threads)
    retain_freed_memory()
    print("| set | model | held-out correct | p (one-sided binomial vs 0.5) | weight steps | entropy | CPU s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in args.sets:
        a, b = SETS[name](args.n, args.size, seed=args.seed)
        for method in args.methods:
            p = {**sections[method], "image_size": args.size}
            cpu = time.process_time()
            out = (run_darts if method == "darts" else run_enas)(p, a, b, args.seed)
            cpu = time.process_time() - cpu
            _row(name, method, out, cpu)
            cpu = time.process_time()
            calib = run_cnn2(a, b, out["steps"], args.seed)
            _row(name, f"cnn2, same steps as {method}", calib, time.process_time() - cpu)
    return 0


def _row(name: str, model: str, out: dict, cpu: float) -> None:
    p = binomtest(int(out["correct"]), int(out["n"]), 0.5, alternative="greater").pvalue
    print(f"| {name} | {model} | {out['correct']}/{out['n']} = {out['correct'] / out['n']:.3f} | {p:.2g} | "
          f"{out['steps']} | {out['entropy']} | {cpu:.0f} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
