"""What the DataLoaders of the training, search and feature rules get, on CPU and on CUDA.

Built, never iterated, for ``torch.device("cuda")``: the settings are checked on a machine
without a GPU (a CUDA run is bench/cuda_smoke.py's).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import TensorDataset

from pipeline_lib.features import extract as features_lib
from pipeline_lib.data.datasets import seed_worker
from pipeline_lib.runtime.devices import configure_threads, loader_generator, loader_options, loader_workers
from pipeline_lib.training.evaluation import eval_loader
from pipeline_lib.nas import darts_search, enas_search
from pipeline_lib.nas.enas_config import EnasConfig
from pipeline_lib.training.train import make_loaders
from pipeline_lib.training.config import TrainConfig

CUDA, CPU = torch.device("cuda", 0), torch.device("cpu")


@pytest.fixture
def one_thread():
    """A job given 1 thread (torch's default here is the machine's 2 cores)."""
    before = torch.get_num_threads()
    configure_threads(1)
    yield 1
    torch.set_num_threads(before)


def data(n=10):
    return TensorDataset(torch.zeros(n, 3, 8, 8), torch.arange(n) % 2)


def test_workers_follow_the_job_threads_on_cuda_only(one_thread):
    assert loader_workers(None, CUDA) == 1 and loader_workers(None, "cuda") == 1
    assert loader_workers(None, CPU) == 0
    assert loader_workers(2, CUDA) == 2 and loader_workers(2, CPU) == 2  # params win


@pytest.mark.parametrize("device, workers, expected", [
    (CUDA, 3, {"num_workers": 3, "pin_memory": True, "persistent_workers": True, "worker_init_fn": seed_worker}),
    (CPU, 2, {"num_workers": 2, "pin_memory": False, "persistent_workers": False, "worker_init_fn": seed_worker}),
    (CUDA, 0, {"num_workers": 0, "pin_memory": True}),  # DataLoader refuses persistent workers without workers
])
def test_loader_options(device, workers, expected):
    assert loader_options(device, workers) == expected


@pytest.mark.parametrize("device", [CUDA, CPU])
def test_training_loaders(device, one_thread):
    config = TrainConfig(epochs=1, batch_size=3, lr=0.1)
    train, val = make_loaders(data(10), data(4), config, device, loader_generator(0))
    cuda = device.type == "cuda"
    for loader in (train, val):
        assert (loader.num_workers, loader.pin_memory, loader.persistent_workers) == ((1, True, True) if cuda else (0, False, False))
    assert train.drop_last and not val.drop_last  # 10 % 3 == 1: a batch of one would break BatchNorm
    assert isinstance(train.sampler, torch.utils.data.RandomSampler)
    assert isinstance(val.sampler, torch.utils.data.SequentialSampler)
    explicit = make_loaders(data(), data(), TrainConfig(epochs=1, batch_size=3, lr=0.1, num_workers=2), device, loader_generator(0))
    assert [loader.num_workers for loader in explicit] == [2, 2]


def test_eval_loader_on_cpu_decodes_inline(one_thread):
    loader = eval_loader(data(), 4, None, CPU)
    assert (loader.num_workers, loader.pin_memory) == (0, False)


@pytest.mark.parametrize("device", [CUDA, CPU])
def test_search_loaders_keep_in_memory_tensors_in_process(device, one_thread):
    darts = darts_search._loader(data(), 4, 0, 0, 0, salt=1, device=device)
    enas = enas_search._loader(data(), 4, 0, EnasConfig(), device)
    for loader in (darts, enas):
        assert (loader.num_workers, loader.pin_memory) == (0, device.type == "cuda")


def test_features_use_workers_only_when_asked_on_cpu(tmp_path, monkeypatch):
    from PIL import Image

    paths = []
    for i in range(5):
        path = tmp_path / f"{i}.jpg"
        Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(path)
        paths.append(str(path))
    frame = pd.DataFrame({"path": paths})
    made = []
    real = torch.utils.data.DataLoader

    class Spy(real):
        def __init__(self, *args, **kwargs):
            made.append(kwargs)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(torch.utils.data, "DataLoader", Spy)
    model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    inline = features_lib.extract_features(model, frame, image_size=8, batch_size=2, progress=False)
    assert made == []
    workers = features_lib.extract_features(model, frame, image_size=8, batch_size=2, num_workers=1, progress=False)
    assert len(made) == 1 and made[0]["num_workers"] == 1 and not made[0]["pin_memory"]
    np.testing.assert_array_equal(inline, workers)
