"""Reliability and safety: bad data, leakage, untrusted files, data-path confinement, params.

Each test tries one protection with the input it guards against (interrupted runs are in
tests/test_interrupt.py). Small and fast: tiny images, and only dry runs or the torch-free
ingest/split rules of the real workflow.
"""

from __future__ import annotations

import ast
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from e2e_helpers import ROOT, copy_workflow, snakemake
from pipeline_lib.io.errors import PipelineError
from pipeline_lib.data.ingest import (
    BAD_FILES_COLUMNS,
    bad_files_table,
    confine_data_path,
    ingest_metrics,
    resolve_duplicates,
    scan_dataset,
)
from pipeline_lib.data.split import SplitConfig, make_split


def _rgb(seed: int, size=(16, 12)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _jpeg(seed: int, size=(32, 32)) -> bytes:
    buf = io.BytesIO()
    _rgb(seed, size).save(buf, "JPEG")
    return buf.getvalue()


def make_data(root: Path, n_good=6, n_bad=6, n_test=4) -> Path:
    seed = 100
    for rel, prefix, n in (("train/good_0", "g", n_good), ("train/bad_1", "b", n_bad), ("test/all_tests", "t", n_test)):
        (root / rel).mkdir(parents=True)
        for i in range(n):
            (root / rel / f"{prefix}{i}.jpg").write_bytes(_jpeg(seed))
            seed += 1
    return root


def scan(root, **kw):
    return scan_dataset(root, progress=False, **kw)


def one_line_error(fn, *args, **kw) -> str:
    with pytest.raises(PipelineError) as info:
        fn(*args, **kw)
    msg = str(info.value)
    assert "\n" not in msg, msg
    return msg


# ---------------------------------------------------------------- bad images, all at once

BAD = {  # name -> (bytes, reason fragment)
    "train/good_0/truncated.jpg": (_jpeg(1, (64, 64))[:600], "truncated"),
    "train/good_0/zero bytes.jpg": (b"", "empty file (0 bytes)"),
    "train/bad_1/text.jpg": (b"just some text, not an image\n", "not a JPEG, PNG or BMP"),
    "train/bad_1/bad header.jpeg": (b"\xff\xd8" + b"\xff" * 38 + _jpeg(2)[40:], "not a JPEG, PNG or BMP"),
    "test/all_tests/芯片 broken.png": (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not a JPEG, PNG or BMP"),
}


def _odd_but_valid(root: Path) -> dict[str, tuple[str, int, int]]:
    """Valid images that differ from the 32 px RGB JPEGs: kept, with their real mode and size."""
    good, bad, test = root / "train/good_0", root / "train/bad_1", root / "test/all_tests"
    buf = io.BytesIO()
    _rgb(3, (20, 10)).save(buf, "PNG")
    (good / "png inside.jpg").write_bytes(buf.getvalue())  # content decides, not the extension
    _rgb(4, (9, 9)).save(good / "among jpegs.bmp")
    Image.fromarray(np.full((7, 5), 90, np.uint8)).save(bad / "grey.jpg")
    Image.new("RGBA", (6, 4), (1, 2, 3, 50)).save(bad / "alpha.png")
    Image.fromarray(np.full((5, 8), 40000, np.uint16)).save(test / "sixteen bit.png")
    _rgb(5, (1, 1)).save(good / "tiny.jpg")
    _rgb(6, (1200, 3)).save(good / "very wide.jpg")
    _rgb(7, (17, 13)).save(test / "ünïcødé 图像.jpg")
    return {
        "png inside": ("RGB", 20, 10), "among jpegs": ("RGB", 9, 9), "grey": ("L", 5, 7),
        "alpha": ("RGBA", 6, 4), "sixteen bit": ("I;16", 8, 5), "tiny": ("RGB", 1, 1),
        "very wide": ("RGB", 1200, 3), "ünïcødé 图像": ("RGB", 17, 13),
    }


@pytest.fixture
def messy(tmp_path) -> tuple[Path, dict]:
    root = make_data(tmp_path / "data")
    valid = _odd_but_valid(root)
    for rel, (content, _) in BAD.items():
        (root / rel).write_bytes(content)
    return root, valid


def test_fail_gives_one_error_listing_every_bad_file_with_counts(messy):
    root, valid = messy
    n_files = 16 + len(valid) + len(BAD)
    msg = one_line_error(scan, root)
    assert f"{len(BAD)} bad file(s) among {n_files} files" in msg
    for rel, (_, reason) in BAD.items():
        assert f"{(root / rel).as_posix()} ({reason}" in msg or (
            (root / rel).as_posix() in msg and reason in msg
        ), rel
    assert "ingest.bad_images: skip" in msg


def test_skip_reports_bad_files_and_keeps_odd_valid_images(messy, tmp_path):
    root, valid = messy
    manifest, bad = scan(root, bad_images="skip")
    assert sorted(b.path for b in bad) == sorted((root / rel).as_posix() for rel in BAD)
    assert not set(manifest["path"]) & {b.path for b in bad}
    by_id = manifest.set_index("id")
    for ident, (mode, w, h) in valid.items():
        assert tuple(by_id.loc[ident, ["mode", "width", "height"]]) == (mode, w, h), ident
    manifest, dups = resolve_duplicates(manifest, "dedupe")
    table = bad_files_table(bad, dups)
    assert list(table.columns) == list(BAD_FILES_COLUMNS)
    assert set(table["problem"]) == {"bad"} and len(table) == len(BAD)
    # the table survives a CSV round trip with spaces and non-ASCII names intact
    table.to_csv(tmp_path / "bad_files.csv", index=False)
    back = pd.read_csv(tmp_path / "bad_files.csv", dtype=str)
    assert sorted(back["path"]) == sorted((root / rel).as_posix() for rel in BAD)
    metrics = ingest_metrics(manifest, bad, dups)
    assert metrics == {
        "images": 16 + len(valid), "images_train": 12 + 6, "images_test": 4 + 2,
        "bad": len(BAD), "skipped": len(BAD), "duplicates": 0, "label_conflicts": 0, "near_duplicates": 0,
        "test_files": 6, "test_skipped": 0,
    }


# ---------------------------------------------------------------- layouts


def _labels(root: Path, text: str) -> str:
    (root / "labels.csv").write_text(text)
    return str(root / "labels.csv")


LAYOUTS = {
    # case: (break the layout, what the message must name)
    "missing class folder": (lambda r: shutil.rmtree(r / "train/bad_1"),
                             ["train/bad_1", "missing", "train/good_0 (good)", "ingest.root"]),
    "empty class folder": (lambda r: [p.unlink() for p in (r / "test/all_tests").iterdir()],
                           ["test/all_tests", "empty", ".jpg"]),
    "third folder under train": (lambda r: (r / "train/unsure_2").mkdir(),
                                 ["train/unsure_2", "unexpected folder", "bad_1, good_0"]),
    "third folder under test": (lambda r: (r / "test/extra").mkdir(),
                                ["test/extra", "unexpected folder", "all_tests"]),
    "only non-images in a class": (
        lambda r: [p.unlink() for p in (r / "train/good_0").iterdir()] + [(r / "train/good_0/a.txt").write_text("x")],
        ["train/good_0/a.txt", "unexpected file type '.txt'", "expected .bmp, .jpeg, .jpg, .png"]),
}


@pytest.mark.parametrize("case", sorted(LAYOUTS))
def test_bad_layout_names_what_is_wrong_and_what_was_expected(tmp_path, case):
    root = make_data(tmp_path / "data")
    breaker, expected = LAYOUTS[case]
    breaker(root)
    msg = one_line_error(scan, root)
    for fragment in expected:
        assert fragment in msg, (fragment, msg)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("id,label\nt0,1\nt1,0\nt2,0\nt3,0\nghost,1\n", ["1 id(s) match no image", "ghost", "file names without extension"]),
        ("id,label\nt0,1\nt0,0\nt1,0\nt2,0\nt3,0\n", ["1 id(s) listed more than once", "t0", "one row per id"]),
    ],
    ids=["unknown id", "duplicate id"],
)
def test_bad_labels_csv(tmp_path, text, expected):
    root = make_data(tmp_path / "data")
    msg = one_line_error(scan, root, test_labels=_labels(root, text))
    assert "labels.csv" in msg
    for fragment in expected:
        assert fragment in msg, (fragment, msg)


