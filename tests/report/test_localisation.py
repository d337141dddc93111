"""Localisation of explanation maps (pipeline_lib.report.localisation, .explain): the scores on
maps with a known answer, the chance level against simulation, the bootstrap interval against
its closed form, the explanation size, the table, and the rules' scripts on data with and
without defect boxes."""

import json
import logging
import runpy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from e2e_helpers import ROOT
from pipeline_lib.training.checkpoint import save_weights
from pipeline_lib.data.chipgen import GenerateConfig, generate_dataset
from pipeline_lib.io.errors import PipelineError
from pipeline_lib.models.networks import build_model
from pipeline_lib.models.end_to_end import load_trained
from pipeline_lib.report.cam import class_activation_map, load_images
from pipeline_lib.report.explain import densify, explanation_plan, score_images
from pipeline_lib.report.html import render_report
from pipeline_lib.report.localisation import (
    bootstrap_ci,
    box_mask,
    centre_pointing,
    energy_in_box,
    markdown,
    pointing_score,
    read_boxes,
    score_map,
    sentence,
    summarise,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------------- scores on known maps


def test_box_mask_grows_by_the_tolerance_and_clips_at_the_border():
    mask = box_mask(np.array([[2, 3, 5, 4]]), (8, 10))  # x 2..4, y 3
    assert mask.sum() == 3 and mask[3, 2:5].all()
    grown = box_mask(np.array([[0, 0, 2, 1], [9, 7, 10, 8], [4, 4, 4, 6]]), (8, 10), tolerance=1)
    expect = np.zeros((8, 10), bool)
    expect[0:2, 0:3] = True  # the first box grown, clipped at the top-left
    expect[6:8, 8:10] = True  # the second, clipped at the bottom-right; the third is empty
    assert np.array_equal(grown, expect)


def test_pointing_game_on_maps_with_a_known_answer():
    boxes = np.array([[10, 10, 14, 14]])
    hit = box_mask(boxes, (32, 32), tolerance=2)  # x, y in 8..15
    heat = np.zeros((32, 32))
    heat[12, 12] = 1.0  # inside the box
    assert pointing_score(heat, hit) == 1.0
    heat[12, 12], heat[15, 15] = 0.0, 1.0  # 2 px beyond the box: inside the tolerance
    assert pointing_score(heat, hit) == 1.0
    heat[15, 15], heat[16, 12] = 0.0, 1.0  # 3 px below: a miss
    assert pointing_score(heat, hit) == 0.0
    heat[:] = 0.0
    heat[12, 12] = heat[30, 30] = 2.0  # a tie, one in and one out: half a hit
    assert pointing_score(heat, hit) == 0.5
    flat = np.full((32, 32), 0.3)  # no maximum: a random pick, the tolerant box's share
    assert pointing_score(flat, hit) == pytest.approx(64 / 1024)
    with pytest.raises(PipelineError, match="NaN"):
        pointing_score(np.full((4, 4), np.nan), hit[:4, :4])


def test_energy_in_box_on_maps_with_a_known_answer():
    box = box_mask(np.array([[0, 0, 2, 2]]), (4, 4))  # 4 of 16 pixels
    heat = np.zeros((4, 4))
    heat[:2, :2] = 1.0
    assert energy_in_box(heat, box) == 1.0
    heat[3, 3] = 4.0  # 4 inside, 4 outside
    assert energy_in_box(heat, box) == 0.5
    heat[3, 2] = -10.0  # negative values carry no mass
    assert energy_in_box(heat, box) == 0.5
    assert energy_in_box(-np.ones((4, 4)), box) == 0.25  # no positive mass: the box's share
    scores = score_map(heat, np.array([[0, 0, 2, 2]]), tolerance=1)
    assert scores == {"pointing": 0.0, "energy": 0.5, "centre_pointing": 1.0, "chance_pointing": 9 / 16,
                      "chance_energy": 0.25, "flat": False}  # the grown box (rows, columns 0-2) holds the centre


def test_centre_baseline_points_at_the_central_pixel():
    hit = np.zeros((5, 5), bool)
    hit[2, 2] = True
    assert centre_pointing(hit) == 1.0 and centre_pointing(~hit) == 0.0
    even = np.zeros((6, 4), bool)
    even[2:4, 1] = True  # two of the four central pixels (rows 2-3, columns 1-2)
    assert centre_pointing(even) == 0.5


def test_chance_level_is_what_uniform_random_maps_score():
    """The closed-form chance level against 5,000 simulated uniform-random maps."""
    rng = np.random.default_rng(0)
    boxes = np.array([[3, 4, 9, 7], [15, 15, 20, 24]])  # grown by 2: 10 x 7 and 9 x 11 (clipped) px
    maps = rng.random((5_000, 24, 24))
    scores = [score_map(m, boxes, tolerance=2) for m in maps]
    pointing = np.array([s["pointing"] for s in scores])
    energy = np.array([s["energy"] for s in scores])
    chance_p, chance_e = scores[0]["chance_pointing"], scores[0]["chance_energy"]
    assert chance_p == pytest.approx((10 * 7 + 9 * 11) / 576) and chance_e == pytest.approx((18 + 45) / 576)
    assert abs(pointing.mean() - chance_p) < 4 * np.sqrt(chance_p * (1 - chance_p) / len(maps))
    assert abs(energy.mean() - chance_e) < 4 * energy.std() / np.sqrt(len(maps))


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_interval_matches_the_normal_closed_form():
    rng = np.random.default_rng(1)
    for values in (rng.normal(3.0, 2.0, 400), (rng.random(300) < 0.3).astype(float)):
        lo, hi = bootstrap_ci(values, seed=0, n_resamples=4000)
        half = 1.959964 * values.std(ddof=1) / np.sqrt(len(values))
        assert lo == pytest.approx(values.mean() - half, abs=0.1 * half)
        assert hi == pytest.approx(values.mean() + half, abs=0.1 * half)
        assert (lo, hi) == bootstrap_ci(values, seed=0, n_resamples=4000)  # seeded
        assert (lo, hi) != bootstrap_ci(values, seed=1, n_resamples=4000)
    assert bootstrap_ci(np.ones(10), seed=0, n_resamples=1000) == (1.0, 1.0)
    assert all(np.isnan(bootstrap_ci([], seed=0, n_resamples=1000)))


# --------------------------------------------------------------------------- table and sentences

META = dict(model="resnet_fbp", display_name="ResNet FBP", method="gradcam", layer="features.layer3", input_px=64,
            dense_stages=2, map_h=8, map_w=8, tolerance_px=3, good_called_bad=0.4, map_good_called_bad=0.8)


def _per_image():
    rows = []
    for i in range(10):
        base = dict(id=f"v{i}", split="val", centre_pointing=float(i < 4), chance_pointing=0.1,
                    chance_energy=0.05 + 0.01 * i, flat=False)
        rows.append(dict(base, network="trained", pointing=float(i < 7), energy=0.5, p_bad=0.9 if i else 0.2, p_bad_map=0.6))
        rows.append(dict(base, network="untrained", pointing=float(i < 2), energy=0.1, p_bad=0.5, p_bad_map=0.4,
                         flat=i == 0))
    return pd.DataFrame(rows)


def test_summary_rows_and_the_sentence():
    rows = summarise(_per_image(), META, seed=0, n_resamples=1000)
    by = {r["baseline"]: r for r in rows}
    assert [r["baseline"] for r in rows] == ["trained", "untrained", "centre", "chance"]
    assert by["centre"]["pointing"] == 0.4 and np.isnan(by["centre"]["energy"]) and by["centre"]["n_flat"] is None
    assert by["trained"]["pointing"] == 0.7 and by["untrained"]["pointing"] == 0.2
    assert by["chance"]["pointing"] == pytest.approx(0.1) and by["chance"]["energy"] == pytest.approx(0.095)
    assert by["chance"]["pointing_lo"] == by["chance"]["pointing_hi"] == pytest.approx(0.1)
    assert by["trained"]["called_bad"] == 0.9 and by["untrained"]["called_bad"] == 0.0 and by["chance"]["called_bad"] is None
    assert by["trained"]["good_called_bad"] == 0.4 and by["untrained"]["good_called_bad"] is None
    assert by["trained"]["map_called_bad"] == 1.0 and by["untrained"]["map_called_bad"] == 0.0
    assert by["trained"]["map_good_called_bad"] == 0.8
    assert by["untrained"]["n_flat"] == 1 and by["trained"]["n_images"] == 10
    lo, hi = bootstrap_ci([1.0] * 7 + [0.0] * 3, seed=0, n_resamples=1000)
    assert (by["trained"]["pointing_lo"], by["trained"]["pointing_hi"]) == (lo, hi)
    for r in rows:
        r["display_name"] = "ResNet FBP"
    text = sentence(rows)
    assert text.startswith("ResNet FBP Grad-CAM (features.layer3, 8×8 cells at 64 px, layer3–layer4 evaluated densely) "
                           "points at the defect in 70 % "
                           f"of 10 bad images (95 % CI {100 * lo:.0f}–{100 * hi:.0f}; untrained network 20 %, "
                           "image centre 40 %, chance 10 %)")
    assert "50 % of its positive mass" in text and "chance 10 %)" in text  # 0.095 rounds to 10
    assert text.endswith("(As trained it calls 90 % of these images and 40 % of the good validation images bad; "
                         "pooled over the dense grid it would call 100 % and 80 % bad.)")
    md = markdown(rows, None, 3)
    assert "| ResNet FBP | Grad-CAM |" in md and "70 (" in md and "within 3 px" in md and "| 90 / 40 |" in md


# --------------------------------------------------------------------------- ground truth files


def test_read_boxes_from_the_generator_and_why_not(tmp_path):
    generate_dataset(tmp_path / "gen", GenerateConfig(seed=0, n_train=10, n_test=6, bad_fraction=0.5, image_size=32), progress=False)
    truth = read_boxes(tmp_path / "gen")
    frame = pd.read_csv(tmp_path / "gen" / "defects.csv")
    bad = sorted(frame.loc[frame["label"] == 1, "id"].unique())
    assert truth.note is None and sorted(truth.boxes) == bad
    first = frame[frame["id"] == bad[0]]
    assert np.array_equal(truth.boxes[bad[0]], first[["x0", "y0", "x1", "y1"]].to_numpy())

    assert "does not exist" in read_boxes(tmp_path / "real").note
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "defects.csv").write_text("id,source,label,defects\ntr0,train,1,void\n")
    assert "no defect boxes" in read_boxes(tmp_path / "old").note


