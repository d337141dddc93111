"""Loader bench: images/s the DataLoaders deliver at 224 px, by worker count.

    PYTHONPATH=src python bench/scale/loader_bench.py [--images DIR] [--n 512] [--workers 0 1 2]
        [--batch-size 32] [--repeats 3] [--out bench/scale/results/loader.json]

Two loaders, exactly as the rules build them, with nothing consuming the batches (so the
number is the loader's ceiling, the rate a GPU could at most be fed):

* ``train``: ``ChipImages`` + ``train_transform_for(224, {hflip, vflip})`` (PIL decode,
  resize, flips, normalise: ``train.resnet_fbp`` at full size) through ``train.make_loaders``
  with ``num_workers`` set; batches of ``--batch-size``, shuffled.
* ``features``: the features rule's batch decoder (``torchvision.io.decode_jpeg`` + one
  antialiased resize per batch, uint8 out; normalisation happens on the device) through
  ``DataLoader(batch_size=None)`` as ``extract_features`` builds it.

Images: 224-px JPEGs from ``--images`` (e.g. a rehearsal's ``n1300/data/raw/builtin/train``)
or, by default, ``--n`` fresh ones from the built-in generator. Each (loader, workers) is
timed ``--repeats`` times over all images after one warm-up pass; the best and the median
images/s are printed, with the CPU seconds the main process spent per image. Worker
processes start once (``persistent_workers``, as on CUDA). On a machine shared with other
jobs the rates are lower bounds: compare them within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch


def image_paths(images: Path | None, n: int, tmp: Path) -> list[str]:
    if images is None:
        from pipeline_lib.data.chipgen import GenerateConfig, generate_dataset

        out = tmp / "chips"
        generate_dataset(out, GenerateConfig(seed=0, n_train=n, n_test=2, bad_fraction=0.35, image_size=224,
                                             defect_size=1.6, defect_contrast=1.0, jpeg_quality=90, max_defects=2))
        images = out / "train"
    paths = sorted(str(p) for p in Path(images).rglob("*.jpg"))[:n]
    if not paths:
        raise SystemExit(f"no .jpg under {images}")
    return paths


def train_loader(paths: list[str], workers: int, batch_size: int):
    from pipeline_lib.data.datasets import ChipImages, train_transform_for
    from pipeline_lib.runtime.devices import loader_generator, loader_options
    from torch.utils.data import DataLoader

    frame = pd.DataFrame({"path": paths, "label": [i % 2 for i in range(len(paths))]})
    dataset = ChipImages(frame, train_transform_for(224, {"hflip": True, "vflip": True}))
    options = loader_options("cpu", workers)
    if workers:
        options["persistent_workers"] = True  # as on CUDA: workers start once
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=loader_generator(0), **options)


def features_loader(paths: list[str], workers: int, batch_size: int):
    from pipeline_lib.runtime.devices import loader_options
    from pipeline_lib.features.extract import _DecodedBatches
    from torch.utils.data import DataLoader

    dataset = _DecodedBatches(paths, 224, batch_size, jpeg_draft=False, fast=True)
    if not workers:
        return _Inline(dataset)
    options = loader_options("cpu", workers)
    options["persistent_workers"] = True
    return DataLoader(dataset, batch_size=None, shuffle=False, prefetch_factor=2, **options)


class _Inline:
    """0 workers: decode in the main process, as extract_features does on the CPU."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __iter__(self):
        return (self.dataset[i] for i in range(len(self.dataset)))


def time_passes(loader, n_images: int, repeats: int) -> dict:
    for _ in loader:  # warm-up: worker start, page cache
        pass
    rates, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        seen = sum(len(batch[0]) if isinstance(batch, (list, tuple)) else len(batch) for batch in loader)
        assert seen == n_images, (seen, n_images)
        rates.append(n_images / (time.perf_counter() - t0))
        cpu.append((time.process_time() - c0) / n_images * 1000)
    return {"best_img_s": round(max(rates), 1), "median_img_s": round(statistics.median(rates), 1),
            "main_cpu_ms_per_img": round(statistics.median(cpu), 3)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path)
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the main process")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        paths = image_paths(args.images, args.n, Path(tmp))
        load = os.getloadavg()
        rows = []
        for name, make in (("train", train_loader), ("features", features_loader)):
            for workers in args.workers:
                row = {"loader": name, "workers": workers, **time_passes(make(paths, workers, args.batch_size), len(paths), args.repeats)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    result = {"images": len(paths), "image_size": 224, "batch_size": args.batch_size, "cpus": os.cpu_count(),
              "loadavg_before": [round(x, 2) for x in load], "loadavg_after": [round(x, 2) for x in os.getloadavg()],
              "torch": torch.__version__, "rows": rows}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}), file=sys.stderr)


if __name__ == "__main__":
    main()
