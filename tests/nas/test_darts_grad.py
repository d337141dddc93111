"""DARTS α gradients: the finite-difference Hessian term, first vs second order, the
batched search cell against the edge-by-edge reference, and the optimizers.

Tiny float64 networks (C=4, 3 layers = normal + 2 reduction cells, 2 nodes, 8-9 px).
"""

from __future__ import annotations

import pytest
import torch

from pipeline_lib.nas.architect import AdamL2, Architect, MomentumSGD
from pipeline_lib.nas.darts_search import search_step, weight_optimizer
from pipeline_lib.nas.genotypes import DARTS_PRIMITIVES
from pipeline_lib.nas.search_passes import alpha_only_pass, frozen_bn_stats
from pipeline_lib.nas.search_model import SearchNetwork


def tiny(seed=0, *, size=8, nodes=2, recompute=False, channels_last=False, classes=3, ops=DARTS_PRIMITIVES):
    torch.manual_seed(seed)
    model = SearchNetwork(
        C=4, num_classes=classes, layers=3, nodes=nodes, seed=seed, recompute=recompute, channels_last=channels_last, ops=ops
    )
    model = model.double()
    with torch.no_grad():  # α away from uniform so every term matters
        for a in model.arch_parameters():
            a.normal_(0.0, 0.5)
    g = torch.Generator().manual_seed(seed + 1)
    batches = [
        (torch.randn(4, 3, size, size, generator=g, dtype=torch.float64), torch.randint(0, classes, (4,), generator=g))
        for _ in range(2)
    ]
    return model, batches


def rel_err(a, b):
    num = torch.sqrt(sum(((x - y) ** 2).sum() for x, y in zip(a, b)))
    den = torch.sqrt(sum((y**2).sum() for y in b))
    return float(num / den)


# The finite difference steps the weights by ‖ε·v‖ = r. DARTS's r = 0.01 crosses ReLU /
# max-pool kinks of a network this small (the gradient jumps, and the jump is divided by
# 2ε), so the comparisons with exact derivatives use r = 1e-6, well inside the smooth
# region in float64; the formula and code path are the same.
SMOOTH_R = 1e-6


def make_architect(model, order, *, lr=0.05, xi=None, r=SMOOTH_R):
    w_opt = MomentumSGD(model.weight_parameters(), lr=lr, momentum=0.9, weight_decay=3e-4)
    return Architect(model, w_opt, order=order, xi=xi, hessian_r=r), w_opt


def test_finite_difference_hessian_term_equals_autograd_hvp():
    model, [(xt, yt), (xv, yv)] = tiny(0)
    architect, _ = make_architect(model, "second")
    weights, alphas = architect.weights, architect.alphas
    with frozen_bn_stats():
        v = torch.autograd.grad(model.loss(xv, yv), weights)  # the direction DARTS uses
        g_w = torch.autograd.grad(model.loss(xt, yt), weights, create_graph=True)
        exact = torch.autograd.grad(sum((g * vi).sum() for g, vi in zip(g_w, v)), alphas)
    before = [p.detach().clone() for p in weights]
    fd = architect.hessian_vector_product(v, xt, yt)
    assert rel_err(fd, exact) < 1e-2, rel_err(fd, exact)
    # /(2ε), not the public code's "/ 2. * eps" (which would be off by a factor 4/ε²)
    assert 0.5 < float(torch.linalg.vector_norm(torch.cat([f.flatten() for f in fd])) / torch.linalg.vector_norm(torch.cat([e.flatten() for e in exact]))) < 2
    assert all(torch.equal(p, b) for p, b in zip(weights, before))  # weights restored


def test_second_order_gradient_equals_exact_unrolled_gradient():
    """∇α of L_val(w − ξ(∇w L_train(w, α) + m·buf + wd·w), α), exactly by autograd."""
    model, [(xt, yt), (xv, yv)] = tiny(1)
    architect, w_opt = make_architect(model, "second", xi=0.05)
    weights, alphas = architect.weights, architect.alphas
    # one weight step first, so that a momentum buffer enters the unrolled step
    w_opt.zero_grad()
    model.loss(xt, yt).backward(inputs=weights)
    w_opt.step()
    buf = [w_opt.state[p]["momentum_buffer"] for p in weights]
    xi, wd, m = 0.05, 3e-4, 0.9

    architect.compute_alpha_grads(xt, yt, xv, yv)
    approx = [a.grad.clone() for a in alphas]

    with frozen_bn_stats():
        g_w = torch.autograd.grad(model.loss(xt, yt), weights, create_graph=True)
        unrolled = [p - xi * (g + wd * p.detach() + m * b) for p, g, b in zip(weights, g_w, buf)]
        originals = [p.detach().clone() for p in weights]
        # L_val at the unrolled weights, as a function of α (through g_w) and of w'
        from torch.func import functional_call

        names = [n for n, p in model.named_parameters() if not n.startswith("alphas_")]
        params = dict(zip(names, unrolled))
        params.update({"alphas_normal": model.alphas_normal, "alphas_reduce": model.alphas_reduce})
        buffers = dict(model.named_buffers())
        logits = functional_call(model, {**params, **buffers}, (xv,))
        exact = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, yv), alphas)
    assert all(torch.equal(p, o) for p, o in zip(weights, originals))
    assert rel_err(approx, exact) < 1e-3, rel_err(approx, exact)


