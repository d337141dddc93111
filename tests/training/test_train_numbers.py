"""The training loop's numbers against closed forms: LR per epoch, gradient clipping, weight
decay, the augmentation flags, and the direction of P(bad).

Each test computes what the loop should have done independently (a closed formula, autograd on
the same batch, torchvision's own flips) and compares it with what ``fit`` / the transforms did.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import TensorDataset

from pipeline_lib.runtime import devices
from pipeline_lib.training.loop import Checkpoint
from pipeline_lib.data.datasets import IMAGENET_MEAN, IMAGENET_STD, eval_transform, train_transform_for
from pipeline_lib.training.evaluation import predict_proba
from pipeline_lib.training.train import fit
from pipeline_lib.training.config import TrainConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _linear(seed: int = 0, size: int = 4) -> nn.Module:
    devices.seed_everything(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * size * size, 2))


def _data(n: int = 8, size: int = 4, scale: float = 1.0, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g) * scale
    y = torch.tensor([i % 2 for i in range(n)])
    return TensorDataset(x, y)


def _fit(model, data, tmp_path, **config):
    config.setdefault("seed", 0)
    config.setdefault("batch_size", len(data))
    return fit(model, data, data, TrainConfig(**config), device="cpu", state_dir=tmp_path, progress=False,
               restore_best=False)


# --- the learning-rate schedule -------------------------------------------------------------------


def closed_form_lr(schedule: str, epoch: int, *, lr: float, epochs: int, min_lr: float, step_size: int, gamma: float):
    """The LR in force during 0-based ``epoch`` (the schedule steps once after every epoch)."""
    if schedule == "cosine":
        return min_lr + (lr - min_lr) * (1 + math.cos(math.pi * epoch / epochs)) / 2
    if schedule == "step":
        return lr * gamma ** (epoch // step_size)
    return lr


@pytest.mark.parametrize("schedule", ["cosine", "step", "constant"])
def test_lr_of_every_epoch_and_group_is_the_closed_form(tmp_path, schedule):
    shape = dict(lr=0.2, epochs=7, min_lr=0.01, step_size=3, gamma=0.5)
    model = _linear()
    # two groups, as resnet_fbp: the second at a tenth of the first must follow the same schedule
    groups = [{"params": list(model[1].parameters())[:1], "lr": 0.2, "name": "head"},
              {"params": list(model[1].parameters())[1:], "lr": 0.02, "name": "backbone"}]
    result = fit(model, _data(), _data(), TrainConfig(batch_size=8, schedule=schedule, seed=0, **shape), device="cpu",
                 state_dir=tmp_path, progress=False, param_groups=groups)
    expected = [closed_form_lr(schedule, e, **shape) for e in range(shape["epochs"])]
    np.testing.assert_allclose(result.history["lr"].to_numpy(), expected, rtol=1e-9, atol=0)
    # after the last epoch the optimizer holds the next value of the schedule, in both groups
    # (each from its own base LR; cosine anneals both to the same min_lr)
    saved = Checkpoint(tmp_path).read()["state"]["optimizer"]["param_groups"]
    for group, base in zip(saved, (0.2, 0.02)):
        after = closed_form_lr(schedule, shape["epochs"], **dict(shape, lr=base))
        assert group["lr"] == pytest.approx(after, rel=1e-9, abs=1e-15)


def test_the_lr_schedule_changes_the_weights(tmp_path):
    # a schedule that never applied would leave the two runs equal
    runs = {}
    for schedule in ("constant", "step"):
        model = _linear()
        _fit(model, _data(), tmp_path / schedule, epochs=3, lr=0.1, schedule=schedule, step_size=1, gamma=0.1)
        runs[schedule] = model[1].weight.detach().clone()
    assert not torch.allclose(runs["constant"], runs["step"])


# --- one SGD step, recomputed with autograd ---------------------------------------------------------


def _gradient(model: nn.Module, data: TensorDataset) -> list[torch.Tensor]:
    x, y = data.tensors
    loss = F.cross_entropy(model(x), y)
    return list(torch.autograd.grad(loss, list(model.parameters())))


def _one_sgd_step(tmp_path, data, **config):
    model = _linear()
    before = [p.detach().clone() for p in model.parameters()]
    grads = _gradient(model, data)
    _fit(model, data, tmp_path, epochs=1, lr=1.0, momentum=0.0, schedule="constant", **config)
    after = [p.detach().clone() for p in model.parameters()]
    return before, grads, after


def _norm(tensors) -> float:
    return float(torch.sqrt(sum((t.double() ** 2).sum() for t in tensors)))


@pytest.mark.parametrize("clip", [None, 0.05, 1e6])
def test_grad_clip_bounds_the_update_norm(tmp_path, clip):
    data = _data(scale=20.0)  # large inputs: a gradient norm far above 0.05
    before, grads, after = _one_sgd_step(tmp_path, data, grad_clip=clip)
    g_norm = _norm(grads)
    assert g_norm > 1.0
    # torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when that is below 1
    scale = 1.0 if not clip else min(1.0, clip / (g_norm + 1e-6))
    for b, g, a in zip(before, grads, after):
        torch.testing.assert_close(a, b - scale * g, rtol=1e-5, atol=1e-6)
    step = _norm([a - b for a, b in zip(after, before)])
    if clip == 0.05:
        assert step == pytest.approx(0.05, rel=1e-4)
    else:
        assert step == pytest.approx(g_norm, rel=1e-4)


class WithIdle(nn.Module):
    """A linear head plus a parameter that gets an exact zero gradient (it is multiplied by 0)."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(48, 2)
        self.idle = nn.Parameter(torch.full((5,), 2.0))

    def forward(self, x):
        return self.linear(x.flatten(1)) + 0.0 * self.idle.sum()


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
@pytest.mark.parametrize("weight_decay", [0.0, 0.5])
def test_weight_decay_shrinks_a_weight_with_zero_gradient(tmp_path, optimizer, weight_decay):
    devices.seed_everything(0)
    model = WithIdle()
    lr = 0.1
    _fit(model, _data(), tmp_path, epochs=1, lr=lr, optimizer=optimizer, weight_decay=weight_decay,
         schedule="constant", momentum=0.9)
    p0 = 2.0
    if optimizer in ("sgd", "adamw"):
        # SGD: p - lr * (0 + wd * p) (first step: the momentum buffer is that gradient);
        # AdamW: decoupled p * (1 - lr * wd), then an Adam step of a zero gradient (no move)
        expected = p0 * (1 - lr * weight_decay)
    else:
        # Adam: L2 in the gradient, g = wd * p; one bias-corrected step moves by lr * g / (|g| + eps)
        g = weight_decay * p0
        expected = p0 - lr * g / (abs(g) + 1e-8)
    torch.testing.assert_close(model.idle.detach(), torch.full((5,), expected), rtol=1e-6, atol=1e-7)