def test_too_few_images_for_the_validation_split(tmp_path):
    manifest, _ = scan(make_data(tmp_path / "data", n_bad=3))
    msg = one_line_error(make_split, manifest, SplitConfig(seed=0, val_good=2, val_bad=3))
    assert "class 'bad'" in msg and "has 3 training image(s)" in msg and "split.val_bad" in msg
    assert "at most 2" in msg


# ---------------------------------------------------------------- leakage: exact duplicates


def _with_twins(root: Path) -> Path:
    """t0 copied into train (good and bad); g0 copied within train; t1 copied within test."""
    shutil.copyfile(root / "test/all_tests/t0.jpg", root / "train/good_0/copy of t0.jpg")
    shutil.copyfile(root / "test/all_tests/t0.jpg", root / "train/bad_1/b-t0.png")
    shutil.copyfile(root / "train/good_0/g0.jpg", root / "train/bad_1/b-g0.jpg")
    shutil.copyfile(root / "test/all_tests/t1.jpg", root / "test/all_tests/t1 again.jpg")
    return root


def test_duplicates_fail_names_the_files(tmp_path):
    root = _with_twins(make_data(tmp_path / "data"))
    manifest, _ = scan(root)
    msg = one_line_error(resolve_duplicates, manifest, "fail")
    assert msg.startswith("2 group(s) of identical images")
    for rel in ("test/all_tests/t0.jpg", "train/good_0/copy of t0.jpg", "train/bad_1/b-t0.png",
                "train/good_0/g0.jpg", "train/bad_1/b-g0.jpg"):
        assert (root / rel).as_posix() in msg, rel
    assert "t1 again" not in msg  # twins that are all test images are no leakage
    assert "ingest.duplicates: dedupe" in msg


