"""Split: seeded stratified hold-out, exact counts, determinism, clear failures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline_lib.io.errors import PipelineError
from pipeline_lib.data.ingest import MANIFEST_COLUMNS
from pipeline_lib.data.split import SplitConfig, make_split


def make_manifest(n_good=40, n_bad=20, n_test=15, *, root="data") -> pd.DataFrame:
    rows = []
    for prefix, rel, source, label, n in [
        ("g", "train/good_0", "train", 0, n_good),
        ("b", "train/bad_1", "train", 1, n_bad),
        ("t", "test/all_tests", "test", -1, n_test),
    ]:
        for i in range(n):
            ident = f"{prefix}{i:03d}"
            rows.append((ident, f"{root}/{rel}/{ident}.jpg", source, label, f"{i:064x}", f"{i:064x}",
                         16, 16, "RGB", 1000 + i))
    df = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    df = df.astype({"label": "int8", "width": "int32", "height": "int32", "bytes": "int64"})
    return df.sort_values(["source", "path"]).reset_index(drop=True)


def val_ids(df: pd.DataFrame) -> set:
    return set(df.loc[df.split == "val", "id"])


def test_counts_are_exact_and_stratified():
    m = make_manifest()
    s = make_split(m, SplitConfig(seed=0, val_good=10, val_bad=5))
    assert list(s.columns) == list(MANIFEST_COLUMNS) + ["split"]
    counts = s.groupby(["split", "label"]).size().to_dict()
    assert counts == {("train", 0): 30, ("train", 1): 15, ("val", 0): 10, ("val", 1): 5,
                      ("test", -1): 15}
    assert s.dtypes.drop("split").equals(m.dtypes)


def test_disjoint_and_covering():
    m = make_manifest()
    s = make_split(m, SplitConfig(seed=3, val_good=7, val_bad=4))
    assert len(s) == len(m) and s["id"].is_unique
    assert set(s["id"]) == set(m["id"])
    assert set(s["split"]) == {"train", "val", "test"}
    assert (s.loc[s.source == "test", "split"] == "test").all()
    assert s.loc[s.source == "train", "split"].isin(["train", "val"]).all()
    pd.testing.assert_frame_equal(s.drop(columns="split"), m)  # rows untouched, same order


def test_deterministic_by_seed():
    m = make_manifest()
    a = make_split(m, SplitConfig(seed=11, val_good=10, val_bad=5))
    b = make_split(m.copy(), SplitConfig(seed=11, val_good=10, val_bad=5))
    pd.testing.assert_frame_equal(a, b)


def test_seeds_differ():
    m = make_manifest()
    picks = {frozenset(val_ids(make_split(m, SplitConfig(seed=s, val_good=10, val_bad=5)))) for s in range(5)}
    assert len(picks) == 5


def test_independent_of_row_order_and_root():
    m = make_manifest()
    shuffled = m.sample(frac=1.0, random_state=1).reset_index(drop=True)
    a = make_split(m, SplitConfig(seed=5, val_good=10, val_bad=5))
    b = make_split(shuffled, SplitConfig(seed=5, val_good=10, val_bad=5))
    pd.testing.assert_frame_equal(a, b)
    moved = make_split(make_manifest(root="/elsewhere/raw"), SplitConfig(seed=5, val_good=10, val_bad=5))
    assert val_ids(moved) == val_ids(a)


def test_classes_draw_independently():
    m = make_manifest()
    good = lambda s: val_ids(s) & set(m.loc[m.label == 0, "id"])  # noqa: E731
    a = make_split(m, SplitConfig(seed=2, val_good=10, val_bad=5))
    b = make_split(m, SplitConfig(seed=2, val_good=10, val_bad=9))
    assert good(a) == good(b)


def test_zero_validation_images_allowed():
    s = make_split(make_manifest(), SplitConfig(seed=0, val_good=0, val_bad=0))
    assert "val" not in set(s["split"])


@pytest.mark.parametrize(
    "kw, name, have",
    [
        ({"val_good": 40, "val_bad": 5}, "good", 40),
        ({"val_good": 10, "val_bad": 20}, "bad", 20),
        ({"val_good": 10, "val_bad": 99}, "bad", 20),
    ],
)
def test_too_few_images_fail_clearly(kw, name, have):
    with pytest.raises(PipelineError) as info:
        make_split(make_manifest(), SplitConfig(seed=0, **kw))
    msg = str(info.value)
    assert "\n" not in msg
    assert f"class '{name}'" in msg and f"has {have} training image(s)" in msg
    assert f"split.val_{name}" in msg and f"at most {have - 1}" in msg


@pytest.mark.parametrize("kw", [{"seed": -1}, {"val_good": 2.5}, {"val_bad": -3},
                                {"val_good": True}])
def test_bad_parameters(kw):
    args = {"seed": 0, "val_good": 5, "val_bad": 5} | kw
    with pytest.raises(PipelineError, match=r"split\.(seed|val_good|val_bad)"):
        make_split(make_manifest(), SplitConfig(**args))


def test_numpy_integers_accepted():
    s = make_split(make_manifest(), SplitConfig(seed=np.int64(1), val_good=np.int32(3), val_bad=2))
    assert (s.split == "val").sum() == 5


def test_missing_columns_fail():
    with pytest.raises(PipelineError, match="sha256"):
        make_split(make_manifest().drop(columns="sha256"), SplitConfig(seed=0, val_good=1, val_bad=1))


def _one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg
    return msg


def test_duplicate_ids_fail_naming_them():
    df = make_manifest()
    df.loc[df["id"] == "g001", "id"] = "g000"  # two rows called g000
    df.loc[df["id"] == "b003", "id"] = "t002"  # a train and a test image sharing an id
    with pytest.raises(PipelineError) as info:
        make_split(df, SplitConfig(seed=0, val_good=1, val_bad=1))
    msg = _one_line(info)
    assert "duplicate ids ['g000', 't002']" in msg and "re-run ingest" in msg


@pytest.mark.parametrize("source", ["valid", "Train", ""])
def test_an_unknown_source_fails_naming_it(source):
    df = make_manifest()
    df.loc[3, "source"] = source
    with pytest.raises(PipelineError) as info:
        make_split(df, SplitConfig(seed=0, val_good=1, val_bad=1))
    assert f"unknown source(s) [{source!r}]" in _one_line(info)


@pytest.mark.parametrize("label", [-1, 2])
def test_train_labels_other_than_0_and_1_fail(label):
    df = make_manifest()
    df.loc[df["id"] == "g005", "label"] = label  # -1: the test images' "unknown"
    with pytest.raises(PipelineError) as info:
        make_split(df, SplitConfig(seed=0, val_good=1, val_bad=1))
    assert f"train labels {sorted({0, 1, label})}" in _one_line(info) and "expected only 0 (good) and 1 (bad)" in str(info.value)


def test_test_rows_keep_any_label_and_all_become_test():
    df = make_manifest(n_test=6)
    df.loc[df["source"] == "test", "label"] = np.array([-1, 0, 1, -1, 1, 0], dtype=np.int8)  # hidden or known
    s = make_split(df, SplitConfig(seed=0, val_good=2, val_bad=2))
    test = s[s["source"] == "test"]
    assert (test["split"] == "test").all() and len(test) == 6
    assert sorted(test["label"].tolist()) == sorted([-1, 0, 1, -1, 1, 0])
    assert not (s.loc[s["source"] == "train", "split"] == "test").any()
