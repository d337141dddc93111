"""Per-epoch search diagnostics: accuracy on a whole half, and the entropy of softmax(α).

Both searches record, after every epoch, how well the network they train classifies their
held-out half of the training split, so that the report can set it against chance and say
whether the search learned anything before its cell is trusted.

Two things make that score honest (issue 28):

- **BN statistics that match the weights.** A search moves its weights fast over few steps;
  BN running averages (momentum 0.1) lag behind them, so a plain eval-mode pass scores a
  network that does not exist (a supernet that fits its data in train mode predicted one
  class in eval mode). ``recalibrated_bn`` recomputes every BN layer's statistics on the
  *weights'* half with the weights as they are, as weight-sharing NAS does for each subnet
  it evaluates (SPOS, once-for-all), then scores in eval mode. The ENAS child keeps no
  running statistics at all (batch statistics, as the official search); it gets them here.
- **A class-balanced score.** The searches train on every image of their half with a
  balanced sampler; the score is over ``balanced_indices`` of the held-out half (every image
  of the rarer class and as many of the other), so chance is 0.5 for the binomial verdict.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset, WeightedRandomSampler


def dataset_labels(data: Dataset) -> torch.Tensor:
    """The labels of a TensorDataset (image, label), or of a Subset of one, without decoding images."""
    if isinstance(data, Subset):
        return dataset_labels(data.dataset)[torch.as_tensor(data.indices, dtype=torch.long)]
    tensors = getattr(data, "tensors", None)
    if tensors is not None:
        return tensors[1].long()
    return torch.as_tensor([int(data[i][1]) for i in range(len(data))])


def balanced_indices(labels: torch.Tensor, seed: int) -> torch.Tensor:
    """Sorted indices of a class-balanced subset: all of the rarer class, a seeded draw of as many
    of each other class. Chance accuracy on it is 1 / classes whatever the half's proportions."""
    labels = torch.as_tensor(labels).long()
    classes = torch.unique(labels)
    per_class = min(int((labels == c).sum()) for c in classes)
    gen = torch.Generator().manual_seed(int(seed))
    picked = [torch.nonzero(labels == c).flatten()[torch.randperm(int((labels == c).sum()), generator=gen)[:per_class]]
              for c in classes]
    return torch.sort(torch.cat(picked)).values


def balanced_sampler_weights(labels: torch.Tensor) -> torch.Tensor:
    """Per-image sampling weights 1 / (count of its class): a ``WeightedRandomSampler`` over them draws
    every class equally often and every image of a class equally often (scikit-learn's 'balanced')."""
    labels = torch.as_tensor(labels).long()
    counts = torch.bincount(labels).double()
    return (1.0 / counts)[labels]


def sampling(data: Dataset, generator: torch.Generator, balance: bool) -> dict:
    """DataLoader keywords for one seeded pass over ``data``: shuffled, or with ``balance`` ``len(data)``
    draws by a class-balanced sampler (every image can be drawn, none is discarded)."""
    if not balance:
        return {"shuffle": True, "generator": generator}
    weights = balanced_sampler_weights(dataset_labels(data))
    return {"sampler": WeightedRandomSampler(weights, len(data), generator=generator)}


def bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@contextlib.contextmanager
def recalibrated_bn(model: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor], data: Dataset, *,
                    batch_size: int, device: torch.device, seed: int = 0) -> Iterator[None]:
    """Inside: ``model`` in eval mode with every BN layer's statistics recomputed on ``data`` (the
    weights' half) under the current weights: a cumulative average over seeded minibatches (BN's own
    update with momentum 1/k at batch k). Afterwards every BN buffer, flag and momentum, and the
    train/eval mode, are as they were: the search continues untouched."""
    layers = bn_layers(model)
    saved = [(m.track_running_stats, m.momentum, m.running_mean, m.running_var, m.num_batches_tracked) for m in layers]
    was_training = model.training
    try:
        for m in layers:
            m.track_running_stats = True
            m.running_mean = torch.zeros(m.num_features, device=device)
            m.running_var = torch.ones(m.num_features, device=device)
            m.num_batches_tracked = torch.zeros((), dtype=torch.long, device=device)
        model.train()
        gen = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            loader = DataLoader(data, batch_size=batch_size, shuffle=True, generator=gen, drop_last=len(data) > batch_size)
            for k, (x, _) in enumerate(loader, start=1):
                for m in layers:
                    m.momentum = 1.0 / k
                forward(x.to(device))
        model.eval()
        yield
    finally:
        for m, (track, momentum, mean, var, count) in zip(layers, saved):
            m.track_running_stats, m.momentum = track, momentum
            m.running_mean, m.running_var, m.num_batches_tracked = mean, var, count
        model.train(was_training)


