"""How much the CPU's kernels move the study's numbers: the default study's features and
classifiers run twice on this machine, once with torch's and oneDNN's default kernels and once
limited to AVX2 (``ATEN_CPU_CAPABILITY=avx2``, ``ONEDNN_MAX_CPU_ISA=AVX2``), in two copies.

    python bench/cpu_capability.py [--with-finetuned] [--out /tmp/cpu_capability]

On an AVX-512 machine the two differ the way two machines of this project's kind do; on an
AVX2-only machine both runs use the same kernels (the features then come out byte-identical).
Prints, per output, whether the bytes agree, and per model the valid acc / test AUC of both runs
and the largest difference. ``--with-finetuned`` also trains ResNet FBP and runs the classifiers on
its features (adds minutes: the training amplifies the differences).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from e2e_helpers import copy_workflow, workflow_env  # noqa: E402

CLASSIFIERS = ("lda", "rf", "lr", "svm")
SEED = 0  # the first study seed (params.yaml study.seeds)
RUNS = {"default": {}, "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}}


def targets(finetuned: bool) -> list[str]:
    feature_sets = ["pretrained", "finetuned"] if finetuned else ["pretrained"]
    return [f"results/models/{c}_{f}/seed{SEED}/metrics.json" for f in feature_sets for c in CLASSIFIERS]


def run_copy(name: str, env_extra: dict, out: Path, finetuned: bool) -> tuple[Path, float]:
    work = out / name
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    copy_workflow(work)
    env = workflow_env(work, **env_extra)
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", *targets(finetuned)],
                   cwd=work, env=env, check=True, capture_output=True, text=True)
    return work, time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/cpu_capability"))
    parser.add_argument("--with-finetuned", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    works = {}
    for name, env in RUNS.items():
        works[name], seconds = run_copy(name, env, args.out, args.with_finetuned)
        record = json.loads((works[name] / "results/.lineage/features.json").read_text())
        print(f"{name}: {seconds:.0f} s, torch kernels {record['machine']['torch']['cpu_capability']}, "
              f"cpu {record['machine']['cpu_model']}")
    a, b = works["default"], works["avx2"]
    files = ["results/features/pretrained.parquet"] + ([f"results/features/finetuned/seed{SEED}.parquet",
                                                        f"results/models/resnet_fbp/seed{SEED}/model.pt"] if args.with_finetuned else [])
    for rel in files:
        same = (a / rel).read_bytes() == (b / rel).read_bytes()
        print(f"{rel}: {'byte-identical' if same else 'DIFFERENT bytes'}")
    largest = 0.0
    print("| model | valid acc default / avx2 | test AUC default / avx2 |")
    print("| --- | --- | --- |")
    for target in targets(args.with_finetuned):
        m = {k: json.loads((w / target).read_text()) for k, w in works.items()}
        diffs = [abs(m["default"][key] - m["avx2"][key]) for key in ("valid_acc", "test_auc")]
        largest = max(largest, *diffs)
        print(f"| {m['default']['model']} | {m['default']['valid_acc']:.4f} / {m['avx2']['valid_acc']:.4f} | "
              f"{m['default']['test_auc']:.4f} / {m['avx2']['test_auc']:.4f} |")
    print(f"largest metric difference: {largest:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