# --- augmentation flags ----------------------------------------------------------------------------


def _picture(size: int = 16) -> Image.Image:
    """A non-uniform, asymmetric RGB image with no pixel at 0 (so padding and Cutout show)."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(40, 256, (size, size, 3), dtype=np.uint8)
    pixels[:4, :8] = 255  # bright block in the top-left corner: every flip moves it
    return Image.fromarray(pixels)


def _draws(augment, n: int = 24, size: int = 16) -> list[torch.Tensor]:
    tf = train_transform_for(size, augment)
    torch.manual_seed(0)
    return [tf(_picture(size)) for _ in range(n)]


def _normalised_zero() -> torch.Tensor:
    """What a black (0) pixel becomes after ToDtype + Normalize, per channel."""
    return (0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)


def test_no_augmentation_is_the_eval_transform():
    base = eval_transform(16)(_picture())
    assert all(torch.equal(out, base) for out in _draws({}))
    assert all(torch.equal(out, base) for out in _draws(None))
    flags_off = {"hflip": False, "vflip": False, "rotation_deg": 0.0, "crop_scale": 1.0, "cutout": 0}
    assert all(torch.equal(out, base) for out in _draws(flags_off))


@pytest.mark.parametrize("flag, dim", [("hflip", -1), ("vflip", -2)])
def test_flip_flags_mirror_the_image_along_their_axis_only(flag, dim):
    base = eval_transform(16)(_picture())
    mirrored = base.flip(dim)
    outs = _draws({flag: True})
    kinds = ["mirrored" if torch.equal(o, mirrored) else "same" if torch.equal(o, base) else "other" for o in outs]
    assert "other" not in kinds  # only ever the image or its mirror along that axis
    assert 6 <= kinds.count("mirrored") <= 18  # RandomHorizontal/VerticalFlip: p = 0.5, 24 draws


def test_rotation_turns_the_image_and_fills_the_corners_black():
    base = eval_transform(16)(_picture())
    zero = _normalised_zero()[:, None, None]
    assert (base - zero).abs().amin() > 0.1  # no black pixel in the source
    rotated = 0
    for out in _draws({"rotation_deg": 30.0}):
        black = ((out - zero).abs() < 1e-6).all(0)
        if torch.equal(out, base):  # an angle too small to move a pixel (nearest interpolation)
            continue
        rotated += 1
        assert black.any() and not black[4:12, 4:12].any()  # the fill enters at the corners, never the centre
    assert rotated >= 16  # a uniform angle in +-30 deg moves pixels in most of 24 draws


def test_crop_scale_crops_and_resizes():
    base = eval_transform(16)(_picture())
    outs = _draws({"crop_scale": 0.3})
    assert all(tuple(o.shape) == (3, 16, 16) for o in outs)
    assert sum(not torch.allclose(o, base, atol=1e-3) for o in outs) >= 22
    # a crop of at most the whole picture: the top-left bright block (255) is never brighter
    assert max(float(o.amax()) for o in outs) <= float(base.amax()) + 1e-5


def test_cutout_zeroes_one_square_of_the_normalised_image():
    base = eval_transform(16)(_picture())
    assert int((base == 0).sum()) == 0
    for out in _draws({"cutout": 6}):
        zeros = (out == 0).all(0)
        rows, cols = torch.nonzero(zeros, as_tuple=True)
        assert len(rows) > 0  # the square's centre is always inside the image
        h, w = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        assert h <= 6 and w <= 6 and int(zeros.sum()) == h * w  # one filled rectangle, clipped at the border
        keep = ~zeros
        assert torch.equal(out[:, keep], base[:, keep])  # nothing else changed


# --- P(bad) and its direction -------------------------------------------------------------------------


class FixedLogits(nn.Module):
    """logits (0, z) with z the image mean: P(bad) = sigmoid(z) exactly."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        z = x.mean(dim=(1, 2, 3))
        return torch.stack([torch.zeros_like(z), z + 0 * self.dummy], dim=1)