@torch.no_grad()
def score(forward: Callable[[torch.Tensor], torch.Tensor], data: Dataset, *, batch_size: int,
          device: torch.device) -> dict:
    """``correct``, ``n`` and mean cross-entropy ``loss`` of ``forward`` over all of ``data`` in a fixed
    order (the caller sets the mode; nothing random, no weight changes)."""
    correct = total = 0
    loss = 0.0
    for x, y in DataLoader(data, batch_size=batch_size, shuffle=False):
        x, y = x.to(device), torch.as_tensor(y).to(device).long()
        logits = forward(x)
        correct += int((logits.argmax(1) == y).sum())
        loss += float(F.cross_entropy(logits.float(), y, reduction="sum"))
        total += int(y.shape[0])
    return {"correct": correct, "n": total, "loss": loss / max(total, 1)}


def heldout_scores(model: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor], weights_half: Dataset,
                   heldout_half: Dataset, *, batch_size: int, device: torch.device, seed: int) -> dict:
    """The search's diagnostic: BN recalibrated on the weights' half, then scored on a class-balanced
    subset of each half (chance 0.5 with two classes). Keys ``heldout_*`` and ``train_half_*``
    (``acc``, ``correct``, ``n``, ``loss``)."""
    halves = {"train_half": weights_half, "heldout": heldout_half}
    subsets = {name: Subset(data, balanced_indices(dataset_labels(data), seed).tolist()) for name, data in halves.items()}
    out: dict = {}
    with recalibrated_bn(model, forward, weights_half, batch_size=batch_size, device=device, seed=seed):
        for name, subset in subsets.items():
            s = score(forward, subset, batch_size=batch_size, device=device)
            out.update({f"{name}_acc": s["correct"] / max(s["n"], 1), f"{name}_correct": s["correct"],
                        f"{name}_n": s["n"], f"{name}_loss": s["loss"]})
    return out


def softmax_entropy(weights: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of each distribution along the last axis (0 · log 0 taken as 0).

    For DARTS: of softmax(α) per edge; its maximum is ln(number of ops) (α uniform)."""
    w = weights.detach().to(torch.float64)
    return -(torch.where(w > 0, w * torch.log(w), torch.zeros_like(w))).sum(-1)


def max_entropy(n: int) -> float:
    """The entropy of the uniform distribution over ``n`` choices, ln n."""
    return math.log(n)


def controller_max_entropy(num_nodes: int, n_ops: int | None = None) -> float:
    """The ENAS controller's summed entropy when every choice is uniform: per cell and node k,
    two input indices over k + 2 states and two ops over ``n_ops``; normal and reduction cell."""
    if n_ops is None:
        from .enas_controller import OPS

        n_ops = len(OPS)
    per_cell = sum(2 * max_entropy(k + 2) + 2 * max_entropy(n_ops) for k in range(num_nodes))
    return 2 * per_cell


def enas_heldout(child, arch, child_train: Dataset, reward_data: Dataset, cfg, device: torch.device, seed: int) -> dict:
    """The ENAS shared-weight child with the controller's greedy cell ``arch``: BN statistics for that
    cell computed on the child's half (``recalibrated_bn``), then scored on class-balanced subsets of
    both halves (dropout off); and the controller's maximal entropy, its scale."""
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    scores = heldout_scores(child, lambda x: child(x.contiguous(memory_format=fmt), arch), child_train, reward_data,
                            batch_size=max(cfg.reward_bs, 64), device=device, seed=seed)
    return {**scores, "entropy_max": controller_max_entropy(cfg.num_nodes)}
