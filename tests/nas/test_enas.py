"""ENAS micro search: controller sampling/probabilities, REINFORCE, shared child, search, resume."""

from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn.functional as F

from pipeline_lib.io.errors import PipelineError
from pipeline_lib.nas.enas_child import SharedChild, reduction_positions
from pipeline_lib.nas.enas_controller import (
    OPS,
    Arch,
    Controller,
    concat_nodes,
    make_optimizer,
    reinforce_step,
)
from pipeline_lib.nas.enas_config import EnasConfig
from pipeline_lib.training.loop import Checkpoint
from pipeline_lib.nas.enas_search import STATE_FILE, search
from pipeline_lib.training.schedules import cosine_lr
from pipeline_lib.nas.genotypes import ENAS_PRIMITIVES, Genotype

torch.set_num_threads(1)

MAX_POOL = OPS.index("max_pool_3x3")
IDENTITY = OPS.index("identity")
SEP3 = OPS.index("sep_conv_3x3")
TIMING_KEYS = {"seconds", "child_images_per_s"}


# ---------------------------------------------------------------------- controller
def test_sampled_architectures_are_valid_and_cover_the_space():
    B = 5
    ctrl = Controller(num_nodes=B, seed=0)
    seen_ops, seen_last_inputs = set(), set()
    with torch.no_grad():
        archs = [ctrl.sample().arch for _ in range(120)]
    for arch in archs:
        for cell in (arch.normal, arch.reduce):
            assert len(cell) == B
            for k, (a, oa, b, ob) in enumerate(cell):
                assert 0 <= a < k + 2 and 0 <= b < k + 2  # cell inputs or earlier nodes only
                assert OPS[oa] in ENAS_PRIMITIVES and OPS[ob] in ENAS_PRIMITIVES
                seen_ops.update((oa, ob))
            seen_last_inputs.update(cell[-1][0::2])
            assert (2 + B - 1) in concat_nodes(cell)  # the last node is never used by another
        g = arch.to_genotype()  # Genotype validates ops/indices/concat
        assert g.nodes == B
    assert seen_ops == set(range(len(OPS)))
    assert seen_last_inputs == set(range(B + 1))  # every legal input of the last node occurs
    # deterministic by seed, different across seeds
    again = Controller(num_nodes=B, seed=0)
    with torch.no_grad():
        assert [again.sample().arch for _ in range(5)] == archs[:5]
        other = Controller(num_nodes=B, seed=1)
        assert [other.sample().arch for _ in range(5)] != archs[:5]


def _reference_logp_entropy(ctrl: Controller, arch: Arch, tanh_c=1.1, op_reduce=2.5, temperature=None):
    """Step-by-step recomputation of the official decoding from the controller's weights."""
    H = ctrl.hidden_size
    W1, W2, v = ctrl.w_attn_1.weight, ctrl.w_attn_2.weight, ctrl.v_attn.weight
    Ws, bs = ctrl.w_soft.weight, ctrl.w_soft.bias
    fixed = torch.tensor([0.25, 0.25, -0.25, -0.25, -0.25])  # official b_soft_no_learn
    T = 1.0 if temperature is None else temperature
    h = torch.zeros(1, H)
    c = torch.zeros(1, H)
    logp, ent, n_steps = torch.zeros(()), 0.0, 0

    def score(logits, action):
        nonlocal logp, ent, n_steps
        p = torch.softmax(logits.view(-1), 0)
        logp = logp + torch.log(p[action])
        ent += float(-(p * torch.log(p)).sum().detach())
        n_steps += 1

    for kind, cell in (("normal", arch.normal), ("reduce", arch.reduce)):
        inp = ctrl.g_emb
        anchors = [torch.zeros(1, H), torch.zeros(1, H)]
        keys = []
        for _ in range(2):
            h, c = ctrl.lstm(inp, (h, c))
            keys.append(h @ W1.T)
        for a, oa, b, ob in cell:
            for idx in (a, b):
                h, c = ctrl.lstm(inp, (h, c))
                raw = (torch.tanh(torch.cat(keys) + h @ W2.T) @ v.T).view(-1)
                score(tanh_c * torch.tanh(raw / T), idx)
                inp = anchors[idx]
            for op in (oa, ob):
                h, c = ctrl.lstm(inp, (h, c))
                logits = (tanh_c / op_reduce) * torch.tanh((h @ Ws.T + bs) / T)
                if kind == "normal":
                    logits = logits + fixed
                score(logits, op)
                inp = ctrl.w_emb.weight[op].view(1, -1)
            h, c = ctrl.lstm(inp, (h, c))
            anchors.append(h)
            keys.append(h @ W1.T)
            inp = ctrl.g_emb
    return logp, ent, n_steps