# --------------------------------------------------------------------------- maps at a size that localises


def _stage_outputs(model, x):
    out = {}
    hooks = [getattr(model.features, s).register_forward_hook(lambda m, i, o, s=s: out.setdefault(s, o))
             for s in ("layer2", "layer3", "layer4")]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return out


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_dense_evaluation_keeps_every_coarse_cell_exactly(arch):
    """Stride replaced by dilation: every 2^k-th cell of a densified stage is the original
    network's output there (basic and bottleneck blocks), and the weights are untouched."""
    torch.manual_seed(0)
    model = build_model("resnet_fbp", image_size=64, backbone_arch=arch).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    coarse = _stage_outputs(model, x)
    for n in (1, 2, 3):
        dense = _stage_outputs(densify(model, n), x)
        for k, stage in enumerate(("layer2", "layer3", "layer4")):
            step = 2 ** max(0, n - 2 + k)  # how much finer this stage's grid became
            assert dense[stage].shape[-1] == coarse[stage].shape[-1] * step
            torch.testing.assert_close(dense[stage][..., ::step, ::step], coarse[stage], rtol=1e-4, atol=1e-4)
    assert model.features.layer4[0].downsample[0].stride == (2, 2)  # the original is left as it was


def test_explanation_plan_densifies_the_fewest_stages_that_give_enough_cells():
    torch.manual_seed(0)
    resnet = build_model("resnet_fbp", image_size=64).eval()
    for method, layer, n, cells in (("gradcam", "features.layer2", 0, (8, 8)), ("gradcam", "features.layer3", 2, (8, 8)),
                                    ("cam", None, 2, (8, 8))):
        model, n_dense, got = explanation_plan(resnet, method=method, layer=layer, size=64, min_cells=8)
        assert (n_dense, got) == (n, cells)
        assert (model is resnet) == (n == 0)
    cnn = build_model("cnn2", image_size=64, pool="max").eval()
    assert explanation_plan(cnn, method="gradcam", layer="features.6", size=64, min_cells=8)[1:] == (0, (32, 32))
    with pytest.raises(PipelineError, match="min_cells=64: layer features.6 has only 32×32 cells at 64 px"):
        explanation_plan(cnn, method="gradcam", layer="features.6", size=64, min_cells=64)