def test_dedupe_keeps_the_test_copy_and_counts(tmp_path):
    root = _with_twins(make_data(tmp_path / "data"))
    manifest, bad = scan(root)
    kept, dropped = resolve_duplicates(manifest, "dedupe")
    assert sorted(Path(d.path).name for d in dropped) == ["b-t0.png", "copy of t0.jpg", "g0.jpg"]
    assert {d.kept for d in dropped if "t0" in d.path} == {(root / "test/all_tests/t0.jpg").as_posix()}
    # a train-only twin keeps the copy whose path sorts first (train/bad_1 < train/good_0)
    assert [Path(d.kept).name for d in dropped if d.path.endswith("/g0.jpg")] == ["b-g0.jpg"]
    kept_ids = set(kept["id"])
    assert {"t0", "t1", "t1 again"} <= kept_ids and "copy of t0" not in kept_ids
    assert "b-g0" in kept_ids and "g0" not in kept_ids
    assert not kept.loc[kept["source"] == "train", "sha256"].isin(kept.loc[kept["source"] == "test", "sha256"]).any()
    assert ingest_metrics(kept, bad, dropped)["duplicates"] == 3
    table = bad_files_table(bad, dropped)
    assert list(table["problem"]) == ["duplicate"] * 3 and table["reason"].str.contains("which is kept").all()
    # deterministic whatever the row order
    again, _ = resolve_duplicates(manifest.sample(frac=1, random_state=1), "dedupe")
    assert sorted(again["path"]) == sorted(kept["path"])
    split = make_split(kept, SplitConfig(seed=0, val_good=2, val_bad=2), check_leakage=True)
    assert split.groupby("sha256")["split"].nunique().max() == 1


def test_train_only_twin_keeps_the_first_path(tmp_path):
    root = make_data(tmp_path / "data")
    shutil.copyfile(root / "train/good_0/g0.jpg", root / "train/bad_1/b-g0.jpg")
    kept, dropped = resolve_duplicates(scan(root)[0], "dedupe")
    assert [(Path(d.path).name, Path(d.kept).name) for d in dropped] == [("g0.jpg", "b-g0.jpg")]


def test_no_duplicates_leaves_the_manifest_unchanged(tmp_path):
    manifest, _ = scan(make_data(tmp_path / "data"))
    for policy in ("fail", "dedupe"):
        kept, dropped = resolve_duplicates(manifest, policy)
        assert dropped == [] and kept is manifest
    assert "ingest.duplicates" in one_line_error(resolve_duplicates, manifest, "ignore")


def test_split_refuses_a_manifest_with_twins_across_splits(tmp_path):
    root = make_data(tmp_path / "data")
    shutil.copyfile(root / "test/all_tests/t0.jpg", root / "train/good_0/leak.jpg")
    manifest, _ = scan(root)  # resolve_duplicates bypassed
    msg = one_line_error(make_split, manifest, SplitConfig(seed=0, val_good=2, val_bad=2), check_leakage=True)
    assert "leak.jpg" in msg and "t0.jpg" in msg and "ingest.duplicates" in msg


