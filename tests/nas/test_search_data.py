"""The architecture searches' data: disjoint, seeded halves of the training split only."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline_lib.io.errors import PipelineError
from pipeline_lib.nas.search_data import train_halves


def _split(n_good: int, n_bad: int) -> pd.DataFrame:
    rows = [{"id": f"tr{i:04d}", "label": 0, "split": "train"} for i in range(n_good)]
    rows += [{"id": f"tr{n_good + i:04d}", "label": 1, "split": "train"} for i in range(n_bad)]
    rows += [{"id": f"va{i:04d}", "label": i % 2, "split": "val"} for i in range(10)]
    rows += [{"id": f"te{i:04d}", "label": i % 2, "split": "test"} for i in range(10)]
    return pd.DataFrame(rows)


def _counts(half: pd.DataFrame) -> dict[int, int]:
    return half["label"].value_counts().reindex([0, 1], fill_value=0).to_dict()


def test_halves_are_disjoint_stratified_train_rows_and_seeded():
    split = _split(70, 30)
    a, b = train_halves(split, seed=0)
    assert set(a["split"]) == set(b["split"]) == {"train"}
    assert not set(a["id"]) & set(b["id"]) and len(a) + len(b) == 100
    assert _counts(a) == {0: 35, 1: 15} == _counts(b)
    again = train_halves(split, seed=0)
    other = train_halves(split, seed=1)
    assert a["id"].tolist() == again[0]["id"].tolist()
    assert a["id"].tolist() != other[0]["id"].tolist()


def test_capped_halves_keep_the_class_proportions():
    capped = train_halves(_split(70, 30), seed=0, max_images=20)
    assert [_counts(h) for h in capped] == [{0: 7, 1: 3}, {0: 7, 1: 3}]


def test_a_class_with_too_few_images_is_named():
    with pytest.raises(PipelineError, match="1 images of class 1"):
        train_halves(_split(10, 1), seed=0)
