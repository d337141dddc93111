"""config/full.yaml as it takes effect: merged over params.yaml the way Snakemake merges.

Snakemake loads ``configfile: "params.yaml"`` and then updates it, recursively, with every
``--configfile`` (``snakemake.utils.update_config``): a leaf the override does not name keeps
params.yaml's value. That once left the full-size ENAS at the built-in 2 layers and 12
channels. The expected values below are the papers' (docs in config/full.yaml's comments).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from snakemake.common.configfile import load_configfile
from snakemake.utils import update_config

from pipeline_lib.nas.enas_config import EnasConfig
from pipeline_lib.params import load_schema, validate_params
from pipeline_lib.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def merged() -> dict:
    config = load_configfile(str(ROOT / "params.yaml"))
    update_config(config, load_configfile(str(ROOT / "config/full.yaml")))
    return config


def _leaves(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_merged_full_config_validates(merged):
    validate_params(merged, load_schema(ROOT / "workflow/schemas/params.schema.yaml"), source="config/full.yaml")


@pytest.mark.parametrize("section", ["darts_search", "enas_search", "nas_retrain"])
def test_no_built_in_search_setting_survives_the_merge(merged, section):
    """Every leaf params.yaml sets in these sections is set again in full.yaml (seeds and
    the class balancing, this project's choices, excepted)."""
    full = load_configfile(str(ROOT / "config/full.yaml"))
    params = load_configfile(str(ROOT / "params.yaml"))
    kept = {k for k in _leaves(params[section]) if k not in _leaves(full[section])}
    assert kept <= {"seed", "balance_classes"}, f"{section}: params.yaml values survive: {sorted(kept)}"


def test_enas_is_the_official_micro_search(merged):
    enas = merged["enas_search"]
    assert (enas["image_size"], enas["epochs"], enas["max_images"]) == (64, 150, None)
    cfg = EnasConfig.from_params(enas["settings"])
    official = dict(num_nodes=5, channels=20, num_layers=6, batch_size=160, max_child_steps=None, dropout=0.1,
                    lr_max=0.05, lr_min=0.0005, lr_t0=10, lr_tmul=2, weight_decay=2e-4, controller_hidden=64,
                    tanh_constant=1.1, op_tanh_reduce=2.5, controller_lr=0.0035, baseline_decay=0.99,
                    entropy_weight=1e-4, controller_steps=30, controller_samples=10, optimizer="sgd", stem_stride=1,
                    warmup_epochs=0)
    assert {k: getattr(cfg, k) for k in official} == official


def test_darts_search_and_retrain_are_the_papers(merged):
    d = merged["darts_search"]
    assert {k: d[k] for k in ("order", "epochs", "batch_size", "channels", "layers", "nodes", "max_images",
                              "max_steps_per_epoch", "w_lr", "w_lr_min", "w_momentum", "w_weight_decay", "grad_clip",
                              "alpha_lr", "alpha_betas", "alpha_weight_decay", "image_size", "stem_stride",
                              "warmup_epochs")} == dict(
        order="second", epochs=50, batch_size=64, channels=16, layers=8, nodes=4, max_images=None,
        max_steps_per_epoch=None, w_lr=0.025, w_lr_min=0.001, w_momentum=0.9, w_weight_decay=3e-4, grad_clip=5.0,
        alpha_lr=3e-4, alpha_betas=[0.5, 0.999], alpha_weight_decay=1e-3, image_size=64, stem_stride=1,
        warmup_epochs=15)
    r = merged["nas_retrain"]
    assert r["model"] == {"channels": 36, "layers": 20, "auxiliary": True, "drop_path": 0.2, "stem_stride": 1}
    loop = TrainConfig.from_params(r["loop"])
    assert (loop.epochs, loop.batch_size, loop.optimizer, loop.lr, loop.momentum, loop.weight_decay, loop.schedule,
            loop.min_lr, loop.grad_clip, loop.aux_weight, loop.patience) == (
        600, 96, "sgd", 0.025, 0.9, 3e-4, "cosine", 0.0, 5.0, 0.4, 0)
    assert loop.augment == {"hflip": True, "vflip": True}  # no cutout (erases defects)


def test_baselines_features_and_classical_at_full_size(merged):
    f = merged["features"]
    assert (f["weights"], f["image_size"], f["batch_size"], f["arch"]) == ("imagenet", 224, 64, "resnet18")
    assert merged["train"]["image_size"] == 224
    epochs = {m: merged["train"][m]["loop"]["epochs"] for m in ("cnn2", "resnet_ll", "resnet_fbp")}
    assert epochs == {"cnn2": 30, "resnet_ll": 15, "resnet_fbp": 20}
    fbp = merged["train"]["resnet_fbp"]["loop"]
    assert (fbp["lr"], fbp["backbone_lr"], fbp["optimizer"], fbp["batch_size"]) == (0.001, 0.0001, "adam", 32)
    svm = merged["classical"]["svm"]
    assert (svm["variant"], svm["max_exact_rows"], svm["kernel"], svm["C"]) == ("auto", 10000, "rbf", 1.0)
    assert (merged["ingest"]["root"], merged["ingest"]["test_labels"]) == ("data/raw/nexperia", None)
