"""The built-in procedural chip dataset (pipeline_lib.data.chipgen)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline_lib.data import chipgen
from pipeline_lib.data.chipgen import DEFECT_TYPES, GenerateConfig, generate_dataset, render_chip
from pipeline_lib.io.errors import PipelineError

SMALL = dict(n_train=10, n_test=8, bad_fraction=0.3, image_size=32)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "builtin"
    config = GenerateConfig(seed=3, n_train=20, n_test=20, bad_fraction=0.3, image_size=40, max_defects=3)
    summary = generate_dataset(out, config, progress=False)
    return out, summary


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate_dataset(a, GenerateConfig(seed=7, **SMALL), progress=False)
    generate_dataset(b, GenerateConfig(seed=7, **SMALL), progress=False)
    generate_dataset(c, GenerateConfig(seed=8, **SMALL), progress=False)
    fa, fb, fc = _files(a), _files(b), _files(c)
    assert fa == fb
    by_id_a = {Path(k).stem: v for k, v in fa.items() if k.endswith(".jpg")}
    by_id_c = {Path(k).stem: v for k, v in fc.items() if k.endswith(".jpg")}
    assert by_id_a.keys() == by_id_c.keys()  # same ids ...
    assert all(by_id_a[i] != by_id_c[i] for i in by_id_a)  # ... but every image differs
    assert fa["test_labels.csv"] != fc["test_labels.csv"]  # and the test labels are reshuffled


def test_layout_counts_and_ids(dataset):
    out, summary = dataset
    good = sorted((out / "train" / "good_0").glob("*.jpg"))
    bad = sorted((out / "train" / "bad_1").glob("*.jpg"))
    test = sorted((out / "test" / "all_tests").glob("*.jpg"))
    assert (len(good), len(bad), len(test)) == (14, 6, 20)
    assert (summary["n_train_good"], summary["n_train_bad"]) == (14, 6)
    assert (summary["n_test_good"], summary["n_test_bad"]) == (14, 6)
    ids = [p.stem for p in good + bad + test]
    assert len(set(ids)) == len(ids) == 40
    assert all(i.startswith("tr") for i in ids[:20]) and all(i.startswith("te") for i in ids[20:])
    assert sorted(p.name for p in out.iterdir()) == ["defects.csv", "test", "test_labels.csv", "train"]
    with Image.open(test[0]) as im:
        assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (40, 40))
    # Nothing left beside the output (the temporary directory was renamed).
    assert [p.name for p in out.parent.iterdir()] == ["builtin"]


def test_labels_and_defects_files_agree_with_images(dataset):
    out, summary = dataset
    labels = _csv(out / "test_labels.csv")
    assert list(labels[0]) == ["id", "label"]
    test_ids = sorted(p.stem for p in (out / "test" / "all_tests").glob("*.jpg"))
    assert [r["id"] for r in labels] == test_ids  # one row per test image, sorted by id
    assert sum(r["label"] == "1" for r in labels) == 6
    defects = _csv(out / "defects.csv")
    assert list(defects[0]) == ["id", "source", "label", "defect", "x0", "y0", "x1", "y1"]
    assert [r["id"] for r in defects] == sorted(r["id"] for r in defects)
    by_id: dict[str, list[dict]] = {}
    for r in defects:
        by_id.setdefault(r["id"], []).append(r)
    assert len(by_id) == 40  # every image listed
    assert {i: rs[0]["label"] for i, rs in by_id.items() if rs[0]["source"] == "test"} == {
        r["id"]: r["label"] for r in labels}
    for folder, label in (("good_0", "0"), ("bad_1", "1")):
        for p in (out / "train" / folder).glob("*.jpg"):
            assert {(r["source"], r["label"]) for r in by_id[p.stem]} == {("train", label)}
    counts = dict.fromkeys(DEFECT_TYPES, 0)
    for rows in by_id.values():
        names = [r["defect"] for r in rows if r["defect"]]
        if rows[0]["label"] == "0":  # one row, no defect, no box
            assert [tuple(r.values())[3:] for r in rows] == [("", "", "", "", "")]
            continue
        assert 1 <= len(names) == len(rows) <= 3
        assert len(set(names)) == len(names) and set(names) <= set(DEFECT_TYPES)
        for r in rows:
            x0, y0, x1, y1 = (int(r[k]) for k in ("x0", "y0", "x1", "y1"))
            assert 0 <= x0 < x1 <= 40 and 0 <= y0 < y1 <= 40
        for n in names:
            counts[n] += 1
    assert counts == summary["defect_counts"]


def test_defects_csv_boxes_are_those_of_the_rendered_chips(dataset):
    """The file's boxes are render_chip_truth's for the image's own generator state."""
    out, _ = dataset
    rows = _csv(out / "defects.csv")
    bad_ids = list(dict.fromkeys(r["id"] for r in rows if r["label"] == "1"))
    good_ids = [r["id"] for r in rows if r["label"] == "0"]
    for image_id in bad_ids[:2] + bad_ids[-2:] + good_ids[:1]:
        mine = [q for q in rows if q["id"] == image_id]
        source, index = (0, 1)[mine[0]["source"] == "test"], int(image_id[2:])
        rng = np.random.default_rng([3, source, index])
        names = tuple(q["defect"] for q in mine if q["defect"])
        if names:  # the generator draws the defect count and types first
            k = int(rng.integers(1, 4))
            assert k == len(names)
            rng.choice(len(DEFECT_TYPES), size=k, replace=False)
        img, truths = chipgen.render_chip_truth(rng, image_size=40, defects=names)
        assert [t.name for t in truths] == list(names)
        assert [list(t.box) for t in truths] == [[int(q[k]) for k in ("x0", "y0", "x1", "y1")] for q in mine if q["defect"]]
        folder = "test/all_tests" if source else ("train/bad_1" if names else "train/good_0")
        with Image.open(out / folder / f"{image_id}.jpg") as im:
            decoded = np.asarray(im.convert("RGB"), dtype=int)
        assert np.abs(decoded - img.astype(int)).mean() < 6  # the same image, up to JPEG


