"""Time one DARTS search step (one α step + one weight step) and its peak memory.

Configuration of the reference measurement (REFERENCE.md): batch 16, 3x32x32 input,
2 classes, C=8, 5 layers, 4 nodes, 2 threads; a widely used public reimplementation takes
~5.5 s (first order) and ~11.7 s (second order) per step with peak RSS ~1.5-1.8 GB.
Targets: <= 1/3 of those times and <= 1/2 of the (lower) memory figure.

Every configuration runs in a fresh subprocess, so peak RSS (``ru_maxrss``: the whole
process, ``import torch`` included) is its own. Each child runs 1 warm-up step and then
``--steps`` timed steps of ``darts_search.search_step`` (the search loop's own step);
the table shows the median.

    PYTHONPATH=src .venv/bin/python bench/bench_darts_step.py [--check] [--steps 3]
        [--threads 2] [--reference]   # --reference also times the edge-by-edge path

``--reference`` adds the same mathematics evaluated edge by edge, op by op (the public
code's structure, ``SearchNetwork(reference_impl=True)``) on this machine, for a
same-machine ratio when the machine is not the reference's.
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

REFERENCE_SECONDS = {"first": 5.5, "second": 11.7}
REFERENCE_RSS_MB = 1500.0  # lower end of 1.5-1.8 GB
TARGET_TIME_FRACTION = 1 / 3
TARGET_RSS_FRACTION = 1 / 2


def child(args: argparse.Namespace) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    from pipeline_lib.nas.architect import Architect, MomentumSGD
    from pipeline_lib.nas.darts_search import configure_allocator, search_step
    from pipeline_lib.nas.search_model import SearchNetwork

    if not args.no_mallopt:
        configure_allocator()
    torch.manual_seed(0)
    model = SearchNetwork(C=8, num_classes=2, layers=5, nodes=4, seed=0, channels_last=not args.nchw)
    model.reference_impl = args.impl == "reference"
    model.train()
    w_opt = MomentumSGD(model.weight_parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    architect = Architect(model, w_opt, order=args.order)
    gen = torch.Generator().manual_seed(1)
    xa, xb = torch.randn(16, 3, 32, 32, generator=gen), torch.randn(16, 3, 32, 32, generator=gen)
    ya, yb = torch.randint(0, 2, (16,), generator=gen), torch.randint(0, 2, (16,), generator=gen)
    times, cpu = [], []
    for i in range(1 + args.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        search_step(model, architect, w_opt, xa, ya, xb, yb, grad_clip=5.0)
        if i > 0:
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"times": times, "cpu": cpu, "peak_rss_mb": peak_mb, "dynamo": "torch._dynamo" in sys.modules}))


def run_config(args: argparse.Namespace, order: str, impl: str) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--order", order, "--impl", impl,
           "--steps", str(args.steps), "--threads", str(args.threads)]  # fmt: skip
    if args.nchw:
        cmd.append("--nchw")
    if args.no_mallopt:
        cmd.append("--no-mallopt")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    if args.passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after 1 warm-up (>= 3)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--orders", default="first,second")
    parser.add_argument("--reference", action="store_true", help="also time the edge-by-edge path")
    parser.add_argument("--nchw", action="store_true", help="NCHW instead of channels_last")
    parser.add_argument("--no-mallopt", action="store_true", help="keep glibc's default allocator settings")
    parser.add_argument("--passive", action="store_true",
                        help="OMP_WAIT_POLICY=PASSIVE in the children (a machine shared with other jobs)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--order", default="first", help=argparse.SUPPRESS)
    parser.add_argument("--impl", default="fused", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0
    args.steps = max(3, args.steps)
    impls = ["fused"] + (["reference"] if args.reference else [])
    rows, missed = [], []
    for order in args.orders.split(","):
        for impl in impls:
            res = run_config(args, order, impl)
            med = statistics.median(res["times"])
            rows.append((order, impl, med, statistics.median(res["cpu"]), res["peak_rss_mb"]))
            if impl == "fused":
                t_target = REFERENCE_SECONDS[order] * TARGET_TIME_FRACTION
                m_target = REFERENCE_RSS_MB * TARGET_RSS_FRACTION
                if med > t_target:
                    missed.append(f"{order} order: {med:.2f} s/step > target {t_target:.2f} s")
                if res["peak_rss_mb"] > m_target:
                    missed.append(f"{order} order: peak RSS {res['peak_rss_mb']:.0f} MB > target {m_target:.0f} MB")
    print(f"DARTS search step: batch 16, 3x32x32, 2 classes, C=8, 5 layers, 4 nodes, {args.threads} threads, "
          f"{args.steps} timed steps after 1 warm-up (median){', OMP_WAIT_POLICY=PASSIVE' if args.passive else ''}")  # fmt: skip
    print(f"{'order':<7} {'impl':<10} {'s/step':>7} {'cpu s':>7} {'peak RSS MB':>12} {'x ref time':>11} {'x ref RSS':>10}")
    for order, impl, med, cpu, rss in rows:
        print(f"{order:<7} {impl:<10} {med:7.2f} {cpu:7.2f} {rss:12.0f} {med / REFERENCE_SECONDS[order]:11.2f} {rss / REFERENCE_RSS_MB:10.2f}")
    print(f"reference (public reimplementation, quiet machine): first {REFERENCE_SECONDS['first']} s, "
          f"second {REFERENCE_SECONDS['second']} s, peak RSS {REFERENCE_RSS_MB:.0f}-1800 MB; "
          f"targets <= {TARGET_TIME_FRACTION:.2f}x time, <= {TARGET_RSS_FRACTION:.2f}x RSS")  # fmt: skip
    for m in missed:
        print("MISSED:", m)
    return 1 if (args.check and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
