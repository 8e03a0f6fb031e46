"""Atomic file and directory writes: the one place histoaug makes an output appear whole or not at all.

Every writer stages its output under a unique temporary name next to the target (same directory,
so the final ``os.replace`` is an atomic rename on one filesystem) and renames it only after the
content is complete. Unique names mean two processes writing the same target never share a
work file: the last rename wins and neither reads the other's half-written bytes. A failure
removes the temporary file or directory and leaves any previous target untouched. Staged files
and directories get the permissions a plain ``open`` / ``mkdir`` would give (the umask's), not
the private ones of ``tempfile``.

``durable=True`` also fsyncs the data and the parent directory, for outputs whose loss after a
power cut would cost real work (datasets, checkpoints); previews and reports skip it.

Atomic writes vs resumable work files: a few long-running writers keep their work under a
fixed, documented name instead -- ``generate``'s ``OUT.partial`` (an HDF5 file filled by
:class:`histoaug.data.pcam_writer.PCamWriter`, or a PNG tree) -- because that name is a resume
protocol: ``--resume`` finds the interrupted work there and finishes it. They are not atomic
writes and do not stage under unique names; only their last step, moving the finished work
onto the target, is shared with this module (:func:`publish`). Everything else (reports,
configs, logs, previews, caches, checkpoints, exported artifacts, prompts dirs) is written with
:func:`atomic_path`, :func:`atomic_directory`, :func:`write_text` or :func:`write_bytes`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path


@cache
def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_tree(root: Path) -> None:
    """fsync a file, or a directory with everything in it."""
    for path in [root, *root.rglob("*")] if root.is_dir() else [root]:
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        elif path.is_dir():
            _fsync_directory(path)


def temporary_sibling(target: str | Path, *, directory: bool = False, make_parents: bool = True) -> Path:
    """A new, uniquely named file (or directory) next to ``target`` for staging its content.

    ``make_parents=False``: a missing parent directory is an error (FileNotFoundError) instead of
    being created, for writers into a directory that someone else may be removing."""
    target = Path(target)
    if make_parents:
        target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}."
    if directory:
        staging = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=target.parent))
        os.chmod(staging, 0o777 & ~_umask())
        return staging
    descriptor, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=target.parent)
    os.close(descriptor)
    os.chmod(name, 0o666 & ~_umask())
    return Path(name)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def publish(staging: str | Path, target: str | Path, *, replace: bool = False, durable: bool = False) -> None:
    """Move the finished ``staging`` file or directory onto ``target`` (same directory).

    A file replaces a file atomically. An existing directory ``target`` is only replaced with
    ``replace=True`` (else FileExistsError); it is moved aside first and removed after the
    rename, so at every moment either the old or the new directory is in place.
    """
    staging, target = Path(staging), Path(target)
    if durable:
        _fsync_tree(staging)
    if staging.is_dir() and target.exists():
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


@contextlib.contextmanager
def atomic_path(target: str | Path, *, durable: bool = False, make_parents: bool = True) -> Iterator[Path]:
    """Yield a temporary file path to write ``target``'s content to; renamed onto ``target`` on success.

    The path exists (empty) when yielded, so writers that open by name (h5py, PIL, safetensors)
    can use it directly.
    """
    target = Path(target)
    staging = temporary_sibling(target, make_parents=make_parents)
    try:
        yield staging
        publish(staging, target, durable=durable)
    except BaseException:
        _remove(staging)
        raise


@contextlib.contextmanager
def atomic_directory(target: str | Path, *, durable: bool = False, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``target`` on success.

    An existing ``target`` is only replaced with ``replace=True`` (the caller checked the user's
    ``--overwrite``); see :func:`publish`.
    """
    target = Path(target)
    staging = temporary_sibling(target, directory=True)
    try:
        yield staging
        publish(staging, target, replace=replace, durable=durable)
    except BaseException:
        _remove(staging)
        raise


def write_text(target: str | Path, text: str, *, durable: bool = False) -> None:
    """Write ``text`` to ``target`` atomically (UTF-8)."""
    with atomic_path(target, durable=durable) as staging:
        staging.write_text(text, encoding="utf-8")


def write_bytes(target: str | Path, data: bytes, *, durable: bool = False, make_parents: bool = True) -> None:
    """Write ``data`` to ``target`` atomically (``make_parents``: see :func:`temporary_sibling`)."""
    with atomic_path(target, durable=durable, make_parents=make_parents) as staging:
        staging.write_bytes(data)