def test_test_order_does_not_reveal_label(dataset):
    out, _ = dataset
    labels = [int(r["label"]) for r in _csv(out / "test_labels.csv")]
    assert labels != sorted(labels) and labels != sorted(labels, reverse=True)
    # The shuffle follows the seed.
    a = chipgen._split_labels(0, 1, 20, 6)
    b = chipgen._split_labels(1, 1, 20, 6)
    assert a.sum() == b.sum() == 6 and not np.array_equal(a, b)


def test_defect_types_and_max_defects_are_respected(tmp_path):
    config = GenerateConfig(seed=1, n_train=12, n_test=4, bad_fraction=0.5, image_size=32, max_defects=1,
                            defect_types=("void", "crack"))
    generate_dataset(tmp_path / "d", config, progress=False)
    bad = [r["defect"] for r in _csv(tmp_path / "d" / "defects.csv") if r["label"] == "1"]
    assert len(bad) == 8 and set(bad) <= {"void", "crack"}


@pytest.mark.parametrize("defect", DEFECT_TYPES)
def test_defect_changes_only_its_chip(defect):
    """Same generator state with and without the defect: a clear, local difference;
    at contrast -> 0 the defect all but vanishes."""
    for seed in range(3):
        bad = render_chip(np.random.default_rng(seed), image_size=64, defects=(defect,)).astype(int)
        good = render_chip(np.random.default_rng(seed), image_size=64).astype(int)
        faint = render_chip(np.random.default_rng(seed), image_size=64, defects=(defect,),
                            defect_contrast=1e-3).astype(int)
        diff = np.abs(bad - good).max(axis=2)
        assert diff.max() >= 25, (defect, seed, diff.max())
        assert (diff > 8).mean() < 0.1  # local: the rest of the chip is untouched
        assert np.abs(faint - good).max() <= 2


def _changed(seed: int, size: int, defects: tuple[str, ...]):
    bad, truths = chipgen.render_chip_truth(np.random.default_rng(seed), image_size=size, defects=defects,
                                            defect_size=1.6)
    good = render_chip(np.random.default_rng(seed), image_size=size, defect_size=1.6)
    return np.abs(bad.astype(int) - good.astype(int)).max(axis=2), truths


def _inside(box, size: int) -> np.ndarray:
    x0, y0, x1, y1 = box
    inside = np.zeros((size, size), bool)
    inside[y0:y1, x0:x1] = True
    return inside


@pytest.mark.parametrize("size", [32, 96])
@pytest.mark.parametrize("defect", DEFECT_TYPES)
def test_defect_box_holds_exactly_the_pixels_it_changed(defect, size):
    """Render the same chip with and without the defect: every changed pixel lies in the
    box (and in the mask), none outside; and the box is tight: the changed pixels reach
    within 3 px of each of its sides (the footprint's faint tails plus the 1 px defocus)."""
    for seed in range(4):
        diff, (truth,) = _changed(seed, size, (defect,))
        assert truth.name == defect and truth.mask.shape == (size, size)
        inside = _inside(truth.box, size)
        assert diff[~inside].max(initial=0) == 0, (seed, truth.box)
        assert diff[~truth.mask].max(initial=0) == 0
        assert truth.mask[~inside].sum() == 0
        assert diff[inside].max() >= 25
        rows, cols = np.flatnonzero(diff.any(axis=1)), np.flatnonzero(diff.any(axis=0))
        x0, y0, x1, y1 = truth.box
        slack = (cols[0] - x0, rows[0] - y0, x1 - 1 - cols[-1], y1 - 1 - rows[-1])
        assert 0 <= min(slack) and max(slack) <= 3, (seed, slack)