def test_builtin_generator_makes_no_duplicates(tmp_path):
    from pipeline_lib.data.chipgen import GenerateConfig, generate_dataset

    params = yaml.safe_load((ROOT / "params.yaml").read_text())["generate"]
    params.update(n_train=120, n_test=40)  # the default generator, fewer images
    generate_dataset(tmp_path / "data", GenerateConfig.from_params(params), progress=False)
    manifest, _ = scan(tmp_path / "data")
    assert not manifest["sha256"].duplicated().any()
    assert resolve_duplicates(manifest, "fail")[0] is manifest


# ---------------------------------------------------------------- data paths from params


@pytest.mark.parametrize("key", ["ingest.root", "ingest.test_labels"])
@pytest.mark.parametrize("path", ["../../etc", "data/../../etc", "data/../src", "..", "datax/raw"])
def test_relative_data_paths_cannot_escape_the_data_root(tmp_path, monkeypatch, key, path):
    make_data(tmp_path / "data/raw/mine")
    monkeypatch.chdir(tmp_path)
    kwargs = {"test_labels": path} if key == "ingest.test_labels" else {}
    root = "data/raw/mine" if key == "ingest.test_labels" else path
    msg = one_line_error(scan, root, **kwargs)
    assert msg.startswith(f"{key} in params.yaml is {path!r}") and "outside the data root data/" in msg
    assert "absolute path" in msg


def test_data_paths_inside_the_root_or_absolute_are_allowed(tmp_path, monkeypatch):
    make_data(tmp_path / "data/raw/mine")
    monkeypatch.chdir(tmp_path)
    assert len(scan("data/raw/mine")[0]) == 16
    assert len(scan("./data/raw/../raw/mine")[0]) == 16
    assert len(scan(str(tmp_path / "data/raw/mine"))[0]) == 16  # explicit absolute path
    assert confine_data_path("data", key="ingest.root") == Path("data")
    elsewhere = make_data(tmp_path / "elsewhere")
    assert len(scan(str(elsewhere))[0]) == 16


# ---------------------------------------------------------------- untrusted pickles


