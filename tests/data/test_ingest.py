"""Ingest: manifest contract, bad-file policy and one-line errors on tiny datasets."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFile

from pipeline_lib.data.datasets import load_rgb
from pipeline_lib.io.errors import PipelineError
from pipeline_lib.data.ingest import (
    IMAGE_EXTENSIONS,
    MANIFEST_COLUMNS,
    BadFile,
    scan_dataset,
    write_manifest,
)

COUNTS = {"train/good_0": 4, "train/bad_1": 3, "test/all_tests": 3}
PREFIX = {"train/good_0": "g", "train/bad_1": "b", "test/all_tests": "t"}


def _rgb(seed: int, size=(12, 10)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _jpeg_bytes(seed: int = 0, size=(32, 32)) -> bytes:
    buf = io.BytesIO()
    _rgb(seed, size).save(buf, "JPEG")
    return buf.getvalue()


def make_dataset(root: Path, *, labels: bool = True) -> Path:
    """The Nexperia layout with COUNTS small JPEGs, plus test_labels.csv (t0 bad)."""
    seed = 0
    for rel, n in COUNTS.items():
        (root / rel).mkdir(parents=True)
        for i in range(n):
            _rgb(seed).save(root / rel / f"{PREFIX[rel]}{i}.jpg")
            seed += 1
    if labels:
        ids = [f"t{i}" for i in range(COUNTS["test/all_tests"])]
        pd.DataFrame({"id": ids, "label": [1] + [0] * (len(ids) - 1)}).to_csv(
            root / "test_labels.csv", index=False
        )
    (root / "defects.csv").write_text("not,scanned\n")
    return root


def scan(root, **kw):
    kw.setdefault("progress", False)
    return scan_dataset(root, **kw)


def error_of(root, **kw) -> str:
    with pytest.raises(PipelineError) as info:
        scan(root, **kw)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


@pytest.fixture
def data(tmp_path) -> Path:
    return make_dataset(tmp_path / "data")


# ---------------------------------------------------------------- the manifest contract


def test_manifest_contract(data):
    df, bad = scan(data, test_labels=str(data / "test_labels.csv"))
    assert bad == []
    assert list(df.columns) == list(MANIFEST_COLUMNS)
    assert str(df["label"].dtype) == "int8"
    assert str(df["width"].dtype) == "int32" and str(df["height"].dtype) == "int32"
    assert str(df["bytes"].dtype) == "int64"
    for col in ("id", "path", "source", "sha256", "mode"):
        assert all(isinstance(v, str) for v in df[col])
    assert len(df) == sum(COUNTS.values())
    assert df["id"].is_unique
    # sorted by (source, path)
    assert list(zip(df.source, df.path)) == sorted(zip(df.source, df.path))
    by_id = df.set_index("id")
    assert (by_id.loc[["g0", "g1", "g2", "g3"], "label"] == 0).all()
    assert (by_id.loc[["b0", "b1", "b2"], "label"] == 1).all()
    assert by_id.loc["t0", "label"] == 1 and (by_id.loc[["t1", "t2"], "label"] == 0).all()
    assert set(by_id.loc[["g0", "b0"], "source"]) == {"train"}
    assert by_id.loc["t2", "source"] == "test"
    assert by_id.loc["g0", "path"] == (data / "train/good_0/g0.jpg").as_posix()
    assert (df["width"] == 12).all() and (df["height"] == 10).all() and (df["mode"] == "RGB").all()


def test_unlabelled_test_images_get_minus_one(data):
    df, _ = scan(data)  # the labels CSV at the root is ignored unless given
    assert (df.loc[df.source == "test", "label"] == -1).all()
    assert not df["path"].str.contains("csv").any()


def test_sha256_and_bytes_match_the_files(data):
    df, _ = scan(data)
    for path, sha, size in zip(df.path, df.sha256, df.bytes):
        raw = Path(path).read_bytes()
        assert sha == hashlib.sha256(raw).hexdigest()
        assert size == len(raw) == os.path.getsize(path)


def test_relative_root_stays_relative(data, monkeypatch):
    monkeypatch.chdir(data.parent)
    df, _ = scan("data")
    assert df["path"].str.startswith("data/").all()
    assert Path(df["path"].iloc[0]).is_file()


def test_deterministic_and_progress_to_stderr(data, capsys):
    a, _ = scan(data, progress=True)
    err = capsys.readouterr().err
    assert "ingest" in err and "img/s" in err
    b, _ = scan(data)
    pd.testing.assert_frame_equal(a, b)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_unusual_but_valid_images(data):
    good = data / "train/good_0"
    Image.fromarray(np.full((9, 7), 80, np.uint8)).save(good / "grey.jpg")
    Image.new("RGBA", (5, 3), (10, 20, 30, 128)).save(good / "alpha.png")
    Image.fromarray(np.full((4, 6), 65535, np.uint16)).save(good / "deep16.png")
    Image.fromarray(np.full((4, 6), 32896, np.uint16)).save(data / "train/bad_1/mid16.png")
    _rgb(1, (1, 13)).save(good / "thin.bmp")
    Image.new("P", (3, 3), 2).save(data / "train/bad_1/palette.png")
    _rgb(2).save(data / "test/all_tests/with space é 芯片.jpeg")
    _rgb(3).save(data / "test/all_tests/UPPER.JPG", "JPEG")
    # hidden and OS clutter files are ignored
    (good / ".DS_Store").write_bytes(b"\x00\x01")
    (good / "._g0.jpg").write_bytes(b"appledouble")
    (good / "Thumbs.db").write_bytes(b"\x00")

    df, bad = scan(data)
    assert bad == []
    by_id = df.set_index("id")
    expected = {
        "grey": ("L", 7, 9), "alpha": ("RGBA", 5, 3), "deep16": ("I;16", 6, 4),
        "thin": ("RGB", 1, 13), "palette": ("P", 3, 3), "with space é 芯片": ("RGB", 12, 10),
        "UPPER": ("RGB", 12, 10),
    }
    for ident, (mode, w, h) in expected.items():
        row = by_id.loc[ident]
        assert (row["mode"], row["width"], row["height"]) == (mode, w, h), ident
        img = load_rgb(row["path"])
        assert img.mode == "RGB" and img.size == (w, h)
    assert not any(i.startswith(".") or i == "Thumbs" for i in df["id"])
    # 16-bit grey is scaled to 8 bits, not clipped
    assert np.asarray(load_rgb(by_id.loc["deep16", "path"])).min() == 255
    assert set(np.unique(np.asarray(load_rgb(by_id.loc["mid16", "path"])))) == {128}


def test_write_manifest_roundtrip(data, tmp_path):
    df, _ = scan(data)
    out = tmp_path / "out" / "manifest.parquet"
    write_manifest(df, out)
    back = pd.read_parquet(out)
    assert list(back.columns) == list(MANIFEST_COLUMNS)
    assert back["label"].dtype == np.int8 and back["width"].dtype == np.int32
    assert back["bytes"].dtype == np.int64
    assert back["id"].tolist() == df["id"].tolist()
    assert sorted(p.name for p in out.parent.iterdir()) == ["manifest.parquet"]
    with pytest.raises(ValueError):
        write_manifest(df.drop(columns=["sha256"]), tmp_path / "x.parquet")


# ---------------------------------------------------------------- bad files


def _truncated_jpeg() -> bytes:
    raw = _jpeg_bytes(5, (64, 64))
    return raw[: len(raw) // 2]


def _corrupt_png() -> bytes:
    buf = io.BytesIO()
    _rgb(6, (64, 64)).save(buf, "PNG")
    raw = bytearray(buf.getvalue())
    middle = len(raw) // 2
    raw[middle : middle + 50] = b"\x00" * 50  # full length, broken compressed stream
    return bytes(raw)


CONTENT = {"truncated_jpeg": _truncated_jpeg, "corrupt_png": _corrupt_png}


BAD_CASES = {
    "zero": ("train/good_0/empty.jpg", b"", "empty file"),
    "truncated": ("train/bad_1/cut.jpg", "truncated_jpeg", "image file is truncated"),
    "corrupt_png": ("train/good_0/broken.png", "corrupt_png", "cannot be decoded"),
    "not_an_image": ("test/all_tests/notes.png", b"hello, not a picture\n", "not a JPEG, PNG or BMP"),
    "garbage_bmp": ("train/good_0/junk.bmp", b"BM" + b"\x00" * 10, "not a JPEG, PNG or BMP"),
    "wrong_extension": ("train/good_0/readme.txt", b"text", "unexpected file type '.txt'"),
    "no_extension": ("train/bad_1/mystery", b"x", "unexpected file type"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_file_fails_naming_it(data, case):
    rel, content, reason = BAD_CASES[case]
    (data / rel).write_bytes(CONTENT[content]() if isinstance(content, str) else content)
    msg = error_of(data)
    assert (data / rel).as_posix() in msg
    assert reason in msg
    assert "1 bad file(s) among 11 files" in msg
    assert "ingest.bad_images" in msg


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_file_skipped(data, case):
    rel, content, reason = BAD_CASES[case]
    (data / rel).write_bytes(CONTENT[content]() if isinstance(content, str) else content)
    df, bad = scan(data, bad_images="skip")
    assert len(bad) == 1 and isinstance(bad[0], BadFile)
    assert bad[0].path == (data / rel).as_posix() and reason in bad[0].reason
    assert len(df) == sum(COUNTS.values())
    assert (data / rel).as_posix() not in set(df["path"])


def test_many_bad_files_are_truncated_in_the_message(data):
    for i in range(13):
        (data / f"train/good_0/z{i:02d}.jpg").write_bytes(b"")
    msg = error_of(data)
    assert "13 bad file(s)" in msg and "and 3 more" in msg
    assert "z09.jpg" in msg and "z10.jpg" not in msg
    df, bad = scan(data, bad_images="skip")
    assert [Path(b.path).name for b in bad] == [f"z{i:02d}.jpg" for i in range(13)]
    assert len(df) == sum(COUNTS.values())


def test_class_with_only_bad_files_fails_even_when_skipping(data):
    shutil.rmtree(data / "train/bad_1")
    (data / "train/bad_1").mkdir()
    (data / "train/bad_1/x.jpg").write_bytes(b"")
    msg = error_of(data, bad_images="skip")
    assert "train/bad_1" in msg and "no usable image" in msg


def test_unknown_bad_images_policy(data):
    assert "ingest.bad_images" in error_of(data, bad_images="ignore")


# ---------------------------------------------------------------- layout errors


def test_missing_root(tmp_path):
    msg = error_of(tmp_path / "nowhere")
    assert "nowhere" in msg and "ingest.root" in msg and "does not exist" in msg


@pytest.mark.parametrize("rel", ["train/good_0", "train/bad_1", "test/all_tests"])
def test_missing_class_folder(data, rel):
    shutil.rmtree(data / rel)
    msg = error_of(data)
    assert (data / rel).as_posix() in msg and "missing" in msg


@pytest.mark.parametrize("rel", ["train/good_0", "test/all_tests"])
def test_empty_class_folder(data, rel):
    shutil.rmtree(data / rel)
    (data / rel).mkdir()
    (data / rel / ".DS_Store").write_bytes(b"x")  # hidden files do not count
    msg = error_of(data)
    assert (data / rel).as_posix() in msg and "empty" in msg


def test_extra_folder_under_train(data):
    (data / "train/maybe_2").mkdir()
    _rgb(0).save(data / "train/maybe_2/m0.jpg")
    msg = error_of(data)
    assert "train/maybe_2" in msg and "good_0" in msg and "bad_1" in msg


def test_image_directly_under_train(data):
    _rgb(0).save(data / "train/loose.jpg")
    assert "train/loose.jpg" in error_of(data)


def test_duplicate_ids(data):
    _rgb(9).save(data / "test/all_tests/g1.png")
    msg = error_of(data)
    assert "'g1'" in msg and "train/good_0/g1.jpg" in msg and "test/all_tests/g1.png" in msg
    assert "duplicate" in msg


# ---------------------------------------------------------------- test-labels CSV


def _labels(data, text: str) -> str:
    path = data / "labels.csv"
    path.write_text(text)
    return str(path)


def test_labels_file_missing(data):
    msg = error_of(data, test_labels=str(data / "nope.csv"))
    assert "nope.csv" in msg and "does not exist" in msg


def test_labels_file_unreadable(data):
    msg = error_of(data, test_labels=_labels(data, ""))
    assert "labels.csv" in msg and "cannot be read" in msg


def test_labels_wrong_columns(data):
    msg = error_of(data, test_labels=_labels(data, "name,y\nt0,1\n"))
    assert "labels.csv" in msg and "id,label" in msg


def test_labels_unknown_id(data):
    msg = error_of(data, test_labels=_labels(data, "id,label\nt0,1\nt1,0\nt2,0\nghost,1\n"))
    assert "ghost" in msg and "match no image" in msg


def test_labels_duplicate_id(data):
    msg = error_of(data, test_labels=_labels(data, "id,label\nt0,1\nt1,0\nt2,0\nt1,1\n"))
    assert "t1" in msg and "more than once" in msg


@pytest.mark.parametrize("value", ["2", "-1", "bad", "", "0.5"])
def test_labels_not_binary(data, value):
    msg = error_of(data, test_labels=_labels(data, f"id,label\nt0,{value}\nt1,0\nt2,0\n"))
    assert "t0=" in msg and "not 0 (good) or 1 (bad)" in msg


def test_test_image_without_label(data):
    msg = error_of(data, test_labels=_labels(data, "id,label\nt0,1\nt2,0\n"))
    assert "t1" in msg and "no label" in msg


def test_labels_keep_leading_zero_ids(data):
    _rgb(4).save(data / "test/all_tests/007.jpg")
    path = _labels(data, "id,label\nt0,1\nt1,0\nt2,0\n007,1\n")
    df, _ = scan(data, test_labels=path)
    assert df.set_index("id").loc["007", "label"] == 1


# extension -> the Pillow format a real camera export of that name holds
READ = {".jpg": "JPEG", ".JPG": "JPEG", ".jpeg": "JPEG", ".Jpeg": "JPEG", ".png": "PNG", ".PNG": "PNG",
        ".bmp": "BMP", ".BMP": "BMP"}
REFUSED = {".gif": "GIF", ".tif": "TIFF", ".tiff": "TIFF", ".webp": "WEBP"}


@pytest.mark.parametrize("ext", sorted(READ))
def test_jpeg_png_and_bmp_are_read_whatever_the_case_of_the_extension(data, ext):
    _rgb(42).save(data / f"train/good_0/extra{ext}", READ[ext])
    df, bad = scan(data)
    assert bad == []
    row = df.set_index("id").loc["extra"]
    assert row["path"] == (data / f"train/good_0/extra{ext}").as_posix() and row["label"] == 0
    assert len(df) == sum(COUNTS.values()) + 1
    assert ext.lower() in IMAGE_EXTENSIONS


@pytest.mark.parametrize("ext", sorted(REFUSED))
def test_other_image_formats_are_bad_files_not_images(data, ext):
    # decodable by Pillow, but not a format of the study's data: reported, never read
    _rgb(42).save(data / f"train/bad_1/extra{ext}", REFUSED[ext])
    assert f"unexpected file type '{ext}'" in error_of(data)
    df, bad = scan(data, bad_images="skip")
    assert [Path(b.path).name for b in bad] == [f"extra{ext}"] and "extra" not in set(df["id"])
