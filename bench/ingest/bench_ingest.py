"""Ingest's cost: today's code against an older checkout, and the 33,000-image scale.

    PYTHONPATH=src python bench/ingest/bench_ingest.py compare --root data/raw/builtin \\
        --labels data/raw/builtin/test_labels.csv --base-src /tmp/eff50c8/src [--repeats 7]
    PYTHONPATH=src python bench/ingest/bench_ingest.py scale --root /tmp/chips33k [--images 33000]
    PYTHONPATH=src python bench/ingest/bench_ingest.py coverage --root data/raw/builtin [--copies 200]

``compare`` runs the ingest rule's work (scan, duplicate policies, write the manifest and
reports) in a fresh Python process per run, as Snakemake does (imports included), with
this tree's code and with ``--base-src`` (e.g. ``git archive eff50c8 src | tar -x``), runs
alternating so both see the same load; it prints each side's median wall and CPU time
(the child's user + system) and their ratios.

``scale`` generates ``--images`` built-in chips (96 px, ~10 % test) under ``--root`` when
missing, then times the stages of :func:`pipeline_lib.data.ingest.run_ingest` in this process:
scanning (read, decode, libjpeg check, hashes), label conflicts + duplicates, and the
near-duplicate search (with and without flips), and counts the look-alike pairs found.

``coverage`` measures which transformations the perceptual hash catches: for ``--copies``
train images of ``--root`` it makes each transformed copy, hashes it against the data set's
medians, and prints the share of copies within each ``max_distance``; and, for scale, the
distance from every image to its nearest *other* image of the data set (distinct chips).
Results are written down in bench/ingest/README.md.
"""

from __future__ import annotations

import argparse
import copy
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]

_NEW = """
import sys, yaml
from pipeline_lib.io.atomic import write_csv, write_json
from pipeline_lib.data.ingest import IngestConfig, run_ingest, write_manifest
p = yaml.safe_load(open(sys.argv[1]))["ingest"]
p.update(root=sys.argv[2], test_labels=sys.argv[3] or None)
r = run_ingest(IngestConfig.from_params(p), progress=False)
out = sys.argv[4]
write_csv(r.bad_files, out + "/bad_files.csv"); write_csv(r.near_duplicates, out + "/near_duplicates.csv")
write_json(out + "/ingest_metrics.json", r.metrics); write_manifest(r.manifest, out + "/manifest.parquet")
"""
_OLD = """
import sys
from pipeline_lib.io.atomic import write_csv, write_json
from pipeline_lib.data.ingest import bad_files_table, ingest_metrics, resolve_duplicates, scan_dataset, write_manifest
m, bad = scan_dataset(sys.argv[2], test_labels=sys.argv[3] or None, bad_images="fail", progress=False)
m, dups = resolve_duplicates(m, "fail")
out = sys.argv[4]
write_csv(bad_files_table(bad, dups), out + "/bad_files.csv")
write_json(out + "/ingest_metrics.json", ingest_metrics(m, bad, dups)); write_manifest(m, out + "/manifest.parquet")
"""


def _run_once(src: Path, code: str, args: argparse.Namespace, out: str) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", code, str(ROOT / "params.yaml"), args.root, args.labels or "", out],
        check=True, env=dict(os.environ, PYTHONPATH=str(src)),
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def compare(args: argparse.Namespace) -> None:
    sides = {"this tree": (ROOT / "src", _NEW), "base": (Path(args.base_src), _OLD)}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}
    with tempfile.TemporaryDirectory() as out:
        for i in range(args.repeats + 1):  # the first round warms the page cache, not counted
            order = list(sides) if i % 2 == 0 else list(reversed(sides))
            for name in order:
                src, code = sides[name]
                sample = _run_once(src, code, args, out)
                if i:
                    times[name].append(sample)
    med = {name: (statistics.median(w for w, _ in t), statistics.median(c for _, c in t)) for name, t in times.items()}
    for name, (wall, cpu) in med.items():
        print(f"{name:10s} median wall {wall:.2f} s, cpu {cpu:.2f} s over {args.repeats} runs")
    new, old = med["this tree"], med["base"]
    print(f"ratio (this tree / base): wall {new[0] / old[0]:.2f}x, cpu {new[1] / old[1]:.2f}x; "
          f"load {os.getloadavg()[0]:.2f}")


def _timed(label: str, fn):
    start, cpu = time.perf_counter(), time.process_time()
    result = fn()
    print(f"{label:46s} wall {time.perf_counter() - start:7.2f} s  cpu {time.process_time() - cpu:7.2f} s", flush=True)
    return result


def scale(args: argparse.Namespace) -> None:
    import numpy as np

    from pipeline_lib.data.chipgen import GenerateConfig, generate_dataset
    from pipeline_lib.data.ingest import scan_images
    from pipeline_lib.data.leakage import near_duplicates_table, resolve_duplicates, resolve_label_conflicts

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    root = Path(args.root)
    if not root.exists():
        n_test = args.images // 10
        gen = GenerateConfig.from_params(dict(params["generate"], n_train=args.images - n_test, n_test=n_test))
        _timed(f"generate {args.images} chips (96 px)", lambda: generate_dataset(root, gen, progress=False))
    p = copy.deepcopy(params["ingest"])
    scan = _timed("scan: read, decode, libjpeg check, hashes",
                  lambda: scan_images(root, test_labels=str(root / "test_labels.csv"), progress=False))
    print(f"  {len(scan.manifest)} images, {len(scan.bad)} bad")
    manifest = _timed("label conflicts + duplicates (pixels)", lambda: resolve_duplicates(
        resolve_label_conflicts(scan.manifest, p["label_conflicts"])[0], p["duplicates"])[0])
    blocks = np.asarray(scan.blocks)
    for flips in (True, False):
        for t in sorted({p["near_duplicates"]["max_distance"], 8, 16}):
            pairs = _timed(f"near-duplicate search, max_distance {t}, flips {flips}",
                           lambda: near_duplicates_table(manifest, blocks, max_distance=t, flips=flips))
            print(f"  {len(pairs)} pairs; smallest distance {pairs['distance'].min() if len(pairs) else '-'}")
    print(f"load {os.getloadavg()[0]:.2f}, {os.cpu_count()} cpus")