def test_predict_proba_is_the_softmax_of_class_one():
    data = _data(n=10, scale=3.0)
    probs = predict_proba(FixedLogits(), data, batch_size=3, device="cpu")
    z = data.tensors[0].double().mean(dim=(1, 2, 3))
    np.testing.assert_allclose(probs, torch.sigmoid(z).numpy(), rtol=1e-6)


def test_evaluate_is_the_mean_cross_entropy_and_the_argmax_accuracy():
    from pipeline_lib.training.evaluation import evaluate

    data = _data(n=11, scale=3.0)  # 11 images in batches of 4: a short last batch
    loss, acc = evaluate(FixedLogits(), data, batch_size=4, device="cpu")
    z = data.tensors[0].double().mean(dim=(1, 2, 3)).numpy()
    y = data.tensors[1].numpy()
    # logits (0, z): -log softmax of the true class, by hand
    nll = np.where(y == 1, np.log1p(np.exp(-z)), np.log1p(np.exp(z)))
    assert loss == pytest.approx(nll.mean(), rel=1e-6)
    assert acc == np.mean((z > 0).astype(int) == y)
    assert 0 < acc < 1  # both right and wrong predictions in the set


def test_cutout_square_is_centred_on_its_draw_and_clipped_at_the_border():
    from pipeline_lib.data.datasets import Cutout

    image = torch.ones(3, 10, 12)
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        cy, cx = int(torch.randint(10, (1,), generator=g)), int(torch.randint(12, (1,), generator=g))
        out = Cutout(4, generator=torch.Generator().manual_seed(seed))(image)
        expected = image.clone()
        expected[:, max(cy - 2, 0):min(cy + 2, 10), max(cx - 2, 0):min(cx + 2, 12)] = 0
        assert torch.equal(out, expected), seed
    assert torch.equal(image, torch.ones(3, 10, 12))  # the input is not changed in place
    assert Cutout(0)(image) is image and repr(Cutout(6)) == "Cutout(length=6)"
    with pytest.raises(ValueError, match="cutout length must be >= 0, got -1"):
        Cutout(-1)
    with pytest.raises(TypeError, match="Cutout needs a \\(C, H, W\\) tensor .* got Image"):
        Cutout(4)(_picture())


