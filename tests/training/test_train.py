"""The shared training loop: learning, resume (bitwise), real kills, best-on-val, early stop, devices."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from pipeline_lib.runtime import devices
from pipeline_lib.training.checkpoint import load_weights
from pipeline_lib.training.loop import Checkpoint
from pipeline_lib.io.errors import PipelineError
from pipeline_lib.models.networks import build_model
from pipeline_lib.data.datasets import Cutout, train_transform_for
from pipeline_lib.training.evaluation import evaluate, predict_proba
from pipeline_lib.training.train import HISTORY_COLUMNS, fit
from pipeline_lib.training.config import TrainConfig

TESTS = Path(__file__).resolve().parent.parent
REPO = TESTS.parent
_spec = importlib.util.spec_from_file_location("train_victim", TESTS / "train_victim.py")
victim = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(victim)
Squares = victim.Squares


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small_cnn(seed: int = 0, **kwargs) -> nn.Module:
    devices.seed_everything(seed)
    kwargs.setdefault("channels", (4, 8))
    return build_model("cnn2", image_size=16, **kwargs)


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k].cpu(), b[k].cpu()) for k in a)


# --- learning -----------------------------------------------------------------------------------


def test_loop_learns_separable_images(tmp_path):
    config = TrainConfig(epochs=6, batch_size=16, lr=0.01, optimizer="adam", schedule="constant", seed=0)
    model = small_cnn(channels=(8, 16))
    result = fit(
        model, Squares(64, seed=0, noise=0.1), Squares(32, seed=1), config,
        device="cpu", state_dir=tmp_path / "state", history_csv=tmp_path / "history.csv", progress=False,
    )
    h = result.history
    assert list(h.columns) == HISTORY_COLUMNS and len(h) == 6 == result.epochs_run
    assert h.train_loss.iloc[-1] < 0.6 * h.train_loss.iloc[0]
    assert h.val_loss.min() < h.val_loss.iloc[0]
    assert result.best_val_acc >= 0.85  # chance is 0.5
    assert result.device == "cpu" and result.wall_time_s > 0 and not result.stopped_early
    on_disk = pd.read_csv(tmp_path / "history.csv")
    assert list(on_disk.columns) == HISTORY_COLUMNS and len(on_disk) == 6
    probs = predict_proba(model, Squares(32, seed=1), batch_size=8, device="cpu")
    assert probs.shape == (32,) and np.all((probs >= 0) & (probs <= 1))
    labels = np.array(Squares(32, seed=1).labels)
    assert ((probs > 0.5) == labels).mean() == pytest.approx(result.best_val_acc)


def test_channels_last_on_cpu_trains_the_same_weights_in_the_other_layout(tmp_path):
    # The memory format is a speed choice only: the same run in either layout ends with the same
    # weights up to float rounding, and the channels_last run really used that layout.
    config = dict(epochs=2, batch_size=16, lr=0.01, optimizer="adam", schedule="cosine", seed=0, augment={"hflip": True})
    runs = {}
    for channels_last in (None, True):
        model = small_cnn(channels=(8, 16))
        fit(model, Squares(48, seed=0, noise=0.1), Squares(16, seed=1), TrainConfig(**config, channels_last=channels_last),
            device="cpu", state_dir=tmp_path / f"state{channels_last}", progress=False)
        runs[channels_last] = model
    conv = next(m for m in runs[True].modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and conv.weight.shape[2] > 1
    conv = next(m for m in runs[None].modules() if isinstance(m, nn.Conv2d))
    assert not conv.weight.is_contiguous(memory_format=torch.channels_last)
    a, b = runs[None].state_dict(), runs[True].state_dict()
    assert a.keys() == b.keys() and not states_equal(a, {k: torch.zeros_like(v) for k, v in b.items()})
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    probs = [predict_proba(runs[c], Squares(16, seed=1), batch_size=8, device="cpu", channels_last=c) for c in (None, True)]
    np.testing.assert_allclose(probs[0], probs[1], rtol=1e-4, atol=1e-6)


def test_channels_last_must_be_null_or_a_bool():
    with pytest.raises(PipelineError, match=r"channels_last: 'yes' is invalid"):
        TrainConfig(epochs=1, batch_size=2, lr=0.1, channels_last="yes").validate()


# --- resume -------------------------------------------------------------------------------------


class StopAt(Exception):
    pass


def _resume_config() -> TrainConfig:
    # Momentum, cosine schedule, dropout, noisy "augmentation" and shuffling: every piece of
    # state the checkpoint has to carry for a bitwise-equal continuation.
    return TrainConfig(epochs=4, batch_size=8, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4,
                       schedule="cosine", grad_clip=5.0, seed=3)


def _resume_fit(state_dir, **kwargs):
    model = small_cnn(seed=7, dropout=0.3)
    result = fit(model, Squares(20, noise=0.3), Squares(8, seed=1), _resume_config(), device="cpu",
                 state_dir=state_dir, progress=False, restore_best=False, **kwargs)
    return model, result


def test_resume_after_interruption_is_bitwise_identical(tmp_path, caplog):
    full_model, full = _resume_fit(tmp_path / "full")

    def stop_at_2(model, epoch, epochs):
        if epoch == 2:
            raise StopAt

    with pytest.raises(StopAt):
        _resume_fit(tmp_path / "part", on_epoch_start=stop_at_2)
    assert Checkpoint(tmp_path / "part").read()["epoch"] == 2

    seen_epochs = []
    with caplog.at_level(logging.INFO):
        resumed_model, resumed = _resume_fit(tmp_path / "part", on_epoch_start=lambda m, e, n: seen_epochs.append(e))
    assert "resumed from epoch 2 of 4" in caplog.text
    assert seen_epochs == [2, 3] and resumed.resumed_from == 2
    assert states_equal(full_model.state_dict(), resumed_model.state_dict())  # last weights
    assert states_equal(full.best_state_dict, resumed.best_state_dict)
    assert full.best_epoch == resumed.best_epoch
    cols = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr"]
    pd.testing.assert_frame_equal(full.history[cols], resumed.history[cols])


def test_changed_config_starts_fresh_and_bad_checkpoint_names_file(tmp_path, caplog):
    config = TrainConfig(epochs=1, batch_size=8, lr=0.05, seed=0)
    fit(small_cnn(), Squares(8), Squares(4, seed=1), config, device="cpu", state_dir=tmp_path, progress=False)
    with caplog.at_level(logging.INFO):
        result = fit(small_cnn(), Squares(8), Squares(4, seed=1), TrainConfig(epochs=1, batch_size=8, lr=0.01, seed=0),
                     device="cpu", state_dir=tmp_path, progress=False)
    assert "belongs to a different run" in caplog.text and result.resumed_from is None

    Checkpoint(tmp_path).path.write_bytes(b"not a checkpoint")
    with pytest.raises(PipelineError, match=r"checkpoint\.pt.*delete it"):
        fit(small_cnn(), Squares(8), Squares(4, seed=1), config, device="cpu", state_dir=tmp_path, progress=False)


# --- a real kill --------------------------------------------------------------------------------


def _victim(state_dir, out_dir, *, delay, epochs=4, **popen):
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    cmd = [sys.executable, str(TESTS / "train_victim.py"), "--state-dir", str(state_dir), "--out-dir", str(out_dir),
           "--epochs", str(epochs), "--delay", str(delay)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def _temps(*dirs):
    return sorted(p.name for d in dirs if d.exists() for p in d.iterdir() if ".tmp-" in p.name)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_run_leaves_no_partial_outputs_and_resumes(tmp_path, caplog, sig):
    state_dir, out_dir = tmp_path / "state", tmp_path / "out"
    # 16 images: ~0.8 s per epoch, 8 epochs: the kill lands long before the end
    proc = _victim(state_dir, out_dir, delay=0.05, epochs=8)
    deadline = time.monotonic() + 60
    try:
        while not (Checkpoint(state_dir).path.exists() and (out_dir / "history.csv").exists()):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no checkpoint within 60 s"
            time.sleep(0.02)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if sig == signal.SIGTERM:
        assert proc.returncode == 143, err
        assert "SIGTERM" in err and "rerun to resume" in err
        assert _temps(state_dir, out_dir) == []  # the handler let atomic writes clean up
    else:
        assert proc.returncode == -signal.SIGKILL
    # Killed mid-training: the final outputs were never written, nothing half-written sits
    # under a final name, and the kept checkpoint is complete.
    assert not (out_dir / "model.pt").exists() and not (out_dir / "metrics.json").exists()
    killed_at = Checkpoint(state_dir).read()["epoch"]
    assert 1 <= killed_at < 8
    history = pd.read_csv(out_dir / "history.csv")
    assert list(history.columns) == HISTORY_COLUMNS and len(history) >= 1

    # The rerun (in-process: a second interpreter start costs more than the training) reads
    # the checkpoint the killed process left and finishes the remaining epochs.
    with caplog.at_level(logging.INFO):
        assert victim.main(["--state-dir", str(state_dir), "--out-dir", str(out_dir), "--epochs", "8"]) == 0
    assert f"resumed from epoch {killed_at} of 8" in caplog.text
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["epochs_run"] == 8 and metrics["resumed_from"] == killed_at
    state_dict, meta = load_weights(out_dir / "model.pt")
    assert meta["best_epoch"] == metrics["best_epoch"] and state_dict
    assert len(pd.read_csv(out_dir / "history.csv")) == 8
    assert _temps(state_dir) == []  # stale temporaries in the state dir are swept on start


# --- best-on-validation and early stopping ------------------------------------------------------


def test_best_state_is_lowest_val_loss_not_last(tmp_path):
    # Validation labels are the training labels inverted: the better the net learns the
    # training task, the worse its validation loss, so the best epoch is an early one.
    val = Squares(16, seed=1, flip_labels=True)
    config = TrainConfig(epochs=5, batch_size=8, lr=0.01, optimizer="adam", schedule="constant", seed=0)
    model = small_cnn()
    result = fit(model, Squares(32, noise=0.1), val, config, device="cpu", state_dir=tmp_path, progress=False,
                 restore_best=False)
    h = result.history
    assert result.best_epoch == int(h.epoch[h.val_loss.idxmin()])
    assert result.best_epoch < result.epochs_run == 5
    assert result.best_val_loss == pytest.approx(h.val_loss.min())
    last_state = {k: v.clone() for k, v in model.state_dict().items()}
    assert not states_equal(last_state, result.best_state_dict)
    model.load_state_dict(result.best_state_dict)
    loss, acc = evaluate(model, val, batch_size=8, device="cpu")
    assert loss == pytest.approx(result.best_val_loss, rel=1e-6)
    assert loss < h.val_loss.iloc[-1]


def test_early_stopping_after_patience_epochs(tmp_path):
    val = Squares(16, seed=1, flip_labels=True)
    config = TrainConfig(epochs=12, batch_size=8, lr=0.01, optimizer="adam", schedule="constant", patience=2, seed=0)
    result = fit(small_cnn(), Squares(32, noise=0.1), val, config, device="cpu", state_dir=tmp_path, progress=False)
    assert result.stopped_early
    assert result.epochs_run == result.best_epoch + 2 < 12
    after = result.history.val_loss.iloc[result.best_epoch:]
    assert (after >= result.best_val_loss).all()
    # resuming a finished (early-stopped) run trains nothing more
    again = fit(small_cnn(), Squares(32, noise=0.1), val, config, device="cpu", state_dir=tmp_path, progress=False)
    assert again.epochs_run == result.epochs_run and again.resumed_from == result.epochs_run
    assert states_equal(again.best_state_dict, result.best_state_dict)


# --- hooks for the NAS networks -----------------------------------------------------------------


class AuxNet(nn.Module):
    """Returns (logits, aux_logits) in training mode, logits in eval mode, like DARTS."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(4, 2)
        self.aux = nn.Linear(4, 2)
        self.drop_prob = None

    def forward(self, x):
        z = self.body(x)
        return (self.head(z), self.aux(z)) if self.training else self.head(z)


