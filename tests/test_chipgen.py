"""The built-in procedural chip dataset (pipeline_lib.chipgen)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline_lib import chipgen
from pipeline_lib.chipgen import DEFECT_TYPES, generate_dataset, render_chip
from pipeline_lib.errors import PipelineError

SMALL = dict(n_train=10, n_test=8, bad_fraction=0.3, image_size=32, progress=False)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "builtin"
    summary = generate_dataset(out, seed=3, n_train=20, n_test=20, bad_fraction=0.3, image_size=40,
                               max_defects=3, progress=False)
    return out, summary


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate_dataset(a, seed=7, **SMALL)
    generate_dataset(b, seed=7, **SMALL)
    generate_dataset(c, seed=8, **SMALL)
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
    assert list(defects[0]) == ["id", "source", "label", "defects"]
    assert [r["id"] for r in defects] == sorted(r["id"] for r in defects)
    by_id = {r["id"]: r for r in defects}
    assert {i: r["label"] for i, r in by_id.items() if r["source"] == "test"} == {r["id"]: r["label"] for r in labels}
    for folder, label in (("good_0", "0"), ("bad_1", "1")):
        for p in (out / "train" / folder).glob("*.jpg"):
            assert by_id[p.stem]["source"] == "train" and by_id[p.stem]["label"] == label
    counts = dict.fromkeys(DEFECT_TYPES, 0)
    for r in defects:
        names = r["defects"].split(";") if r["defects"] else []
        assert (len(names) > 0) == (r["label"] == "1")
        assert 1 <= len(names) <= 3 or r["label"] == "0"
        assert len(set(names)) == len(names) and set(names) <= set(DEFECT_TYPES)
        for n in names:
            counts[n] += 1
    assert counts == summary["defect_counts"]


def test_test_order_does_not_reveal_label(dataset):
    out, _ = dataset
    labels = [int(r["label"]) for r in _csv(out / "test_labels.csv")]
    assert labels != sorted(labels) and labels != sorted(labels, reverse=True)
    # The shuffle follows the seed.
    a = chipgen._split_labels(0, 1, 20, 6)
    b = chipgen._split_labels(1, 1, 20, 6)
    assert a.sum() == b.sum() == 6 and not np.array_equal(a, b)


def test_defect_types_and_max_defects_are_respected(tmp_path):
    generate_dataset(tmp_path / "d", seed=1, n_train=12, n_test=4, bad_fraction=0.5, image_size=32,
                     max_defects=1, defect_types=("void", "crack"), progress=False)
    bad = [r["defects"] for r in _csv(tmp_path / "d" / "defects.csv") if r["label"] == "1"]
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
        generate_dataset(tmp_path / "out", **kwargs)
    msg = str(exc.value)
    assert name in msg and "\n" not in msg
    assert not (tmp_path / "out").exists()


def test_render_chip_rejects_unknown_defect():
    with pytest.raises(PipelineError, match="dent"):
        render_chip(np.random.default_rng(0), image_size=32, defects=("dent",))


def test_failure_midway_leaves_no_dataset(tmp_path, monkeypatch):
    real = chipgen.render_chip
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(chipgen, "render_chip", flaky)
    with pytest.raises(RuntimeError, match="killed"):
        generate_dataset(tmp_path / "new", seed=0, **SMALL)
    assert list(tmp_path.iterdir()) == []  # neither the dataset nor a temporary

    # An existing complete dataset survives a failed regeneration untouched.
    monkeypatch.setattr(chipgen, "render_chip", real)
    generate_dataset(tmp_path / "old", seed=0, **SMALL)
    before = _files(tmp_path / "old")
    calls.clear()
    monkeypatch.setattr(chipgen, "render_chip", flaky)
    with pytest.raises(RuntimeError):
        generate_dataset(tmp_path / "old", seed=1, **SMALL)
    assert _files(tmp_path / "old") == before
    assert [p.name for p in tmp_path.iterdir()] == ["old"]
