"""Messy real data (issue 14, findings 1-6): contradictory labels, re-encoded duplicates,
silent corruption, a shrinking test set, a FIFO among the images, floats for integers.

The images are the built-in generator's chips (all the same product, as real data is), so
the look-alike search is tried where it is hardest: distinct chips that look much alike.
"""

from __future__ import annotations

import copy
import io
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from e2e_helpers import ROOT, copy_workflow, snakemake
from pipeline_lib.data.chipgen import GenerateConfig, generate_dataset
from pipeline_lib.io.errors import PipelineError
from pipeline_lib.data.ingest import IngestConfig, run_ingest, scan_dataset
from pipeline_lib.data.leakage import resolve_duplicates
from pipeline_lib.params import load_schema, validate_params
from pipeline_lib.results.table import write_table

PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
SCHEMA = load_schema(ROOT / "workflow/schemas/params.schema.yaml")


@pytest.fixture(scope="module")
def chips(tmp_path_factory) -> Path:
    """A small built-in data set at 96 px (12 train, 6 test), generated once."""
    root = tmp_path_factory.mktemp("chips") / "data"
    config = GenerateConfig(seed=0, n_train=12, n_test=6, bad_fraction=0.5, image_size=96)
    generate_dataset(root, config, progress=False)
    return root


