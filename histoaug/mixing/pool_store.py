"""On-disk store of one epoch's synthetic slots, shared by the producer and DataLoader workers.

Per epoch three memory-mapped files in the pool directory:

* ``epoch-E.images``   (S, 96, 96, 3) uint8, slot ``j`` at row ``j``;
* ``epoch-E.ready``    (S,) uint8, 1 once row ``j`` is complete (set after the image is written);
* ``epoch-E.wanted``   (S,) uint8, set by a worker waiting for slot ``j``, so the producer
  generates it next.

Every process maps the same files (MAP_SHARED), so a patch written by the producer is visible
to the workers through the page cache without copies or locks: a row is read only after its
``ready`` byte, which is written after the row. The directory is keyed by the model and the
sampling settings, so a later run with the same settings finds the epochs already generated
(a warm pool).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PATCH_SHAPE = (96, 96, 3)


@dataclass
class EpochStore:
    """Memory maps of one epoch's slots."""

    images: np.memmap
    ready: np.memmap
    wanted: np.memmap

    @property
    def complete(self) -> bool:
        return bool(self.ready.all())


def _mapped(path: Path, shape: tuple[int, ...]) -> np.memmap:
    """Map ``path``, creating it as a sparse file of zeros; never truncates existing data, so
    the producer and a worker may open the same epoch at the same moment."""
    size = int(np.prod(shape))
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if os.fstat(descriptor).st_size < size:
            os.ftruncate(descriptor, size)
    finally:
        os.close(descriptor)
    return np.memmap(path, dtype=np.uint8, mode="r+", shape=shape)


def open_epoch(directory: Path, epoch: int, slots: int) -> EpochStore:
    """Create (if needed) and map the files of ``epoch`` holding ``slots`` patches."""
    directory.mkdir(parents=True, exist_ok=True)
    count = max(slots, 1)  # zero-length maps are not allowed
    base = directory / f"epoch-{epoch}"
    return EpochStore(
        images=_mapped(base.with_suffix(".images"), (count, *PATCH_SHAPE)),
        ready=_mapped(base.with_suffix(".ready"), (count,)),
        wanted=_mapped(base.with_suffix(".wanted"), (count,)),
    )


def remove_epochs_before(directory: Path, epoch: int) -> None:
    """Free the disk of epochs older than ``epoch`` (the pool's bound)."""
    for path in directory.glob("epoch-*.*"):
        try:
            number = int(path.stem.split("-", 1)[1])
        except ValueError:
            continue
        if number < epoch:
            path.unlink(missing_ok=True)