@pytest.mark.parametrize("temperature", [None, 2.0])
def test_log_prob_and_entropy_match_direct_computation(temperature):
    B = 4
    ctrl = Controller(num_nodes=B, hidden_size=32, temperature=temperature, seed=3)
    # op bias initialised to favour the separable convs, as in the official code
    assert ctrl.w_soft.bias.tolist() == [10.0, 10.0, 0.0, 0.0, 0.0]
    for _ in range(3):
        s = ctrl.sample(trace=True)
        assert s.log_prob.requires_grad and not s.entropy.requires_grad
        # 1. from the traced (shaped) logits: sum log p(chosen) and the full entropies
        assert len(s.trace) == 2 * B * 4
        lp = sum(F.log_softmax(lg, -1)[0, a] for _, lg, a in s.trace)
        ent = sum(float(-(F.softmax(lg, -1) * F.log_softmax(lg, -1)).sum()) for _, lg, a in s.trace)
        assert float(s.log_prob.detach()) == pytest.approx(float(lp.detach()), abs=1e-5)
        assert float(s.entropy) == pytest.approx(ent, abs=1e-4)
        # 2. an independent recomputation from the weights
        ref_lp, ref_ent, n = _reference_logp_entropy(ctrl, s.arch, temperature=temperature)
        assert n == 2 * B * 4
        assert float(s.log_prob.detach()) == pytest.approx(float(ref_lp.detach()), abs=1e-5)
        assert float(s.entropy) == pytest.approx(ref_ent, abs=1e-4)
        # gradients agree too
        g1 = torch.autograd.grad(s.log_prob, ctrl.w_soft.weight)[0]
        g2 = torch.autograd.grad(ref_lp, ctrl.w_soft.weight)[0]
        assert torch.allclose(g1, g2, atol=1e-5)
        # 3. evaluate(arch) reproduces the sampled log-prob and entropy
        e = ctrl.evaluate(s.arch)
        assert float(e.log_prob.detach()) == pytest.approx(float(s.log_prob.detach()), abs=1e-5)
        assert float(e.entropy) == pytest.approx(float(s.entropy), abs=1e-4)
        assert e.arch == s.arch
    # a shaped index logit never exceeds tanh_constant, an op logit tanh_constant/2.5 (+0.25)
    for kind, lg, _ in s.trace:
        bound = 1.1 if kind.endswith("index") else 1.1 / 2.5 + (0.25 if kind.startswith("normal") else 0)
        assert float(lg.abs().max()) <= bound + 1e-6


@pytest.mark.parametrize("target", ["op", "input"])
def test_reinforce_moves_the_controller_toward_rewarded_choices(target):
    ctrl = Controller(num_nodes=1, seed=0)
    opt = make_optimizer(ctrl)  # Adam 3.5e-3, beta1 0, eps 1e-3 (official)

    def probs():
        # node 0's first input and first op: their distributions do not depend on earlier
        # choices (cell inputs' anchors are zeros), so one traced sample gives them exactly
        with torch.no_grad():
            tr = ctrl.sample(trace=True).trace
        assert tr[0][0] == "normal.index" and tr[2][0] == "normal.op"
        return float(F.softmax(tr[2][1], -1)[0, MAX_POOL]), float(F.softmax(tr[0][1], -1)[0, 1])

    def reward(arch: Arch) -> float:
        node = arch.normal[0]
        return float(node[1] == MAX_POOL) if target == "op" else float(node[0] == 1)

    p_op0, p_in0 = probs()
    baseline = 0.0
    for _ in range(100):
        baseline, stats = reinforce_step(ctrl, opt, reward, baseline=baseline, samples=3)
    p_op1, p_in1 = probs()
    if target == "op":
        # normal cell node 0 uses max_pool_3x3: the official shaping caps that probability at
        # e^.19/(e^.19+2e^.69+2e^-.69) = 0.195 (the sep convs' bias 10 saturates the tanh)
        assert p_op0 == pytest.approx(0.123, abs=0.01)
        assert p_op1 > 0.15
    else:
        # node 0 reads cell input 1: index logits are bounded by 1.1, so p <= 1/(1+e^-2.2) = 0.90
        assert p_in0 == pytest.approx(0.5, abs=0.05)
        assert p_in1 > 0.8
    assert 0.0 < baseline < 1.0


def test_reinforce_baseline_update_rule():
    ctrl = Controller(num_nodes=1, seed=0)
    opt = make_optimizer(ctrl)
    b, stats = reinforce_step(ctrl, opt, lambda a: 1.0, baseline=0.5, samples=2, baseline_decay=0.9,
                              entropy_weight=0.01)
    expected = 0.5
    for ent in stats.entropy:
        r = 1.0 + 0.01 * ent
        expected = expected - (1 - 0.9) * (expected - r)
    assert b == pytest.approx(expected)
    assert stats.reward == pytest.approx([1.0 + 0.01 * e for e in stats.entropy])


