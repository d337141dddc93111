"""DARTS as a library: derive, genotype → retrain network, α in checkpoints, the search
loop (history, checkpoint, resume), first vs second order, drawings."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from pipeline_lib.io.errors import PipelineError
from pipeline_lib.nas.darts_config import DartsConfig
from pipeline_lib.nas.darts_search import CHECKPOINT_FILE, search, write_alpha_history
from pipeline_lib.nas.derive import derive_genotype
from pipeline_lib.nas.draw import draw_cell
from pipeline_lib.nas.genotypes import DARTS_PRIMITIVES, Genotype
from pipeline_lib.data.datasets import Cutout
from pipeline_lib.nas.network import Network, build_network, drop_path
from pipeline_lib.nas.search_cell import edge_index, num_edges
from pipeline_lib.nas.search_model import SearchNetwork
from search_helpers import halves

OP = {name: k for k, name in enumerate(DARTS_PRIMITIVES)}


# --- derive -------------------------------------------------------------------------------


def test_derive_hand_made_alpha():
    nodes = 3
    w = torch.full((num_edges(nodes), 8), 0.01, dtype=torch.float64)
    # node 0: edge from 1 strongest (sep3), from 0 second (max pool)
    w[edge_index(0, 0), OP["max_pool_3x3"]] = 0.3
    w[edge_index(0, 1), OP["sep_conv_3x3"]] = 0.6
    # node 1: `none` dominates edge 2 but never counts; edges 0 and 1 tie → lower index first;
    # an op tie on edge 0 (dil3 == dil5) → the op listed first (dil_conv_3x3)
    w[edge_index(1, 2), OP["none"]] = 0.9
    w[edge_index(1, 2), OP["skip_connect"]] = 0.05
    w[edge_index(1, 0), OP["dil_conv_3x3"]] = 0.4
    w[edge_index(1, 0), OP["dil_conv_5x5"]] = 0.4
    w[edge_index(1, 1), OP["avg_pool_3x3"]] = 0.4
    # node 2: strongest from 3 (skip) and 2 (sep5); inputs weaker
    w[edge_index(2, 3), OP["skip_connect"]] = 0.7
    w[edge_index(2, 2), OP["sep_conv_5x5"]] = 0.5
    w[edge_index(2, 0), OP["none"]] = 0.99
    geno = derive_genotype(w, w, meta={"order": "first"})
    assert geno.normal == (
        ("sep_conv_3x3", 1), ("max_pool_3x3", 0),
        ("dil_conv_3x3", 0), ("avg_pool_3x3", 1),
        ("skip_connect", 3), ("sep_conv_5x5", 2),
    )  # fmt: skip
    assert geno.normal_concat == (2, 3, 4) and geno.source == "darts"
    assert all(op != "none" for op, _ in geno.normal + geno.reduce)
    assert geno.meta["normal_skip_connects"] == 1 and geno.meta["order"] == "first"


def test_derive_rejects_a_non_cell_shape():
    with pytest.raises(PipelineError):
        derive_genotype(torch.ones(13, 8), torch.ones(14, 8))


# --- genotype → network -------------------------------------------------------------------


ENAS_LIKE = Genotype(
    normal=(("sep_conv_5x5", 0), ("skip_connect", 1), ("avg_pool_3x3", 2), ("max_pool_3x3", 0), ("sep_conv_3x3", 3), ("skip_connect", 2)),
    normal_concat=(4,),
    reduce=(("max_pool_3x3", 0), ("skip_connect", 1), ("sep_conv_3x3", 2), ("avg_pool_3x3", 1), ("skip_connect", 3), ("sep_conv_5x5", 0)),
    reduce_concat=(4,),
    source="enas",
)


@pytest.mark.parametrize("auxiliary", [True, False])
def test_genotype_round_trip_builds_a_working_network(tmp_path, auxiliary):
    torch.manual_seed(0)
    search_net = SearchNetwork(C=4, num_classes=3, layers=3, nodes=2, seed=0)
    with torch.no_grad():
        for a in search_net.arch_parameters():
            a.normal_()
    for geno in (search_net.genotype(meta={"note": "x"}), ENAS_LIKE):
        path = tmp_path / f"{geno.source}.json"
        geno.save(path)
        loaded = Genotype.load(path)
        assert loaded == geno and loaded.meta == geno.meta
        net = Network(loaded, C=4, num_classes=3, layers=3, auxiliary=auxiliary, drop_path_prob=0.3)
        assert [c.reduction for c in net.cells] == [False, True, True]  # both cell types built
        net.train()
        x = torch.randn(4, 3, 11, 11)  # odd size
        out = net(x)
        logits, aux = out if auxiliary else (out, None)
        assert logits.shape == (4, 3) and (aux is None or aux.shape == (4, 3))
        (logits.sum() + (aux.sum() if aux is not None else 0)).backward()
        net.eval()
        with torch.no_grad():
            assert net(x).shape == (4, 3)


def test_build_network_ramps_drop_path_and_masks_on_the_input_device():
    net = build_network(num_classes=2, genotype=ENAS_LIKE.to_dict(), channels=4, layers=3, auxiliary=False, drop_path=0.2)
    assert net.drop_path_prob == 0.0
    net.on_epoch_start(5, 10)
    assert math.isclose(net.drop_path_prob, 0.1)
    x = torch.ones(64, 2, 3, 3)
    y = drop_path(x, 0.5)
    kept = y[:, 0, 0, 0]
    assert y.device == x.device and set(kept.unique().tolist()) <= {0.0, 2.0} and 0 < int((kept == 0).sum()) < 64


def test_cutout_in_a_torchvision_pipeline():
    from torchvision.transforms import v2 as T

    pipeline = T.Compose([T.ToImage(), T.ToDtype(torch.float32, scale=True), Cutout(4, generator=torch.Generator().manual_seed(0))])
    img = pipeline(torch.full((3, 8, 8), 255, dtype=torch.uint8))
    zeros = int((img[0] == 0).sum())
    assert 0 < zeros <= 16 and torch.equal(img[0] == 0, img[2] == 0)


# --- α as parameters, checkpoints ---------------------------------------------------------


def test_alpha_are_parameters_in_state_dict_and_survive_a_checkpoint(tmp_path):
    model = SearchNetwork(C=4, num_classes=2, layers=3, nodes=2, seed=0)
    arch, weights = model.arch_parameters(), model.weight_parameters()
    assert {id(p) for p in arch} | {id(p) for p in weights} == {id(p) for p in model.parameters()}
    assert not {id(p) for p in arch} & {id(p) for p in weights}
    assert {"alphas_normal", "alphas_reduce"} <= set(model.state_dict())
    with torch.no_grad():
        model.alphas_normal.add_(1.0)
    torch.save(model.state_dict(), tmp_path / "m.pt")
    other = SearchNetwork(C=4, num_classes=2, layers=3, nodes=2, seed=1)
    other.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
    assert torch.equal(other.alphas_normal, model.alphas_normal)
    assert torch.equal(other.alphas_reduce, model.alphas_reduce)


# --- the search loop ------------------------------------------------------------------------


def random_halves(n=16, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    data = TensorDataset(torch.randn(n, 3, size, size, generator=g), torch.randint(0, 2, (n,), generator=g))
    return halves(data, seed=seed)


class Interrupting(Dataset):
    """Raises after ``limit`` items: a job killed in the middle of an epoch."""

    def __init__(self, base, limit):
        self.base, self.limit, self.calls = base, limit, 0

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        self.calls += 1
        if self.calls > self.limit:
            raise KeyboardInterrupt
        return self.base[i]


def run_search(a, b, tmp_path, name, order="first", epochs=2):
    model = SearchNetwork(C=4, num_classes=2, layers=3, nodes=2, seed=0)
    config = DartsConfig(epochs=epochs, order=order, batch_size=4, max_steps_per_epoch=2, seed=0)
    result = search(model, a, b, config, state_dir=tmp_path / name, history_path=tmp_path / f"{name}.csv",
                    progress=False)
    return model, result


def test_short_search_writes_history_checkpoint_and_resumes_exactly(tmp_path):
    a, b = random_halves()
    model, result = run_search(a, b, tmp_path, "full")
    assert isinstance(result.genotype, Genotype) and result.genotype.meta["order"] == "first"
    assert result.alpha_history.shape == (3, 2, num_edges(2), 8)
    assert len(result.epoch_log) == 2 and (tmp_path / "full" / CHECKPOINT_FILE).exists()
    with open(tmp_path / "full.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 * 2 * num_edges(2) * 8
    assert set(rows[0]) == {"epoch", "cell", "edge", "src", "dst", "op", "weight", "entropy"}
    assert not torch.equal(result.alpha_history[0], result.alpha_history[-1])  # α moved
    genotype, history = result  # tuple-style unpacking
    assert genotype == result.genotype and len(history) == len(rows)

    # killed during epoch 2, then rerun: the same α and weights as the uninterrupted run
    with pytest.raises(KeyboardInterrupt):
        # epoch 1: 2 steps x 4 images, then the diagnostics score all of ``a`` once
        run_search(Interrupting(a, limit=8 + len(a) + 5), b, tmp_path, "killed")
    resumed_model, resumed = run_search(a, b, tmp_path, "killed")
    assert torch.equal(resumed_model.alphas_normal, model.alphas_normal)
    assert torch.equal(resumed_model.alphas_reduce, model.alphas_reduce)
    assert all(torch.equal(p, q) for p, q in zip(resumed_model.weight_parameters(), model.weight_parameters()))
    assert resumed.genotype == result.genotype and len(resumed.epoch_log) == 2

    # other settings: the old checkpoint is not resumed
    _, other = run_search(a, b, tmp_path, "killed", epochs=1)
    assert len(other.epoch_log) == 1


def test_second_order_moves_alpha_differently_from_first_order(tmp_path):
    a, b = random_halves(seed=1)
    first, _ = run_search(a, b, tmp_path, "first", order="first", epochs=1)
    second, _ = run_search(a, b, tmp_path, "second", order="second", epochs=1)
    init = SearchNetwork(C=4, num_classes=2, layers=3, nodes=2, seed=0).alphas_normal
    d_first = first.alphas_normal - init
    d_second = second.alphas_normal - init
    d_first, d_second = d_first.detach(), d_second.detach()
    assert float(d_first.abs().max()) > 0 and float(d_second.abs().max()) > 0
    assert float((d_first - d_second).abs().max()) > 1e-3 * float(d_first.abs().max())


def test_search_refuses_overlapping_halves():
    a, _ = random_halves()
    overlapping = Subset(a.dataset, list(a.indices[:4]))
    with pytest.raises(PipelineError, match="share"):
        search(SearchNetwork(C=4, num_classes=2, layers=3, nodes=2), a, overlapping, DartsConfig(epochs=1),
               progress=False)
    with pytest.raises(PipelineError, match="share|both halves"):
        search(SearchNetwork(C=4, num_classes=2, layers=3, nodes=2), a, a, DartsConfig(epochs=1), progress=False)
    with pytest.raises(PipelineError, match=r"darts_search\.order: 'third'"):
        DartsConfig.from_params({"order": "third", "epochs": 1})


# --- drawings -------------------------------------------------------------------------------


def test_draw_cells_and_alpha_history(tmp_path):
    a, b = random_halves()
    _, result = run_search(a, b, tmp_path, "draw", epochs=1)
    # the adapter writes the result's history: the same file the loop kept up to date
    write_alpha_history(result, tmp_path / "alpha.csv")
    assert (tmp_path / "alpha.csv").read_text() == (tmp_path / "draw.csv").read_text()
    for cell in ("normal", "reduce"):
        engine = draw_cell(result.genotype, cell, tmp_path / f"{cell}.png", engine="matplotlib")
        assert engine == "matplotlib"
    draw_cell(ENAS_LIKE, "normal", tmp_path / "enas.png")
    for name in ("normal", "reduce", "enas"):
        data = (tmp_path / f"{name}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    assert not list(tmp_path.glob(".*.tmp-*"))  # atomic writes leave no temporaries


def _rgb_pixels(path) -> "np.ndarray":
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.int16).reshape(-1, 3)


def _rgb(hex_colour: str) -> "np.ndarray":
    return np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.int16)


def _count_near(pixels, hex_colour: str, tol: int = 6) -> int:
    return int((np.abs(pixels - _rgb(hex_colour)).max(axis=1) <= tol).sum())


def test_cell_drawings_show_exactly_the_genotypes_ops_in_their_colours(tmp_path):
    from pipeline_lib.nas.draw import OP_COLOURS

    two_nodes = ((0, 1), (2, 3))  # (states in concat): nodes 2 and 3
    genotype = Genotype(
        normal=(("sep_conv_3x3", 0), ("skip_connect", 1), ("sep_conv_3x3", 2), ("skip_connect", 0)),
        normal_concat=two_nodes[1],
        reduce=(("max_pool_3x3", 0), ("dil_conv_5x5", 1), ("max_pool_3x3", 2), ("dil_conv_5x5", 1)),
        reduce_concat=two_nodes[1],
    )
    used = {"normal": {"sep_conv_3x3", "skip_connect"}, "reduce": {"max_pool_3x3", "dil_conv_5x5"}}
    for cell in ("normal", "reduce"):
        assert draw_cell(genotype, cell, tmp_path / f"{cell}.png", engine="matplotlib") == "matplotlib"
        pixels = _rgb_pixels(tmp_path / f"{cell}.png")
        for op, colour in OP_COLOURS.items():
            if op == "skip_connect":  # grey: also the anti-aliased edge of any black text
                continue
            count = _count_near(pixels, colour)
            if op in used[cell]:
                assert count > 30, (cell, op, count)  # edges and labels drawn in the op's colour
            else:
                assert count == 0, (cell, op, count)  # no op that the cell does not use


def test_search_and_retrain_at_50px_channels_last():
    """50 → 25 → 13 px: polyphase and odd-size paths, and the reduce cells' factorized
    1x1 convs, which oneDNN's stride-2 kernel crashes on (channels_last, <= 8 channels)."""
    from pipeline_lib.nas.architect import Architect, MomentumSGD
    from pipeline_lib.nas.darts_search import search_step

    model = SearchNetwork(C=4, num_classes=2, layers=3, nodes=2, seed=0)
    w_opt = MomentumSGD(model.weight_parameters(), lr=0.025, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 3, 50, 50, generator=g), torch.tensor([0, 1])
    for order in ("first", "second"):
        info = search_step(model, Architect(model, w_opt, order=order), w_opt, x, y, x, y)
        assert math.isfinite(info.train_loss)
    net = Network(model.genotype(), C=4, num_classes=2, layers=3, auxiliary=True, drop_path_prob=0.2)
    net = net.to(memory_format=torch.channels_last)
    logits, aux = net(x.contiguous(memory_format=torch.channels_last))
    (logits.sum() + aux.sum()).backward()