def _encoded(img, fmt: str, **kw):
    import io

    from PIL import Image

    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return Image.open(io.BytesIO(buf.getvalue()))


def _transforms() -> dict:
    import numpy as np
    from PIL import Image

    T = Image.Transpose
    return {
        "PNG re-save (same pixels)": lambda im: _encoded(im, "PNG"),
        "JPEG q95": lambda im: _encoded(im, "JPEG", quality=95),
        "JPEG q60": lambda im: _encoded(im, "JPEG", quality=60),
        "JPEG q30": lambda im: _encoded(im, "JPEG", quality=30),
        "resize 1/2 (bicubic)": lambda im: im.resize((im.width // 2, im.height // 2), Image.Resampling.BICUBIC),
        "resize 0.7 (bilinear)": lambda im: im.resize((im.width * 7 // 10, im.height * 7 // 10), Image.Resampling.BILINEAR),
        "resize 2x (Lanczos) + q90": lambda im: _encoded(im.resize((im.width * 2, im.height * 2), Image.Resampling.LANCZOS), "JPEG", quality=90),
        "resize 1/3 (nearest)": lambda im: im.resize((im.width // 3, im.height // 3), Image.Resampling.NEAREST),
        "mirror + q90": lambda im: _encoded(im.transpose(T.FLIP_LEFT_RIGHT), "JPEG", quality=90),
        "rotate 90 + q75": lambda im: _encoded(im.transpose(T.ROTATE_90), "JPEG", quality=75),
        "flip + resize 1/2": lambda im: im.transpose(T.FLIP_TOP_BOTTOM).resize((im.width // 2, im.height // 2), Image.Resampling.BILINEAR),
        "brightness x1.1 +5": lambda im: Image.fromarray(np.clip(np.asarray(im, float) * 1.1 + 5, 0, 255).astype(np.uint8)),
        "gamma 0.8": lambda im: Image.fromarray((255 * (np.asarray(im) / 255.0) ** 0.8).astype(np.uint8)),
        "crop 2 px each side": lambda im: im.crop((2, 2, im.width - 2, im.height - 2)),
        "grey": lambda im: im.convert("L"),
    }


def coverage(args: argparse.Namespace) -> None:
    import numpy as np
    from PIL import Image

    from pipeline_lib.data import phash
    from pipeline_lib.data.ingest import scan_images

    scan = scan_images(args.root, progress=False)
    blocks = np.asarray(scan.blocks)
    center = np.median(blocks, axis=0)
    packed = phash._pack(phash.hash_bits(blocks, center, flips=True))

    def nearest(block: np.ndarray, skip: int | None = None) -> int:
        own = phash._pack(phash.hash_bits(block[None], center, flips=False))[0, 0]
        d = np.bitwise_count(own ^ packed).sum(-1).min(-1)
        if skip is not None:
            d[skip] = 10**6
        return int(d.min())

    thresholds = (8, 10, 12, 14, 16)
    print(f"{len(blocks)} images of {args.root}; share of copies within max_distance " + " / ".join(map(str, thresholds)))
    train = np.flatnonzero(scan.manifest["source"].to_numpy() == "train")[: args.copies]
    for name, make in _transforms().items():
        dists = []
        for i in train:
            img = make(Image.open(scan.manifest["path"].iloc[i]).convert("RGB"))
            grey = phash.grey(np.asarray(img.convert("RGB")))
            own = phash._pack(phash.hash_bits(phash.dct_block(grey)[None], center, flips=False))[0, 0]
            dists.append(int(np.bitwise_count(own ^ packed[i]).sum(-1).min()))
        shares = " / ".join(f"{np.mean(np.array(dists) <= t):4.0%}" for t in thresholds)
        print(f"  {name:28s} {shares}   (median {np.median(dists):.0f}, max {max(dists)})")
    nn = np.array([nearest(blocks[i], skip=i) for i in range(len(blocks))])
    print(f"distinct images: nearest other image at distance min {nn.min()}, 1st percentile "
          f"{np.percentile(nn, 1):.0f}, median {np.median(nn):.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compare")
    c.add_argument("--root", required=True)
    c.add_argument("--labels")
    c.add_argument("--base-src", required=True)
    c.add_argument("--repeats", type=int, default=7)
    s = sub.add_parser("scale")
    s.add_argument("--root", required=True)
    s.add_argument("--images", type=int, default=33_000)
    v = sub.add_parser("coverage")
    v.add_argument("--root", required=True)
    v.add_argument("--copies", type=int, default=200)
    args = parser.parse_args()
    {"compare": compare, "scale": scale, "coverage": coverage}[args.command](args)


if __name__ == "__main__":
    main()
