"""Full-size plan: per GPU rule, the work config/full.yaml asks for, its cost per image
measured here on the CPU, and an estimate (labelled as one) of the time on one H100/H200.

    PYTHONPATH=src python bench/scale/plan.py [--batch 4] [--steps 2] [--threads 2]
        [--loader bench/scale/results/loader.json] [--workers 15] [--out bench/scale/results/plan.json]
        [--measured bench/scale/results/plan.json]   # recompute the plan from earlier measurements

1. **Work** (exact, from the merged config the workflow sees: params.yaml + config/full.yaml,
   recursive update): images through each kind of pass per rule, for the study's data size --
   30,000 train images (300 held out for validation) + 3,000 test, a bad fraction of
   ``generate.bad_fraction`` (the real one is not published) -- using the rules' own data code
   (``train_halves`` for the two search halves). Epoch counts are upper bounds (no early stop).
2. **Measured here** (CPU, ``--threads``): every kind of pass at its full-size configuration
   (model, channels, layers, image size) but a reduced batch (``--batch`` images, marked): CPU
   seconds per image (``time.process_time``) and FLOPs per image (``torch.utils.flop_counter``,
   the same pass; backward and optimizer included).
3. **GPU: not measured** (no GPU in this session). The estimate divides the rule's FLOPs by an
   effective rate derived from published throughput: ResNet-50 mixed-precision training on an
   A100, 2,600 images/s (timm, huggingface/pytorch-image-models#1491), times 1.8 for an H100
   (MLPerf Training v3.0, Dell's 16-GPU ResNet-50 submissions, 7.8 vs 14.4 min), times this
   file's own FLOP count of a ResNet-50 training image. H200 = H100 compute. Dense convolutions
   reach that rate; the NAS cells' depthwise-separable convolutions are memory-bound and reach
   less, so their estimates are lower bounds. Rules that decode JPEGs every epoch are also
   bounded by the loader: images / (``--workers`` x images/s one core decodes, ``--loader``);
   15 workers need the GPU rules to get 15 threads (``--set-threads``: workers = threads on CUDA).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import yaml


ROOT = Path(__file__).resolve().parents[2]
N_TRAIN, N_VAL, N_TEST = 30_000, 300, 3_000
A100_RN50_IMG_S, H100_OVER_A100 = 2600.0, 1.8


def merged_config() -> dict:
    from snakemake.utils import update_config

    config = yaml.safe_load((ROOT / "params.yaml").read_text())
    update_config(config, yaml.safe_load((ROOT / "config/full.yaml").read_text()))
    return config


def search_halves(cfg: dict, section: str) -> tuple[int, int]:
    """Image counts of the two training-split halves the search rule would use."""
    from pipeline_lib.nas.search_data import train_halves

    n_bad = round(N_TRAIN * cfg["generate"]["bad_fraction"]) - N_VAL // 2
    labels = np.r_[np.zeros(N_TRAIN - N_VAL - n_bad, int), np.ones(n_bad, int)]
    frame = pd.DataFrame({"id": [f"i{i:05d}" for i in range(len(labels))], "label": labels, "split": "train"})
    p = cfg[section]
    a, b = train_halves(frame, seed=cfg["study"]["seeds"][0], max_images=p["max_images"])
    return len(a), len(b)


# ------------------------------------------------------------------ passes (one step each)
def _train_step(model, batch, image_size, aux_weight=0.0):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    x = torch.randn(batch, 3, image_size, image_size).contiguous(memory_format=torch.channels_last)
    y = torch.arange(batch) % 2
    model.train().to(memory_format=torch.channels_last)

    def step():
        opt.zero_grad(set_to_none=True)
        out = model(x)
        logits, aux = out if isinstance(out, tuple) else (out, None)
        loss = F.cross_entropy(logits, y) + (aux_weight * F.cross_entropy(aux, y) if aux is not None else 0.0)
        loss.backward()
        opt.step()
    return step


def _eval_step(model, batch, image_size):
    x = torch.randn(batch, 3, image_size, image_size).contiguous(memory_format=torch.channels_last)
    model.eval().to(memory_format=torch.channels_last)

    def step():
        with torch.inference_mode():
            model(x)
    return step


def make_passes(cfg: dict, batch: int) -> dict:
    """kind -> (factory of a one-step closure at ``batch`` images, image size)."""
    from pipeline_lib.features.backbones import build_backbone
    from pipeline_lib.models.networks import build_model
    from pipeline_lib.nas.architect import Architect, MomentumSGD
    from pipeline_lib.nas.darts_search import search_step
    from pipeline_lib.nas.enas_config import EnasConfig
    from pipeline_lib.nas.enas_search import build_models
    from pipeline_lib.nas.search_model import SearchNetwork
    import torchvision

    tr, size = cfg["train"], cfg["train"]["image_size"]
    retrain = cfg["nas_retrain"]

    def net(name, **kw):
        torch.manual_seed(0)
        return build_model(name, image_size=size, **{**tr.get(name, {}).get("model", {}), **kw})

    def nas_net(method):
        genotype = json.loads((ROOT / f"bench/tune/genotypes/{method}.json").read_text())
        torch.manual_seed(0)
        return build_model(method, image_size=retrain["image_size"], genotype=genotype, **retrain["model"])

    def darts():
        d = cfg["darts_search"]
        model = SearchNetwork(C=d["channels"], num_classes=2, layers=d["layers"], nodes=d["nodes"], seed=0).train()
        w_opt = MomentumSGD(model.weight_parameters(), lr=d["w_lr"], momentum=d["w_momentum"], weight_decay=d["w_weight_decay"])
        arch = Architect(model, w_opt, order=d["order"], lr=d["alpha_lr"])
        s = d["image_size"]
        xa, xb = torch.randn(batch, 3, s, s), torch.randn(batch, 3, s, s)
        y = torch.arange(batch) % 2
        return lambda: search_step(model, arch, w_opt, xa, y, xb, y, grad_clip=d["grad_clip"])

    def enas(train: bool):
        e = cfg["enas_search"]
        ecfg = EnasConfig.from_params(e["settings"])
        child, controller = build_models(2, ecfg, 0)
        arch = controller.sample().arch
        s = e["image_size"]
        x = torch.randn(batch, 3, s, s).contiguous(memory_format=torch.channels_last)
        y = torch.arange(batch) % 2
        child.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(child.parameters(), lr=0.05, momentum=0.9, nesterov=True)

        def step():
            if train:
                child.train()
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(child(x, arch), y).backward()
                opt.step()
            else:
                child.eval()
                with torch.no_grad():
                    child(x, arch)
        return step

    backbone = lambda: build_backbone(cfg["features"]["arch"], "none", seed=0)[0]  # noqa: E731  (the features rule's network)
    return {
        "resnet18_features": (lambda: _eval_step(backbone(), batch, cfg["features"]["image_size"]), cfg["features"]["image_size"]),
        "cnn2_train": (lambda: _train_step(net("cnn2"), batch, size), size),
        "cnn2_eval": (lambda: _eval_step(net("cnn2"), batch, size), size),
        "resnet_ll_train": (lambda: _train_step(net("resnet_ll"), batch, size), size),
        "resnet_fbp_train": (lambda: _train_step(net("resnet_fbp"), batch, size), size),
        "resnet_eval": (lambda: _eval_step(net("resnet_fbp"), batch, size), size),
        "darts_search_step": (darts, cfg["darts_search"]["image_size"]),
        "enas_child_train": (lambda: enas(True), cfg["enas_search"]["image_size"]),
        "enas_reward_eval": (lambda: enas(False), cfg["enas_search"]["image_size"]),
        "darts_retrain_train": (lambda: _train_step(nas_net("darts"), batch, retrain["image_size"], retrain["loop"]["aux_weight"]), retrain["image_size"]),
        "enas_retrain_train": (lambda: _train_step(nas_net("enas"), batch, retrain["image_size"], retrain["loop"]["aux_weight"]), retrain["image_size"]),
        "darts_retrain_eval": (lambda: _eval_step(nas_net("darts"), batch, retrain["image_size"]), retrain["image_size"]),
        "enas_retrain_eval": (lambda: _eval_step(nas_net("enas"), batch, retrain["image_size"]), retrain["image_size"]),
        "resnet50_train_reference": (lambda: _train_step(torchvision.models.resnet50(num_classes=2), batch, 224), 224),
    }


def measure(factory, batch: int, steps: int, time_it: bool = True) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    step = factory()
    step()  # warm-up
    cpu = wall = float("nan")
    if time_it:
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(steps):
            step()
        cpu, wall = (time.process_time() - c0) / steps / batch, (time.perf_counter() - t0) / steps / batch
    with FlopCounterMode(display=False) as counter:
        step()
    return {"cpu_s_per_img": cpu, "wall_s_per_img": wall, "gflop_per_img": counter.get_total_flops() / batch / 1e9}


# ------------------------------------------------------------------ the work per rule
def _loop_work(loop: dict, train_kind: str, eval_kind: str) -> dict:
    n_tr, epochs, bs = N_TRAIN - N_VAL, loop["epochs"], loop["batch_size"]
    return {"steps": epochs * math.ceil(n_tr / bs), "passes": {train_kind: epochs * n_tr, eval_kind: epochs * N_VAL + N_TEST},
            "decoded": epochs * (n_tr + N_VAL) + N_TEST, "loader": "train"}


def rule_work(cfg: dict) -> dict:
    """rule -> steps, images per kind of pass, images decoded (and by which loader)."""
    from pipeline_lib.nas.enas_config import EnasConfig

    n_all, fbs = N_TRAIN + N_TEST, cfg["features"]["batch_size"]
    work = {r: {"steps": math.ceil(n_all / fbs), "passes": {"resnet18_features": n_all}, "decoded": n_all, "loader": "features"}
            for r in ("features", "features_finetuned")}
    for model, train_kind, eval_kind in (("cnn2", "cnn2_train", "cnn2_eval"), ("resnet_ll", "resnet_ll_train", "resnet_eval"),
                                         ("resnet_fbp", "resnet_fbp_train", "resnet_eval")):
        work[f"train[{model}]"] = _loop_work(cfg["train"][model]["loop"], train_kind, eval_kind)
    d = cfg["darts_search"]
    na, nb = search_halves(cfg, "darts_search")
    per_epoch = min(na // d["batch_size"] if na > d["batch_size"] else 1, d["max_steps_per_epoch"] or math.inf)
    work["darts_search"] = {"steps": d["epochs"] * per_epoch, "passes": {"darts_search_step": d["epochs"] * per_epoch * d["batch_size"]},
                            "decoded": na + nb, "loader": "features", "halves": [na, nb]}
    e = cfg["enas_search"]
    s = EnasConfig.from_params(e["settings"])
    nc, nr = search_halves(cfg, "enas_search")
    child = min(nc // s.batch_size if nc > s.batch_size else 1, s.max_child_steps or math.inf)
    rewards = e["epochs"] * s.controller_steps * s.controller_samples + s.n_candidates * s.candidate_batches
    work["enas_search"] = {"steps": e["epochs"] * (child + s.controller_steps),
                           "passes": {"enas_child_train": e["epochs"] * child * s.batch_size, "enas_reward_eval": rewards * s.reward_bs},
                           "decoded": nc + nr, "loader": "features", "halves": [nc, nr]}
    for method in ("darts", "enas"):
        work[f"nas_retrain[{method}]"] = _loop_work(cfg["nas_retrain"]["loop"], f"{method}_retrain_train", f"{method}_retrain_eval")
    for w in work.values():  # the search rules decode their halves once, in the main process
        w["decode_once"] = w["decoded"] == sum(w.get("halves", [-1]))
    return work


def loader_rates(path: Path) -> dict:
    """Images/s one core decodes for each loader: 1000 / main-process CPU ms at 0 workers."""
    rows = json.loads(path.read_text())["rows"]
    return {r["loader"]: 1000.0 / r["main_cpu_ms_per_img"] for r in rows if r["workers"] == 0}


def plan(cfg: dict, measured: dict, rates: dict, threads: int, workers: int) -> list[dict]:
    rate = A100_RN50_IMG_S * H100_OVER_A100 * measured["resnet50_train_reference"]["gflop_per_img"] * 1e9
    rows = []
    seeds = len(cfg["study"]["seeds"])
    for rule, w in rule_work(cfg).items():
        cpu_s = sum(n * measured[k]["cpu_s_per_img"] for k, n in w["passes"].items())
        flops = sum(n * measured[k]["gflop_per_img"] * 1e9 for k, n in w["passes"].items())
        n_workers = 1 if w["decode_once"] else workers
        load_s = w["decoded"] / (n_workers * rates[w["loader"]]) if w["loader"] in rates else float("nan")
        gpu_s = flops / rate
        bound = max(gpu_s, load_s) if not w["decode_once"] else gpu_s + load_s
        rows.append({"rule": rule, "steps": w["steps"], "images": w["passes"], "decoded": w["decoded"],
                     "cpu_core_h": cpu_s / 3600, "cpu_2core_h": cpu_s / 3600 / threads, "tflop": flops / 1e12,
                     "gpu_measured": "not measured", "gpu_compute_min_est": gpu_s / 60, "loader_min_est": load_s / 60,
                     "estimate_min": bound / 60,
                     # one job per study seed, but the pretrained features (no seed)
                     "jobs": 1 if rule == "features" else seeds})
    return rows


def markdown(rows: list[dict], measured: dict, batch: int, workers: int) -> str:
    lines = ["| rule | steps | images through the network | TFLOP | CPU core-h (measured / img x images) | GPU time | "
             f"GPU compute min (est.) | loader min (est., {workers} workers) | estimate min | jobs (seeds) |",
             "| --- | ---: | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        images = ", ".join(f"{k} {v:,}" for k, v in r["images"].items())
        lines.append(f"| {r['rule']} | {r['steps']:,} | {images} | {r['tflop']:,.0f} | {r['cpu_core_h']:,.1f} | not measured | "
                     f"{r['gpu_compute_min_est']:,.1f} | {r['loader_min_est']:,.1f} | {r['estimate_min']:,.1f} | {r.get('jobs', 1)} |")
    total = sum(r["estimate_min"] * r.get("jobs", 1) for r in rows)  # every seed's job, one GPU after another
    lines.append(f"| **total** | | | {sum(r['tflop'] for r in rows):,.0f} | {sum(r['cpu_core_h'] for r in rows):,.0f} | "
                 f"not measured | {sum(r['gpu_compute_min_est'] for r in rows):,.1f} | | **{total:,.1f}** (all jobs) | |")
    lines += ["", f"Per image, measured here on the CPU at batch {batch} (marked: reduced batch):", "",
              "| pass | image px | CPU s / image | wall s / image | GFLOP / image |", "| --- | ---: | ---: | ---: | ---: |"]
    for kind, m in measured.items():
        lines.append(f"| {kind} | {m['image_size']} | {m['cpu_s_per_img']:.4f} | {m['wall_s_per_img']:.4f} | {m['gflop_per_img']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--loader", type=Path, default=ROOT / "bench/scale/results/loader.json")
    ap.add_argument("--workers", type=int, default=15, help="DataLoader workers on the GPU host (its cores - 1)")
    ap.add_argument("--measured", type=Path, help="reuse the per-image measurements of an earlier --out file")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = merged_config()
    earlier = json.loads(args.measured.read_text()) if args.measured else {}
    measured = earlier.get("measured", {})
    load_before = earlier.get("load_before") or [round(x, 2) for x in os.getloadavg()]
    for kind, (factory, size) in make_passes(cfg, args.batch).items() if not measured else ():
        measured[kind] = {**measure(factory, args.batch, args.steps, time_it=kind != "resnet50_train_reference"), "image_size": size}
        print(kind, json.dumps(measured[kind]), flush=True)
    rows = plan(cfg, measured, loader_rates(args.loader) if args.loader.exists() else {}, args.threads, args.workers)
    batch = earlier.get("batch", args.batch)
    text = markdown(rows, measured, batch, args.workers)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"batch": batch, "threads": args.threads, "workers": args.workers, "load_before": load_before,
                                        "load_after": earlier.get("load_after") or [round(x, 2) for x in os.getloadavg()],
                                        "measured": measured, "rows": rows, "markdown": text}, indent=1) + "\n")


if __name__ == "__main__":
    main()