def test_aux_logits_and_epoch_hook(tmp_path):
    devices.seed_everything(0)
    net = AuxNet()

    def ramp(model, epoch, epochs):
        model.drop_prob = 0.2 * epoch / epochs

    config = TrainConfig(epochs=2, batch_size=8, lr=0.05, aux_weight=0.4, seed=0)
    fit(net, Squares(16), Squares(8, seed=1), config, device="cpu", state_dir=tmp_path, on_epoch_start=ramp,
        progress=False)
    assert net.drop_prob == pytest.approx(0.1)
    assert net.aux.weight.grad is not None  # the auxiliary head took part in the loss


def test_augment_transform_and_cutout():
    devices.seed_everything(0)
    image = torch.ones(3, 16, 16)
    cut = Cutout(8)(image)
    assert cut.shape == image.shape and 0 < (cut == 0).sum() <= 3 * 64 and image.min() == 1
    tf = train_transform_for(16, {"hflip": True, "rotation_deg": 5.0, "crop_scale": 0.8, "cutout": 4})
    from PIL import Image

    out = tf(Image.new("RGB", (24, 24), (200, 10, 10)))
    assert tuple(out.shape) == (3, 16, 16) and out.dtype == torch.float32


def test_config_from_params_names_bad_keys():
    config = TrainConfig.from_params({"epochs": 3, "batch_size": 4, "lr": 0.1, "augment": {"hflip": True}})
    assert config.epochs == 3 and config.augment == {"hflip": True}
    with pytest.raises(PipelineError, match=r"train\.lrr: unknown key"):
        TrainConfig.from_params({"epochs": 3, "batch_size": 4, "lrr": 0.1})
    with pytest.raises(PipelineError, match=r"train\.lr: missing key"):
        TrainConfig.from_params({"epochs": 3, "batch_size": 4})
    with pytest.raises(PipelineError, match=r"train\.optimizer"):
        TrainConfig.from_params({"epochs": 3, "batch_size": 4, "lr": 0.1, "optimizer": "lbfgs"})
    with pytest.raises(PipelineError, match=r"augment\.mixup: unknown key"):
        TrainConfig.from_params({"epochs": 3, "batch_size": 4, "lr": 0.1, "augment": {"mixup": 1}})


