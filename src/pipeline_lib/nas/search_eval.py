"""Per-epoch search diagnostics: accuracy on a whole half, and the entropy of softmax(α).

Both searches record, after every epoch, how well the network they train classifies each of
their two halves of the training split, so that the report can set the held-out half's
accuracy against chance (0.5 on class-balanced halves) and say whether the search learned
anything before its cell is trusted (issue 17, "The searches, measured").
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch.utils.data import DataLoader, Dataset


@torch.no_grad()
def count_correct(forward: Callable[[torch.Tensor], torch.Tensor], data: Dataset | DataLoader, *, batch_size: int,
                  device: torch.device) -> tuple[int, int]:
    """(correct, images) of ``forward``'s argmax over all of ``data`` in a fixed order.

    The caller sets train/eval mode; nothing here draws random numbers or changes weights."""
    dataset = data.dataset if isinstance(data, DataLoader) else data
    correct = total = 0
    for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        x, y = x.to(device), torch.as_tensor(y).to(device).long()
        correct += int((forward(x).argmax(1) == y).sum())
        total += int(y.shape[0])
    return correct, total


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


def enas_heldout(child, arch, reward_data: Dataset, cfg, device: torch.device) -> dict:
    """The ENAS shared-weight child with the controller's greedy cell ``arch``, scored on the whole
    held-out (reward) half in a fixed order (dropout off; BN on the batch statistics of
    ``cfg.reward_bs`` images, as the rewards); and the controller's maximal entropy, its scale."""
    child.eval()
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    correct, n = count_correct(lambda x: child(x.contiguous(memory_format=fmt), arch), reward_data,
                               batch_size=cfg.reward_bs, device=device)
    return {"heldout_acc": correct / max(n, 1), "heldout_correct": correct, "heldout_n": n,
            "entropy_max": controller_max_entropy(cfg.num_nodes)}
