"""A tiny training job for the kill/resume tests (also imported for its synthetic dataset).

Run as a script it trains a small CNN on synthetic "bright square vs none" images with an
artificial per-image delay, logs to stderr, and then writes its final outputs atomically:
``<out>/model.pt`` (best weights) and ``<out>/metrics.json``. The test kills it mid-run.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import torch
from torch.utils.data import Dataset


class Squares(Dataset):
    """Noise images; label 1 has a bright square somewhere, label 0 has none.

    ``noise`` adds fresh noise on every access from torch's global RNG (a stand-in for
    augmentation, so resume must restore that RNG); ``flip_labels`` inverts the labels
    (a validation set on which learning the training task makes the loss *worse*).
    """

    def __init__(self, n: int, *, size: int = 16, seed: int = 0, delay: float = 0.0, noise: float = 0.0, flip_labels: bool = False):
        g = torch.Generator().manual_seed(seed)
        self.labels = [int(i % 2) for i in range(n)]
        self.images = torch.randn(n, 3, size, size, generator=g) * 0.5
        side = max(2, size // 4)
        for i, label in enumerate(self.labels):
            if label == 1:
                y, x = torch.randint(0, size - side + 1, (2,), generator=g).tolist()
                self.images[i, :, y : y + side, x : x + side] += 2.5
        if flip_labels:
            self.labels = [1 - lab for lab in self.labels]
        self.delay = delay
        self.noise = noise

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        if self.delay:
            time.sleep(self.delay)
        image = self.images[index]
        if self.noise:
            image = image + self.noise * torch.randn(image.shape)
        return image, self.labels[index]


def main(argv: list[str] | None = None) -> int:
    from pipeline_lib.io.atomic import write_json
    from pipeline_lib.training.checkpoint import save_weights
    from pipeline_lib.runtime.devices import configure_threads, seed_everything
    from pipeline_lib.io.errors import PipelineError
    from pipeline_lib.models.networks import build_model
    from pipeline_lib.training.train import fit
    from pipeline_lib.training.config import TrainConfig

    parser = argparse.ArgumentParser()
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds per image")
    args = parser.parse_args(argv)

    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")
    log = logging.getLogger("victim")
    configure_threads(1)
    config = TrainConfig(epochs=args.epochs, batch_size=8, lr=0.05, seed=0, schedule="cosine")
    seed_everything(config.seed)
    model = build_model("cnn2", image_size=16, channels=(4, 8))
    try:
        result = fit(
            model,
            Squares(16, delay=args.delay, noise=0.1),
            Squares(8, seed=1),
            config,
            device="cpu",
            state_dir=args.state_dir,
            history_csv=f"{args.out_dir}/history.csv",
            log=log,
            progress=False,
        )
    except PipelineError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    save_weights(f"{args.out_dir}/model.pt", result.best_state_dict, meta={"best_epoch": result.best_epoch})
    write_json(
        f"{args.out_dir}/metrics.json",
        {"best_epoch": result.best_epoch, "epochs_run": result.epochs_run, "resumed_from": result.resumed_from},
    )
    log.info("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