def test_chip_images_pairs_each_path_with_its_label(tmp_path):
    import pandas as pd

    from pipeline_lib.data.datasets import ChipImages

    paths = []
    for i, colour in enumerate([(255, 0, 0), (0, 0, 255)]):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.new("RGB", (6, 6), colour).save(paths[-1])
    # the split table stores labels as int8: the dataset hands out int64 labels (cross-entropy's type)
    ds = ChipImages(pd.DataFrame({"path": paths, "label": np.array([1, 0], dtype=np.int8)}), eval_transform(4))
    assert len(ds) == 2 and ds.labels.tolist() == [1, 0] and ds.labels.dtype == np.int64
    (red, label_red), (blue, label_blue) = ds[0], ds[1]
    assert (label_red, label_blue) == (1, 0) and type(label_red) is int
    assert red[0].mean() > red[2].mean() and blue[2].mean() > blue[0].mean()


def test_seed_worker_derives_numpy_and_random_seeds_from_torch():
    import random

    from pipeline_lib.data.datasets import seed_worker

    torch.manual_seed(2**32 + 5)  # the worker's torch seed; numpy and random get it modulo 2**32
    seed_worker(0)
    drawn = (np.random.rand(), random.random())
    np.random.seed(5)
    random.seed(5)
    assert drawn == (np.random.rand(), random.random())


@pytest.mark.parametrize("mode", ["I;16", "I"])
def test_16_and_32_bit_grey_is_scaled_to_8_bits_not_clipped(tmp_path, mode):
    from pipeline_lib.data.datasets import load_rgb

    raw = np.array([[0, 1000, 32896, 65535], [-300, 128, 70000, 257]])
    if mode == "I;16":
        raw = np.clip(raw, 0, 65535)
        image = Image.fromarray(raw.astype(np.uint16))
    else:  # 32-bit signed grey (PNG cannot hold it; TIFF can): negative and too large values occur
        image = Image.fromarray(raw.astype(np.int32))
    path = tmp_path / ("deep.png" if mode == "I;16" else "deep.tiff")
    image.save(path)
    with Image.open(path) as check:
        assert check.mode == mode
    rgb = np.asarray(load_rgb(str(path)))
    # value / 257, rounded, after clipping to the 16-bit range: 65535 -> 255, 32896 -> 128, 1000 -> 4
    expected = np.rint(np.clip(raw, 0, 65535) / 257).astype(np.uint8)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 4, 3)
    assert all(np.array_equal(rgb[..., c], expected) for c in range(3))


