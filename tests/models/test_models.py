"""The deep baselines: shapes, frozen backbone (LL), two learning rates (FBP), penultimate features."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from pipeline_lib.runtime import devices
from pipeline_lib.io.errors import PipelineError
from pipeline_lib.models.networks import build_model, count_parameters, param_groups, penultimate
from pipeline_lib.study.registry import spec
from pipeline_lib.training.train import fit
from pipeline_lib.training.config import TrainConfig


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _images(n: int = 4, size: int = 32) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    "name, dim", [("cnn2", 16), ("resnet_ll", 512), ("resnet_fbp", 512)]
)
def test_output_and_penultimate_shapes_at_32px(name, dim):
    devices.seed_everything(0)
    kwargs = {"channels": (8, 16)} if name == "cnn2" else {}
    model = build_model(name, image_size=32, **kwargs).eval()
    x = _images()
    with torch.no_grad():
        assert tuple(model(x).shape) == (4, 2)
        assert tuple(penultimate(model)(x).shape) == (4, dim)
    assert spec(name).family in ("cnn", "transfer")


def test_cnn2_is_two_conv_blocks_and_counts_parameters():
    model = build_model("cnn2", image_size=16, channels=(4, 8), kernel_size=3)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [4, 8]
    expected = (3 * 4 * 9) + (4 + 4) + (4 * 8 * 9) + (8 + 8) + (8 * 2 + 2)  # convs (no bias), BNs, linear
    assert count_parameters(model) == {"trainable": expected, "total": expected}
    with pytest.raises(PipelineError, match="two channel counts"):
        build_model("cnn2", image_size=16, channels=(4, 8, 16))
    with pytest.raises(PipelineError, match="unknown model 'vgg'"):
        build_model("vgg", image_size=32)


def test_resnet_ll_trains_only_the_head_and_keeps_bn_stats(tmp_path):
    devices.seed_everything(0)
    model = build_model("resnet_ll", image_size=32)
    counts = count_parameters(model)
    assert counts["trainable"] == 512 * 2 + 2 < counts["total"]
    trunk_before = {k: v.clone() for k, v in model.features.state_dict().items()}
    head_before = model.classifier.weight.detach().clone()
    data = TensorDataset(_images(6), torch.tensor([0, 1, 0, 1, 0, 1]))
    config = TrainConfig(epochs=1, batch_size=3, lr=0.1, seed=0)
    fit(model, data, data, config, device="cpu", state_dir=tmp_path, progress=False,
        param_groups=param_groups(model, "resnet_ll", lr=0.1))
    model.train()
    assert not model.features.training  # BN stays in eval mode while training
    after = model.features.state_dict()
    assert all(torch.equal(trunk_before[k], after[k]) for k in trunk_before)  # weights and running stats
    assert not torch.equal(head_before, model.classifier.weight)


@pytest.mark.parametrize("name", ["resnet_ll", "resnet_fbp"])
def test_resnet_parameter_counts_equal_torchvision_resnet18_with_a_two_class_head(name):
    import torchvision

    reference = torchvision.models.resnet18(weights=None, num_classes=2)  # trunk + fc 512 -> 2, built apart
    expected = sum(p.numel() for p in reference.parameters())
    counts = count_parameters(build_model(name, image_size=32))
    assert counts["total"] == expected
    assert counts["trainable"] == (512 * 2 + 2 if name == "resnet_ll" else expected)


def test_resnet_fbp_param_groups_carry_two_learning_rates():
    devices.seed_everything(0)
    model = build_model("resnet_fbp", image_size=32)
    groups = param_groups(model, "resnet_fbp", lr=0.01, backbone_lr=0.001)
    assert [(g["name"], g["lr"]) for g in groups] == [("head", 0.01), ("backbone", 0.001)]
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))  # every parameter exactly once
    assert count_parameters(model)["trainable"] == count_parameters(model)["total"]
    opt = torch.optim.SGD(groups, lr=0.5)
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.001]


def test_backbone_state_is_loaded_and_checked():
    import torchvision

    torch.manual_seed(1)
    source = torchvision.models.resnet18(weights=None)  # stands in for ImageNet weights, fc included
    model = build_model("resnet_fbp", image_size=32, backbone_state=source.state_dict())
    assert torch.equal(model.features.conv1.weight, source.conv1.weight)
    assert tuple(model.classifier.weight.shape) == (2, 512)
    with pytest.raises(PipelineError, match="do not fit resnet50"):
        build_model("resnet_ll", image_size=32, backbone_arch="resnet50", backbone_state=source.state_dict())
    with pytest.raises(PipelineError, match="no backbone"):
        build_model("cnn2", image_size=32, backbone_state=source.state_dict())


def test_penultimate_matches_features_extract_features(tmp_path):
    import pandas as pd

    from pipeline_lib.features import extract as features
    from PIL import Image

    paths = []
    for i in range(3):
        p = tmp_path / f"{i}.png"
        Image.new("RGB", (40, 40), (40 * i, 100, 200 - 50 * i)).save(p)
        paths.append(str(p))
    devices.seed_everything(0)
    model = build_model("cnn2", image_size=32, channels=(4, 8))
    X = features.extract_features(penultimate(model), pd.DataFrame({"path": paths}), image_size=32, batch_size=2,
                                  device="cpu", progress=False)
    assert X.shape == (3, 8)
    from pipeline_lib.data.datasets import ChipImages, eval_transform

    ds = ChipImages(pd.DataFrame({"path": paths, "label": [0, 1, 0]}), eval_transform(32))
    with torch.no_grad():
        direct = penultimate(model.eval())(torch.stack([ds[i][0] for i in range(3)]))
    assert torch.allclose(torch.from_numpy(X), direct, atol=1e-5)


def _chip_split(tmp_path, *, test_labels: bool) -> "pd.DataFrame":
    import pandas as pd
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    rows = []
    for split, n in (("train", 12), ("val", 6), ("test", 6)):
        for i in range(n):
            label = i % 2
            pixels = (torch.rand(20, 20, 3, generator=g) * 80).to(torch.uint8)
            if label:
                pixels[6:14, 6:14] = 230
            path = tmp_path / f"{split}{i}.png"
            Image.fromarray(pixels.numpy()).save(path)
            rows.append({"id": f"{split}{i}", "path": str(path), "split": split,
                         "label": label if (split != "test" or test_labels) else -1})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("test_labels", [True, False], ids=["labelled-test", "hidden-test-labels"])
def test_deep_train_and_evaluate_writes_every_output(tmp_path, test_labels):
    import json
    import time

    import numpy as np
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from pipeline_lib.training.checkpoint import load_weights
    from pipeline_lib.training.loop import Checkpoint
    from pipeline_lib.data.datasets import ChipImages, eval_transform
    from pipeline_lib.models.end_to_end import ModelOutputs, NetworkConfig, load_trained, train_and_evaluate
    from pipeline_lib.training.evaluation import evaluate
    from pipeline_lib.results.metrics import validate_metrics

    split = _chip_split(tmp_path, test_labels=test_labels)
    out = tmp_path / "out"
    config = TrainConfig(epochs=2, batch_size=4, lr=0.01, optimizer="adam", seed=0, augment={"hflip": True})
    network = NetworkConfig(image_size=16, seed=0, model={"channels": [4, 8]}, loop=config)
    outputs = ModelOutputs(model=out / "model.pt", metrics=out / "metrics.json", predictions=out / "predictions.csv",
                           roc=out / "roc.csv", history=out / "history.csv", state_dir=tmp_path / "state")
    started = time.perf_counter()
    metrics = train_and_evaluate("cnn2", split, network, outputs, progress=False)
    elapsed = time.perf_counter() - started
    on_disk = json.loads((out / "metrics.json").read_text())
    # wall time: the epochs (timed inside the loop) plus setup and prediction, within the call's own time
    assert pd.read_csv(out / "history.csv")["seconds"].sum() < metrics["wall_time_s"] <= round(elapsed, 3) + 1e-3
    assert on_disk == metrics and validate_metrics(on_disk, "metrics.json") == on_disk
    assert metrics["family"] == "cnn" and metrics["device"] == "cpu" and metrics["seed"] == 0
    assert (metrics["n_train"], metrics["n_val"], metrics["n_test"]) == (12, 6, 6)
    assert metrics["epochs_run"] == 2 and 1 <= metrics["best_epoch"] <= 2
    assert 0 <= metrics["valid_acc"] <= 1 and metrics["valid_loss"] > 0
    preds = pd.read_csv(out / "predictions.csv")
    assert list(preds.columns) == ["id", "prob_bad"] and preds.id.tolist() == [f"test{i}" for i in range(6)]
    roc = pd.read_csv(out / "roc.csv")
    assert list(roc.columns) == ["fpr", "tpr", "threshold"]
    if test_labels:
        # recomputed from the saved predictions and the test labels: bad (label 1) is the positive
        # class, and the net, which sees the bright patch of every bad chip, ranks bad above good
        labels = split.loc[split.split == "test", "label"].to_numpy()
        assert metrics["test_auc"] == pytest.approx(roc_auc_score(labels, preds["prob_bad"]), abs=1e-12)
        assert metrics["test_auc"] > 0.9
        assert np.trapezoid(roc["tpr"], roc["fpr"]) == pytest.approx(metrics["test_auc"], abs=1e-12)
    else:
        assert metrics["test_auc"] is None and len(roc) == 0
    state_dict, meta = load_weights(out / "model.pt")
    assert meta["best_epoch"] == metrics["best_epoch"]
    assert not Checkpoint(tmp_path / "state").path.exists()  # resume state cleared once outputs exist
    # the saved (best) weights reproduce the reported validation numbers and parameter count
    model = load_trained(out / "model.pt")
    assert metrics["params_count"] == sum(p.numel() for p in model.parameters())
    val = ChipImages(split[split.split == "val"].reset_index(drop=True), eval_transform(16))
    loss, acc = evaluate(model, val, batch_size=4, device="cpu")
    assert (metrics["valid_loss"], metrics["valid_acc"]) == (pytest.approx(loss, rel=1e-6), acc)


def test_cnn2_global_max_pool_keeps_a_small_local_response():
    devices.seed_everything(0)
    pooled = {pool: build_model("cnn2", image_size=32, channels=(4, 8), pool=pool).eval() for pool in ("avg", "max")}
    pooled["max"].load_state_dict(pooled["avg"].state_dict())  # same weights, only the pooling differs
    blank = torch.zeros(1, 3, 32, 32)
    spot = blank.clone()
    spot[..., 14:17, 14:17] = 5.0  # a 3x3 "defect" in 1024 pixels
    with torch.no_grad():
        change = {k: (m.features(spot) - m.features(blank)).abs().max().item() for k, m in pooled.items()}
    assert change["max"] > 5 * change["avg"]
    with pytest.raises(PipelineError, match="cnn2.pool"):
        build_model("cnn2", image_size=32, pool="median")


def test_resnet_head_norm_standardises_without_trainable_weights():
    devices.seed_everything(0)
    plain = build_model("resnet_ll", image_size=32)
    devices.seed_everything(0)
    normed = build_model("resnet_ll", image_size=32, head_norm=True)
    assert count_parameters(normed) == count_parameters(plain)  # no affine parameters added
    norm = normed.classifier[0]
    normed.train()
    with torch.no_grad():
        features = normed.features(_images(8))
        standardised = norm(features)
    # BatchNorm1d(affine=False) in training mode, computed by hand: (x - mean) / sqrt(biased var + eps)
    mean, var = features.mean(0), features.var(0, unbiased=False)
    torch.testing.assert_close(standardised, (features - mean) / torch.sqrt(var + 1e-5), rtol=1e-4, atol=1e-5)
    assert torch.allclose(standardised.mean(0), torch.zeros(512), atol=1e-4)
    spread = var > 1e-3  # features that vary over the batch (a ReLU feature can be 0 for all 8 images)
    assert spread.sum() > 100
    torch.testing.assert_close(standardised[:, spread].var(0, unbiased=False), torch.ones(int(spread.sum())),
                               rtol=0, atol=1e-2)
    assert not normed.features.training  # the frozen trunk stays in eval mode
    with pytest.raises(PipelineError, match="head_norm"):
        build_model("resnet_ll", image_size=32, head_norm="yes")
    with pytest.raises(PipelineError, match="unexpected option"):
        build_model("resnet_fbp", image_size=32, dropout=0.5)


def test_resnet_ll_on_the_frozen_trunk_outputs_trains_as_on_the_images(tmp_path, monkeypatch):
    """ResNet LL's head trained on the trunk's outputs computed once (models.frozen_trunk) ends with
    the weights, validation numbers and test predictions of the same run through the images every
    epoch; the saved weights are the whole network's (trunk unchanged, the best head)."""
    import numpy as np
    import pandas as pd

    from pipeline_lib.models import end_to_end
    from pipeline_lib.models.end_to_end import ModelOutputs, NetworkConfig, train_and_evaluate
    from pipeline_lib.training.checkpoint import load_weights

    split = _chip_split(tmp_path, test_labels=True)
    config = TrainConfig(epochs=3, batch_size=5, lr=0.05, optimizer="adam", seed=3, class_weight="balanced")
    network = NetworkConfig(image_size=32, seed=0, model={"head_norm": True}, loop=config)

    def run(name):
        out = tmp_path / name
        outputs = ModelOutputs(model=out / "model.pt", metrics=out / "metrics.json", predictions=out / "p.csv",
                               roc=out / "roc.csv", history=out / "h.csv", state_dir=tmp_path / f"state_{name}")
        metrics = train_and_evaluate("resnet_ll", split, network, outputs, progress=False)
        return metrics, load_weights(out / "model.pt")[0], pd.read_csv(out / "p.csv"), pd.read_csv(out / "h.csv")

    once = run("once")
    monkeypatch.setattr(end_to_end, "head_only", lambda model, augment: False)
    every_epoch = run("every_epoch")
    assert once[0]["valid_acc"] == every_epoch[0]["valid_acc"] and once[0]["best_epoch"] == every_epoch[0]["best_epoch"]
    assert once[0]["valid_loss"] == pytest.approx(every_epoch[0]["valid_loss"], abs=1e-5)
    assert set(once[1]) == set(every_epoch[1])  # trunk and head: the whole network
    for key, value in every_epoch[1].items():
        assert torch.allclose(once[1][key].float(), value.float(), atol=1e-5), key
    assert np.allclose(once[2]["prob_bad"], every_epoch[2]["prob_bad"], atol=1e-5)
    assert np.allclose(once[3]["train_loss"], every_epoch[3]["train_loss"], atol=1e-5)
    assert once[3]["train_loss"].iloc[0] != once[3]["train_loss"].iloc[-1]  # the head really trained
