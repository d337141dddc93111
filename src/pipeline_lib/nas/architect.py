"""α updates of DARTS's bilevel optimisation: first order and second order (unrolled).

The weight optimizer (SGD with momentum and weight decay over
``model.weight_parameters()``) is the caller's; the architect owns α's Adam
(lr 3e-4, betas (0.5, 0.999), weight decay 1e-3 by default, as DARTS).

- **First order** (its own code path): ∇α = ∇α L_val(w, α) at the current weights. Only
  the α gradient is asked of autograd, so no weight gradient is computed and no unrolled
  model exists.
- **Second order** (Liu et al. 2019, eq. 7-8):
  w' = w − ξ (∇w L_train(w) + momentum·buf + wd·w),
  ∇α = ∇α L_val(w') − ξ [∇α L_train(w⁺) − ∇α L_train(w⁻)] / (2ε),
  w± = w ± ε ∇w' L_val(w'), ε = 0.01 / ‖∇w' L_val(w')‖.
  ξ defaults to the weight optimizer's current learning rate (as DARTS). The unrolled and
  perturbed weights are written *into the model's own parameters* (under no_grad) and the
  original values restored afterwards (also on error): no copy of the model is built.
  The division is by (2ε) — the public reimplementation's ``/ 2. * eps`` multiplies by ε/2
  instead and silently turns the second-order term off.

Optimizers: ``MomentumSGD`` and ``AdamL2`` below are torch.optim.SGD (dampening 0, no
Nesterov) and torch.optim.Adam (L2 weight decay, no amsgrad), update for update
(``tests/nas/test_darts_grad.py`` compares them). They exist because constructing any
``torch.optim`` optimizer imports ``torch._dynamo`` (≈150 MB of resident memory and a few
seconds), which the search does not otherwise need. That figure is why they stay (issue 16,
item 6): ``bench/README.md`` records the search step's peak RSS at 667–685 MB, 0.44–0.46× of
the public code's; +150 MB is ~0.54×, over the ≤ 0.5× memory goal. ``bench_darts_step.py
--torch-optim`` times and sizes ours with torch.optim beside them. The architect accepts
either kind of weight optimizer.

The α-step passes leave the BN running statistics alone (``frozen_bn_stats``); only the
weight step's batches update them. BN normalises with batch statistics in every pass, as
in DARTS, so no gradient depends on this.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from ..io.errors import PipelineError
from .search_passes import alpha_only_pass, frozen_bn_stats

ORDERS = ("first", "second")


class _Optimizer:
    """The part of torch.optim.Optimizer's interface the search uses (one param group)."""

    def __init__(self, params, defaults: dict):
        self.param_groups = [{"params": list(params), **defaults}]
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.param_groups[0]["params"]:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    def state_dict(self) -> dict:
        params = self.param_groups[0]["params"]
        state = {i: dict(self.state[p]) for i, p in enumerate(params) if p in self.state}
        group = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.param_groups[0].items() if k != "params"}
        return {"state": state, "param_groups": [group]}

    def load_state_dict(self, state_dict: dict) -> None:
        params = self.param_groups[0]["params"]
        group = dict(state_dict["param_groups"][0])
        for k, v in group.items():
            self.param_groups[0][k] = tuple(v) if isinstance(v, list) else v
        self.state = {}
        for i, st in state_dict["state"].items():
            p = params[int(i)]
            self.state[p] = {k: (v.to(p.device) if isinstance(v, torch.Tensor) and k != "step" else v) for k, v in st.items()}


class MomentumSGD(_Optimizer):
    """torch.optim.SGD(lr, momentum, weight_decay) with dampening 0, nesterov False."""

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        grads = [p.grad for p in params]
        if wd != 0:
            grads = torch._foreach_add(grads, params, alpha=wd)
        if momentum != 0:
            bufs = []
            for p, g in zip(params, grads):
                st = self.state.setdefault(p, {})
                buf = st.get("momentum_buffer")
                if buf is None:
                    buf = st["momentum_buffer"] = torch.clone(g).detach()
                else:
                    buf.mul_(momentum).add_(g)
                bufs.append(buf)
            grads = bufs
        torch._foreach_add_(params, grads, alpha=-lr)


