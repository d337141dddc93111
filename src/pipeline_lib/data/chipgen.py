"""Built-in procedural dataset: seeded semiconductor chip images in Nexperia's layout.

A fresh offline machine can run the whole study on it. Every image is a top view of one
product (a die with six bond pads wired to six lead fingers of a lead frame, on mould
compound) under nuisance variation shared by both classes: package and die placement,
die rotation, wire loops, lot colour, textures, illumination gradient, vignette,
brightness, white balance, gamma, defocus, sensor noise and JPEG compression. A bad chip
additionally carries 1..``max_defects`` of :data:`DEFECT_TYPES`; the defect is the only
difference between the classes.

Layout written (atomically, by renaming a finished sibling directory)::

    <out_dir>/train/good_0/<id>.jpg   <out_dir>/train/bad_1/<id>.jpg
    <out_dir>/test/all_tests/<id>.jpg
    <out_dir>/test_labels.csv         id,label (0 good, 1 bad), sorted by id
    <out_dir>/defects.csv             id,source,label,defect,x0,y0,x1,y1, sorted by id

``defects.csv`` is the ground truth for explanation maps: one row per defect with its
bounding box in pixels of the written image (x1, y1 exclusive: ``image[y0:y1, x0:x1]``),
holding every pixel the defect changed before JPEG compression; a good image has one row
with the defect and the box empty.

Ids are ``tr00000``.. and ``te00000``..; which test index is bad is shuffled by the seed.
Image ``index`` of ``source`` (0 train, 1 test) is drawn from
``np.random.default_rng([seed, source, index])`` alone, so a seed gives identical bytes.
"""

from __future__ import annotations

import csv
import operator
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from . import chipgen_defects
from ..io.atomic import atomic_path
from .chipgen_scene import Canvas, apply_nuisance, render_scene, sample_geometry
from ..io.errors import PipelineError
from ..study.stage_config import StageConfig, check_types

DEFECT_TYPES = (
    "scratch",
    "crack",
    "chipped_edge",
    "particle",
    "missing_wire",
    "broken_wire",
    "void",
    "discolouration",
)
assert set(DEFECT_TYPES) == set(chipgen_defects.DRAWERS)

MIN_IMAGE_SIZE = 32
# defects.csv: one row per defect (a good image: one row with the defect and box empty)
DEFECTS_COLUMNS = ("id", "source", "label", "defect", "x0", "y0", "x1", "y1")
_SOURCES = (("train", 0, "tr"), ("test", 1, "te"))