def test_cam_of_the_linear_probe_folds_its_batch_norm():
    """resnet_ll's head is BatchNorm1d (no affine) then linear: CAM is still defined, and
    its mean plus the folded bias is the logit (class_activation_map checks exactly that)."""
    torch.manual_seed(0)
    model = build_model("resnet_ll", image_size=64, head_norm=True)
    bn = model.classifier[0]
    bn.running_mean.normal_(0, 1)
    bn.running_var.uniform_(0.5, 2.0)
    model.classifier[1].weight.data.normal_(0, 1)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    cam, logits = class_activation_map(model.eval(), x, [0, 1])
    w = model.classifier[1].weight[[0, 1]] / torch.sqrt(bn.running_var + bn.eps)
    feats = {}
    model.features.avgpool.register_forward_pre_hook(lambda m, i: feats.setdefault("a", i[0]))
    model(x)
    by_hand = torch.einsum("bk,bkhw->bhw", w, feats["a"])
    torch.testing.assert_close(cam, by_hand, rtol=1e-4, atol=1e-4)


class BrightNet(nn.Module):
    """CAM(bad) = the image's summed channels: the map points at the brightest spot."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 1, 1, bias=False), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(1, 2)
        with torch.no_grad():
            self.features[0].weight.fill_(1.0)
            self.classifier.weight.copy_(torch.tensor([[-1.0], [1.0]]))
            self.classifier.bias.copy_(torch.tensor([0.0, 20.0]))  # calls the mostly black images bad

    def forward(self, x):
        return self.classifier(self.features(x))


def test_score_images_finds_a_bright_square_in_image_pixels(tmp_path):
    """Images of 40 px, maps at 20 px: the map is upsampled to the image's own pixels."""
    rows, boxes = [], {}
    for i, (x0, y0) in enumerate([(4, 6), (26, 20), (12, 30)]):
        img = np.zeros((40, 40, 3), np.uint8)
        img[y0:y0 + 6, x0:x0 + 6] = 255
        path = tmp_path / f"b{i}.png"
        Image.fromarray(img).save(path)
        rows.append(dict(id=f"b{i}", split="test", path=str(path)))
        boxes[f"b{i}"] = np.array([[x0, y0, x0 + 6, y0 + 6]])
    boxes["b2"] = np.array([[0, 0, 3, 3]])  # a wrong box: a miss
    scores = score_images(BrightNet().eval(), pd.DataFrame(rows), boxes, method="cam", layer=None, size=20,
                          tolerance=1, batch_size=2, desc="test")
    assert list(scores["id"]) == ["b0", "b1", "b2"]
    assert list(scores["pointing"]) == [1.0, 1.0, 0.0]
    assert (scores["energy"][:2] > 0.9).all() and scores["energy"][2] < 0.05
    assert scores["chance_energy"].tolist() == pytest.approx([36 / 1600, 36 / 1600, 9 / 1600])
    assert (scores["p_bad"] > 0.5).all() and np.array_equal(scores["p_bad"], scores["p_bad_map"])
    other = BrightNet().eval()  # decisions from another network (the one as trained, when the map's is dense)
    with torch.no_grad():
        other.classifier.bias.copy_(torch.tensor([30.0, 0.0]))
    again = score_images(BrightNet().eval(), pd.DataFrame(rows), boxes, method="cam", layer=None, size=20,
                         tolerance=1, batch_size=2, desc="test", decider=other)
    assert (again["p_bad"] < 0.5).all() and np.array_equal(again["p_bad_map"], scores["p_bad_map"])
    assert again["pointing"].tolist() == scores["pointing"].tolist()