def test_first_order_equals_second_order_with_xi_zero():
    model, [(xt, yt), (xv, yv)] = tiny(2)
    first, _ = make_architect(model, "first")
    first.compute_alpha_grads(xt, yt, xv, yv)
    g_first = [a.grad.clone() for a in first.alphas]
    before = [p.detach().clone() for p in first.weights]
    second, _ = make_architect(model, "second", xi=0.0)
    second.compute_alpha_grads(xt, yt, xv, yv)
    g_second = [a.grad.clone() for a in second.alphas]
    assert rel_err(g_second, g_first) < 1e-12
    assert all(torch.equal(p, b) for p, b in zip(first.weights, before))
    assert all(float(g.abs().max()) > 0 for g in g_first)


def test_first_order_builds_no_weight_gradients():
    model, [(xt, yt), (xv, yv)] = tiny(3)
    architect, _ = make_architect(model, "first")
    architect.step(xt, yt, xv, yv)
    assert all(p.grad is None for p in architect.weights)


# DARTS's list; one new op (conv_7x1_1x7, not in the fused kernels) added; a reordered
# subset without `none` (α columns follow the list)
WITH_NEW_OP = DARTS_PRIMITIVES + ("conv_7x1_1x7",)
REORDERED = ("conv_7x1_1x7", "dil_conv_3x3", "skip_connect", "avg_pool_3x3", "sep_conv_5x5")


@pytest.mark.parametrize(
    "size,nodes,channels_last,ops",
    [(8, 2, False, DARTS_PRIMITIVES), (9, 3, True, WITH_NEW_OP), (8, 2, True, REORDERED)],
)
def test_batched_cell_equals_edge_by_edge_reference(size, nodes, channels_last, ops):
    """The fused implementation (grouped edges, α in BN weights, `none` skipped, polyphase
    dilated convs, recomputation, constant α-only inputs, generic fallback for the ops
    without a kernel) against ``ops.MixedOp`` run edge by edge, op by op on the same
    parameters: same loss, same gradients for α and every weight."""
    model, [(x, y), _] = tiny(4, size=size, nodes=nodes, channels_last=channels_last, ops=ops)
    params = list(model.parameters())
    with frozen_bn_stats():
        ref_loss = model.loss(x, y, reference=True)
        ref = torch.autograd.grad(ref_loss, params)
        for recompute in (False, True):
            model.set_recompute(recompute)
            loss = model.loss(x, y)
            got = torch.autograd.grad(loss, params)
            assert abs(float(loss.detach() - ref_loss.detach())) < 1e-12
            assert rel_err(got, ref) < 1e-10
        with alpha_only_pass():
            got_a = torch.autograd.grad(model.loss(x, y), model.arch_parameters())
    ref_a = [ref[i] for i, p in enumerate(params) if p is model.alphas_normal or p is model.alphas_reduce]
    assert rel_err(got_a, ref_a) < 1e-10
    assert all(float(g.abs().max()) > 0 for g in ref)  # every parameter takes part


def test_batched_cell_updates_the_running_statistics_as_the_reference():
    """Outside ``frozen_bn_stats`` a pass moves every BN's running statistics the same way
    in both paths (the batched BNs hold each edge's statistics in its channel block)."""
    model, [(x, _), _] = tiny(5, ops=WITH_NEW_OP)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model(x, reference=True)
    ref = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(start)
    with torch.no_grad():
        model(x)
    moved = [k for k in ref if not torch.equal(ref[k], start[k])]
    assert any(".groups.shared.bn." in k for k in moved) and any(".groups.conv_7x1_1x7." in k for k in moved)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, ref[k], rtol=1e-12, atol=1e-12, msg=k)


