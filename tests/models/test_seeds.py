"""Seeds as a dimension of the study (params.yaml study.seeds) and the random-cell baseline.

A study seed sets weight init, data order, augmentation and search sampling; the data and the
split stay fixed. The random cell is drawn uniformly from DARTS's space, one per seed."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from scipy.stats import chisquare

from pipeline_lib.io.errors import PipelineError
from pipeline_lib.nas.genotypes import DARTS_PRIMITIVES, Genotype
from pipeline_lib.nas.random_cell import candidate_ops, sample_genotype
from pipeline_lib.study.registry import table_models
from test_models import _chip_split  # the small labelled chip images of the training tests

ROOT = Path(__file__).resolve().parents[2]
OPS = [op for op in DARTS_PRIMITIVES if op != "none"]


# --------------------------------------------------------------------------- the random cell


def test_random_cell_is_a_valid_darts_cell_without_none():
    g = sample_genotype(DARTS_PRIMITIVES, 4, seed=7)
    assert Genotype.from_dict(g.to_dict()) == g and g.source == "random" and g.nodes == 4
    for cell in (g.normal, g.reduce):
        assert len(cell) == 8 and {op for op, _ in cell} <= set(OPS)
        for k in range(4):  # node 2 + k: two distinct inputs among the states before it
            (_, a), (_, b) = cell[2 * k], cell[2 * k + 1]
            assert a != b and 0 <= a < 2 + k and 0 <= b < 2 + k
    assert g.normal_concat == g.reduce_concat == (2, 3, 4, 5)  # every node, as DARTS's derived cell
    assert g.meta == {"seed": 7, "ops": OPS, "nodes": 4, "sampler": "uniform"}


def test_random_cell_is_fixed_by_its_seed():
    assert sample_genotype(DARTS_PRIMITIVES, 4, seed=3).to_dict() == sample_genotype(DARTS_PRIMITIVES, 4, seed=3).to_dict()
    cells = {str(sample_genotype(DARTS_PRIMITIVES, 4, seed=s).to_dict()["normal"]) for s in range(20)}
    assert len(cells) == 20  # 7^8 * 6 * 10 * ... cells: twenty seeds draw twenty different cells


def test_random_cells_are_uniform_over_input_pairs_and_ops():
    """Over 3000 seeds, each node's input pair and each edge's op follow the uniform law (chi-square,
    scipy): a sampler that drew inputs with replacement or favoured an op fails at these counts."""
    nodes, draws = 3, [sample_genotype(DARTS_PRIMITIVES, 3, seed=s) for s in range(3000)]
    for cell in ("normal", "reduce"):
        for k in range(nodes):
            states = 2 + k
            pairs = Counter(tuple(inp for _, inp in getattr(g, cell)[2 * k: 2 * k + 2]) for g in draws)
            expected_pairs = list(itertools.combinations(range(states), 2))
            assert set(pairs) == set(expected_pairs)
            if len(expected_pairs) > 1:  # the first node always takes both cell inputs
                assert chisquare([pairs[p] for p in expected_pairs]).pvalue > 1e-3, (cell, k, pairs)
        ops = Counter(op for g in draws for op, _ in getattr(g, cell))
        assert set(ops) == set(OPS)
        assert chisquare([ops[op] for op in OPS]).pvalue > 1e-3, (cell, ops)
    # the normal and the reduction cell are drawn independently: their first ops agree at chance
    same = np.mean([g.normal[0][0] == g.reduce[0][0] for g in draws])
    assert abs(same - 1 / len(OPS)) < 3 * np.sqrt((1 / 7) * (6 / 7) / len(draws))


def test_the_chi_square_check_catches_a_biased_sampler():
    """The uniformity test above can fail: pairs drawn with replacement (then de-duplicated by
    shifting) are not uniform, and chi-square says so at the same counts."""
    rng = np.random.default_rng(0)
    pairs = Counter()
    for _ in range(3000):
        a, b = rng.integers(4, size=2)
        pairs[tuple(sorted((int(a), int(b) if a != b else (int(a) + 1) % 4)))] += 1
    assert chisquare([pairs[p] for p in itertools.combinations(range(4), 2)]).pvalue < 1e-3


def test_random_cell_needs_an_op_and_a_node():
    assert candidate_ops(["none", "skip_connect", "skip_connect"]) == ["skip_connect"]
    with pytest.raises(PipelineError, match=r"darts_search\.ops: .*other than 'none'"):
        sample_genotype(["none"], 3, seed=0)
    with pytest.raises(PipelineError, match=r"darts_search\.nodes"):
        sample_genotype(OPS, 0, seed=0)


# --------------------------------------------------------------------------- seeds in the DAG


def _stages() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def test_every_model_runs_once_per_seed_and_the_data_once():
    """dvc.yaml is the Snakemake DAG of the default study (tests/provenance/test_dvc.py keeps them equal)."""
    seeds = yaml.safe_load((ROOT / "params.yaml").read_text())["study"]["seeds"]
    assert len(seeds) == 3
    stages = _stages()
    outs = {out: name for name, stage in stages.items() for out in stage.get("outs", [])}
    for model in table_models():
        for seed in seeds:
            producer = outs[f"results/models/{model}/seed{seed}/metrics.json"]
            assert producer.endswith(f"_seed{seed}"), producer
            assert f"results/models/{model}/seed{seed}/val_predictions.csv" in stages[producer]["outs"]
    for method in ("darts", "enas", "random"):
        for seed in seeds:
            retrain = stages[f"nas_retrain_{method}_seed{seed}"]
            assert f"results/nas/{method}/seed{seed}/genotype.json" in retrain["deps"]  # seed s retrains search s
    for seed in seeds:  # the classifiers on fine-tuned features read that seed's FBP's features
        assert f"results/features/finetuned/seed{seed}.parquet" in stages[f"classical_lr_finetuned_seed{seed}"]["deps"]
        assert f"results/models/resnet_fbp/seed{seed}/model.pt" in stages[f"features_finetuned_seed{seed}"]["deps"]
    # the data, the split and the pretrained features: one stage each, no seed, read by every seed
    for name in ("generate", "ingest", "split", "features"):
        assert name in stages and not any(s.startswith(f"{name}_seed") for s in stages)
        assert "study.seeds" not in stages[name].get("params", [])
    assert {"results/split/split.parquet" in stages[f"train_cnn2_seed{s}"]["deps"] for s in seeds} == {True}
    table = stages["table"]
    for model in table_models():
        assert {f"results/models/{model}/seed{s}/{f}" for s in seeds
                for f in ("metrics.json", "val_predictions.csv", "predictions.csv")} <= set(table["deps"])


# --------------------------------------------------------------------------- a real run, two seeds


def _train(split: pd.DataFrame, out: Path, seed: int) -> dict:
    from pipeline_lib.models.end_to_end import ModelOutputs, NetworkConfig, train_and_evaluate
    from pipeline_lib.training.config import TrainConfig

    loop = TrainConfig(epochs=2, batch_size=4, lr=0.01, optimizer="adam", augment={"hflip": True})
    network = NetworkConfig(image_size=16, seed=seed, model={"channels": [4, 8]}, loop=loop)
    outputs = ModelOutputs(model=out / "model.pt", metrics=out / "metrics.json", predictions=out / "predictions.csv",
                           roc=out / "roc.csv", history=out / "history.csv", state_dir=out / "state",
                           val_predictions=out / "val_predictions.csv")
    return train_and_evaluate("cnn2", split, network, outputs, progress=False)


@pytest.mark.usefixtures("one_torch_thread")
def test_changing_the_seed_changes_the_weights_and_not_the_split(tmp_path):
    """The train library run under seeds 0 and 1 on one split: other weights, the same images in
    every part, and validation predictions that reproduce each run's valid acc."""
    from pipeline_lib.training.checkpoint import load_weights

    split = _chip_split(tmp_path, test_labels=True)  # 12 train, 6 val, 6 test images of 20 px
    before = split.copy()
    runs = {seed: _train(split, tmp_path / f"seed{seed}", seed) for seed in (0, 1)}
    pd.testing.assert_frame_equal(split, before)  # training does not touch the split it is given
    weights = {seed: load_weights(tmp_path / f"seed{seed}/model.pt")[0] for seed in runs}
    assert weights[0].keys() == weights[1].keys()
    assert not any(torch.equal(weights[0][k], weights[1][k]) for k in weights[0] if weights[0][k].is_floating_point()
                   and "running" not in k and weights[0][k].numel() > 1)
    vals = {seed: pd.read_csv(tmp_path / f"seed{seed}/val_predictions.csv", dtype={"id": str}) for seed in runs}
    truth = split[split["split"] == "val"]
    for seed, val in vals.items():
        assert list(val.columns) == ["id", "label", "prob_bad"] and runs[seed]["seed"] == seed
        assert val["id"].tolist() == truth["id"].tolist() and val["label"].tolist() == truth["label"].tolist()
        assert runs[seed]["valid_acc"] == pytest.approx(((val["prob_bad"] > 0.5) == val["label"]).mean(), abs=1e-12)
        test = pd.read_csv(tmp_path / f"seed{seed}/predictions.csv", dtype={"id": str})
        assert test["id"].tolist() == split.loc[split["split"] == "test", "id"].tolist()
    assert not np.allclose(vals[0]["prob_bad"], vals[1]["prob_bad"])
    # the same seed again: the same weights (so the difference above is the seed's)
    _train(split, tmp_path / "again", 0)
    again = load_weights(tmp_path / "again/model.pt")[0]
    assert all(torch.equal(again[k], weights[0][k]) for k in again)


def test_classifier_seed_changes_the_forest_and_not_the_rows():
    from pipeline_lib.classical.classifiers import fit_and_evaluate

    rng = np.random.default_rng(0)
    meta = pd.DataFrame({"id": [f"i{i}" for i in range(60)], "split": ["train"] * 40 + ["val"] * 12 + ["test"] * 8,
                         "label": np.tile([0, 1], 30)})
    X = rng.normal(size=(60, 5)) + meta["label"].to_numpy()[:, None] * 0.8
    results = {s: fit_and_evaluate("rf", {"n_estimators": 10}, s, meta, X, features_name="pretrained") for s in (0, 1)}
    v0, v1 = results[0].val_predictions, results[1].val_predictions
    assert v0["id"].tolist() == v1["id"].tolist() == meta.loc[meta["split"] == "val", "id"].tolist()
    assert v0["label"].tolist() == meta.loc[meta["split"] == "val", "label"].tolist()
    assert not np.allclose(v0["prob_bad"], v1["prob_bad"]) and results[1].metrics["seed"] == 1