class _Evil:
    """Unpickling this runs code: it writes the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def _evil_file(path: Path, marker: Path, fmt: str) -> Path:
    payload = {"format": "nexperia-train-state/1", "state_dict": {"w": torch.zeros(1)}, "x": _Evil(marker)}
    # zip: torch's current format; legacy: the pre-1.6 plain-pickle format torch.load also reads
    torch.save(payload, path, _use_new_zipfile_serialization=(fmt == "zip"))
    return path


def _load_checkpoint(path):
    from pipeline_lib.training.loop import Checkpoint

    return Checkpoint(path.parent, path.name).read()


def _load_weights(path):
    from pipeline_lib.training.checkpoint import load_weights

    return load_weights(path)


def _load_trained(path):
    from pipeline_lib.models.end_to_end import load_trained

    return load_trained(path)


def _load_imagenet(path):
    from pipeline_lib.features.backbones import build_backbone

    return build_backbone("resnet18", "imagenet", seed=0, weights_file=path)


LOADERS = {
    "training checkpoint": (_load_checkpoint, "checkpoint.pt"),
    "model weights": (_load_weights, "model.pt"),
    "deep.load_trained": (_load_trained, "model.pt"),
    "imagenet weights": (_load_imagenet, "resnet18-f37072fd.pth"),
}


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_the_payload_is_live_without_weights_only(tmp_path, fmt):
    marker = tmp_path / "marker"
    path = _evil_file(tmp_path / "evil.pt", marker, fmt)
    torch.load(path, weights_only=False)  # what an unsafe loader would do
    assert marker.read_text() == "pwned"


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_code_executing_pickle_is_refused(tmp_path, loader, fmt):
    load, name = LOADERS[loader]
    marker = tmp_path / "marker"
    path = _evil_file(tmp_path / name, marker, fmt)
    msg = one_line_error(load, path)
    assert str(path) in msg
    assert not marker.exists()


def test_every_torch_load_in_src_is_weights_only():
    calls = []
    for source in sorted((ROOT / "src").rglob("*.py")):
        for node in ast.walk(ast.parse(source.read_text(), filename=str(source))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load":
                if isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
                    safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                               for k in node.keywords)
                    calls.append((f"{source.relative_to(ROOT)}:{node.lineno}", safe))
    assert calls, "no torch.load found: the scan is broken"
    assert [where for where, safe in calls if not safe] == []


# ---------------------------------------------------------------- the real ingest rule


@pytest.fixture(scope="module")
def workflow_copy(tmp_path_factory) -> Path:
    return copy_workflow(tmp_path_factory.mktemp("reliability"))


def _config(workdir: Path, name: str, **ingest) -> str:
    cfg = {"ingest": {"root": "data/raw/mine", "test_labels": None, **ingest}, "split": {"val_good": 2, "val_bad": 2}}
    (workdir / name).write_text(yaml.safe_dump(cfg))
    return name


@pytest.mark.e2e
def test_ingest_rule_skip_and_dedupe_report_and_downstream_sees_only_the_manifest(workflow_copy):
    work = workflow_copy
    root = make_data(work / "data/raw/mine")
    (root / "train/good_0/zero.jpg").write_bytes(b"")
    (root / "train/bad_1/trunc ü.jpg").write_bytes(_jpeg(9, (64, 64))[:500])
    shutil.copyfile(root / "test/all_tests/t2.jpg", root / "train/good_0/twin.jpg")
    cfg = _config(work, "skip.yaml", bad_images="skip", duplicates="dedupe")
    snakemake(work, "results/split/split.parquet", "--configfile", ".test/params.yaml", cfg)
    report = pd.read_csv(work / "results/ingest/bad_files.csv", dtype=str)
    assert sorted(zip(report["problem"], report["path"].map(lambda p: Path(p).name))) == [
        ("bad", "trunc ü.jpg"), ("bad", "zero.jpg"), ("duplicate", "twin.jpg")]
    metrics = json.loads((work / "results/ingest/ingest_metrics.json").read_text())
    assert metrics == {"images": 16, "images_train": 12, "images_test": 4, "bad": 2, "skipped": 2, "duplicates": 1,
                       "label_conflicts": 0, "near_duplicates": 0, "test_files": 4, "test_skipped": 0}
    manifest = pd.read_parquet(work / "results/ingest/manifest.parquet")
    split = pd.read_parquet(work / "results/split/split.parquet")
    assert set(split["path"]) == set(manifest["path"])
    assert not set(split["path"]) & set(report["path"])
    log = (work / "logs/ingest.log").read_text()
    assert "skipped" in log and "dropped duplicate" in log


@pytest.mark.e2e
def test_ingest_rule_fails_with_one_line_on_duplicates_by_default(workflow_copy):
    work = workflow_copy
    root = work / "data/raw/twins"
    make_data(root)
    shutil.copyfile(root / "test/all_tests/t1.jpg", root / "train/bad_1/same.jpg")
    cfg = {"ingest": {"root": "data/raw/twins", "test_labels": None}}
    (work / "dup.yaml").write_text(yaml.safe_dump(cfg))
    shutil.rmtree(work / "results/ingest", ignore_errors=True)
    out = snakemake(work, "results/ingest/manifest.parquet", "--configfile", ".test/params.yaml", "dup.yaml", check=False)
    assert out.returncode != 0
    errors = [line for line in (work / "logs/ingest.log").read_text().splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "same.jpg" in errors[0] and "t1.jpg" in errors[0], errors
    assert not (work / "results/ingest/manifest.parquet").exists()


# ---------------------------------------------------------------- params: fail before any rule


PARAM_CASES = {
    "wrong type": ({"features": {"batch_size": "many"}}, "features.batch_size"),
    "out of range": ({"split": {"val_bad": -1}}, "split.val_bad"),
    "unknown key": ({"ingest": {"colour": "red"}}, "ingest.colour"),
    "unknown model name": ({"features": {"arch": "resnet999"}}, "features.arch"),
    "unknown nested key": ({"train": {"cnn2": {"loop": {"epochz": 3}}}}, "train.cnn2.loop.epochz"),
    "closed enum (new key)": ({"ingest": {"duplicates": "ignore"}}, "ingest.duplicates"),
}


@pytest.mark.dag
@pytest.mark.parametrize("case", sorted(PARAM_CASES))
def test_schema_violation_stops_the_dry_run_naming_the_key(tmp_path_factory, case):
    work = copy_workflow(tmp_path_factory.mktemp("params"))
    override, key = PARAM_CASES[case]
    (work / "bad.yaml").write_text(yaml.safe_dump(override))
    out = snakemake(work, "-n", "--configfile", ".test/params.yaml", "bad.yaml", check=False)
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert f"params.yaml: {key}:" in text, text[-2000:]
    assert not (work / "results").exists() and not (work / "logs").exists()