def test_an_unreadable_image_names_its_file(tmp_path):
    from pipeline_lib.data.datasets import load_rgb
    from pipeline_lib.io.errors import PipelineError

    (tmp_path / "text.png").write_text("not a picture")
    with pytest.raises(PipelineError, match=r"^\S+text\.png: cannot be read as an image \(.+\); re-run ingest$"):
        load_rgb(str(tmp_path / "text.png"))
    with pytest.raises(PipelineError, match=r"gone\.png: cannot be read as an image"):
        load_rgb(str(tmp_path / "gone.png"))


def test_train_transform_defaults_are_all_off():
    from pipeline_lib.data.datasets import train_transform

    torch.manual_seed(0)
    assert torch.equal(train_transform(16)(_picture()), eval_transform(16)(_picture()))
    rng = np.random.default_rng(2)  # large enough for a small default rotation to show
    picture = Image.fromarray(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8))
    assert all(torch.equal(train_transform(128)(picture), eval_transform(128)(picture)) for _ in range(16))


def test_downscaling_is_antialiased_as_in_the_eval_transform():
    # 32 -> 8 px: antialiasing averages the fine checkerboard; without it the result aliases
    checker = np.indices((32, 32)).sum(0) % 2 * 200 + 40
    picture = Image.fromarray(np.repeat(checker[..., None], 3, axis=2).astype(np.uint8))
    out = train_transform_for(8, {})(picture)
    assert torch.equal(out, eval_transform(8)(picture))
    grey = (140 / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)  # the checkerboard's mean
    torch.testing.assert_close(out.mean(dim=(1, 2)), grey, atol=0.05, rtol=0)
    assert float(out.std(dim=(1, 2)).max()) < 0.1


def test_crop_scale_bounds_the_crop_area():
    # left half bright, right half dark: a crop of >= 90 % of the area keeps the mean near the
    # image's; torchvision's default range (down to 8 %) would often crop into one half
    pixels = np.full((32, 32, 3), 40, np.uint8)
    pixels[:, :16] = 255
    picture = Image.fromarray(pixels)
    base = eval_transform(32)(picture)
    tf = train_transform_for(32, {"crop_scale": 0.9})
    torch.manual_seed(0)
    shifts = [abs(float(tf(picture).mean() - base.mean())) for _ in range(24)]
    assert max(shifts) < 0.5


def test_a_rotation_of_one_degree_still_rotates():
    # on a large image a 1 degree turn moves the corners by pixels: the flag is not rounded away
    rng = np.random.default_rng(1)
    picture = Image.fromarray(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8))
    base = eval_transform(128)(picture)
    tf = train_transform_for(128, {"rotation_deg": 1.0})
    torch.manual_seed(0)
    assert sum(not torch.equal(tf(picture), base) for _ in range(8)) >= 2  # angles near 0 move nothing
    off = train_transform_for(128, {})  # and no rotation at all when the key is absent
    assert all(torch.equal(off(picture), base) for _ in range(16))


def test_split_logits_separates_the_auxiliary_head():
    from pipeline_lib.training.evaluation import split_logits

    main, aux = torch.zeros(2, 2), torch.ones(2, 2)
    assert split_logits(main) == (main, None)
    got = split_logits((main, aux))
    assert got[0] is main and got[1] is aux
    got = split_logits([main])
    assert got[0] is main and got[1] is None


def test_evaluation_does_not_draw_from_the_global_rng():
    # validation runs between training epochs: it must not move the RNG that dropout, the
    # augmentations and the next epoch's shuffling draw from
    from pipeline_lib.training.evaluation import evaluate

    torch.manual_seed(123)
    before = torch.get_rng_state()
    evaluate(FixedLogits(), _data(n=6), batch_size=4, device="cpu")
    predict_proba(FixedLogits(), _data(n=6), batch_size=4, device="cpu")
    assert torch.equal(torch.get_rng_state(), before)
