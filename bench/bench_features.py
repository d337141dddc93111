"""Feature-extraction throughput vs the bare model forward, measured in one run.

    PYTHONPATH=src python bench/bench_features.py [--arch resnet18] [--image-size 64]
        [--batch-size 32] [--images 512] [--threads 2] [--repeats 3] [--check --target 0.9]

* bare:     ``model(x)`` on preloaded random tensors (channels_last, inference_mode),
            the same batch size / image size / thread count.
* pipeline: ``pipeline_lib.features.extract.extract_features`` over JPEG files on disk
            (read, decode, resize, normalise, forward), as the features rule runs it.

After a warm-up, the images are cut into rounds of ``--chunk-batches`` batches; each round
is timed both ways back to back (order alternating), ``--repeats`` passes over all images.
Pairing makes the ratio robust to other load on a shared machine. Prints median img/s for
both and ratio = median over rounds of (pipeline img/s / bare img/s); with ``--check``
exits 1 when ratio < ``--target``.
The JPEGs come from ``pipeline_lib.data.chipgen.generate_dataset`` (at least 32 px),
else plain Pillow JPEGs of ``--source-size`` px (default: the image size).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline_lib.data.chipgen import MIN_IMAGE_SIZE, GenerateConfig, generate_dataset
from pipeline_lib.features.backbones import build_backbone
from pipeline_lib.features.extract import extract_features


def make_jpegs(out: Path, n: int, size: int, seed: int) -> tuple[list[Path], str]:
    if size >= MIN_IMAGE_SIZE:
        config = GenerateConfig(seed=seed, n_train=max(n, 2), n_test=2, bad_fraction=0.5, image_size=size)
        generate_dataset(out, config, progress=False)
        files = sorted((out / "train").rglob("*.jpg"))
        if len(files) >= n:
            return files[:n], "chipgen"
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    files = []
    out.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        base = rng.integers(60, 200, size=3)
        img = Image.new("RGB", (size, size), tuple(int(v) for v in base))
        draw = ImageDraw.Draw(img)
        for _ in range(4):
            x0, y0 = rng.integers(0, size, 2)
            x1, y1 = x0 + rng.integers(4, size // 2 + 5), y0 + rng.integers(4, size // 2 + 5)
            draw.rectangle([int(x0), int(y0), int(x1), int(y1)], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        noise = rng.normal(0, 12, (size, size, 3))
        arr = np.clip(np.asarray(img.filter(ImageFilter.GaussianBlur(1)), dtype=np.float64) + noise, 0, 255)
        path = out / f"img{i:05d}.jpg"
        Image.fromarray(arr.astype(np.uint8)).save(path, quality=90)
        files.append(path)
    return files, "pillow"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet18", choices=["resnet18", "resnet50"])
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--source-size", type=int, default=None, help="JPEG side in px (default: image size)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--num-workers", type=int, default=0, help="extract_features num_workers")
    ap.add_argument("--prefetch", type=int, default=None,
                    help="extract_features prefetch (default: its own, 0 on CPU)")
    ap.add_argument("--repeats", type=int, default=5, help="passes over the images")
    ap.add_argument("--chunk-batches", type=int, default=4, help="batches per paired round")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--jpeg-draft", action="store_true", help="reduced-scale JPEG decode (not bitwise)")
    ap.add_argument("--target", type=float, default=0.9)
    ap.add_argument("--check", action="store_true", help="exit 1 when ratio < target")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    size, bs, n = args.image_size, args.batch_size, args.images
    model, _ = build_backbone(args.arch, "none", seed=args.seed)
    device = torch.device(args.device)
    model.to(device=device, memory_format=torch.channels_last)

    with tempfile.TemporaryDirectory(prefix="bench_features_") as tmp:
        t0 = time.perf_counter()
        files, source = make_jpegs(Path(tmp) / "data", n, args.source_size or size, args.seed)
        gen_s = time.perf_counter() - t0
        frame = pd.DataFrame({"id": [f.stem for f in files], "path": [str(f) for f in files]})

        gen = torch.Generator().manual_seed(args.seed)
        x_all = torch.randn(n, 3, size, size, generator=gen)
        chunk = max(1, args.chunk_batches) * bs
        chunks = [(i, min(i + chunk, n)) for i in range(0, n, chunk)]

        def sync() -> None:
            if device.type == "cuda":
                torch.cuda.synchronize()

        # the bare forward gets its inputs preloaded: on the device, channels_last
        pre = {
            lo: [x_all[i : min(i + bs, hi)].to(device).contiguous(memory_format=torch.channels_last)
                 for i in range(lo, hi, bs)]
            for lo, hi in chunks
        }

        def bare(lo: int, hi: int) -> float:
            sync()
            t = time.perf_counter()
            with torch.inference_mode():
                for x in pre[lo]:
                    model(x)
            sync()
            return time.perf_counter() - t

        def pipeline(lo: int, hi: int) -> float:
            t = time.perf_counter()
            extract_features(
                model, frame.iloc[lo:hi], image_size=size, batch_size=bs, num_workers=args.num_workers,
                device=device, progress=False, jpeg_draft=args.jpeg_draft, prefetch=args.prefetch,
            )
            return time.perf_counter() - t

        # warm-up: oneDNN primitive creation, page cache for the JPEGs
        for lo, hi in chunks[:1]:
            bare(lo, hi)
            pipeline(lo, hi)
        for f in files:
            f.read_bytes()

        # Paired rounds: every chunk is timed both ways back to back (order alternating),
        # so both see the same machine load; the paired ratios' median is the verdict.
        bare_t, pipe_t, ratios = [], [], []
        for r in range(args.repeats):
            for k, (lo, hi) in enumerate(chunks):
                if (r + k) % 2 == 0:
                    tb, tp = bare(lo, hi), pipeline(lo, hi)
                else:
                    tp, tb = pipeline(lo, hi), bare(lo, hi)
                bare_t.append((hi - lo) / tb)
                pipe_t.append((hi - lo) / tp)
                ratios.append(tb / tp)

    bare_total = float(np.median(bare_t))
    pipe_total = float(np.median(pipe_t))
    ratio = float(np.median(ratios))
    print(
        f"arch={args.arch} image_size={size} source_size={args.source_size or size} batch={bs} "
        f"images={n} threads={args.threads} num_workers={args.num_workers} prefetch={args.prefetch} "
        f"device={device} "
        f"jpeg_draft={args.jpeg_draft} data={source} (generated in {gen_s:.1f}s) "
        f"rounds={len(ratios)} of {chunk} images"
    )
    print(f"bare forward  {bare_total:.1f} img/s (median; best {max(bare_t):.1f})")
    print(f"pipeline      {pipe_total:.1f} img/s (median; best {max(pipe_t):.1f})")
    print(f"ratio         {ratio:.3f} (median of paired rounds; min {min(ratios):.3f}, "
          f"max {max(ratios):.3f}; target {args.target})")
    if args.check and ratio < args.target:
        print(f"FAIL: ratio {ratio:.3f} < target {args.target}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
