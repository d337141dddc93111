"""TrainConfig (a params.yaml loop section) and the optimizer it builds: every bad value is
refused naming its key; the optimizer gets the configured hyper-parameters."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline_lib.io.errors import PipelineError
from pipeline_lib.training.config import TrainConfig, make_optimizer, make_scheduler

BASE = {"epochs": 3, "batch_size": 4, "lr": 0.1}

BAD = {
    "epochs": [0, 2.0, "3", True],
    "batch_size": [0, -1, 1.5, True],
    "lr": [0, -0.1, "0.1", True],
    "backbone_lr": [-1e-3, "x", True],
    "optimizer": ["lbfgs", "SGD"],
    "schedule": ["linear", None],
    "class_weight": ["auto"],
    "momentum": [-0.1, "0.9", True],
    "weight_decay": [-1e-4],
    "min_lr": [-1.0],
    "aux_weight": [-0.4],
    "patience": [-1, 1.5, False],
    "num_workers": [-2, True],
    "seed": [-1, 0.5, True],
    "step_size": [0, 2.5, True],
    "gamma": [0, 1.5, -0.1, True],
    "grad_clip": [-1.0, "big", True],
    "eval_batch_size": [0, 2.5, True],
    "augment": [[1, 2], "hflip"],
}
GOOD = {
    "epochs": [1], "batch_size": [1], "lr": [1e-9, 3], "backbone_lr": [None, 0, 0.01], "optimizer": ["sgd", "adam", "adamw"],
    "schedule": ["cosine", "step", "constant"], "class_weight": ["none", "balanced"], "momentum": [0, 0.9],
    "weight_decay": [0, 5e-4], "min_lr": [0], "aux_weight": [0, 0.4], "patience": [0, 3], "num_workers": [None, 0, 2],
    "seed": [0, 7], "step_size": [1], "gamma": [1, 0.1], "grad_clip": [None, 0, 5.0], "eval_batch_size": [None, 1],
    "augment": [{}, {"hflip": True, "rotation_deg": 10, "crop_scale": 1.0, "cutout": 0}],
}


@pytest.mark.parametrize("key, value", [(k, v) for k, values in BAD.items() for v in values])
def test_a_bad_value_is_refused_naming_its_key(key, value):
    with pytest.raises(PipelineError) as info:
        TrainConfig.from_params({**BASE, key: value}, where="params.yaml: train.cnn2.loop")
    msg = str(info.value)
    assert msg == f"params.yaml: train.cnn2.loop.{key}: {value!r} is invalid; expected {EXPECTED[key]}"


EXPECTED = {
    "epochs": "an integer >= 1", "batch_size": "an integer >= 1", "step_size": "an integer >= 1",
    "lr": "a number > 0", "backbone_lr": "null or a number >= 0", "grad_clip": "null or a number >= 0",
    "optimizer": "sgd | adam | adamw", "schedule": "cosine | step | constant", "class_weight": "none | balanced",
    "momentum": "a number >= 0", "weight_decay": "a number >= 0", "min_lr": "a number >= 0", "aux_weight": "a number >= 0",
    "patience": "an integer >= 0", "num_workers": "null (the job's threads on CUDA) or an integer >= 0", "seed": "an integer >= 0",
    "gamma": "a number in (0, 1]", "eval_batch_size": "null or an integer >= 1", "augment": "a mapping",
}


@pytest.mark.parametrize("key, value", [(k, v) for k, values in GOOD.items() for v in values])
def test_a_good_value_is_kept(key, value):
    config = TrainConfig.from_params({**BASE, key: value})
    assert getattr(config, key) == value
    assert config.as_dict()[key] == value


@pytest.mark.parametrize(
    "augment, message",
    [
        ({"hflip": 1}, "augment.hflip: 1 is invalid; expected true or false"),
        ({"vflip": "yes"}, "augment.vflip: 'yes' is invalid; expected true or false"),
        ({"rotation_deg": -5}, "augment.rotation_deg: -5 is invalid; expected a number >= 0"),
        ({"cutout": True}, "augment.cutout: True is invalid; expected a number >= 0"),
        ({"cutout": "8"}, "augment.cutout: '8' is invalid; expected a number >= 0"),
        ({"crop_scale": 0}, "augment.crop_scale: 0 is invalid; expected a number in (0, 1]"),
        ({"crop_scale": 1.2}, "augment.crop_scale: 1.2 is invalid; expected a number in (0, 1]"),
        ({"mixup": 0.2}, "augment.mixup: unknown key (allowed: crop_scale, cutout, hflip, rotation_deg, vflip)"),
    ],
)
def test_augment_values_are_checked_one_by_one(augment, message):
    with pytest.raises(PipelineError) as info:
        TrainConfig.from_params({**BASE, "augment": augment}, where="loop")
    assert str(info.value) == f"loop.{message}"


def test_missing_and_unknown_keys_and_a_null_augment():
    with pytest.raises(PipelineError, match=r"^s\.lr: missing key$"):
        TrainConfig.from_params({"epochs": 1, "batch_size": 2}, where="s")
    with pytest.raises(PipelineError, match=r"^s\.lrr: unknown key \(allowed: amp, augment, aux_weight, backbone_lr, batch_size"):
        TrainConfig.from_params({**BASE, "lrr": 1}, where="s")
    with pytest.raises(PipelineError, match=r"^params\.yaml: train\.epochs: 0 is invalid"):  # the default source
        TrainConfig.from_params({**BASE, "epochs": 0})
    with pytest.raises(PipelineError, match=r"^params\.yaml: train\.batch_size: missing key$"):
        TrainConfig.from_params({"epochs": 1, "lr": 0.1})
    with pytest.raises(PipelineError, match=r"^params\.yaml: train\.gamma: 2 is invalid; expected a number in \(0, 1\]$"):
        TrainConfig(**BASE, gamma=2).validate()
    assert TrainConfig.from_params({**BASE, "augment": None}).augment == {}
    defaults = TrainConfig.from_params(BASE)
    assert (defaults.optimizer, defaults.schedule, defaults.momentum, defaults.weight_decay, defaults.grad_clip,
            defaults.patience, defaults.class_weight, defaults.amp) == ("sgd", "cosine", 0.9, 0.0, None, 0, "none", True)
    assert TrainConfig(**BASE).validate() is not None


def _groups():
    head, body = nn.Linear(2, 2), nn.Linear(2, 2)
    return [{"params": list(head.parameters()), "lr": 0.5, "name": "head"}, {"params": list(body.parameters())}]


def test_sgd_gets_lr_momentum_nesterov_and_weight_decay():
    config = TrainConfig(**BASE, momentum=0.8, nesterov=True, weight_decay=1e-3)
    opt = make_optimizer(_groups(), config)
    assert type(opt) is torch.optim.SGD
    head, body = opt.param_groups
    assert (head["lr"], body["lr"]) == (0.5, 0.1)  # a group's own LR wins, else config.lr
    assert all((g["momentum"], g["nesterov"], g["weight_decay"]) == (0.8, True, 1e-3) for g in opt.param_groups)
    # nesterov needs momentum: without momentum it is switched off rather than refused by torch
    plain = make_optimizer(_groups(), TrainConfig(**BASE, momentum=0.0, nesterov=True))
    assert plain.param_groups[0]["nesterov"] is False and plain.param_groups[0]["momentum"] == 0.0


@pytest.mark.parametrize("name, cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_adam_and_adamw(name, cls):
    opt = make_optimizer(_groups(), TrainConfig(**BASE, optimizer=name, weight_decay=0.01))
    assert type(opt) is cls
    assert [g["lr"] for g in opt.param_groups] == [0.5, 0.1]
    assert all(g["weight_decay"] == 0.01 for g in opt.param_groups)


def test_the_callers_groups_are_not_changed():
    groups = _groups()
    make_optimizer(groups, TrainConfig(**BASE))
    assert "lr" not in groups[1] and set(groups[0]) == {"params", "lr", "name"}


def test_schedulers_are_torchs_with_the_configured_shape():
    opt = make_optimizer(_groups(), TrainConfig(**BASE))
    cosine = make_scheduler(opt, TrainConfig(**BASE, min_lr=0.01))
    assert isinstance(cosine, torch.optim.lr_scheduler.CosineAnnealingLR)
    assert (cosine.T_max, cosine.eta_min) == (3, 0.01)
    step = make_scheduler(opt, TrainConfig(**BASE, schedule="step", step_size=4, gamma=0.3))
    assert isinstance(step, torch.optim.lr_scheduler.StepLR) and (step.step_size, step.gamma) == (4, 0.3)
    assert make_scheduler(opt, TrainConfig(**BASE, schedule="constant")) is None