def test_two_defects_each_get_their_own_box():
    for seed, pair in enumerate([("missing_wire", "broken_wire"), ("scratch", "particle"), ("chipped_edge", "void")]):
        diff, truths = _changed(seed, 64, pair)
        assert [t.name for t in truths] == list(pair)
        union = _inside(truths[0].box, 64) | _inside(truths[1].box, 64)
        assert diff[~union].max(initial=0) == 0
        # Defect k draws from its own stream: the first alone gets the same box ...
        _, (first,) = _changed(seed, 64, pair[:1])
        assert first.box == truths[0].box
        # ... and what adding the second changes lies in the second's box.
        both = chipgen.render_chip_truth(np.random.default_rng(seed), image_size=64, defects=pair, defect_size=1.6)[0]
        one = render_chip(np.random.default_rng(seed), image_size=64, defects=pair[:1], defect_size=1.6)
        second = np.abs(both.astype(int) - one.astype(int)).max(axis=2)
        inside = _inside(truths[1].box, 64)
        assert second[~inside].max(initial=0) == 0 and second[inside].max() >= 25


def test_render_chip_output_and_determinism():
    a = render_chip(np.random.default_rng(5), image_size=48, defects=("scratch", "particle"))
    b = render_chip(np.random.default_rng(5), image_size=48, defects=("scratch", "particle"))
    c = render_chip(np.random.default_rng(6), image_size=48, defects=("scratch", "particle"))
    assert a.shape == (48, 48, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_class_not_given_away_by_global_statistics():
    """Both classes share the nuisance distribution: image-wide brightness, contrast and
    colour separate them no better than chance (AUC near 0.5)."""
    rows = []
    for i in range(80):
        rng = np.random.default_rng([11, i])
        defects = (DEFECT_TYPES[i % 8],) if i % 2 else ()
        img = render_chip(rng, image_size=32, defects=defects).astype(np.float32)
        rows.append((i % 2, img.mean(), img.std(), img[..., 0].mean() - img[..., 2].mean()))
    rows = np.array(rows)
    y = rows[:, 0] == 1
    for k in (1, 2, 3):
        pos, neg = rows[y, k], rows[~y, k]
        auc = (pos[:, None] > neg[None, :]).mean()
        assert 0.3 < auc < 0.7, (k, auc)


@pytest.mark.parametrize(
    "change, name",
    [
        (dict(n_train=3, bad_fraction=0.1), "n_train"),  # no bad image
        (dict(n_train=4, bad_fraction=0.9), "n_train"),  # no good image
        (dict(n_test=1), "n_test"),
        (dict(bad_fraction=0.0), "bad_fraction"),
        (dict(bad_fraction=1.0), "bad_fraction"),
        (dict(bad_fraction="lots"), "bad_fraction"),
        (dict(defect_types=("scratch", "dent")), "defect_types"),
        (dict(defect_types=()), "defect_types"),
        (dict(image_size=8), "image_size"),
        (dict(jpeg_quality=0), "jpeg_quality"),
        (dict(max_defects=0), "max_defects"),
        (dict(defect_contrast=0.0), "defect_contrast"),
        (dict(defect_size=-1), "defect_size"),
        (dict(seed=-1), "seed"),
        (dict(n_train=10.5), "n_train"),
    ],
)
def test_invalid_arguments_raise_one_line_error(tmp_path, change, name):
    kwargs = {**SMALL, "seed": 0, **change}
    with pytest.raises(PipelineError) as exc:
        generate_dataset(tmp_path / "out", GenerateConfig(**kwargs))
    msg = str(exc.value)
    assert name in msg and "\n" not in msg
    assert not (tmp_path / "out").exists()


def test_render_chip_rejects_unknown_defect():
    with pytest.raises(PipelineError, match="dent"):
        render_chip(np.random.default_rng(0), image_size=32, defects=("dent",))


def test_failure_midway_leaves_no_dataset(tmp_path, monkeypatch):
    real = chipgen.render_chip_truth
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(chipgen, "render_chip_truth", flaky)
    with pytest.raises(RuntimeError, match="killed"):
        generate_dataset(tmp_path / "new", GenerateConfig(seed=0, **SMALL), progress=False)
    assert list(tmp_path.iterdir()) == []  # neither the dataset nor a temporary

    # An existing complete dataset survives a failed regeneration untouched.
    monkeypatch.setattr(chipgen, "render_chip_truth", real)
    generate_dataset(tmp_path / "old", GenerateConfig(seed=0, **SMALL), progress=False)
    before = _files(tmp_path / "old")
    calls.clear()
    monkeypatch.setattr(chipgen, "render_chip_truth", flaky)
    with pytest.raises(RuntimeError):
        generate_dataset(tmp_path / "old", GenerateConfig(seed=1, **SMALL), progress=False)
    assert _files(tmp_path / "old") == before
    assert [p.name for p in tmp_path.iterdir()] == ["old"]
