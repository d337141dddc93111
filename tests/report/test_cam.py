"""CAM and Grad-CAM (pipeline_lib.report.cam): by-hand equalities and a known important region."""

import pandas as pd
import pytest
import torch
from torch import nn

from pipeline_lib.io.errors import PipelineError
from pipeline_lib.models.networks import build_model
from pipeline_lib.report.cam import (
    class_activation_map,
    find_module,
    grad_cam,
    maps_for_samples,
    normalize,
    select_samples,
    upsample,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(name, seed=0, image_size=64):
    torch.manual_seed(seed)
    model = build_model(name, image_size=image_size).eval()
    # a trained-looking head (random init is tiny); the equalities hold for any weights
    with torch.no_grad():
        model.classifier.weight.normal_(0, 1)
        model.classifier.bias.normal_(0, 1)
    return model


def _hooked(model, layer_name, x):
    out = {}
    handle = find_module(model, layer_name).register_forward_hook(lambda m, i, o: out.setdefault("a", o.detach()))
    with torch.no_grad():
        logits = model(x)
    handle.remove()
    return out["a"], logits


@pytest.mark.parametrize("name,layer", [("resnet_fbp", "features.layer4"), ("cnn2", "features.7")])
def test_cam_is_the_fc_weighted_sum_of_the_last_feature_maps(name, layer):
    model = _model(name)
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    classes = torch.tensor([0, 1, 1])
    cam, logits = class_activation_map(model, x, classes)

    maps, logits_ref = _hooked(model, layer, x)  # what enters global average pooling
    w = model.classifier.weight.detach()
    by_hand = torch.stack([(w[c][:, None, None] * maps[i]).sum(0) for i, c in enumerate(classes.tolist())])
    assert cam.shape == maps.shape[:1] + maps.shape[2:]
    torch.testing.assert_close(cam, by_hand, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits, logits_ref)
    # GAP + linear: each logit is the CAM's mean plus the bias
    b = model.classifier.bias.detach()
    torch.testing.assert_close(cam.mean((1, 2)) + b[classes], logits[torch.arange(3), classes], rtol=1e-4, atol=1e-4)
    # the two classes' maps differ (the wrong-label panel is not a copy)
    other, _ = class_activation_map(model, x, 1 - classes)
    assert not torch.allclose(other, cam)


def test_gradcam_at_the_last_conv_of_a_gap_linear_net_is_relu_cam_over_area():
    model = _model("resnet_fbp")
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(2))
    cam, _ = class_activation_map(model, x, 1)
    gcam, _ = grad_cam(model, x, 1, "features.layer4")
    h, w = cam.shape[-2:]
    assert (h, w) == (3, 3)
    torch.testing.assert_close(gcam, torch.relu(cam) / (h * w), rtol=1e-4, atol=1e-6)


def test_cam_refuses_a_network_without_gap_and_linear():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 2)).eval()
    with pytest.raises(PipelineError, match="global average pooling"):
        class_activation_map(net, torch.randn(1, 3, 16, 16), 0)


class PatchNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.classifier = nn.Linear(8, 2)

    def forward(self, x):
        return self.classifier(self.features(x))


def _patch_images(n, gen, size=16, patch=4):
    """Noise in [0, 0.3]; class 1 has a bright 4x4 patch somewhere: the label depends only on it."""
    x = torch.rand(n, 1, size, size, generator=gen) * 0.3
    y = torch.randint(0, 2, (n,), generator=gen)
    r, c = torch.randint(0, size - patch + 1, (2, n, 1, 1), generator=gen)
    ii, jj = torch.arange(size)[None, :, None], torch.arange(size)[None, None, :]
    mask = (ii >= r) & (ii < r + patch) & (jj >= c) & (jj < c + patch)
    x[:, 0][mask & (y[:, None, None] == 1)] = 1.0
    return x, y, mask


def test_gradcam_puts_most_of_the_mass_on_the_patch_that_decides_the_label():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    net = PatchNet()
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(80):
        x, y, _ = _patch_images(64, gen)
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y, mask = _patch_images(64, gen)
    net.eval()
    assert (net(x).argmax(1) == y).float().mean() > 0.95
    pos = y == 1
    maps = normalize(upsample(grad_cam(net, x[pos], 1, "features.3")[0], (16, 16)))
    inside = (maps * mask[pos]).sum((1, 2)) / maps.sum((1, 2))
    # the patch is 16 of 256 pixels (6 %); Grad-CAM puts most of its mass there
    assert inside.mean() > 0.5, inside
    assert inside.min() > 0.3, inside


def test_gradcam_works_through_a_frozen_backbone_and_names_a_bad_layer():
    torch.manual_seed(0)
    model = build_model("resnet_ll", image_size=32).eval()  # backbone has requires_grad=False
    x = torch.randn(2, 3, 64, 64)
    cam, logits = grad_cam(model, x, [0, 1], "features.layer3")
    assert cam.shape == (2, 4, 4) and logits.shape == (2, 2)
    with pytest.raises(PipelineError, match="no layer 'features.layer9'"):
        grad_cam(model, x, 0, "features.layer9")


def test_maps_for_samples_are_image_sized_in_unit_range_for_both_labels():
    model = _model("cnn2", image_size=32)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    for method, layer in (("cam", None), ("gradcam", "features.6")):
        out = maps_for_samples(model, x, [0, 1, 0, 1], method=method, layer=layer)
        for key in ("correct", "wrong"):
            assert out[key].shape == (4, 32, 32)
            assert out[key].min() >= 0 and out[key].max() <= 1
        assert out["prob_bad"].shape == (4,)
        assert tuple(out["map_size"]) == ((8, 8) if method == "cam" else (16, 16))


def test_normalize_flat_map_is_zero_not_nan():
    maps = torch.stack([torch.ones(2, 2), torch.tensor([[0.0, 1.0], [2.0, 3.0]])])
    out = normalize(maps)
    assert torch.equal(out[0], torch.zeros(2, 2))
    torch.testing.assert_close(out[1], torch.tensor([[0.0, 1 / 3], [2 / 3, 1.0]]))
    # a 1x1 map (ResNet layer4 at 32 px) upsampled: rounding noise only, so no pattern
    one = upsample(torch.tensor([[[3.7]], [[-0.123]]]), (32, 32))
    assert torch.equal(normalize(one), torch.zeros(2, 32, 32))


def test_select_samples_takes_each_group_and_is_seeded():
    rows = [
        {"id": f"{s}{lab}{i}", "path": f"/x/{s}{lab}{i}.jpg", "label": lab, "split": s}
        for s in ("train", "val", "test")
        for lab in (0, 1)
        for i in range(6)
    ]
    frame = pd.DataFrame(rows).sample(frac=1.0, random_state=1)  # order must not matter
    a = select_samples(frame, 2, seed=5)
    b = select_samples(frame.sample(frac=1.0, random_state=2), 2, seed=5)
    assert list(a["id"]) == list(b["id"])
    assert list(zip(a["split"], a["label"])) == [("train", 0)] * 2 + [("train", 1)] * 2 + [("val", 0)] * 2 + [("val", 1)] * 2
    assert list(select_samples(frame, 2, seed=6)["id"]) != list(a["id"])
    with pytest.raises(PipelineError, match="no val images labelled bad"):
        select_samples(frame[~((frame["split"] == "val") & (frame["label"] == 1))], 1, seed=0)