# ---------------------------------------------------------------------- child
def _grad_params(child: SharedChild, arch: Arch, x, y) -> set[str]:
    child.zero_grad(set_to_none=True)
    out = child(x, arch)
    F.cross_entropy(out, y).backward()
    return {n for n, p in child.named_parameters() if p.grad is not None}


def test_shared_child_forward_backward_and_parameter_subsets():
    torch.manual_seed(0)
    child = SharedChild(3, num_nodes=3, channels=4, num_layers=3, dropout=0.0)
    assert child.kinds == ["normal", "reduce", "normal", "reduce", "normal"]  # ENAS placement
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 0])
    ctrl = Controller(num_nodes=3, seed=0)
    with torch.no_grad():
        a1, a2 = ctrl.sample().arch, ctrl.sample().arch
    assert a1 != a2
    for arch in (a1, a2):
        out = child(x, arch)
        assert out.shape == (4, 3) and torch.isfinite(out).all()
    g1, g2 = _grad_params(child, a1, x, y), _grad_params(child, a2, x, y)
    all_params = {n for n, _ in child.named_parameters()}
    assert g1 != g2 and g1 < all_params and g2 < all_params

    # explicit: all sep_conv_3x3 on cell inputs vs parameter-free ops only
    convs = Arch(normal=((0, SEP3, 1, SEP3),) * 3, reduce=((0, SEP3, 1, SEP3),) * 3)
    free = Arch(normal=((0, MAX_POOL, 1, IDENTITY),) * 3, reduce=((0, MAX_POOL, 1, IDENTITY),) * 3)
    gc, gf = _grad_params(child, convs, x, y), _grad_params(child, free, x, y)
    assert "cells.0.ops.0.0.0.sep_conv_3x3.op.1.weight" in gc  # node 0, slot x, input 0
    assert "cells.0.ops.0.1.1.sep_conv_3x3.op.1.weight" in gc  # node 0, slot y, input 1
    assert not any(".sep_conv_5x5." in n for n in gc)
    assert not any(".ops." in n for n in gf)  # pools/identity train no op weights
    # nodes 0..2 all read only the cell inputs: all three are concatenated; final projection
    # blocks receive gradients only for concatenated nodes
    child.zero_grad(set_to_none=True)
    chain = Arch(normal=((0, SEP3, 1, SEP3), (2, SEP3, 2, SEP3), (3, SEP3, 0, SEP3)),
                 reduce=((0, SEP3, 1, SEP3),) * 3)
    F.cross_entropy(child(x, chain), y).backward()
    gw = child.cells[0].final_weight.grad
    assert concat_nodes(chain.normal) == (4,)
    assert gw[0].abs().sum() == 0 and gw[1].abs().sum() == 0 and gw[2].abs().sum() > 0


@pytest.mark.parametrize("size", [17, 33])
def test_shared_child_odd_sizes(size):
    child = SharedChild(2, num_nodes=2, channels=4, num_layers=1)
    arch = Arch(normal=((0, IDENTITY, 1, MAX_POOL), (2, SEP3, 0, SEP3)),
                reduce=((1, IDENTITY, 0, SEP3), (2, OPS.index("avg_pool_3x3"), 1, SEP3)))
    assert child(torch.randn(2, 3, size, size), arch).shape == (2, 2)


def test_reduction_positions_follow_enas():
    assert reduction_positions(6) == [2, 5]  # N N R N N R N N
    assert reduction_positions(3) == [1, 3]  # N R N R N
    assert reduction_positions(2) == [1, 3]  # N R N R: ENAS's formula (d = 0) would put both first
    assert reduction_positions(1) == [0, 1]  # R R N: too few normal cells to spread
    assert reduction_positions(12) == [4, 9]


# ---------------------------------------------------------------------- genotype
def test_arch_to_genotype_maps_identity_and_concat(tmp_path):
    arch = Arch(
        normal=((0, IDENTITY, 1, SEP3), (2, MAX_POOL, 0, IDENTITY), (1, SEP3, 2, SEP3)),
        reduce=((1, MAX_POOL, 0, MAX_POOL), (0, SEP3, 1, IDENTITY), (3, SEP3, 2, SEP3)),
    )
    g = arch.to_genotype({"reward": 0.5})
    assert g.source == "enas"
    assert g.normal[0] == ("skip_connect", 0) and g.normal[1] == ("sep_conv_3x3", 1)
    assert g.normal_concat == (3, 4)  # node 2 is used by nodes 3 and 4
    assert g.reduce_concat == (4,)
    path = tmp_path / "g.json"
    g.save(path)
    back = Genotype.load(path)
    assert back == g and back.meta == {"reward": 0.5}
    assert Arch.from_dict(arch.to_dict()) == arch
    with pytest.raises(ValueError):
        Arch(normal=((2, SEP3, 0, SEP3),), reduce=((0, SEP3, 0, SEP3),)).validate()


