"""Time one DARTS search step (one α step + one weight step) and its peak memory, beside
khanrc/pt.darts in the same run.

Configuration (REFERENCE.md): batch 16, 3x32x32 input, 2 classes, C=8, 5 layers, 4 nodes,
2 threads. Targets: <= 0.33x pt.darts' step time and <= 0.5x its peak memory, first and
second order, measured side by side (``--ptdarts PATH``: a checkout of the public code,
kept outside the repository and run unmodified).

Every (order, implementation) runs in a fresh subprocess, so its peak RSS (``ru_maxrss``:
the whole process, ``import torch`` included) is its own; 1 warm-up step, then ``--steps``
timed steps, median per child. ``--rounds`` repeats every child, alternating which
implementation runs first, so that a shared machine's load hits both; the ratios are the
medians of the per-round ratios.

    PYTHONPATH=src python bench/bench_darts_step.py --ptdarts /tmp/ptdarts [--rounds 3]
        [--steps 3] [--threads 2] [--orders first,second] [--kept-cells 0] [--reference] [--check]

pt.darts has no first-order switch: its first order is timed as DARTS defines it,
∇α L_val(w) at the current weights (one backward, asked for α only, no unrolled model),
from its own model; its second order is its ``Architect.unrolled_backward``. Its weight
step is its ``search.py`` loop body (``loss.backward()``, clip 5, ``torch.optim.SGD``).
``--reference`` adds this project's edge-by-edge path (``SearchNetwork(reference=True)``:
the generic ``MixedOp`` over ``ops.OPS`` with every other optimisation kept);
``--torch-optim`` ours with torch.optim.SGD / Adam instead of the hand-written ones.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_TIME_FRACTION = 0.33
TARGET_RSS_FRACTION = 0.5
BATCH, SIZE, CLASSES, C, LAYERS, NODES = 16, 32, 2, 8, 5, 4
W_LR, W_MOMENTUM, W_WD, GRAD_CLIP = 0.025, 0.9, 3e-4, 5.0


def _batches(torch):
    gen = torch.Generator().manual_seed(1)
    xa, xb = torch.randn(BATCH, 3, SIZE, SIZE, generator=gen), torch.randn(BATCH, 3, SIZE, SIZE, generator=gen)
    ya, yb = torch.randint(0, CLASSES, (BATCH,), generator=gen), torch.randint(0, CLASSES, (BATCH,), generator=gen)
    return xa, ya, xb, yb


def _time_steps(step, steps: int) -> dict:
    times, cpu = [], []
    for i in range(1 + steps):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        if i > 0:
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {"times": times, "cpu": cpu, "peak_rss_mb": peak_mb, "dynamo": "torch._dynamo" in sys.modules}


def child_ours(args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    from pipeline_lib.nas.architect import Architect
    from pipeline_lib.nas.darts_search import search_step, weight_optimizer
    from pipeline_lib.runtime.allocator import retain_freed_memory
    from pipeline_lib.nas.search_model import SearchNetwork

    if not args.no_mallopt:
        retain_freed_memory()
    torch.manual_seed(0)
    model = SearchNetwork(C=C, num_classes=CLASSES, layers=LAYERS, nodes=NODES, seed=0, channels_last=not args.nchw,
                          kept_cells=args.kept_cells)
    model.reference_impl = args.impl == "reference"
    model.train()
    w_opt = weight_optimizer(model, lr=W_LR, momentum=W_MOMENTUM, weight_decay=W_WD)
    architect = Architect(model, w_opt, order=args.order)
    if args.impl == "torch-optim":  # what the hand-written optimizers save (see architect.py)
        w_opt = torch.optim.SGD(model.weight_parameters(), lr=W_LR, momentum=W_MOMENTUM, weight_decay=W_WD)
        architect.w_optimizer = w_opt
        architect.optimizer = torch.optim.Adam(architect.alphas, lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    xa, ya, xb, yb = _batches(torch)
    return _time_steps(lambda: search_step(model, architect, w_opt, xa, ya, xb, yb, grad_clip=GRAD_CLIP), args.steps)


def child_ptdarts(args: argparse.Namespace) -> dict:
    """pt.darts' own modules, unmodified; the step is its ``search.py: train`` loop body."""
    import torch
    from torch import nn

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(Path(args.ptdarts).resolve()))
    from architect import Architect  # noqa: E402 (pt.darts)
    from models.search_cnn import SearchCNNController  # noqa: E402 (pt.darts)

    torch.manual_seed(0)
    # device_ids=[0]: one replica, plain forward (its multi-GPU path needs CUDA)
    model = SearchCNNController(3, C, CLASSES, LAYERS, nn.CrossEntropyLoss(), n_nodes=NODES, device_ids=[0])
    w_optim = torch.optim.SGD(model.weights(), W_LR, momentum=W_MOMENTUM, weight_decay=W_WD)
    alpha_optim = torch.optim.Adam(model.alphas(), 3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    architect = Architect(model, W_MOMENTUM, W_WD) if args.order == "second" else None
    xa, ya, xb, yb = _batches(torch)
    model.train()

    def step() -> None:
        alpha_optim.zero_grad()
        if architect is not None:
            architect.unrolled_backward(xa, ya, xb, yb, W_LR, w_optim)
        else:  # DARTS's first order: ∇α L_val(w), nothing unrolled
            alphas = tuple(model.alphas())
            for a, g in zip(alphas, torch.autograd.grad(model.loss(xb, yb), alphas)):
                a.grad = g
        alpha_optim.step()
        w_optim.zero_grad()
        loss = model.criterion(model(xa), ya)
        loss.backward()
        nn.utils.clip_grad_norm_(model.weights(), GRAD_CLIP)
        w_optim.step()

    return _time_steps(step, args.steps)


def run_child(args: argparse.Namespace, order: str, impl: str) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--order", order, "--impl", impl,
           "--steps", str(args.steps), "--threads", str(args.threads)]  # fmt: skip
    cmd += ["--nchw"] * args.nchw + ["--no-mallopt"] * args.no_mallopt
    if impl == "ptdarts":
        cmd += ["--ptdarts", str(args.ptdarts)]
    else:
        cmd += ["--kept-cells", str(args.kept_cells)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    if args.passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["median"], res["cpu_median"] = statistics.median(res["times"]), statistics.median(res["cpu"])
    return res


def _load() -> str:
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "?"


def measure(args: argparse.Namespace, impls: list[str]) -> dict[tuple[str, str], list[dict]]:
    """Every (order, impl) once per round; the order of the impls alternates by round."""
    runs: dict[tuple[str, str], list[dict]] = {}
    for r in range(args.rounds):
        for order in args.orders.split(","):
            for impl in impls if r % 2 == 0 else impls[::-1]:
                res = run_child(args, order, impl)
                runs.setdefault((order, impl), []).append(res)
                print(f"round {r + 1} {order:<6} {impl:<9} {res['median']:6.2f} s/step  {res['peak_rss_mb']:5.0f} MB  "
                      f"(load {_load()})", file=sys.stderr, flush=True)  # fmt: skip
    return runs


def report(args: argparse.Namespace, runs: dict[tuple[str, str], list[dict]], load_before: str) -> list[str]:
    """Print the table; return the missed targets."""
    have_pt = args.ptdarts is not None
    print(f"DARTS search step: batch {BATCH}, 3x{SIZE}x{SIZE}, {CLASSES} classes, C={C}, {LAYERS} layers, {NODES} nodes, "
          f"{args.threads} threads; {args.rounds} round(s) x {args.steps} timed steps after 1 warm-up; "
          f"load before {load_before}, after {_load()}{', OMP_WAIT_POLICY=PASSIVE' if args.passive else ''}"
          f"; ours with {args.kept_cells} kept cell(s)")  # fmt: skip
    print("| order | impl | s/step | cpu s/step | peak RSS MB | × pt.darts time | × pt.darts cpu | × pt.darts RSS |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    missed = []
    for (order, impl), res in runs.items():
        med = statistics.median(r["median"] for r in res)
        cpu = statistics.median(r["cpu_median"] for r in res)
        rss = statistics.median(r["peak_rss_mb"] for r in res)
        t_ratio = c_ratio = m_ratio = float("nan")
        if have_pt and impl != "ptdarts":
            pt = runs[(order, "ptdarts")]
            t_ratio = statistics.median(a["median"] / b["median"] for a, b in zip(res, pt))
            c_ratio = statistics.median(a["cpu_median"] / b["cpu_median"] for a, b in zip(res, pt))
            m_ratio = statistics.median(a["peak_rss_mb"] / b["peak_rss_mb"] for a, b in zip(res, pt))
            if impl == "fused" and t_ratio > TARGET_TIME_FRACTION:
                missed.append(f"{order} order: {t_ratio:.2f}x pt.darts' time > {TARGET_TIME_FRACTION}")
            if impl == "fused" and m_ratio > TARGET_RSS_FRACTION:
                missed.append(f"{order} order: {m_ratio:.2f}x pt.darts' peak RSS > {TARGET_RSS_FRACTION}")
        spread = f"{min(r['median'] for r in res):.2f}-{max(r['median'] for r in res):.2f}"
        print(f"| {order} | {impl} | {med:.2f} ({spread}) | {cpu:.2f} | {rss:.0f} | {t_ratio:.2f} | {c_ratio:.2f} | {m_ratio:.2f} |")
    print(f"targets: <= {TARGET_TIME_FRACTION}x pt.darts' time, <= {TARGET_RSS_FRACTION}x its peak RSS (first and second order)")
    return missed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ptdarts", type=Path, default=None, help="checkout of khanrc/pt.darts to time beside ours")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed (needs --ptdarts)")
    parser.add_argument("--rounds", type=int, default=1, help="runs of every child, alternating the order")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after 1 warm-up (>= 3)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--orders", default="first,second")
    parser.add_argument("--reference", action="store_true", help="also time the edge-by-edge path")
    parser.add_argument("--torch-optim", action="store_true", help="also time ours with torch.optim.SGD / Adam")
    parser.add_argument("--nchw", action="store_true", help="NCHW instead of channels_last (ours)")
    parser.add_argument("--kept-cells", type=int, default=0,
                        help="ours: the last N cells keep their intermediates (darts_search.kept_cells; default 0, all recomputed)")
    parser.add_argument("--no-mallopt", action="store_true", help="keep glibc's default allocator settings")
    parser.add_argument("--passive", action="store_true",
                        help="OMP_WAIT_POLICY=PASSIVE in the children (a machine shared with other jobs)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--order", default="first", help=argparse.SUPPRESS)
    parser.add_argument("--impl", default="fused", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        res = child_ptdarts(args) if args.impl == "ptdarts" else child_ours(args)
        print(json.dumps(res))
        return 0
    if args.check and args.ptdarts is None:
        parser.error("--check compares with pt.darts: give --ptdarts PATH")
    if args.ptdarts is not None and not (args.ptdarts / "architect.py").is_file():
        parser.error(f"--ptdarts {args.ptdarts}: no architect.py there; clone khanrc/pt.darts into it")
    args.steps = max(3, args.steps)
    impls = ["fused"] + ["reference"] * args.reference + ["torch-optim"] * args.torch_optim + ["ptdarts"] * (args.ptdarts is not None)
    load_before = _load()
    missed = report(args, measure(args, impls), load_before)
    for m in missed:
        print("MISSED:", m)
    return 1 if (args.check and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
