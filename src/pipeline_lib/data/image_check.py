"""Ingest's look at one file: is it a usable image, and what identifies its content.

:func:`inspect_image` reads a file once and returns either the reason it is bad (a string)
or an :class:`Inspected` with three identities: the sha256 of the bytes, the sha256 of the
decoded pixels (the same image re-saved as PNG, or a JPEG with a comment added, has other
bytes but the same pixels) and the DCT block of :mod:`pipeline_lib.data.phash` (re-encodes,
resizes, flips).

A file is bad when it is

* not a regular file (a named pipe would block the read forever, a device never ends),
  checked with ``stat`` before it is opened, and again on the open descriptor;
* empty, or unreadable, or not a JPEG/PNG/BMP, or Pillow cannot decode it fully;
* decoded with a warning: Pillow's Python warnings (recorded per thread by
  :func:`record_decoder_warnings`), and libjpeg's "Corrupt JPEG data ..." family. Pillow
  silences libjpeg's warnings (its decoder gives no way to see them), so JPEGs are decoded
  by libjpeg-turbo through ``simplejpeg`` with ``strict=True``, which turns exactly those
  warnings into errors carrying libjpeg's own message. Its pixels equal Pillow's for grey
  and colour JPEGs (same library, same settings), so they are used and the JPEG is decoded
  once; Pillow decodes the rest (and any JPEG that warns, for its own error message);
* smaller than ``ingest.min_side`` pixels on a side.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import simplejpeg
from PIL import Image, UnidentifiedImageError

from .phash import dct_block, grey

# Pillow format names the image extensions may hold (content decides, not the name).
PIL_FORMATS = ("JPEG", "PNG", "BMP")
# libjpeg warnings that mean the data are damaged (jerror.h: JWRN_*); others, such as an
# unknown JFIF revision, are about metadata and leave the pixels alone.
_JPEG_CORRUPTION = ("Corrupt JPEG data", "Premature end of JPEG file", "Inconsistent progression",
                    "Invalid SOS parameters")
_SIMPLEJPEG_SPACE = {"L": "GRAY", "RGB": "RGB", "CMYK": "CMYK"}
_SIMPLEJPEG_SAME = ("L", "RGB")  # Pillow modes whose pixels libjpeg-turbo gives identically
_FILE_KINDS = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISDIR, "a folder"),
)

_local = threading.local()


@dataclass
class Inspected:
    sha256: str
    pixel_sha256: str
    width: int
    height: int
    mode: str
    nbytes: int
    block: np.ndarray  # phash.dct_block


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def _record(message, category, filename, lineno, file=None, line=None) -> None:
    sink = getattr(_local, "warnings", None)
    if sink is not None:  # a thread inside inspect_image; anything else is not ours
        sink.append(f"{category.__name__}: {one_line(message)}")


@contextmanager
def record_decoder_warnings() -> Iterator[None]:
    """While active, every Python warning raised inside :func:`inspect_image` (in any thread)
    is charged to the file being inspected in that thread. The filter is process-wide,
    the record is per thread: the warning is raised in the thread that decodes."""
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # not once per code location: once per file
        warnings.showwarning = _record
        yield


def _kind(mode: int) -> str:
    for test, name in _FILE_KINDS:
        if test(mode):
            return name
    return "not a regular file"


def _read_regular(path: Path) -> bytes | str:
    """The file's bytes, or why it cannot be read; never opens (or blocks on) a non-file."""
    not_regular = (
        "is {kind}, not a regular file; only regular image files are read - replace it with "
        "the image or remove it"
    )
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            return not_regular.format(kind=_kind(st.st_mode))
        # O_NONBLOCK: should the path have become a pipe since the stat, open returns at once
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        return f"cannot be read ({one_line(exc.strerror or exc)})"
    with open(fd, "rb", closefd=True) as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            return not_regular.format(kind=_kind(st.st_mode))
        try:
            return fh.read()
        except OSError as exc:
            return f"cannot be read ({one_line(exc.strerror or exc)})"