# ---------------------------------------------------------------------- search
def _data(n=48, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 3, size, size, generator=g)
    Y = torch.randint(0, 2, (n,), generator=g)
    return (X[:32], Y[:32]), torch.utils.data.TensorDataset(X[32:], Y[32:])


TINY = dict(num_nodes=3, channels=4, num_layers=1, batch_size=8, max_child_steps=3,
            controller_steps=2, controller_samples=2, n_candidates=3, candidate_batches=1)


def _strip(history):
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in history]


def test_tiny_search_end_to_end(tmp_path):
    train, reward = _data()
    genotype, history = search(train, reward, num_classes=2, epochs=2, seed=0, config=TINY,
                               state_dir=tmp_path / "s", log=logging.getLogger("test"), progress=False)
    assert isinstance(genotype, Genotype) and genotype.source == "enas" and genotype.nodes == 3
    assert len(history) == 2
    for row in history:
        for key in ("reward_mean", "baseline", "entropy_mean", "child_loss", "greedy_arch", "sampled_archs"):
            assert row[key] is not None
        assert row["controller_samples"] == 4 and len(row["sampled_archs"]) == 4
        assert math.isfinite(row["child_loss"]) and 0 <= row["accuracy_mean"] <= 1
    assert history[0]["lr"] == pytest.approx(0.05) and history[1]["lr"] < history[0]["lr"]
    assert 0 < history[-1]["baseline"] < 1
    assert 0 <= genotype.meta["reward"] <= 1 and len(genotype.meta["candidates"]) == 3
    assert genotype.meta["reward"] == max(c["reward"] for c in genotype.meta["candidates"])
    assert Arch.from_dict(genotype.meta["enas_arch"]).to_genotype() == genotype
    genotype.save(tmp_path / "enas.json")
    assert Genotype.load(tmp_path / "enas.json") == genotype
    assert (tmp_path / "s" / STATE_FILE).exists()


def test_resume_equals_uninterrupted(tmp_path):
    train, reward = _data(seed=1)
    kw = dict(num_classes=2, epochs=2, seed=5, config=TINY, progress=False)
    full_g, full_h = search(train, reward, state_dir=tmp_path / "full", **kw)

    part_g, part_h = search(train, reward, state_dir=tmp_path / "part", stop_after=1, **kw)
    assert part_g is None and len(part_h) == 1
    res_g, res_h = search(train, reward, state_dir=tmp_path / "part", **kw)
    assert _strip(res_h) == _strip(full_h)
    assert res_g == full_g and res_g.to_dict()["meta"] == full_g.to_dict()["meta"]
    full_saved = Checkpoint(tmp_path / "full", STATE_FILE).read()
    part_saved = Checkpoint(tmp_path / "part", STATE_FILE).read()
    assert full_saved["epoch"] == part_saved["epoch"] == 2
    a, b = full_saved["state"], part_saved["state"]
    assert a["baseline"] == b["baseline"]
    for k in a["child"]:
        assert torch.equal(a["child"][k], b["child"][k]), k
    for k in a["controller"]:
        assert torch.equal(a["controller"][k], b["controller"][k]), k

    # a checkpoint for other settings is ignored (fresh start), not resumed
    g, h = search(train, reward, state_dir=tmp_path / "part", stop_after=0, **{**kw, "seed": 6})
    assert g is None and h == []
    g, h = search(train, reward, state_dir=tmp_path / "part", stop_after=0, **kw)
    assert len(h) == 2  # finished state: resumes straight to the final choice
    assert g == full_g


def test_config_errors_are_one_line_pipeline_errors(tmp_path):
    with pytest.raises(PipelineError, match="unknown key"):
        EnasConfig.from_params({"chanels": 8})
    with pytest.raises(PipelineError, match="enas.channels"):
        EnasConfig(channels=5)
    train, reward = _data()
    with pytest.raises(PipelineError, match="epochs"):
        search(train, reward, num_classes=2, epochs=0, seed=0, config=TINY, state_dir=tmp_path)


def test_cosine_lr():
    assert cosine_lr(0, 10, 0.05, 0.0005) == pytest.approx(0.05)
    assert cosine_lr(5, 10, 0.05, 0.0005) == pytest.approx((0.05 + 0.0005) / 2)
    # ENAS warm restarts: T0=10, Tmul=2 -> restarts at epochs 10 and 30
    assert cosine_lr(10, 150, 0.05, 0.0005, t0=10) == pytest.approx(0.05)
    assert cosine_lr(30, 150, 0.05, 0.0005, t0=10) == pytest.approx(0.05)
    assert cosine_lr(20, 150, 0.05, 0.0005, t0=10) == pytest.approx((0.05 + 0.0005) / 2)
