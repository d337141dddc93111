"""The searches' per-epoch diagnostics: entropy, held-out accuracy, the verdict, the figure."""

from __future__ import annotations

import copy
import logging
import math

import pandas as pd
import pytest
import torch
from scipy.stats import binomtest
from torch.utils.data import TensorDataset

from pipeline_lib.nas import enas_search
from pipeline_lib.nas.darts_config import DartsConfig
from pipeline_lib.nas.darts_search import search as darts_search
from pipeline_lib.nas.enas_controller import OPS, Controller
from pipeline_lib.nas.search_eval import (balanced_indices, balanced_sampler_weights, controller_max_entropy,
                                          score, softmax_entropy)
from pipeline_lib.nas.search_model import SearchNetwork
from pipeline_lib.report.search_diagnostics import COLUMNS, search_diagnostics_figure, search_verdict
from search_helpers import halves


# ------------------------------------------------------------------ entropy


def test_entropy_uniform_is_ln_n_and_one_hot_is_zero():
    for n in (2, 5, 8):
        assert float(softmax_entropy(torch.full((n,), 1.0 / n, dtype=torch.float64))) == pytest.approx(math.log(n), abs=1e-12)
    assert float(softmax_entropy(torch.tensor([0.0, 1.0, 0.0]))) == 0.0  # 0·log 0 = 0, not NaN


@pytest.mark.parametrize("a", [0.0, 1.5, 6.0, 40.0])
def test_entropy_of_softmax_matches_the_closed_form(a):
    # softmax(a, 0, ..., 0) over n ops: Z = e^a + n - 1, H = ln Z - a e^a / Z; -> 0 as a -> inf
    n = 8
    alpha = torch.zeros(n, dtype=torch.float64)
    alpha[0] = a
    z = math.exp(a) + n - 1
    expected = math.log(z) - a * math.exp(a) / z
    assert float(softmax_entropy(torch.softmax(alpha, -1))) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_controller_max_entropy_is_a_uniform_controllers_entropy():
    # every weight and bias zero: each index and op choice is uniform, so the summed entropy is the maximum
    controller = Controller(3, 16, tanh_constant=None, op_tanh_reduce=1.0, temperature=None, seed=0)
    with torch.no_grad():
        for t in [*controller.parameters(), *controller.buffers()]:
            t.zero_()
    sample = controller.sample()
    assert float(sample.entropy) == pytest.approx(controller_max_entropy(3, len(OPS)), rel=1e-6)
    # by hand: per cell and node k, 2 ln(k + 2) + 2 ln(ops); two cells
    by_hand = 2 * sum(2 * math.log(k + 2) + 2 * math.log(len(OPS)) for k in range(3))
    assert controller_max_entropy(3) == pytest.approx(by_hand)


# ------------------------------------------------------------------ verdict


def _history(correct: int, n: int = 100) -> pd.DataFrame:
    # the final epoch comes first on purpose: the verdict must use the last epoch, not the last row
    return pd.DataFrame({"epoch": [3, 1, 2], "heldout_correct": [correct, n - 1, n - 1], "heldout_n": [n, n, n],
                         "heldout_acc": [correct / n, 0.99, 0.99], "entropy_max": [math.log(8)] * 3,
                         "entropy_normal": [2.0] * 3})


@pytest.mark.parametrize("correct, above", [(60, True), (55, False), (40, False), (59, True), (58, False)])
def test_verdict_follows_scipys_binomial_test(correct, above):
    p = binomtest(correct, 100, 0.5, alternative="greater").pvalue
    assert (p < 0.05) == above  # the hand-made cases sit on both sides of the level
    verdict = search_verdict(_history(correct))
    assert verdict.startswith(f"DARTS search, epoch 3: ") and f"{correct}/100" in verdict
    assert f"p = {p:.2g}" in verdict
    assert ("above chance" in verdict) == above and ("NOT distinguishable from chance" in verdict) == (not above)


# ------------------------------------------------------------------ the searches write them