class AdamL2(_Optimizer):
    """torch.optim.Adam(lr, betas, eps, weight_decay) (L2 decay added to the gradient)."""

    def __init__(self, params, lr: float = 3e-4, betas=(0.5, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        for p in group["params"]:
            if p.grad is None:
                continue
            grad = p.grad if wd == 0 else p.grad.add(p, alpha=wd)
            st = self.state.setdefault(p, {})
            if not st:
                st["step"] = torch.tensor(0.0)
                st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            st["step"] += 1
            step = float(st["step"])
            st["exp_avg"].lerp_(grad, 1 - beta1)
            st["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            bias_correction1 = 1 - beta1**step
            bias_correction2_sqrt = math.sqrt(1 - beta2**step)
            denom = (st["exp_avg_sq"].sqrt() / bias_correction2_sqrt).add_(eps)
            p.addcdiv_(st["exp_avg"], denom, value=-lr / bias_correction1)


@dataclass
class AlphaStepInfo:
    """What one α step saw: the validation loss/accuracy of the pass that produced ∇α
    (first order: at w; second order: at the unrolled w')."""

    val_loss: float
    val_correct: int
    val_count: int


def _loss_and_correct(model, x, y) -> tuple[torch.Tensor, int]:
    logits = model(x)
    loss = torch.nn.functional.cross_entropy(logits, y)
    correct = int((logits.detach().argmax(1) == y).sum())
    return loss, correct


class Architect:
    def __init__(
        self,
        model: torch.nn.Module,
        w_optimizer: torch.optim.Optimizer,
        *,
        order: str = "first",
        lr: float = 3e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        weight_decay: float = 1e-3,
        xi: float | None = None,
        hessian_r: float = 0.01,
    ):
        if order not in ORDERS:
            raise PipelineError(f"darts order is {order!r}, expected one of {ORDERS}")
        self.model = model
        self.w_optimizer = w_optimizer
        self.order = order
        self.xi = xi
        self.hessian_r = hessian_r
        self.alphas: list[torch.nn.Parameter] = list(model.arch_parameters())
        self.weights: list[torch.nn.Parameter] = list(model.weight_parameters())
        self.optimizer = AdamL2(self.alphas, lr=lr, betas=tuple(betas), weight_decay=weight_decay)

    # --- public -------------------------------------------------------------------------
    def step(self, x_train, y_train, x_val, y_val) -> AlphaStepInfo:
        """Set α.grad (first or second order) and take one Adam step on α."""
        self.optimizer.zero_grad(set_to_none=True)
        info = self.compute_alpha_grads(x_train, y_train, x_val, y_val)
        self.optimizer.step()
        return info

    def compute_alpha_grads(self, x_train, y_train, x_val, y_val, *, xi: float | None = None) -> AlphaStepInfo:
        """Write ∇α into ``alpha.grad`` (no optimizer step)."""
        if self.order == "first":
            return self._first_order(x_val, y_val)
        return self._second_order(x_train, y_train, x_val, y_val, self.current_xi() if xi is None else xi)

    def current_xi(self) -> float:
        return float(self.w_optimizer.param_groups[0]["lr"]) if self.xi is None else float(self.xi)

    # --- first order --------------------------------------------------------------------
    def _first_order(self, x_val, y_val) -> AlphaStepInfo:
        with frozen_bn_stats(), alpha_only_pass():
            loss, correct = _loss_and_correct(self.model, x_val, y_val)
            grads = torch.autograd.grad(loss, self.alphas)
        for a, g in zip(self.alphas, grads):
            a.grad = g
        return AlphaStepInfo(float(loss.detach()), correct, int(y_val.shape[0]))

    # --- second order -------------------------------------------------------------------
    def _unrolled_direction(self, grads: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """∇w L_train + momentum·buf + wd·w, read from the weight optimizer's own state."""
        index = {
            id(p): (float(group.get("momentum", 0.0)), float(group.get("weight_decay", 0.0)))
            for group in self.w_optimizer.param_groups
            for p in group["params"]
        }
        out = []
        for p, g in zip(self.weights, grads):
            momentum, wd = index.get(id(p), (0.0, 0.0))
            d = g + wd * p.detach() if wd else g.clone()
            buf = self.w_optimizer.state.get(p, {}).get("momentum_buffer") if momentum else None
            if buf is not None:
                d.add_(buf, alpha=momentum)
            out.append(d)
        return out

    def _second_order(self, x_train, y_train, x_val, y_val, xi: float) -> AlphaStepInfo:
        model, weights = self.model, self.weights
        with frozen_bn_stats():
            loss_train = model.loss(x_train, y_train)
            g_train = torch.autograd.grad(loss_train, weights)
        backup = [p.detach().clone() for p in weights]
        try:
            with torch.no_grad():  # w' = w − ξ·direction, in place
                torch._foreach_add_([p.data for p in weights], self._unrolled_direction(g_train), alpha=-xi)
            del g_train
            with frozen_bn_stats():
                loss_val, correct = _loss_and_correct(model, x_val, y_val)
                grads = torch.autograd.grad(loss_val, self.alphas + weights)
            d_alpha, v = grads[: len(self.alphas)], grads[len(self.alphas) :]
            del grads
            hvp = self.hessian_vector_product(v, x_train, y_train, base=backup)
        finally:
            with torch.no_grad():
                torch._foreach_copy_([p.data for p in weights], backup)
        for a, da, h in zip(self.alphas, d_alpha, hvp):
            a.grad = da - xi * h
        return AlphaStepInfo(float(loss_val.detach()), correct, int(y_val.shape[0]))

    def hessian_vector_product(self, vector, x, y, *, base=None, r: float | None = None) -> list[torch.Tensor]:
        """[∇α L(w⁺) − ∇α L(w⁻)] / (2ε), w± = base ± ε·vector, ε = r / ‖vector‖ (the finite
        difference of ∇²_{α,w} L · vector). ``base`` defaults to the current weights; the
        model's weights are left at ``base`` afterwards."""
        weights = self.weights
        if base is None:
            base = [p.detach().clone() for p in weights]
        r = self.hessian_r if r is None else r
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in vector]))
        eps = r / float(norm) if float(norm) > 0 else 0.0
        params = [p.data for p in weights]
        grads = []
        try:
            for sign in (1.0, -1.0):
                with torch.no_grad():
                    torch._foreach_copy_(params, base)
                    torch._foreach_add_(params, list(vector), alpha=sign * eps)
                with frozen_bn_stats(), alpha_only_pass():
                    loss = self.model.loss(x, y)
                    grads.append(torch.autograd.grad(loss, self.alphas))
        finally:
            with torch.no_grad():
                torch._foreach_copy_(params, base)
        if eps == 0.0:
            return [torch.zeros_like(a) for a in self.alphas]
        return [(gp - gn) / (2 * eps) for gp, gn in zip(*grads)]
