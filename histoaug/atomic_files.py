"""Atomic file and directory writes: the one place histoaug makes an output appear whole or not at all.

Every writer stages its output under a unique temporary name next to the target (same directory,
so the final ``os.replace`` is an atomic rename on one filesystem) and renames it only after the
content is complete. Unique names mean two processes writing the same target never share a
work file: the last rename wins and neither reads the other's half-written bytes. A failure
removes the temporary file or directory and leaves any previous target untouched.

``durable=True`` also fsyncs the data and the parent directory, for outputs whose loss after a
power cut would cost real work (datasets, checkpoints); previews and reports skip it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_tree(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        elif path.is_dir():
            _fsync_directory(path)


def temporary_sibling(target: str | Path, *, directory: bool = False) -> Path:
    """A new, uniquely named file (or directory) next to ``target`` for staging its content."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}."
    if directory:
        return Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=target.parent))
    descriptor, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=target.parent)
    os.close(descriptor)
    return Path(name)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_path(target: str | Path, *, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary file path to write ``target``'s content to; renamed onto ``target`` on success.

    The path exists (empty) when yielded, so writers that open by name (h5py, PIL, safetensors)
    can use it directly.
    """
    target = Path(target)
    staging = temporary_sibling(target)
    try:
        yield staging
        if durable:
            with open(staging, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(staging, target)
        if durable:
            _fsync_directory(target.parent)
    except BaseException:
        _remove(staging)
        raise


@contextlib.contextmanager
def atomic_directory(target: str | Path, *, durable: bool = False, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``target`` on success.

    An existing ``target`` is only replaced with ``replace=True`` (the caller checked the user's
    ``--overwrite``); it is moved aside first and removed after the rename, so at every moment
    either the old or the new directory is in place.
    """
    target = Path(target)
    staging = temporary_sibling(target, directory=True)
    try:
        yield staging
        if durable:
            _fsync_tree(staging)
        if target.exists():
            if not replace:
                raise FileExistsError(f"{target} exists")
            retired = temporary_sibling(target, directory=True)
            retired.rmdir()
            os.replace(target, retired)
            os.replace(staging, target)
            _remove(retired)
        else:
            os.replace(staging, target)
        if durable:
            _fsync_directory(target.parent)
    except BaseException:
        _remove(staging)
        raise


def write_text(target: str | Path, text: str, *, durable: bool = False) -> None:
    """Write ``text`` to ``target`` atomically (UTF-8)."""
    with atomic_path(target, durable=durable) as staging:
        staging.write_text(text, encoding="utf-8")


def write_bytes(target: str | Path, data: bytes, *, durable: bool = False) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target, durable=durable) as staging:
        staging.write_bytes(data)