# --- devices ------------------------------------------------------------------------------------


def test_select_device_needs_a_granted_and_visible_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.select_device(1) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert devices.select_device(0) == torch.device("cpu")
    assert devices.select_device(1).type == "cuda"


def test_cpu_precision_is_plain_float32():
    p = devices.precision(torch.device("cpu"))
    assert p.autocast_dtype is None and p.make_scaler() is None and not p.channels_last
    assert devices.describe_device(torch.device("cpu")) == "cpu"
    assert devices.configure_threads(1) == 1


def test_rng_capture_restore_roundtrip():
    import random

    g = devices.loader_generator(5)
    devices.seed_everything(11)
    torch.randperm(10, generator=g)
    state = devices.capture_rng(g)
    first = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=g).item())
    random.random(), np.random.rand(), torch.rand(3)
    devices.restore_rng(state, g)
    assert (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=g).item()) == first


# --- class weights ------------------------------------------------------------------------------


def test_balanced_class_weights_follow_scikit_learn():
    from sklearn.utils.class_weight import compute_class_weight

    from pipeline_lib.training.train import balanced_class_weights

    labels = np.array([0] * 7 + [1] * 3)
    expected = compute_class_weight("balanced", classes=np.array([0, 1]), y=labels)
    assert torch.allclose(balanced_class_weights(labels), torch.tensor(expected, dtype=torch.float32))
    with pytest.raises(PipelineError, match="a class has no training images"):
        balanced_class_weights(np.zeros(5, dtype=int))


