"""How a DARTS search pass runs: α-only passes, frozen BN statistics, recomputation.

- ``alpha_only_pass()``: the passes inside are differentiated with respect to α only (the
  architect's α step), so the network may treat what does not depend on α as constants.
- ``frozen_bn_stats()``: passes inside leave the BN running statistics alone; ``SearchBN``
  honours it and takes the α scaling as its weight argument.
- ``recompute_call(fn, *args)``: activation checkpointing on saved-tensor hooks (the
  intermediates of ``fn`` are recomputed in backward instead of kept).
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

_TRACK_BN_STATS: contextvars.ContextVar[bool] = contextvars.ContextVar("darts_track_bn_stats", default=True)


_ALPHA_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("darts_alpha_only", default=False)


@contextlib.contextmanager
def alpha_only_pass() -> Iterator[None]:
    """Declare that the passes inside are differentiated with respect to α only (the
    architect's α-step passes): the network may then treat everything that does not depend
    on α (stem, first cells' inputs) as constants. Gradients with respect to the weights
    taken inside are incomplete; α's are exact."""
    token = _ALPHA_ONLY.set(True)
    try:
        yield
    finally:
        _ALPHA_ONLY.reset(token)


def is_alpha_only() -> bool:
    return _ALPHA_ONLY.get()


@contextlib.contextmanager
def frozen_bn_stats() -> Iterator[None]:
    """Passes inside do not update the search network's BN running statistics."""
    token = _TRACK_BN_STATS.set(False)
    try:
        yield
    finally:
        _TRACK_BN_STATS.reset(token)


class SearchBN(nn.BatchNorm2d):
    """BatchNorm2d whose forward takes an optional per-channel weight (the α scaling) and
    honours ``frozen_bn_stats``. State-dict names are BatchNorm2d's."""

    def forward(self, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        if weight is None:
            weight = self.weight
        if self.training:
            # frozen: momentum 0 leaves the running statistics exactly as they are (r·1 + 0·m;
            # batch statistics are finite or the loss is already NaN). Passing the buffers
            # (not None) keeps the saved tensors of a pass and of its recomputation alike.
            momentum = self.momentum if _TRACK_BN_STATS.get() else 0.0
            return F.batch_norm(x, self.running_mean, self.running_var, weight, self.bias, True, momentum, self.eps)
        return F.batch_norm(x, self.running_mean, self.running_var, weight, self.bias, False, 0.0, self.eps)


def search_bn(module: nn.Module) -> nn.Module:
    """``module`` with each plain ``BatchNorm2d`` turned into a ``SearchBN`` (in place), so
    that an op built by ``ops.OPS`` honours ``frozen_bn_stats`` like the fused kernels.
    SearchBN only overrides ``forward`` (same state, same mathematics without a weight
    argument), so changing the class of the existing object is exact."""
    for m in module.modules():
        if type(m) is nn.BatchNorm2d:
            m.__class__ = SearchBN
    return module


class _Recompute:
    """Activation checkpointing for one call ``fn(*args)``, on saved-tensor hooks.

    The forward builds the usual autograd graph, but every tensor the graph would keep for
    backward is replaced by a ticket. The first ticket unpacked in backward re-runs
    ``fn`` on the same inputs (with grad enabled, BN statistics frozen) to regenerate the
    saved tensors, handing each out once. Unlike wrapping ``fn`` in a custom Function,
    the graph nodes are the ordinary ones, so ``autograd.grad(loss, alphas)`` still skips
    every weight gradient. (``torch.utils.checkpoint`` does the same but imports
    torch._dynamo, ~70 MB of RSS and seconds of start-up.) Double backward is refused.
    """

    __slots__ = ("fn", "args", "count", "store")

    def __init__(self, fn, args):
        self.fn, self.args = fn, args
        self.count = 0
        self.store: dict[int, torch.Tensor] = {}

    def pack(self, tensor: torch.Tensor) -> int:
        self.count += 1
        return self.count - 1

    def unpack(self, ticket: int) -> torch.Tensor:
        if ticket not in self.store:
            if torch.is_grad_enabled():
                raise RuntimeError("recomputed search cells do not support double backward; build SearchNetwork(recompute=False)")
            self._recompute()
        return self.store.pop(ticket)

    def _recompute(self) -> None:
        store, counter = {}, [0]

        def pack(tensor: torch.Tensor) -> None:
            # detached: the recomputation's own graph is dropped as soon as fn returns, and
            # nothing in it refers back to ``store`` (a cycle through autograd nodes that
            # Python's GC cannot see would leak every recomputed tensor)
            store[counter[0]] = tensor.detach()
            counter[0] += 1

        args = [a.detach().requires_grad_(a.requires_grad) if isinstance(a, torch.Tensor) else a for a in self.args]
        with torch.enable_grad(), frozen_bn_stats(), torch.autograd.graph.saved_tensors_hooks(pack, _never_unpacked):
            self.fn(*args)
        if counter[0] != self.count:
            raise RuntimeError(f"recomputation saved {counter[0]} tensors, the forward {self.count}")
        self.store = store


def _never_unpacked(_ticket) -> torch.Tensor:
    raise RuntimeError("a recomputation graph was differentiated")


def recompute_call(fn, *args):
    """``fn(*args)`` whose intermediates are recomputed in backward instead of kept."""
    holder = _Recompute(fn, args)
    with torch.autograd.graph.saved_tensors_hooks(holder.pack, holder.unpack):
        return fn(*args)
