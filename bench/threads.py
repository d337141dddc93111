"""Threads and memory format: one two-thread job against two one-thread jobs, NCHW vs channels_last.

For each network of the study (cnn2, resnet_ll, resnet_fbp, the NAS retrain of
bench/tune/genotypes/darts.json) it times the bare training step of ``loop_speed.bare_rate``
(forward + loss + backward + optimizer step on tensors in memory) in a fresh subprocess per
(threads, layout), and prints images/s. On a 2-core machine the workflow can run one job
with 2 threads or two jobs with 1 thread each; the column ``2 jobs x 1 thread / 1 job x 2
threads`` is the throughput ratio of the two choices (> 1: one thread per job wins), and
``channels_last / NCHW`` the gain of the layout on one thread. The workflow's choice
(``JOB_THREADS = 1`` in workflow/rules/common.smk, ``loop.channels_last`` in params.yaml)
rests on these figures.

    PYTHONPATH=src python bench/threads.py [--models cnn2,resnet_fbp,resnet_ll,darts] [--steps 8]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = r"""
import json, sys, torch
sys.path.insert(0, sys.argv[1])
import loop_speed
torch.set_num_threads(int(sys.argv[3]))
model_name, layout, steps = sys.argv[2], sys.argv[4], int(sys.argv[5])
model, network = loop_speed.build(model_name, loop_speed.load_params())
if layout == "channels_last":
    model = model.to(memory_format=torch.channels_last)
    randn = torch.randn
    loop_speed.torch.randn = lambda *a, **k: randn(*a, **k).contiguous(memory_format=torch.channels_last)
wall, cpu = loop_speed.bare_rate(model, model_name, network, steps)
print(json.dumps({"wall": wall, "cpu": cpu}))
"""


def measure(model: str, threads: int, layout: str, steps: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, "-c", CHILD, str(HERE), model, str(threads), layout, str(steps)],
                         check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="cnn2,resnet_ll,resnet_fbp,darts")
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args(argv)
    print(f"load before: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print("| network | 1 job x 2 threads, NCHW | 1 thread, NCHW | 1 thread, channels_last "
          "| 2 jobs x 1 thread / 1 job x 2 threads | channels_last / NCHW (1 thread) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for model in args.models.split(","):
        two = measure(model, 2, "nchw", args.steps)["wall"]
        one = measure(model, 1, "nchw", args.steps)["wall"]
        last = measure(model, 1, "channels_last", args.steps)["wall"]
        best_one = max(one, last)
        print(f"| {model} | {two:.0f} img/s | {one:.0f} | {last:.0f} | {2 * best_one / two:.2f} | {last / one:.2f} |",
              flush=True)
    print(f"load after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