def _libjpeg_decode(data: bytes, mode: str) -> tuple[np.ndarray | None, str | None]:
    """(pixels, corruption warning) from libjpeg-turbo in strict mode (module docstring).

    Pixels only when libjpeg decoded without any warning; a warning that is not about
    damaged data (an unknown JFIF revision) gives neither, and Pillow decodes the file.
    """
    try:
        pixels = simplejpeg.decode_jpeg(data, colorspace=_SIMPLEJPEG_SPACE.get(mode, "RGB"), strict=True)
    except ValueError as exc:
        message = one_line(exc)
        return None, (message if message.startswith(_JPEG_CORRUPTION) else None)
    return (pixels[..., 0] if mode == "L" else pixels), None


def _pixel_sha256(mode: str, width: int, height: int, pixels: bytes) -> str:
    digest = hashlib.sha256(f"{mode} {width}x{height}\n".encode())
    digest.update(pixels)
    return digest.hexdigest()


def _pillow_pixels(img: Image.Image) -> tuple[str, bytes, np.ndarray]:
    """(mode, raw bytes, grey) of a Pillow-decoded image."""
    if img.mode in ("P", "PA"):  # the same indices under another palette are other pixels
        img = img.convert("RGBA")
    grey_pixels = grey(np.asarray(img)) if img.mode in ("L", "RGB") else np.asarray(img.convert("F"))
    return img.mode, img.tobytes(), grey_pixels


def _decode(data: bytes, min_side: int) -> Inspected | str:
    with Image.open(io.BytesIO(data), formats=PIL_FORMATS) as img:
        width, height = img.size
        if width < 1 or height < 1:
            return f"image has no pixels ({width}x{height})"
        if min(width, height) < min_side:
            return (
                f"image is {width}x{height} px, smaller than ingest.min_side ({min_side} px) in "
                "params.yaml; a picture this small holds no chip to classify - remove it, or "
                "lower ingest.min_side if such images are real data"
            )
        pixels = warning = None
        if img.format == "JPEG":
            # libjpeg-turbo with Pillow's own settings (islow IDCT, fancy upsampling) gives
            # Pillow's pixels for grey and colour JPEGs (a test checks it): decoded once. Other
            # JPEGs, and any that warn, are decoded by Pillow too.
            pixels, warning = _libjpeg_decode(data, img.mode)
        if pixels is None or img.mode not in _SIMPLEJPEG_SAME:
            img.load()  # Pillow's own error for what it cannot decode (e.g. truncated)
            if warning:
                return f"decoded with a libjpeg warning ({warning}): the data are damaged"
            mode, raw, grey_pixels = _pillow_pixels(img)
        else:
            mode, raw, grey_pixels = img.mode, pixels.tobytes(), grey(pixels)
        return Inspected(
            sha256=hashlib.sha256(data).hexdigest(),
            pixel_sha256=_pixel_sha256(mode, width, height, raw),
            width=width,
            height=height,
            mode=img.mode,
            nbytes=len(data),
            block=dct_block(grey_pixels),
        )


def inspect_image(path: Path, *, min_side: int = 1) -> Inspected | str:
    """Read, check and fully decode one file; a string is the reason it is bad."""
    data = _read_regular(path)
    if isinstance(data, str):
        return data
    if not data:
        return "empty file (0 bytes)"
    _local.warnings = []
    try:
        result = _decode(data, min_side)
    except UnidentifiedImageError:
        return "not a JPEG, PNG or BMP image (content not recognised)"
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, EOFError...
        return f"cannot be decoded ({type(exc).__name__}: {one_line(exc)})"
    finally:
        recorded, _local.warnings = _local.warnings, None
    if recorded and not isinstance(result, str):
        return f"decoded with a warning ({'; '.join(dict.fromkeys(recorded))})"
    return result