def test_tiny_darts_search_records_diagnostics_that_match_an_independent_count(tmp_path):
    g = torch.Generator().manual_seed(3)
    data = TensorDataset(torch.randn(20, 3, 8, 8, generator=g), torch.randint(0, 2, (20,), generator=g))
    a, b = halves(data, seed=0)
    model = SearchNetwork(C=4, num_classes=2, layers=3, nodes=2, seed=0)  # with a reduction cell: both α used
    config = DartsConfig(epochs=2, batch_size=4, max_steps_per_epoch=2, seed=0)
    result = darts_search(model, a, b, config, progress=False)
    frame = pd.DataFrame(result.epoch_log)
    assert set(COLUMNS["darts"]) <= set(frame.columns)
    last = result.epoch_log[-1]
    xb = torch.stack([b[i][0] for i in range(len(b))])
    yb = torch.stack([b[i][1] for i in range(len(b))])
    xa = torch.stack([a[i][0] for i in range(len(a))])
    ya = torch.stack([a[i][1] for i in range(len(a))])
    # by hand: BN statistics of the whole weights' half in one batch (the diagnostic's batch of 64 holds all
    # 10 images, so its cumulative average is that batch's), then eval mode on the balanced subsets
    calibrated = copy.deepcopy(model).train()
    for m in calibrated.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = 1.0
    with torch.no_grad():
        calibrated(xa)
        calibrated.eval()
        ib, ia = balanced_indices(yb, 0), balanced_indices(ya, 0)
        assert last["heldout_correct"] == int((calibrated(xb[ib]).argmax(1) == yb[ib]).sum())
        assert last["train_half_correct"] == int((calibrated(xa[ia]).argmax(1) == ya[ia]).sum())
    assert last["heldout_n"] == len(ib) == 2 * min(int((yb == 0).sum()), int((yb == 1).sum()))
    assert last["train_half_n"] == len(ia)
    w = result.alpha_history[-1].double()
    by_hand = -(w * w.log()).sum(-1)
    assert last["entropy_normal"] == pytest.approx(float(by_hand[0].mean()))
    assert last["entropy_reduce"] == pytest.approx(float(by_hand[1].mean()))
    assert last["entropy_max"] == pytest.approx(math.log(8))
    assert result.epoch_log[0]["entropy_normal"] < math.log(8)  # α moved off uniform after one epoch


def test_tiny_enas_search_records_the_held_out_count(tmp_path):
    g = torch.Generator().manual_seed(0)
    X, Y = torch.randn(40, 3, 16, 16, generator=g), torch.randint(0, 2, (40,), generator=g)
    config = dict(num_nodes=3, channels=4, num_layers=1, batch_size=8, max_child_steps=2, controller_steps=1,
                  controller_samples=2, n_candidates=2, candidate_batches=1)
    _, history = enas_search.search((X[:24], Y[:24]), TensorDataset(X[24:], Y[24:]), num_classes=2, epochs=2, seed=0,
                                    config=config, state_dir=tmp_path / "s", log=logging.getLogger("t"), progress=False)
    frame = pd.DataFrame(history)
    assert set(COLUMNS["enas"]) <= set(frame.columns)
    n = 2 * min(int((Y[24:] == 0).sum()), int((Y[24:] == 1).sum()))  # the class-balanced subset of the 16
    assert n < 16 and (frame["heldout_n"] == n).all()
    assert (frame["heldout_acc"] == frame["heldout_correct"] / n).all()
    assert (frame["entropy_max"] == controller_max_entropy(3)).all()
    assert (frame["entropy_mean"] <= frame["entropy_max"]).all()


