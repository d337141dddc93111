"""Atomic outputs: write to a temporary sibling, then rename over the target.

A killed process leaves either the old complete file or nothing, never a half-written
file under the final name. The temporary lives in the same directory so ``os.replace``
stays a single-filesystem rename.

A full disk (ENOSPC, EDQUOT) or a folder that cannot be written (EACCES, EPERM, EROFS) ends
the write as one :class:`PipelineError` line naming the target and the fix, with the
temporary removed. :func:`check_free_space` and :func:`check_writable` find the same faults
before a job starts its work (``scripting.run_step``, the features and training steps).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

from .errors import PipelineError

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
_NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}
MiB = 1 << 20


def _size(nbytes: float) -> str:
    return f"{nbytes / MiB:,.1f} MiB"


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing ancestor (what ``disk_usage`` can measure)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _free_bytes(path: Path) -> int:
    return shutil.disk_usage(_existing(path)).free


def write_error(target: str | os.PathLike, exc: OSError, *, subject: str | None = None) -> PipelineError | None:
    """The one-line error for a write to ``target`` that failed with ``exc``; None when
    ``exc`` is not a full disk or a folder that cannot be written. ``subject`` replaces the
    opening "cannot write <target>"."""
    subject = subject or f"cannot write {Path(target).as_posix()}"
    code = exc.errno if exc.errno is not None else (errno.ENOSPC if "No space left" in str(exc) else None)
    folder = Path(target).parent
    if code in _NO_SPACE:
        return PipelineError(
            f"{subject}: no space left on its device (disk full or "
            f"quota; {_size(_free_bytes(folder))} free now); free space there (or move results/ "
            "to a larger disk) and rerun - nothing half-written was kept"
        )
    # a permission error on some other file (an input read inside the block) is not ours
    named = None if exc.filename is None else Path(os.path.abspath(os.fspath(exc.filename)))
    here = Path(os.path.abspath(folder))
    if code in _NOT_WRITABLE and (named is None or named == here or here in named.parents):
        return PipelineError(
            f"{subject}: {exc.strerror or exc}; make "
            f"{folder.as_posix()}/ writable (its permissions, `chattr -i` if it is immutable, or "
            "a read-only mount) and rerun"
        )
    return None


def check_writable(folder: str | os.PathLike) -> None:
    """PipelineError unless a file can be created in ``folder`` (created if missing): a
    probe file, because permission bits say nothing for root or immutable folders."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        subject = f"cannot create files in {folder.as_posix()}/"
        raise (write_error(folder / ".write-probe", exc, subject=subject) or exc) from None


def check_free_space(needs: Mapping[str | os.PathLike, float], what: str, *, headroom: int = 8 * MiB) -> None:
    """PipelineError if the filesystem of any path in ``needs`` (path: bytes about to be
    written there) has less free space than its paths need together plus ``headroom``."""
    by_device: dict[int, tuple[Path, float]] = {}
    for path, nbytes in needs.items():
        where = _existing(Path(path))
        dev = where.stat().st_dev
        first, total = by_device.get(dev, (Path(path), 0.0))
        by_device[dev] = (first, total + float(nbytes))
    for first, total in by_device.values():
        free = _free_bytes(first)
        if free < total + headroom:
            where = first if first.is_dir() else first.parent
            raise PipelineError(
                f"not enough free space for {what}: about {_size(total + headroom)} needed under "
                f"{where.as_posix()}/, {_size(free)} free on its filesystem; free "
                "some space (or move results/ to a larger disk) and rerun"
            )


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path; on success rename it to ``target``, on failure remove it."""
    target = Path(target)
    prefix = f".{target.name}.tmp-"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if is_dir:
            tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
        else:
            fd, name = tempfile.mkstemp(prefix=prefix, dir=target.parent, suffix=target.suffix)
            os.close(fd)
            tmp = Path(name)
    except OSError as exc:
        raise (write_error(target, exc) or exc) from None
    try:
        yield tmp
        # mkstemp/mkdtemp create owner-only files; give the result the usual umask'd mode.
        tmp.chmod((0o777 if is_dir else 0o666) & ~_umask())
        if is_dir and target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException as exc:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        error = write_error(target, exc) if isinstance(exc, OSError) else None
        if error is None:
            raise
        raise error from None


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Stable JSON (sorted keys, fixed indent) so identical results give identical bytes."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def write_parquet(df, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def write_csv(df, path: str | os.PathLike, **kwargs) -> None:
    kwargs.setdefault("index", False)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, **kwargs)