@pytest.fixture
def data(chips, tmp_path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(chips, root)
    return root


def ingest_params(root: Path, **overrides) -> IngestConfig:
    p = copy.deepcopy(PARAMS["ingest"])
    p.update(root=str(root), test_labels=str(root / "test_labels.csv"))
    for key, value in overrides.items():
        if key in p["near_duplicates"]:
            p["near_duplicates"][key] = value
        else:
            p[key] = value
    return IngestConfig.from_params(p)


def one_line_error(fn, *args, **kw) -> str:
    with pytest.raises(PipelineError) as info:
        fn(*args, **kw)
    assert "\n" not in str(info.value)
    return str(info.value)


def first(root: Path, folder: str) -> Path:
    return sorted((root / folder).iterdir())[0]


def _save(img: Image.Image, path: Path, fmt: str, **kw) -> None:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    path.write_bytes(buf.getvalue())


# ---------------------------------------------------------------- 1. contradictory labels


def test_same_image_as_good_and_bad_is_a_label_conflict_naming_both_files(data):
    good = first(data, "train/good_0")
    twin = data / "train/bad_1/twin.jpg"
    shutil.copyfile(good, twin)
    msg = one_line_error(run_ingest, ingest_params(data), progress=False)
    assert msg.startswith("the same image carries two labels (1 image(s))")
    assert f"{good.as_posix()} (label 0, good)" in msg and f"{twin.as_posix()} (label 1, bad)" in msg
    assert "dedupe" not in msg and "ingest.label_conflicts: drop" in msg
    # the duplicates policy does not decide it either: dedupe would have kept bad_1's copy
    assert "the same image carries two labels" in one_line_error(
        run_ingest, ingest_params(data, duplicates="dedupe"), progress=False
    )


def test_label_conflict_drop_leaves_out_every_copy_and_lists_them(data):
    good = first(data, "train/good_0")
    twin = data / "train/bad_1/twin.jpg"
    shutil.copyfile(good, twin)
    result = run_ingest(ingest_params(data, label_conflicts="drop", duplicates="dedupe"), progress=False)
    paths = set(result.manifest["path"])
    assert good.as_posix() not in paths and twin.as_posix() not in paths  # neither label chosen
    listed = result.bad_files.set_index("path")
    assert set(listed.index) == {good.as_posix(), twin.as_posix()}
    assert set(listed["problem"]) == {"label_conflict"}
    assert "labelled 1 (bad) but identical bytes as " + good.as_posix() in listed.loc[twin.as_posix(), "reason"]
    assert result.metrics["label_conflicts"] == 2 and result.metrics["duplicates"] == 0


def test_identical_test_images_with_two_labels_in_test_labels_csv_conflict(data):
    a = first(data, "test/all_tests")
    b = data / "test/all_tests/again.jpg"
    shutil.copyfile(a, b)
    labels = pd.read_csv(data / "test_labels.csv", dtype=str)
    wrong = "0" if labels.set_index("id").loc[a.stem, "label"] == "1" else "1"
    labels = pd.concat([labels, pd.DataFrame({"id": ["again"], "label": [wrong]})])
    labels.to_csv(data / "test_labels.csv", index=False)
    msg = one_line_error(run_ingest, ingest_params(data), progress=False)
    assert a.as_posix() in msg and b.as_posix() in msg and "two labels" in msg
    # the same pixels under another name (a PNG re-save) conflicts the same way
    b.unlink()
    _save(Image.open(a), data / "test/all_tests/again.png", "PNG")
    msg = one_line_error(run_ingest, ingest_params(data), progress=False)
    assert "again.png" in msg and "identical decoded pixels" in msg


# ---------------------------------------------------------------- 2. duplicates beyond identical bytes


def _with_comment(src: Path, dst: Path) -> None:
    raw = src.read_bytes()  # a COM segment after SOI: other bytes, the same pixels
    comment = b"exported again"
    dst.write_bytes(raw[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + raw[2:])


def test_pixel_identical_resaves_are_duplicates(data):
    src = first(data, "train/good_0")
    _save(Image.open(src), data / "test/all_tests/as png.png", "PNG")
    _with_comment(src, data / "test/all_tests/with comment.jpg")
    manifest, _ = scan_dataset(data, progress=False)
    by_name = manifest.set_index("id")
    assert by_name.loc["as png", "sha256"] != by_name.loc[src.stem, "sha256"]
    assert by_name.loc["as png", "pixel_sha256"] == by_name.loc[src.stem, "pixel_sha256"]
    msg = one_line_error(resolve_duplicates, manifest, "fail")
    assert msg.startswith("1 group(s) of identical images") and "[same pixels]" in msg
    for name in ("as png.png", "with comment.jpg"):
        assert (data / "test/all_tests" / name).as_posix() in msg
    kept, dropped = resolve_duplicates(manifest, "dedupe")
    assert [d.path for d in dropped] == [src.as_posix()] and dropped[0].level == "pixels"


LOOK_ALIKES = {  # name in test/all_tests -> how it is made from a train chip
    "q60.jpg": lambda im, p: _save(im, p, "JPEG", quality=60),
    "q95.jpg": lambda im, p: _save(im, p, "JPEG", quality=95),
    "half.png": lambda im, p: _save(im.resize((48, 48), Image.Resampling.BICUBIC), p, "PNG"),
    "double.jpg": lambda im, p: _save(im.resize((192, 192), Image.Resampling.LANCZOS), p, "JPEG", quality=90),
    "mirrored.jpg": lambda im, p: _save(im.transpose(Image.Transpose.FLIP_LEFT_RIGHT), p, "JPEG", quality=90),
    "turned.jpg": lambda im, p: _save(im.transpose(Image.Transpose.ROTATE_90), p, "JPEG", quality=90),
}


def _look_alikes(data: Path) -> dict[str, Path]:
    sources = {}
    train = sorted((data / "train/good_0").iterdir()) + sorted((data / "train/bad_1").iterdir())
    for (name, make), src in zip(LOOK_ALIKES.items(), train):
        make(Image.open(src).convert("RGB"), data / "test/all_tests" / name)
        sources[name] = src
    return sources


def test_reencoded_resized_flipped_copies_are_near_duplicates(data):
    sources = _look_alikes(data)
    msg = one_line_error(run_ingest, ingest_params(data, test_labels=None), progress=False)
    assert msg.startswith(f"{len(LOOK_ALIKES)} pair(s) of near-duplicate images")
    assert "ingest.near_duplicates.policy: warn" in msg

    result = run_ingest(ingest_params(data, test_labels=None, policy="warn"), progress=False)
    pairs = result.near_duplicates
    assert len(pairs) == len(LOOK_ALIKES) and result.metrics["near_duplicates"] == len(LOOK_ALIKES)
    for row in pairs.itertuples():
        copy_, src = (row.path_a, row.path_b) if row.source_a == "test" else (row.path_b, row.path_a)
        assert sources[Path(copy_).name].as_posix() == src
        assert 0 <= row.distance <= PARAMS["ingest"]["near_duplicates"]["max_distance"]
        # the transform turns image b into image a: check it on the pixels
        a, b = Image.open(row.path_a).convert("L"), Image.open(row.path_b).convert("L")
        if row.transform != "none":
            b = b.transpose(getattr(Image.Transpose, row.transform))
        diff = np.abs(np.asarray(a.resize((32, 32)), float) - np.asarray(b.resize((32, 32)), float)).mean()
        assert diff < 12, (row.path_a, row.path_b, row.transform, diff)
    transforms = {Path(r.path_a if r.source_a == "test" else r.path_b).name: r.transform for r in pairs.itertuples()}
    assert transforms["q60.jpg"] == transforms["half.png"] == "none"
    assert transforms["mirrored.jpg"] == "FLIP_LEFT_RIGHT"
    # without flips the mirrored and turned copies are no longer found
    plain = run_ingest(ingest_params(data, test_labels=None, policy="warn", flips=False), progress=False)
    names = {Path(p).name for p in pd.concat([plain.near_duplicates.path_a, plain.near_duplicates.path_b])}
    assert "mirrored.jpg" not in names and "turned.jpg" not in names and "q60.jpg" in names


def test_builtin_chips_are_not_near_duplicates_of_each_other(tmp_path):
    params = dict(PARAMS["generate"], n_train=150, n_test=50)  # the default generator, fewer images
    generate_dataset(tmp_path / "data", GenerateConfig.from_params(params), progress=False)
    result = run_ingest(ingest_params(tmp_path / "data"), progress=False)
    assert result.near_duplicates.empty and result.metrics["near_duplicates"] == 0


# ---------------------------------------------------------------- 3. silent corruption


def test_jpeg_with_12_bytes_overwritten_is_a_bad_image_with_libjpegs_message(data):
    victim = first(data, "train/good_0")
    raw = bytearray(victim.read_bytes())
    middle = len(raw) // 2
    raw[middle : middle + 12] = bytes(range(200, 212))
    before = np.asarray(Image.open(victim).convert("RGB"), float)
    victim.write_bytes(bytes(raw))
    garbled = Image.open(victim)
    garbled.load()  # Pillow decodes it without a word...
    assert np.abs(np.asarray(garbled.convert("RGB"), float) - before).mean() > 20  # ...visibly garbled
    msg = one_line_error(scan_dataset, data, progress=False)
    assert victim.as_posix() in msg
    assert "libjpeg warning (Corrupt JPEG data: 238 extraneous bytes before marker 0xd9)" in msg
    _, bad = scan_dataset(data, bad_images="skip", progress=False)
    assert [b.path for b in bad] == [victim.as_posix()]


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_libjpeg_turbo_decode_gives_pillows_pixels(chips, mode):
    """Ingest decodes JPEGs once, with simplejpeg (strict): its pixels must be Pillow's."""
    import simplejpeg

    img = Image.open(first(chips, "train/bad_1")).convert(mode).resize((77, 53))
    for kw in (dict(quality=90), dict(quality=50, subsampling=0), dict(quality=75, subsampling=1),
               dict(quality=80, progressive=True), dict(quality=95, subsampling=2, optimize=True)):
        buf = io.BytesIO()
        img.save(buf, "JPEG", **kw)
        ours = simplejpeg.decode_jpeg(buf.getvalue(), colorspace="GRAY" if mode == "L" else "RGB", strict=True)
        pillows = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
        assert np.array_equal(ours[..., 0] if mode == "L" else ours, pillows), kw


def test_pillow_warning_makes_the_file_bad(data, monkeypatch):
    for folder in ("train/good_0", "train/bad_1", "test/all_tests"):  # 64x64 = 4096 px: no warning
        Image.open(first(data, folder)).resize((64, 64)).save(data / folder / f"small {folder[-2:]}.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6000)  # 96x96 = 9216 px: warned, not refused
    manifest, bad = scan_dataset(data, bad_images="skip", progress=False)
    assert sorted(manifest["id"]) == ["small _0", "small _1", "small ts"]
    assert len(bad) == 18  # every 96 px image, each with its own warning (not once per code location)
    assert all(b.reason.startswith("decoded with a warning (DecompressionBombWarning: Image size (9216 pixels)")
               for b in bad)


def test_tiny_image_is_a_bad_image(data):
    Image.new("RGB", (1, 1), (90, 90, 90)).save(data / "train/good_0/dot.jpg")
    Image.new("RGB", (200, 15), (90, 90, 90)).save(data / "train/good_0/sliver.png")
    msg = one_line_error(run_ingest, ingest_params(data), progress=False)
    assert "2 bad file(s)" in msg and "dot.jpg (image is 1x1 px, smaller than ingest.min_side (16 px)" in msg
    assert "sliver.png (image is 200x15 px" in msg


# ---------------------------------------------------------------- 4. shrinking test set


def test_skipped_test_image_is_announced_and_counted(data):
    lost = first(data, "test/all_tests")
    lost.write_bytes(b"")
    result = run_ingest(ingest_params(data, bad_images="skip"), progress=False)
    m = result.metrics
    assert (m["test_files"], m["images_test"], m["test_skipped"]) == (6, 5, 1)
    assert "test set: 6 → 5 images (1 left out" in "\n".join(text for _, text in result.messages)
    # the models' table says it under the results
    metrics = [dict(model="lda_pretrained", family="classical", features="pretrained", valid_acc=0.5,
                    valid_loss=None, test_auc=0.6, n_train=1, n_val=1, n_test=5, test_skipped=1,
                    params_count=1, wall_time_s=0.1, device="cpu", seed=0)]
    out = data.parent / "table"
    write_table(metrics, out / "r.csv", out / "r.md", out / "r.json")
    assert "Test AUC without 1 test image(s) that ingest left out" in (out / "r.md").read_text()
    assert pd.read_csv(out / "r.csv")["test_skipped"].tolist() == [1]


@pytest.mark.e2e
def test_models_metrics_carry_the_skipped_test_images(tmp_path):
    work = copy_workflow(tmp_path)
    generate_dataset(work / "data/raw/mine", GenerateConfig(seed=1, n_train=24, n_test=8, bad_fraction=0.5, image_size=32),
                     progress=False)
    first(work / "data/raw/mine", "test/all_tests").write_bytes(b"not an image")
    cfg = {"ingest": {"root": "data/raw/mine", "test_labels": "data/raw/mine/test_labels.csv", "bad_images": "skip"},
           "split": {"val_good": 2, "val_bad": 2}}
    (work / "mine.yaml").write_text(yaml.safe_dump(cfg))
    snakemake(work, "results/models/lda_pretrained/seed0/metrics.json", "--configfile", ".test/params.yaml", "mine.yaml")
    metrics = json.loads((work / "results/models/lda_pretrained/seed0/metrics.json").read_text())
    assert metrics["test_skipped"] == 1 and metrics["n_test"] == 7
    assert "test set: 8 → 7 images" in (work / "logs/ingest.log").read_text()


# ---------------------------------------------------------------- 5. FIFOs, sockets, devices

_SCAN = "import sys; from pipeline_lib.data.ingest import scan_dataset; scan_dataset(sys.argv[1], progress=False)"


def test_named_pipe_is_a_bad_file_not_a_hang(data):
    os.mkfifo(data / "train/good_0/pipe.jpg")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    try:  # a subprocess: a hung read cannot be interrupted inside this process
        out = subprocess.run([sys.executable, "-c", _SCAN, str(data)], capture_output=True, text=True,
                             timeout=60, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail("ingest hung on a named pipe (FIFO)")
    assert out.returncode != 0
    assert f"{(data / 'train/good_0/pipe.jpg').as_posix()} (is a named pipe (FIFO), not a regular file" in out.stderr


def test_socket_and_device_are_bad_files_each_named(data):
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(data / "train/bad_1/sock.png"))
    (data / "test/all_tests/zero.jpg").symlink_to("/dev/zero")  # a read would never end
    try:
        _, bad = scan_dataset(data, bad_images="skip", progress=False)
    finally:
        server.close()
    reasons = {Path(b.path).name: b.reason for b in bad}
    assert reasons["sock.png"].startswith("is a socket, not a regular file")
    assert reasons["zero.jpg"].startswith("is a character device, not a regular file")


# ---------------------------------------------------------------- 6. integers are integers


def _integer_keys(schema: dict, node: dict, prefix: str = "") -> list[tuple[str, dict]]:
    """(dotted key, its schema) of every integer-typed property under ``node``."""
    out = []
    for name, sub in node.get("properties", {}).items():
        if "$ref" in sub:
            sub = {**schema["$defs"][sub["$ref"].split("/")[-1]], **{k: v for k, v in sub.items() if k != "$ref"}}
        kind = sub.get("type")
        if kind == "integer" or (isinstance(kind, list) and "integer" in kind):
            out.append((prefix + name, sub))
        out += _integer_keys(schema, sub, prefix + name + ".")
    return out


def _put(params: dict, dotted: str, value) -> None:
    node = params
    for part in dotted.split(".")[:-1]:
        node = node.setdefault(part, {})
    node[dotted.split(".")[-1]] = value


def test_every_integer_parameter_rejects_a_float():
    keys = _integer_keys(SCHEMA, SCHEMA)
    assert len(keys) > 40 and "features.batch_size" in dict(keys)  # the walk found them
    for key, sub in keys:
        params = copy.deepcopy(PARAMS)
        whole = max(sub.get("minimum", 1), 2)
        whole += whole % sub.get("multipleOf", 1)
        _put(params, key, float(whole))  # e.g. 16.0: a whole number, written as a float
        with pytest.raises(PipelineError) as info:
            validate_params(params, SCHEMA)
        assert f"params.yaml: {key}: {float(whole)} is not of type 'integer'" in str(info.value), key
        _put(params, key, whole)
        validate_params(params, SCHEMA)  # the same value as an integer is fine