# --------------------------------------------------------------------------- the rules' scripts


class Files(SimpleNamespace):
    """Named files that also iterate, like Snakemake's input/output objects."""

    def __iter__(self):
        return iter(vars(self).values())


def _run(script, tmp_path, name, **namespaces):
    log = tmp_path / f"{name}.log"
    fake = SimpleNamespace(log=[str(log)], threads=1, resources=SimpleNamespace(), rule=name, **namespaces)
    try:
        runpy.run_path(str(ROOT / "workflow/scripts" / script), init_globals={"snakemake": fake})
        code = 0
    except SystemExit as exc:
        code = exc.code
    finally:
        logging.getLogger("pipeline").handlers.clear()
    return code, log.read_text()


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """Built-in data, its split table and an (untrained) cnn2 saved as the training rule would."""
    tmp = tmp_path_factory.mktemp("loc")
    root = tmp / "builtin"
    generate_dataset(root, GenerateConfig(seed=0, n_train=16, n_test=8, bad_fraction=0.5, image_size=32), progress=False)
    frame = pd.read_csv(root / "defects.csv").drop_duplicates("id")
    frame["split"] = np.where(frame["source"] == "test", "test", np.where(np.arange(len(frame)) % 2, "val", "train"))
    frame["path"] = [str(root / ("test/all_tests" if s == "test" else f"train/{'bad_1' if lab else 'good_0'}") / f"{i}.jpg")
                     for i, s, lab in zip(frame["id"], frame["source"], frame["label"])]
    frame[["id", "path", "label", "split"]].to_parquet(tmp / "split.parquet")
    torch.manual_seed(0)
    kwargs = {"channels": [8, 16], "kernel_size": 3, "pool": "max"}
    model = build_model("cnn2", image_size=32, **kwargs)
    save_weights(tmp / "model.pt", model.state_dict(), meta={"model": "cnn2", "image_size": 32, "model_kwargs": kwargs})
    return tmp, root


