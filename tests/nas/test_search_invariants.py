"""Invariants of the search path that a planted bug broke without any fast test failing (issue 28):
the network fed raw α instead of softmax(α), REINFORCE without its baseline, and ``predict_proba``
left in train mode on a model with BatchNorm. Each test fails on that bug."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from pipeline_lib.nas.enas_controller import Controller, make_optimizer, reinforce_step
from pipeline_lib.nas.search_model import SearchNetwork
from pipeline_lib.training.evaluation import predict_proba


def _network() -> SearchNetwork:
    model = SearchNetwork(C=4, num_classes=2, layers=3, nodes=2, seed=0)
    with torch.no_grad():  # α far from uniform, so softmax(α) and raw α differ a lot
        model.alphas_normal.copy_(torch.randn(model.alphas_normal.shape, generator=torch.Generator().manual_seed(1)))
        model.alphas_reduce.copy_(torch.randn(model.alphas_reduce.shape, generator=torch.Generator().manual_seed(2)))
    return model.eval()


def test_shifting_every_alpha_by_a_constant_leaves_the_logits_unchanged():
    """softmax(α + c) = softmax(α): the mixed edges see only the softmax. Fed raw α, the edge sums
    would scale with c and the logits would move."""
    model = _network()
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        before = {ref: model(x, reference=ref) for ref in (False, True)}
        model.alphas_normal.add_(2.5)
        model.alphas_reduce.sub_(1.5)
        after = {ref: model(x, reference=ref) for ref in (False, True)}
    for ref in (False, True):
        torch.testing.assert_close(after[ref], before[ref], rtol=1e-5, atol=1e-5)
    # the shift is not a no-op on α itself: it moves every entry
    assert not torch.allclose(model.alphas_normal, _network().alphas_normal)


def _reinforce(reward: float, baseline: float) -> tuple[list[torch.Tensor], float]:
    controller = Controller(num_nodes=2, hidden_size=64, seed=0)
    optimizer = make_optimizer(controller)
    new_baseline, _ = reinforce_step(controller, optimizer, lambda arch: reward, baseline=baseline, samples=3,
                                     baseline_decay=0.9, entropy_weight=0.0)
    grads = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in controller.parameters()]
    return grads, new_baseline


def test_a_reward_equal_to_the_baseline_gives_no_controller_gradient():
    """REINFORCE's gradient is -∇log p(arch) (R - b): zero when R equals the baseline. Without the
    baseline subtracted the gradient would be -R ∇log p, non-zero for R = 0.7."""
    grads, baseline = _reinforce(0.7, 0.7)
    assert baseline == 0.7
    assert all(float(g.abs().max()) == 0.0 for g in grads)
    moved, _ = _reinforce(0.7, 0.2)  # the contrast: a reward above the baseline does move the controller
    assert max(float(g.abs().max()) for g in moved) > 1e-4


class _BNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def test_predict_proba_is_the_eval_mode_softmax_whatever_mode_the_model_arrives_in():
    torch.manual_seed(0)
    model = _BNNet()
    with torch.no_grad():  # running statistics far from a batch's own, so train and eval mode differ
        model.bn.running_mean.fill_(3.0)
        model.bn.running_var.fill_(9.0)
    x = torch.randn(10, 3, 8, 8)
    data = TensorDataset(x, torch.zeros(10, dtype=torch.long))
    reference = copy.deepcopy(model).eval()
    with torch.no_grad():
        expected = torch.softmax(reference(x), 1)[:, 1].double().numpy()
        train_mode = torch.softmax(copy.deepcopy(model).train()(x), 1)[:, 1].double().numpy()
    assert not np.allclose(train_mode, expected, atol=1e-3)  # the bug would be visible
    for mode in (True, False):
        model.train(mode)
        got = predict_proba(model, data, batch_size=4, device="cpu", amp=False, channels_last=False)
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(model.bn.running_mean, torch.full((4,), 3.0))  # no train-mode pass updated them