def test_optimizers_match_torch_optim():
    torch.manual_seed(0)
    p_ours = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(4))]
    p_ref = [torch.nn.Parameter(p.detach().clone()) for p in p_ours]
    pairs = [
        (MomentumSGD(p_ours, lr=0.1, momentum=0.9, weight_decay=3e-4), torch.optim.SGD(p_ref, lr=0.1, momentum=0.9, weight_decay=3e-4)),
    ]
    q_ours = [torch.nn.Parameter(torch.randn(6, 8))]
    q_ref = [torch.nn.Parameter(q_ours[0].detach().clone())]
    pairs.append((AdamL2(q_ours, lr=3e-3, betas=(0.5, 0.999), weight_decay=1e-3),
                  torch.optim.Adam(q_ref, lr=3e-3, betas=(0.5, 0.999), weight_decay=1e-3)))  # fmt: skip
    for ours, ref in pairs:
        for _ in range(4):
            for a, b in zip(ours.param_groups[0]["params"], ref.param_groups[0]["params"]):
                grad = torch.randn_like(a)
                a.grad, b.grad = grad.clone(), grad.clone()
            ours.step()
            ref.step()
        for a, b in zip(ours.param_groups[0]["params"], ref.param_groups[0]["params"]):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
        # state survives a state_dict round trip
        state = ours.state_dict()
        fresh = type(ours)(ours.param_groups[0]["params"], **{k: v for k, v in ours.param_groups[0].items() if k != "params"})
        fresh.load_state_dict(state)
        assert fresh.state_dict()["param_groups"] == state["param_groups"]


@pytest.mark.parametrize("sgd", [MomentumSGD, torch.optim.SGD])
def test_unrolled_step_reads_the_weight_optimizers_momentum_buffer(sgd):
    """w' = w − ξ(∇w + momentum·buf + wd·w) with buf from the optimizer's own state, for the
    hand-written SGD and for torch.optim.SGD alike (the architect accepts either)."""
    model, [(xt, yt), _] = tiny(6)
    w_opt = sgd(model.weight_parameters(), lr=0.05, momentum=0.9, weight_decay=3e-4)
    architect = Architect(model, w_opt, order="second")
    weights = architect.weights
    for _ in range(2):  # two steps: buf = g₁·0.9 + g₂ (+ decay terms)
        w_opt.zero_grad()
        model.loss(xt, yt).backward(inputs=weights)
        w_opt.step()
    grads = [torch.randn_like(p) for p in weights]
    got = architect._unrolled_direction(grads)
    for p, g, d in zip(weights, grads, got):
        buf = w_opt.state[p]["momentum_buffer"]
        assert float(buf.abs().max()) > 0
        torch.testing.assert_close(d, g + 3e-4 * p.detach() + 0.9 * buf, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("order", ["first", "second"])
def test_kept_cells_change_memory_not_results(order):
    """``kept_cells``: the last N cells keep their intermediates instead of recomputing them
    in backward. The recomputation re-runs the same kernels on the same inputs, so three
    search steps end in bit-identical weights, α, BN statistics and optimizer state with
    0, 1 or all cells kept; and only the last N cells stop recomputing."""
    def run(kept):
        model, batches = tiny(7, recompute=True, channels_last=True)
        model.set_recompute(True, kept_cells=kept)
        flags = [bool(c.sources[0].recompute) for c in model.cells]
        w_opt = weight_optimizer(model, lr=0.05, momentum=0.9, weight_decay=3e-4)
        architect = Architect(model, w_opt, order=order)
        (xa, ya), (xb, yb) = batches
        for _ in range(3):
            search_step(model, architect, w_opt, xa, ya, xb, yb, grad_clip=5.0)
        return flags, model.state_dict(), w_opt.state_dict()["state"], architect.optimizer.state_dict()["state"]

    runs = {kept: run(kept) for kept in (0, 1, 3)}
    assert [runs[k][0] for k in (0, 1, 3)] == [[True, True, True], [True, True, False], [False, False, False]]
    _, ref_model, ref_w, ref_a = runs[0]
    for kept in (1, 3):
        _, got_model, got_w, got_a = runs[kept]
        assert all(torch.equal(ref_model[k], got_model[k]) for k in ref_model), kept
        for ref, got in ((ref_w, got_w), (ref_a, got_a)):
            assert all(torch.equal(ref[i][k], got[i][k]) for i in ref for k in ref[i] if torch.is_tensor(ref[i][k]))
    assert not torch.equal(ref_model["alphas_normal"], tiny(7)[0].state_dict()["alphas_normal"])  # α moved
    with pytest.raises(ValueError, match="kept_cells"):
        SearchNetwork(C=4, layers=3, kept_cells=-1)
