"""On-disk store of the synthesis pool: one file per epoch, shared by the producer and the workers.

An epoch's file ``epoch-E.slots`` holds, for its S synthetic slots:

* ``ready``  (S,) uint8 at offset 0: 1 once slot ``j``'s patch is complete (set after the patch);
* ``wanted`` (S,) uint8 at offset S: set by a worker waiting for slot ``j`` (generated next);
* ``images`` (S, 96, 96, 3) uint8 from the next 4 KiB boundary on.

Only the producer creates epoch files: it reserves the whole file with ``posix_fallocate``
under a temporary name and renames it into place, so a full disk, a full tmpfs or a file-size
limit is an ``OutputWriteError`` at allocation (never a SIGBUS when a page is first touched),
and a worker never maps a short file. Every process maps the file shared, so a patch written by
the producer is visible to the workers without copies or locks.

A store directory is named by a key that hashes everything deciding the patches (model
content, resolved runtime, settings), so a later run with the same key finds its epochs already
generated (a warm pool). ``claim_store`` takes an ``flock`` on the store so one producer owns it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from histoaug.atomic_files import atomic_path
from histoaug.errors import OutputWriteError

PATCH_SHAPE = (96, 96, 3)
PATCH_BYTES = int(np.prod(PATCH_SHAPE))
_ALIGN = 4096
LOCK_FILE = "owner.lock"
MAX_STORES_PER_KEY = 16


@dataclass
class EpochStore:
    """Memory maps of one epoch's slots (views into one file)."""

    path: Path
    inode: int
    ready: np.ndarray
    wanted: np.ndarray
    images: np.ndarray

    @property
    def complete(self) -> bool:
        return bool(self.ready.all())


def epoch_path(directory: Path, epoch: int) -> Path:
    return Path(directory) / f"epoch-{epoch}.slots"


def _layout(slots: int) -> tuple[int, int]:
    """(offset of the images, file size) for ``slots`` slots."""
    offset = -(-2 * slots // _ALIGN) * _ALIGN
    return offset, offset + slots * PATCH_BYTES


def allocate_epoch(directory: Path, epoch: int, slots: int) -> None:
    """Create ``epoch``'s file with all its space reserved (producer only; no-op if it exists)."""
    target = epoch_path(directory, epoch)
    if target.exists():
        return
    size = _layout(slots)[1]
    try:
        with atomic_path(target) as staging:
            descriptor = os.open(staging, os.O_RDWR)
            try:
                os.posix_fallocate(descriptor, 0, size)
            finally:
                os.close(descriptor)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        hint = " (the file-size limit, ulimit -f)" if exc.errno == errno.EFBIG else ""
        raise OutputWriteError(
            f"synthesis pool: cannot reserve {size / 1e6:.1f} MB for epoch {epoch} in {directory}: "
            f"{reason}{hint}; free space or pass PoolConfig(directory=...) on a larger disk"
        ) from exc


def open_epoch(directory: Path, epoch: int, slots: int) -> EpochStore | None:
    """Map ``epoch``'s file, or None while the producer has not created it yet."""
    path = epoch_path(directory, epoch)
    offset, size = _layout(slots)
    try:
        descriptor = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        stat = os.fstat(descriptor)
        if stat.st_size != size:
            raise OutputWriteError(f"synthesis pool: {path} has {stat.st_size} bytes, expected {size} "
                                   "(another histoaug version wrote this store? remove it)")
        mapped = np.memmap(path, dtype=np.uint8, mode="r+", shape=(size,))
    finally:
        os.close(descriptor)
    return EpochStore(
        path=path, inode=stat.st_ino, ready=mapped[:slots], wanted=mapped[slots:2 * slots],
        images=mapped[offset:].reshape(slots, *PATCH_SHAPE),
    )


def current_inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


def stored_epochs(directory: Path) -> list[int]:
    epochs = []
    for path in Path(directory).glob("epoch-*.slots"):
        with contextlib.suppress(ValueError):
            epochs.append(int(path.name[len("epoch-"):-len(".slots")]))
    return sorted(epochs)


def remove_epochs_outside(directory: Path, first: int, last: int) -> None:
    """Free the disk of epochs outside ``[first, last]`` (the pool's bound)."""
    for epoch in stored_epochs(directory):
        if not first <= epoch <= last:
            epoch_path(directory, epoch).unlink(missing_ok=True)


def claim_store(root: Path, key: str) -> tuple[Path, int]:
    """Lock and return the store for ``key`` under ``root``: ``root/key`` when no other live
    producer holds it, else ``root/key.2``, ``root/key.3``, ... . Returns (directory, lock fd);
    the lock lasts while the fd is open and the kernel drops it when the process dies, so a
    killed producer never blocks the next run."""
    for number in range(1, MAX_STORES_PER_KEY + 1):
        directory = Path(root) / (key if number == 1 else f"{key}.{number}")
        directory.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            continue
        return directory, descriptor
    raise OutputWriteError(f"synthesis pool: {MAX_STORES_PER_KEY} live producers already use {root}/{key}*")
