"""The DARTS search learns on data where it must, and its held-out diagnostic sees it (issue 28).

A short search of the study's supernet on scikit-learn's digits (parity as the class; every
classical model reaches 96-99 % on it) must score >= 0.85 on its own held-out half. The plain
eval-mode score that the diagnostic used before, with the BN running averages the fast-moving
weights left behind, scores the same network at chance: this test fails if the diagnostic is
reverted to it. bench/search_sanity.py runs the full benchmark (both searches, both sets).
"""

from __future__ import annotations

import torch
from scipy.stats import binomtest
from torch.utils.data import Subset

from pipeline_lib.nas.darts_config import DartsConfig
from pipeline_lib.nas.darts_search import build_network, search
from pipeline_lib.nas.sanity_sets import digits_halves, planted_patch_halves
from pipeline_lib.nas.search_eval import balanced_indices, dataset_labels, score


def test_darts_held_out_score_sees_the_supernet_learn_digits(one_torch_thread):
    a, b = digits_halves(150, 32, seed=0)
    # the study's supernet (C 8, 5 cells, 4 nodes, first order, batch 16) at 32 px, 2 epochs: 18 steps
    cfg = DartsConfig(image_size=32, channels=8, layers=5, nodes=4, kept_cells=5, epochs=2, batch_size=16,
                      balance_classes=True, seed=0)
    model = build_network(cfg)
    last = search(model, a, b, cfg, progress=False).epoch_log[-1]
    assert last["heldout_n"] == 150
    assert last["heldout_acc"] >= 0.85
    assert binomtest(last["heldout_correct"], last["heldout_n"], 0.5, alternative="greater").pvalue < 1e-10
    # the same network as the old diagnostic scored it: eval mode on the search's own running statistics
    held_out = Subset(b, balanced_indices(dataset_labels(b), 0).tolist())
    model.eval()
    plain = score(model, held_out, batch_size=64, device=torch.device("cpu"))
    assert binomtest(plain["correct"], plain["n"], 0.5, alternative="greater").pvalue > 0.01
    assert plain["correct"] < last["heldout_correct"] - 40


def test_sanity_sets_are_balanced_disjoint_and_seeded():
    for make in (digits_halves, planted_patch_halves):
        a, b = make(40, 16, seed=1)
        for half in (a, b):
            assert half.tensors[0].shape == (40, 3, 16, 16)
            assert int(half.tensors[1].sum()) == 20
        assert not any(torch.equal(x, y) for x in a.tensors[0] for y in b.tensors[0])
        again, _ = make(40, 16, seed=1)
        other, _ = make(40, 16, seed=2)
        assert torch.equal(again.tensors[0], a.tensors[0]) and not torch.equal(other.tensors[0], a.tensors[0])
    # a planted patch: class 1 images hold a 3x3 square raised by the contrast, class 0 none
    a, _ = planted_patch_halves(40, 16, patch=3, contrast=50.0, seed=0)
    x, y = a.tensors
    peaks = torch.nn.functional.avg_pool2d(x[:, :1], 3, stride=1).flatten(1).max(1).values
    assert bool((peaks[y == 1] > 40).all()) and bool((peaks[y == 0] < 5).all())