CFG = {"report.seed": 0, "report.cam.min_cells": 8, "report.cam.gradcam_layers.cnn2": "features.2",
       "report.localisation": {"tolerance_px": 2, "bootstrap_resamples": 200, "batch_size": 4}}


def _localise(tmp, root, out):
    return _run("localisation.py", out, "localisation",
                input=Files(model=str(tmp / "model.pt"), split=str(tmp / "split.parquet"), root=str(root)),
                output=Files(csv=str(out / "gradcam_cnn2.csv"), meta=str(out / "gradcam_cnn2.json")),
                params=SimpleNamespace(cfg=CFG), wildcards=SimpleNamespace(method="gradcam", model="cnn2"))


def _table(out):
    names = ["csv", "md", "json"]
    return _run("localisation_table.py", out, "localisation_table",
                input=Files(csvs=[str(out / "gradcam_cnn2.csv")], metas=[str(out / "gradcam_cnn2.json")]),
                output=Files(**{n: str(out / f"localisation.{n}") for n in names}),
                params=SimpleNamespace(cfg={"report.seed": 0, "report.localisation": CFG["report.localisation"]}),
                wildcards=SimpleNamespace())


def test_scripts_score_the_builtin_data(tiny_data, tmp_path):
    tmp, root = tiny_data
    code, log = _localise(tmp, root, tmp_path)
    assert code == 0, log
    per_image = pd.read_csv(tmp_path / "gradcam_cnn2.csv")
    split = pd.read_parquet(tmp / "split.parquet")
    expect = sorted(split.loc[(split["label"] == 1) & split["split"].isin(["val", "test"]), "id"])
    assert sorted(per_image.loc[per_image["network"] == "trained", "id"]) == expect
    assert set(per_image["network"]) == {"trained", "untrained"}
    meta = json.loads((tmp_path / "gradcam_cnn2.json").read_text())
    assert (meta["input_px"], meta["map_h"], meta["note"]) == (32, 32, None)
    good = split[(split["label"] == 0) & (split["split"] == "val")]
    with torch.no_grad():  # the good validation images' decisions, by hand
        logits = load_trained(tmp / "model.pt")(load_images(good["path"].tolist(), 32))
    assert meta["n_good"] == len(good)
    assert meta["good_called_bad"] == pytest.approx(float((logits[:, 1] > logits[:, 0]).float().mean()))
    assert meta["map_good_called_bad"] == meta["good_called_bad"]  # no dense stage: the same network
    assert np.allclose(per_image["p_bad"], per_image["p_bad_map"])
    code, log = _table(tmp_path)
    assert code == 0, log
    table = pd.read_csv(tmp_path / "localisation.csv")
    assert list(table["baseline"]) == ["trained", "untrained", "centre", "chance"]
    trained = per_image[per_image["network"] == "trained"]
    assert table.loc[0, "pointing"] == pytest.approx(trained["pointing"].mean())
    assert table.loc[2, "pointing"] == pytest.approx(trained["centre_pointing"].mean()) and np.isnan(table.loc[2, "energy"])
    assert table.loc[3, "energy"] == pytest.approx(trained["chance_energy"].mean())
    loc = json.loads((tmp_path / "localisation.json").read_text())
    assert len(loc["sentences"]) == 1 and loc["note"] is None


