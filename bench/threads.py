"""Threads and memory format: one two-thread job against two one-thread jobs at once, NCHW vs channels_last.

For each network of the study (cnn2, resnet_ll, resnet_fbp, the NAS retrain of
bench/tune/genotypes/darts.json) it times the bare training step of ``loop_speed.bare_rate``
(forward + loss + backward + optimizer step on tensors in memory) in fresh subprocesses, and
prints the machine's total images/s for each way of using 2 cores:

- one job with 2 threads (NCHW, and channels_last);
- two one-thread jobs at the same time (NCHW, and channels_last): both children start
  their timed steps at the same wall-clock instant, so they share caches and memory
  bandwidth as two Snakemake jobs do; the figure is the sum of their rates.

``2 x 1 / 1 x 2`` is the throughput of the best two-job choice over the best one-job choice
(> 1: one thread per job wins). Every configuration runs once per round, the order reversed
every other round; medians of the rounds. The workflow's choice (``JOB_THREADS = 1`` in
workflow/rules/common.smk, ``loop.channels_last`` in params.yaml) rests on these figures.

    PYTHONPATH=src python bench/threads.py [--models cnn2,resnet_fbp,resnet_ll,darts] [--steps 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = r"""
import json, sys, time, torch
sys.path.insert(0, sys.argv[1])
import loop_speed
torch.set_num_threads(int(sys.argv[3]))
model_name, layout, steps, start_at = sys.argv[2], sys.argv[4], int(sys.argv[5]), float(sys.argv[6])
model, network = loop_speed.build(model_name, loop_speed.load_params())
network.loop.channels_last = layout == "channels_last"  # bare_rate trains in the loop's memory format
time.sleep(max(0.0, start_at - time.time()))
wall, cpu = loop_speed.bare_rate(model, model_name, network, steps)
print(json.dumps({"wall": wall, "cpu": cpu}))
"""

CONFIGS = (("1 x 2 threads", 1, 2, "nchw"), ("1 x 2 threads", 1, 2, "channels_last"),
           ("2 x 1 thread", 2, 1, "nchw"), ("2 x 1 thread", 2, 1, "channels_last"))


def measure(model: str, jobs: int, threads: int, layout: str, steps: int) -> float:
    """Total images/s of ``jobs`` children with ``threads`` each, timed over the same interval."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    start_at = time.time() + 25.0  # after every child's import and build
    children = [subprocess.Popen([sys.executable, "-c", CHILD, str(HERE), model, str(threads), layout, str(steps),
                                  str(start_at)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
                for _ in range(jobs)]
    rates = [json.loads(child.communicate()[0].strip().splitlines()[-1])["wall"] for child in children]
    return sum(rates)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="cnn2,resnet_ll,resnet_fbp,darts")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"load before: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"{args.rounds} round(s) x {args.steps} steps per configuration; medians of the rounds; images/s of the machine")
    print("| network | 1 x 2 threads, NCHW | 1 x 2 threads, channels_last | 2 x 1 thread, NCHW "
          "| 2 x 1 thread, channels_last | 2 x 1 / 1 x 2 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for model in args.models.split(","):
        rates = {config: [] for config in CONFIGS}
        for round_ in range(args.rounds):
            for config in (CONFIGS if round_ % 2 == 0 else CONFIGS[::-1]):
                rates[config].append(measure(model, *config[1:], args.steps))
        med = [statistics.median(rates[config]) for config in CONFIGS]
        name = "NAS retrain (bench/tune/genotypes/darts.json)" if model == "darts" else model
        print(f"| {name} | {med[0]:.0f} | {med[1]:.0f} | {med[2]:.0f} | {med[3]:.0f} | {max(med[2:]) / max(med[:2]):.2f} |",
              flush=True)
    print(f"load after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
