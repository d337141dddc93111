"""The DARTS search space as data: ``ops.OPS`` and ``darts_search.ops`` in params.yaml.

Adding a candidate op is one entry in ``OPS`` and one in the params list: the search runs
it (generic path, no kernel of its own), derives cells that can hold it, and the retrain
network builds it. (That the fused and generic paths agree for any list, new ops
included, is checked in test_darts_grad.py.)
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn
from torch.utils.data import TensorDataset

from pipeline_lib.io.errors import PipelineError
from pipeline_lib.nas.darts_config import DartsConfig
from pipeline_lib.nas.darts_search import search
from pipeline_lib.nas.genotypes import DARTS_PRIMITIVES
from pipeline_lib.nas.network import Network
from pipeline_lib.nas.ops import OPS, MixedOp
from pipeline_lib.nas.search_fused import GenericOp
from pipeline_lib.nas.search_model import SearchNetwork
from pipeline_lib.params import load_schema, validate_params
from search_helpers import halves

ROOT = Path(__file__).resolve().parents[2]


def _params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_params_list_the_darts_ops_and_the_schema_knows_every_op():
    schema = load_schema(ROOT / "workflow/schemas/params.schema.yaml")
    enum = schema["properties"]["darts_search"]["properties"]["ops"]["items"]["enum"]
    assert sorted(enum) == sorted(OPS)  # the schema's vocabulary is OPS, nothing more or less
    assert tuple(_params()["darts_search"]["ops"]) == DARTS_PRIMITIVES


def test_the_darts_config_is_the_darts_search_section_whole():
    """One ``from_params`` builds the search's config from its section: every schema key is a
    field (a key added to one and not the other fails here), the values arrive as written."""
    from dataclasses import fields

    schema = load_schema(ROOT / "workflow/schemas/params.schema.yaml")
    keys = set(schema["properties"]["darts_search"]["properties"])
    # seed: the job's study seed ({seed} wildcard, params.yaml study.seeds), given by the rule's script
    assert keys == {f.name for f in fields(DartsConfig)} - {"num_workers", "seed"}
    section = _params()["darts_search"]
    cfg = DartsConfig.from_params(section)
    assert cfg.ops == tuple(section["ops"]) and cfg.alpha_betas == tuple(section["alpha_betas"])
    assert {k: getattr(cfg, k) for k in section if k not in ("ops", "alpha_betas")} == \
        {k: v for k, v in section.items() if k not in ("ops", "alpha_betas")}
    with pytest.raises(PipelineError, match=r"^darts_search\.w_lrr: unknown key \(allowed: .*w_lr"):
        DartsConfig.from_params({**section, "w_lrr": 0.1})


def test_an_unknown_op_is_a_one_line_error_naming_the_key_and_the_known_ops():
    schema = load_schema(ROOT / "workflow/schemas/params.schema.yaml")
    params = _params()
    params["darts_search"]["ops"] = ["none", "sep_conv_3x3", "sep_conv_9x9"]
    with pytest.raises(PipelineError) as info:
        validate_params(params, schema)
    message = str(info.value)
    assert message.startswith("params.yaml: darts_search.ops.2: 'sep_conv_9x9' is not one of")
    assert all(repr(name) in message for name in OPS) and "\n" not in message
    # the library says the same to a direct caller
    with pytest.raises(PipelineError, match=r"darts_search.ops: unknown op 'sep_conv_9x9' \(known: .*dil_conv_5x5"):
        SearchNetwork(C=4, layers=3, nodes=2, ops=["none", "sep_conv_9x9"])
    with pytest.raises(PipelineError, match="at least one other than 'none'"):
        SearchNetwork(C=4, layers=3, nodes=2, ops=["none"])


def test_mixed_op_is_the_weighted_sum_of_the_listed_ops():
    torch.manual_seed(0)
    ops = ("max_pool_3x3", "conv_7x1_1x7", "skip_connect")
    mixed = MixedOp(4, 1, ops)
    x, w = torch.randn(2, 4, 9, 9), torch.tensor([0.2, 0.5, 0.3])
    by_hand = 0.2 * mixed._ops[0](x) + 0.5 * mixed._ops[1](x) + 0.3 * x
    torch.testing.assert_close(mixed(x, w), by_hand)
    assert isinstance(mixed._ops[0][1], nn.BatchNorm2d)  # a pool is followed by BN, as DARTS


class Conv3x1(nn.Sequential):
    """The new candidate op of the test: ReLU, 3x1 and 1x3 convs, BN."""

    def __init__(self, C: int, stride: int, affine: bool):
        super().__init__(
            nn.ReLU(),
            nn.Conv2d(C, C, (3, 1), stride=(stride, 1), padding=(1, 0), bias=False),
            nn.Conv2d(C, C, (1, 3), stride=(1, stride), padding=(0, 1), bias=False),
            nn.BatchNorm2d(C, affine=affine),
        )


def test_a_new_op_is_searched_derived_and_retrained(tmp_path, monkeypatch):
    # the one entry in ops.py ...
    monkeypatch.setitem(OPS, "conv_3x1_1x3", lambda C, stride, affine: Conv3x1(C, stride, affine))
    # ... and the one in darts_search.ops
    ops = ["none", "max_pool_3x3", "skip_connect", "sep_conv_3x3", "conv_3x1_1x3"]
    model = SearchNetwork(C=4, num_classes=2, layers=3, nodes=2, ops=ops, seed=0)
    new_ops = [m for m in model.modules() if isinstance(m, GenericOp)]
    assert new_ops and all(g.ops == ("conv_3x1_1x3",) for g in new_ops)
    with torch.no_grad():  # favour the new op so that the derived cells take it
        for a in model.arch_parameters():
            a[:, ops.index("conv_3x1_1x3")] += 2.0
    before = [p.detach().clone() for g in new_ops for p in g.parameters()]
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(16, 3, 8, 8, generator=g), torch.randint(0, 2, (16,), generator=g))
    a, b = halves(data, seed=0)
    result = search(model, a, b, DartsConfig(epochs=1, batch_size=4, max_steps_per_epoch=2, seed=0, ops=tuple(ops)),
                    progress=False, history_path=tmp_path / "alpha.csv")
    after = [p.detach() for g in new_ops for p in g.parameters()]
    assert any(not torch.equal(x, y) for x, y in zip(before, after))  # the weight steps trained it
    assert result.alpha_history.shape[-1] == len(ops) and result.ops == tuple(ops)
    with open(tmp_path / "alpha.csv") as fh:
        assert {row["op"] for row in csv.DictReader(fh)} == set(ops)
    genotype = result.genotype
    assert genotype.meta["ops"] == ops
    chosen = {op for op, _ in genotype.normal + genotype.reduce}
    assert "conv_3x1_1x3" in chosen and chosen <= set(ops) - {"none"}
    net = Network(genotype, C=4, num_classes=2, layers=3, auxiliary=False)
    assert any(isinstance(m, Conv3x1) for m in net.modules())
    net(torch.randn(2, 3, 9, 9)).sum().backward()