def test_scripts_on_real_data_leave_the_scores_out_and_say_why(tiny_data, tmp_path):
    tmp, root = tiny_data
    real = tmp_path / "nexperia"
    real.mkdir()  # the real layout carries no defects.csv
    code, log = _localise(tmp, real, tmp_path)
    assert code == 0, log
    assert len(pd.read_csv(tmp_path / "gradcam_cnn2.csv")) == 0
    assert "defects.csv does not exist" in json.loads((tmp_path / "gradcam_cnn2.json").read_text())["note"]
    code, log = _table(tmp_path)
    assert code == 0, log
    assert len(pd.read_csv(tmp_path / "localisation.csv")) == 0
    assert "No localisation scores:" in (tmp_path / "localisation.md").read_text()
    loc = json.loads((tmp_path / "localisation.json").read_text())
    page = render_report(pd.DataFrame({"Model": ["x"]}), [], note=None, git_commit="c", params_sha256="0" * 64,
                         localisation=loc)
    assert "Localisation not scored:" in page and "defects.csv does not exist" in page
    assert 'id="localisation-table"' not in page


def test_report_cam_script_draws_without_boxes_on_real_data(tiny_data, tmp_path):
    tmp, root = tiny_data
    for data, says in ((root, "Dashed white boxes"), (tmp_path / "real", "No defect boxes:")):
        data.mkdir(exist_ok=True)
        cfg = {"report.seed": 0, "report.dpi": 40,
               "report.cam": {"samples_per_group": 1, "cam_models": [], "gradcam_layers": {"cnn2": "features.2"},
                              "min_cells": 8, "overlay_alpha": 0.45}}
        out = tmp_path / data.name
        code, log = _run("report_cam.py", tmp_path, "report_cam",
                         input=Files(model=str(tmp / "model.pt"), split=str(tmp / "split.parquet"), root=str(data)),
                         output=Files(png=str(out / "g.png"), record=str(out / "g.json")),
                         params=SimpleNamespace(cfg=cfg), wildcards=SimpleNamespace(method="gradcam", model="cnn2"))
        assert code == 0, log
        assert Path(out / "g.png").read_bytes().startswith(b"\x89PNG")
        assert says in json.loads((out / "g.json").read_text())["caption"]
