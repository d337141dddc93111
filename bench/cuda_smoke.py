"""The CUDA paths on a GPU box: training loop (bf16 autocast, channels_last), DARTS, ENAS.

CI has no GPU, so these paths are exercised here, by hand, whenever a GPU is available:

    PYTHONPATH=src python bench/cuda_smoke.py [--image-size 32] [--images 128]

Each step runs on random images (two classes told apart by a bright square), checks that
the result is finite and where it ran, and prints its time. Exits 1 on the first failure,
0 with "cuda smoke: all passed" otherwise; 2 when no CUDA device is visible.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from pipeline_lib.runtime.devices import seed_everything
from pipeline_lib.models.networks import build_model
from pipeline_lib.nas.darts_config import DartsConfig
from pipeline_lib.nas.darts_search import search as darts_search
from pipeline_lib.nas.enas_search import search as enas_search
from pipeline_lib.nas.search_model import SearchNetwork
from pipeline_lib.training.evaluation import predict_proba
from pipeline_lib.training.train import fit
from pipeline_lib.training.config import TrainConfig


class Labelled(TensorDataset):
    """A TensorDataset with the ``.labels`` array ``class_weight: balanced`` reads."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        super().__init__(images, labels)
        self.labels = labels.numpy()


def squares(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g) * 0.5
    y = torch.arange(n) % 2
    side = max(2, size // 6)
    for i in torch.nonzero(y).flatten().tolist():
        r, c = torch.randint(0, size - side, (2,), generator=g).tolist()
        x[i, :, r : r + side, c : c + side] += 2.5
    return x, y


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--images", type=int, default=128)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if not torch.cuda.is_available():
        print("cuda smoke: no CUDA device visible", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, bf16 {torch.cuda.is_bf16_supported()}")
    work = Path(tempfile.mkdtemp(prefix="cuda_smoke_"))
    train = Labelled(*squares(args.images, args.image_size, 0))
    val = Labelled(*squares(args.images // 2, args.image_size, 1))

    t0 = time.perf_counter()
    seed_everything(0)
    model = build_model("cnn2", image_size=args.image_size, channels=(16, 32), pool="max")
    config = TrainConfig(epochs=4, batch_size=32, lr=0.003, optimizer="adam", seed=0, class_weight="balanced")
    result = fit(model, train, val, config, device=device, state_dir=work / "fit", progress=False)
    probs = predict_proba(model, val, batch_size=32, device=device)
    assert "cuda" in result.device and "bf16" in result.device, result.device
    assert torch.isfinite(torch.as_tensor(probs)).all() and result.best_val_acc > 0.6, result.best_val_acc
    print(f"fit (cnn2, bf16, channels_last): {result.device}, valid acc {result.best_val_acc:.3f}, "
          f"{time.perf_counter() - t0:.1f} s")

    half = args.images // 2
    x, y = train.tensors
    for order in ("first", "second"):
        t0 = time.perf_counter()
        net = SearchNetwork(C=8, num_classes=2, layers=5, nodes=4, seed=0)
        found = darts_search(net, TensorDataset(x[:half], y[:half]), TensorDataset(x[half:], y[half:]),
                             DartsConfig(epochs=2, order=order, batch_size=16), device=device, progress=False)
        alphas = torch.stack([a.detach() for a in net.arch_parameters()])
        assert torch.isfinite(alphas).all() and found.genotype is not None
        print(f"DARTS {order} order on cuda: {found.genotype.to_dict()['normal'][:2]}..., "
              f"{time.perf_counter() - t0:.1f} s")

    t0 = time.perf_counter()
    genotype, history = enas_search((x[:half], y[:half]), (x[half:], y[half:]), num_classes=2, epochs=2, seed=0,
                                    device=device, progress=False,
                                    config={"channels": 8, "num_layers": 1, "batch_size": 16, "max_child_steps": 4,
                                            "controller_steps": 2, "controller_samples": 2, "n_candidates": 2})
    assert genotype is not None and len(history) == 2
    print(f"ENAS on cuda: {genotype.to_dict()['normal'][:2]}..., {time.perf_counter() - t0:.1f} s")
    print("cuda smoke: all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