def test_balanced_indices_keep_the_rarer_class_whole_and_draw_as_many_of_the_other():
    labels = torch.tensor([0, 0, 1, 0, 0, 1, 0, 1, 0, 0])  # 7 good, 3 bad
    picked = balanced_indices(labels, seed=0)
    assert picked.tolist() == sorted(picked.tolist())
    assert set(picked[labels[picked] == 1].tolist()) == {2, 5, 7}
    assert int((labels[picked] == 0).sum()) == 3
    assert torch.equal(picked, balanced_indices(labels, seed=0))
    draws = {tuple(balanced_indices(labels, seed=s).tolist()) for s in range(20)}
    assert len(draws) > 1  # the good images are a seeded draw, not always the first three


def test_balanced_sampler_weights_draw_each_class_half_the_time():
    labels = torch.tensor([0] * 30 + [1] * 10)
    w = balanced_sampler_weights(labels)
    assert float(w[labels == 0].sum()) == pytest.approx(float(w[labels == 1].sum()))
    draws = torch.multinomial(w, 40_000, replacement=True, generator=torch.Generator().manual_seed(0))
    assert float((labels[draws] == 1).float().mean()) == pytest.approx(0.5, abs=0.01)


def test_score_counts_every_image_once_and_averages_the_loss():
    x = torch.arange(10.0).view(10, 1)
    y = (torch.arange(10) % 3 == 0).long()
    forward = lambda t: torch.cat([-t, t - 4.5], 1)  # predicts 1 for x >= 5
    expected = int(((x.view(-1) >= 5).long() == y).sum())
    got = score(forward, TensorDataset(x, y), batch_size=3, device=torch.device("cpu"))
    # by hand: -log softmax of the true class, logits (-x, x - 4.5): log(1 + e^(2x-4.5)) or log(1 + e^(4.5-2x))
    margin = (2 * x.view(-1) - 4.5) * torch.where(y == 1, -1.0, 1.0)
    assert got["correct"] == expected and got["n"] == 10
    assert got["loss"] == pytest.approx(float(torch.log1p(torch.exp(margin)).mean()), rel=1e-6)


def test_figure_and_its_details(tmp_path):
    darts = _history(60).assign(train_half_acc=0.7, entropy_reduce=1.9)
    enas = pd.DataFrame({"epoch": [1, 2], "heldout_correct": [40, 45], "heldout_n": [100, 100],
                         "heldout_acc": [0.4, 0.45], "entropy_max": [20.0, 20.0], "child_acc": [0.5, 0.6],
                         "reward_mean": [0.5, 0.55], "baseline": [0.5, 0.52], "entropy_mean": [19.0, 18.0],
                         "greedy_entropy": [18.5, 17.0]})
    enas_low = enas.assign(heldout_correct=[40, 30], heldout_acc=[0.4, 0.3])
    fig, details = search_diagnostics_figure({0: darts}, {0: enas, 4: enas_low})
    d0, e0, e4 = details["darts"]["seeds"]["0"], details["enas"]["seeds"]["0"], details["enas"]["seeds"]["4"]
    assert d0["verdict"] == search_verdict(darts, "darts", 0) and "above chance" in d0["verdict"]
    assert "seed 0, epoch" in d0["verdict"] and "seed 4, epoch 2" in e4["verdict"]
    assert "NOT distinguishable" in e0["verdict"] and e0["heldout_acc"] == 0.45 and e4["heldout_acc"] == 0.3
    assert e0["heldout_p"] == pytest.approx(binomtest(45, 100, 0.5, alternative="greater").pvalue)
    assert details["darts"]["cleared"] == 1 and details["enas"]["cleared"] == 0 and details["enas"]["n_seeds"] == 2
    assert details["enas"]["summary"] == "ENAS: 0 of 2 seeds above chance on the held-out half."
    ax = fig.axes[2]  # ENAS accuracy: chance drawn at 0.5, and each seed's held-out curve
    assert any(list(line.get_ydata()) == [0.5, 0.5] for line in ax.get_lines())
    curves = [list(line.get_ydata()) for line in ax.get_lines()]
    assert [0.4, 0.45] in curves and [0.4, 0.3] in curves
    assert any(list(line.get_ydata()) == [20.0, 20.0] for line in fig.axes[3].get_lines())
