"""Precision policy: which dtype, scaler and memory format each device gets.

The choice itself is plain logic and is tested here on any machine (CUDA's answers are
stubbed); the CUDA runs at the end need a visible GPU and are skipped without one (the GPU
smoke bench, bench/cuda_smoke.py, covers them on GPU machines too).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from pipeline_lib.runtime import devices
from pipeline_lib.training.train import fit
from pipeline_lib.training.config import TrainConfig

CUDA = torch.device("cuda", 0)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a visible CUDA GPU")


@pytest.mark.parametrize(
    "bf16, amp, expected",
    [
        (True, True, ("bf16", torch.bfloat16, False, True)),
        (False, True, ("fp16", torch.float16, True, True)),  # no bf16: fp16 needs a GradScaler
        (True, False, ("fp32", None, False, True)),  # amp off: float32, still channels_last
        (False, False, ("fp32", None, False, True)),
    ],
)
def test_cuda_precision_choice(monkeypatch, bf16, amp, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    p = devices.precision(CUDA, amp=amp)
    assert (p.label, p.autocast_dtype, p.use_scaler, p.channels_last) == expected
    assert devices.precision(CUDA, amp=amp, channels_last=False).channels_last is False


@pytest.mark.parametrize("amp", [True, False])
def test_cpu_is_float32_without_scaler_or_channels_last(monkeypatch, amp):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # must not matter on CPU
    p = devices.precision(torch.device("cpu"), amp=amp)
    assert (p.label, p.autocast_dtype, p.use_scaler, p.channels_last) == ("fp32", None, False, False)
    assert p.make_scaler() is None
    x = torch.randn(2, 3, 4, 4)
    assert p.to_input(x) is x or torch.equal(p.to_input(x), x)
    with p.autocast():
        assert not torch.is_autocast_enabled("cpu")


def test_cuda_device_label_names_the_gpu_and_the_precision(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: f"Test GPU {index}")
    assert devices.describe_device(CUDA) == "cuda (Test GPU 0, fp16)"
    assert devices.describe_device(CUDA, amp=False) == "cuda (Test GPU 0, fp32)"


def test_cpu_channels_last_only_when_asked():
    cpu = torch.device("cpu")
    assert devices.precision(cpu, channels_last=True).channels_last is True
    assert devices.precision(cpu, channels_last=False).channels_last is False
    assert devices.precision(cpu, channels_last=None).channels_last is False
    assert devices.precision(CUDA, channels_last=None).channels_last is True  # CUDA's default


def test_channels_last_applies_to_4d_inputs_only():
    p = devices.Precision(torch.device("cpu"), None, False, True)
    x = torch.randn(2, 3, 5, 5)
    assert p.to_input(x).is_contiguous(memory_format=torch.channels_last)
    assert not x.is_contiguous(memory_format=torch.channels_last)
    flat = torch.randn(2, 7)
    assert p.to_input(flat).shape == flat.shape
    conv = p.prepare_model(nn.Conv2d(3, 4, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


# --- on a GPU -------------------------------------------------------------------------------------


def _tiny_fit(tmp_path, **config):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 2))
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(16, 3, 8, 8, generator=g), torch.tensor([0, 1] * 8))
    cfg = TrainConfig(epochs=2, batch_size=8, lr=0.05, seed=0, **config)
    return model, fit(model, data, data, cfg, device=CUDA, state_dir=tmp_path, progress=False)


@needs_cuda
def test_cuda_training_uses_the_chosen_precision(tmp_path):
    p = devices.precision(CUDA)
    model, result = _tiny_fit(tmp_path)
    assert result.device == devices.describe_device(CUDA) and p.label in result.device
    assert all(torch.isfinite(v).all() for v in result.best_state_dict.values() if v.is_floating_point())
    assert next(model.parameters()).dtype == torch.float32  # autocast: master weights stay float32


@needs_cuda
def test_cuda_fp16_with_grad_scaler_trains(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert devices.precision(CUDA).make_scaler() is not None
    _, result = _tiny_fit(tmp_path, grad_clip=1.0)
    assert "fp16" in result.device
    assert all(torch.isfinite(v).all() for v in result.best_state_dict.values() if v.is_floating_point())
