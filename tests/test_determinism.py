"""On CPU, the same params give the same results, byte for byte (wall times aside).

The seed reaches Python's ``random``, numpy and torch (``devices.seed_everything``) and every
DataLoader worker (``data.seed_worker`` + a seeded generator). CUDA is not bit-exact: compare
GPU runs with a tolerance (README, "Audit a result").
"""

import json
import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from conftest import TINY
from e2e_helpers import copy_workflow, snakemake
from pipeline_lib.data.datasets import seed_worker
from pipeline_lib.runtime.devices import loader_generator, seed_everything

WALL_TIMES = ("wall_time_s",)  # the only fields allowed to differ between two runs


def _draws():
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_seed_everything_seeds_python_numpy_and_torch():
    seed_everything(7)
    first = _draws()
    seed_everything(7)
    assert _draws() == first
    seed_everything(8)
    assert _draws() != first


class _Noise(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, index):
        return torch.tensor([index, random.random(), np.random.rand(), float(torch.rand(1))], dtype=torch.float64)


def _epoch(seed):
    loader = DataLoader(_Noise(), batch_size=2, shuffle=True, num_workers=2,
                        worker_init_fn=seed_worker, generator=loader_generator(seed))
    return torch.cat(list(loader)).tolist()


def test_dataloader_workers_are_seeded_from_the_loader_generator():
    first = _epoch(0)
    assert _epoch(0) == first  # order and every worker's random/numpy/torch draws
    assert _epoch(1) != first
    values = [row[1:] for row in first]
    assert len({tuple(v) for v in values}) == len(values)  # workers do not repeat each other's draws


def _metrics(workdir):
    found = {}
    for path in sorted((workdir / "results/models").glob("*/seed*/metrics.json")):
        obj = json.loads(path.read_text())
        for field in WALL_TIMES:
            obj.pop(field, None)
        found[path.parent.parent.name] = obj
    return found


@pytest.mark.e2e
def test_two_tiny_runs_from_scratch_give_identical_results(tiny_study, tmp_path):
    second = copy_workflow(tmp_path)
    snakemake(second, "results/table/results.json", *TINY)
    first_metrics, second_metrics = _metrics(tiny_study), _metrics(second)
    in_table = set(json.loads((tiny_study / "results/table/results.json").read_text()))
    assert len(in_table) >= 11 and set(second_metrics) == in_table <= set(first_metrics)
    for model, metrics in second_metrics.items():
        assert first_metrics[model] == metrics, model
    for rel in ["results/table/results.json", "results/split/split.parquet",
                *[f"results/models/{m}/seed0/predictions.csv" for m in second_metrics]]:
        assert (second / rel).read_bytes() == (tiny_study / rel).read_bytes(), rel