def _int(name: str, value, lo: int, hi: int | None = None) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        v = operator.index(value)
    except TypeError:
        raise PipelineError(f"generate.{name}={value!r}: expected an integer") from None
    if v < lo or (hi is not None and v > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise PipelineError(f"generate.{name}={v}: expected an integer {rng}")
    return v


def _float(name: str, value, lo: float, hi: float, lo_open: bool = True) -> float:
    try:
        if isinstance(value, bool):
            raise TypeError
        v = float(value)
    except (TypeError, ValueError):
        raise PipelineError(f"generate.{name}={value!r}: expected a number") from None
    if not np.isfinite(v) or (v <= lo if lo_open else v < lo) or v > hi:
        raise PipelineError(f"generate.{name}={v}: expected a number in {'(' if lo_open else '['}{lo}, {hi}]")
    return v


def _check_defects(defects: Sequence[str], name: str) -> tuple[str, ...]:
    if isinstance(defects, str):
        defects = (defects,)
    unknown = [d for d in defects if d not in DEFECT_TYPES]
    if unknown:
        raise PipelineError(f"generate.{name}: unknown defect type {unknown[0]!r}; known: {', '.join(DEFECT_TYPES)}")
    return tuple(defects)


@dataclass(frozen=True)
class DefectTruth:
    """Where one defect is: ``box`` = (x0, y0, x1, y1) in pixels of the written image,
    x1 and y1 exclusive (``image[y0:y1, x0:x1]``); ``mask`` the pixels it may change."""

    name: str
    box: tuple[int, int, int, int]
    mask: np.ndarray


def _truth(name: str, footprint: np.ndarray) -> DefectTruth:
    # The camera's defocus mixes each pixel with its 3x3 neighbours: grow the footprint by 1 px.
    mask = footprint > 0
    grown = mask.copy()
    grown[1:] |= mask[:-1]
    grown[:-1] |= mask[1:]
    grown[:, 1:] |= grown[:, :-1].copy()
    grown[:, :-1] |= grown[:, 1:].copy()
    rows, cols = np.flatnonzero(grown.any(axis=1)), np.flatnonzero(grown.any(axis=0))
    if rows.size == 0:  # the defect touched nothing (e.g. a particle off the image): an empty box
        return DefectTruth(name, (0, 0, 0, 0), grown)
    return DefectTruth(name, (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1), grown)


def render_chip_truth(
    rng: np.random.Generator,
    *,
    image_size: int,
    defects: Sequence[str] = (),
    defect_size: float = 1.0,
    defect_contrast: float = 1.0,
) -> tuple[np.ndarray, list[DefectTruth]]:
    """One chip image (``image_size`` x ``image_size`` x 3 uint8) carrying ``defects``, and
    each defect's :class:`DefectTruth` (in the order of ``defects``).

    The nuisance is drawn first from ``rng`` through sub-streams, so the same generator
    state renders the same chip with or without defects; only the defect differs. A
    defect's box holds every pixel it changes before JPEG compression (its footprint grown
    by the 1 px reach of the defocus).
    """
    size = _int("image_size", image_size, MIN_IMAGE_SIZE, 4096)
    defects = _check_defects(defects, "defects")
    dsize = _float("defect_size", defect_size, 0.0, 4.0)
    contrast = _float("defect_contrast", defect_contrast, 0.0, 1.0)
    scene_seed, defect_seed, nuisance_seed = (int(s) for s in rng.integers(0, 2**63, size=3))
    cv = Canvas(size)
    scene_rng = np.random.default_rng(scene_seed)
    geo = sample_geometry(scene_rng)
    fx = chipgen_defects.plan(defect_seed, cv, geo, defects, dsize, contrast)
    img, die_alpha, removed = render_scene(scene_rng, cv, geo, fx.die_cut, fx.wire_gaps, contrast)
    touched = [overlay(img, die_alpha) for overlay in fx.overlays]
    truths = []
    for name, owned in zip(defects, fx.owner):
        parts = [touched[i] for i in owned.overlays] + [removed.wires[w] for w in owned.wires]
        if owned.cut:
            parts.append(removed.cut)
        footprint = np.zeros((size, size), np.float32)
        for part in parts:
            np.maximum(footprint, part, out=footprint)
        truths.append(_truth(name, footprint))
    return apply_nuisance(np.random.default_rng(nuisance_seed), img), truths


def render_chip(rng: np.random.Generator, **kwargs) -> np.ndarray:
    """The image of :func:`render_chip_truth` alone (same arguments)."""
    return render_chip_truth(rng, **kwargs)[0]


def _split_labels(seed: int, source: int, n: int, n_bad: int) -> np.ndarray:
    labels = np.zeros(n, np.int8)
    labels[:n_bad] = 1
    return np.random.default_rng([seed, 2, source]).permutation(labels)


def _class_counts(name: str, n: int, bad_fraction: float) -> int:
    n_bad = int(round(n * bad_fraction))
    if n_bad < 1 or n - n_bad < 1:
        raise PipelineError(
            f"generate.{name}={n} with bad_fraction={bad_fraction} gives {n - n_bad} good and {n_bad} bad images;"
            f" raise {name} so both classes are present"
        )
    return n_bad


@dataclass(frozen=True)
class GenerateConfig(StageConfig):
    """The ``generate`` section: how many chips, how often bad, and how the defects look.

    Validated on construction; ``defect_types`` (not in params.yaml) keeps its order with
    repeats dropped, and ``max_defects`` is capped at the number of types.
    """

    WHERE = "generate"

    seed: int
    n_train: int
    n_test: int
    bad_fraction: float
    image_size: int
    defect_size: float = 1.0
    defect_contrast: float = 1.0
    jpeg_quality: int = 90
    max_defects: int = 2
    defect_types: tuple[str, ...] = DEFECT_TYPES

    def __post_init__(self) -> None:
        def put(name, value):
            object.__setattr__(self, name, value)

        put("seed", _int("seed", self.seed, 0))
        put("n_train", _int("n_train", self.n_train, 2))
        put("n_test", _int("n_test", self.n_test, 2))
        put("bad_fraction", _float("bad_fraction", self.bad_fraction, 0.0, 1.0))
        if self.bad_fraction >= 1.0:
            raise PipelineError(f"generate.bad_fraction={self.bad_fraction}: expected a number in (0, 1)")
        put("image_size", _int("image_size", self.image_size, MIN_IMAGE_SIZE, 4096))
        put("defect_size", _float("defect_size", self.defect_size, 0.0, 4.0))
        put("defect_contrast", _float("defect_contrast", self.defect_contrast, 0.0, 1.0))
        put("jpeg_quality", _int("jpeg_quality", self.jpeg_quality, 1, 100))
        types = _check_defects(self.defect_types, "defect_types")
        if not types:
            raise PipelineError("generate.defect_types: empty; name at least one defect type")
        put("defect_types", tuple(dict.fromkeys(types)))
        put("max_defects", min(_int("max_defects", self.max_defects, 1), len(self.defect_types)))
        for name in ("n_train", "n_test"):
            _class_counts(name, getattr(self, name), self.bad_fraction)
        check_types(self, self.WHERE)


def generate_dataset(out_dir: str | os.PathLike, config: GenerateConfig, *, progress: bool = True) -> dict:
    """Write the dataset to ``out_dir`` (replacing it atomically); return summary counts."""
    seed, n_train, n_test, image_size = config.seed, config.n_train, config.n_test, config.image_size
    types, max_defects = config.defect_types, config.max_defects
    counts = {"train": (n_train, _class_counts("n_train", n_train, config.bad_fraction)),
              "test": (n_test, _class_counts("n_test", n_test, config.bad_fraction))}

    out_dir = Path(out_dir)
    rows = []
    defect_counts = dict.fromkeys(types, 0)
    with atomic_path(out_dir, is_dir=True) as tmp:
        folders = {(0, 0): tmp / "train" / "good_0", (0, 1): tmp / "train" / "bad_1",
                   (1, 0): tmp / "test" / "all_tests", (1, 1): tmp / "test" / "all_tests"}
        for folder in set(folders.values()):
            folder.mkdir(parents=True, exist_ok=True)
        bar = tqdm(total=n_train + n_test, desc="generate", unit="img", file=sys.stderr,
                   disable=not progress, mininterval=1.0, dynamic_ncols=True)
        with bar:
            for source_name, source, prefix in _SOURCES:
                n, n_bad = counts[source_name]
                width = max(5, len(str(n - 1)))
                for index, label in enumerate(_split_labels(seed, source, n, n_bad).tolist()):
                    rng = np.random.default_rng([seed, source, index])
                    defects = _draw_defects(rng, types, max_defects) if label else ()
                    for d in defects:
                        defect_counts[d] += 1
                    arr, truths = render_chip_truth(rng, image_size=image_size, defects=defects,
                                                    defect_size=config.defect_size,
                                                    defect_contrast=config.defect_contrast)
                    image_id = f"{prefix}{index:0{width}d}"
                    Image.fromarray(arr).save(folders[source, label] / f"{image_id}.jpg", format="JPEG",
                                              quality=config.jpeg_quality)
                    rows += [(image_id, source_name, label, t.name, *t.box) for t in truths] or \
                        [(image_id, source_name, label, "", "", "", "", "")]
                    bar.update(1)
        rows.sort(key=lambda r: r[0])  # stable: an image's defects stay in drawing order
        tests = dict.fromkeys((r[0], r[2]) for r in rows if r[1] == "test")
        _write_csv(tmp / "test_labels.csv", ["id", "label"], list(tests))
        _write_csv(tmp / "defects.csv", list(DEFECTS_COLUMNS), rows)

    return {
        "out_dir": str(out_dir),
        "seed": seed,
        "image_size": image_size,
        "n_train": n_train,
        "n_train_good": n_train - counts["train"][1],
        "n_train_bad": counts["train"][1],
        "n_test": n_test,
        "n_test_good": n_test - counts["test"][1],
        "n_test_bad": counts["test"][1],
        "defect_counts": defect_counts,
    }


def _draw_defects(rng: np.random.Generator, types: tuple[str, ...], max_defects: int) -> tuple[str, ...]:
    """A bad chip's defects: 1..max_defects distinct types, in the list's order."""
    k = int(rng.integers(1, max_defects + 1))
    return tuple(types[j] for j in sorted(rng.choice(len(types), size=k, replace=False)))


def _write_csv(path: Path, header: list[str], rows) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