class _Uninformative(torch.utils.data.Dataset):
    """Identical grey images (nothing to learn from but the class frequencies) with the given labels."""

    def __init__(self, labels):
        self.labels = np.asarray(labels, dtype=np.int64)
        self.images = torch.full((len(labels), 3, 16, 16), 0.5)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], int(self.labels[i])


def test_balanced_class_weight_stops_the_majority_class_from_winning(tmp_path):
    # 90 % good, no signal: the unweighted loss is minimised by predicting "good" (P(bad) ~ 0.1);
    # weighted, both classes count equally and P(bad) sits near 0.5 on a balanced set. The final
    # weights are compared: best-on-validation would pick the least skewed epoch of either run.
    train = _Uninformative([0] * 90 + [1] * 10)
    val = _Uninformative([0, 1] * 20)
    mean_p_bad = {}
    for mode in ("none", "balanced"):
        config = TrainConfig(epochs=8, batch_size=20, lr=0.01, optimizer="adam", schedule="constant", seed=0,
                             class_weight=mode)
        model = small_cnn()
        fit(model, train, val, config, device="cpu", state_dir=tmp_path / mode, progress=False, restore_best=False)
        mean_p_bad[mode] = float(predict_proba(model, val, batch_size=20, device="cpu").mean())
    assert mean_p_bad["none"] < 0.25
    assert 0.35 < mean_p_bad["balanced"] < 0.65


def test_class_weight_needs_labels_and_a_known_mode(tmp_path):
    with pytest.raises(PipelineError, match="class_weight"):
        TrainConfig.from_params({"epochs": 1, "batch_size": 2, "lr": 0.1, "class_weight": "auto"})
    no_labels = torch.utils.data.TensorDataset(torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 0, 1]))
    config = TrainConfig(epochs=1, batch_size=2, lr=0.1, class_weight="balanced")
    with pytest.raises(PipelineError, match=r"needs a training set with a \.labels array"):
        fit(small_cnn(), no_labels, no_labels, config, device="cpu", state_dir=tmp_path, progress=False)
