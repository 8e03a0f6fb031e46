"""``histoaug.PCam``: a fast, fork-safe reader of PCam-format HDF5 splits.

Same layout and item semantics as ``torchvision.datasets.PCAM`` (``(image, label)`` items,
files under ``root/pcam/`` or ``root``), with three differences that make it fast and safe in
a DataLoader:

* the HDF5 file is opened once per process, lazily, and never shared across a fork; an
  uncompressed contiguous image dataset (the release's layout) is memory-mapped;
* labels are read once at construction (N bytes) instead of per item;
* ``__getitems__`` serves a whole batch with one sorted HDF5 read, which the DataLoader uses
  automatically (torch >= 2.1), instead of one open + read per item.

Images are ``(96, 96, 3)`` uint8 numpy arrays by default (what albumentations and
``default_collate`` expect); ``image_format="pil"`` gives PIL images like torchvision.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
from torch.utils.data import Dataset

from histoaug.data.pcam_files import SplitFiles, locate_split, open_hdf5, validate_split
from histoaug.errors import InvalidArgumentError, PCamFormatError

logger = logging.getLogger(__name__)

ImageFormat = Literal["numpy", "pil"]
_CHUNK_CACHE_BYTES = 32 * 1024 * 1024
# A batch whose indices span at most this many times its size is read as one slice (one large
# sequential read beats many small ones); wider batches are read item by item in file order.
# (h5py's point/union selections are far slower than either: ~470 ms for 256 items, measured.)
_CONTIGUOUS_SPAN_FACTOR = 4


class PCam(Dataset):
    """PatchCamelyon split (or any PCam-format HDF5) as a map-style dataset.

    Args:
        root: directory holding the split files (directly or under ``pcam/``), or one HDF5
            file with both ``x`` and ``y`` datasets.
        split: ``"train"``, ``"valid"`` or ``"test"``.
        transform: called on each image.
        target_transform: called on each label (an ``int``).
        image_format: ``"numpy"`` (HWC uint8 array) or ``"pil"``.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[int], Any] | None = None,
        image_format: ImageFormat = "numpy",
    ) -> None:
        if image_format not in ("numpy", "pil"):
            raise InvalidArgumentError(f"image_format must be 'numpy' or 'pil', not {image_format!r}")
        self.root = Path(root)
        self.split = split
        self.transform = transform
        self.target_transform = target_transform
        self.image_format = image_format
        self.files: SplitFiles = locate_split(root, split)
        self._labels = validate_split(self.files)
        self._file: h5py.File | None = None
        self._images: h5py.Dataset | None = None
        self._owner_pid: int | None = None
        logger.debug("PCam %s: %d items from %s", split, len(self._labels), self.files.images)

    # --- per-process image source ----------------------------------------------------------
    def _image_source(self) -> np.ndarray | h5py.Dataset:
        """The images, opened once in the calling process (reopened after a fork).

        An uncompressed contiguous ``x`` (the PCam release's layout) is memory-mapped straight
        from the file: a batch read is then a numpy gather from the page cache. Chunked or
        compressed files go through HDF5 with a large chunk cache.
        """
        pid = os.getpid()
        if self._images is None or self._owner_pid != pid:
            # A handle inherited through fork is never used or closed here: HDF5 state is not
            # fork-safe, so the child opens its own.
            self._file = open_hdf5(self.files.images, chunk_cache_bytes=_CHUNK_CACHE_BYTES)
            dataset = self._file["x"]
            offset = _contiguous_offset(dataset)
            if offset is None:
                self._images = dataset
            else:
                self._images = np.memmap(
                    self.files.images, dtype=np.uint8, mode="r", offset=offset, shape=dataset.shape
                )
            self._owner_pid = pid
        return self._images

    def close(self) -> None:
        """Close this process's file handle (reopened on the next access)."""
        if self._file is not None and self._owner_pid == os.getpid():
            self._file.close()
        self._file = None
        self._images = None
        self._owner_pid = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_file=None, _images=None, _owner_pid=None)
        return state

    # --- dataset protocol --------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._labels)

    @property
    def labels(self) -> np.ndarray:
        """All labels as a flat uint8 array (read-only view), e.g. for a balanced sampler."""
        view = self._labels.view()
        view.flags.writeable = False
        return view

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        index = self._check_index(index)
        try:
            image = np.array(self._image_source()[index])
        except (OSError, RuntimeError) as exc:
            raise PCamFormatError(f"{self.files.images}: cannot read item {index} ({exc})") from exc
        return self._make_item(image, int(self._labels[index]))

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[Any, Any]]:
        """Fetch a batch with one sorted read; used by DataLoader's batched fetcher."""
        wanted = self._normalise_indices(indices)
        images = self._read_images(wanted)
        labels = self._labels[wanted]
        return [self._make_item(images[k], int(labels[k])) for k in range(wanted.size)]

    def read_images(self, indices: Sequence[int]) -> np.ndarray:
        """Images at ``indices`` (any order, repeats allowed) as one (B, 96, 96, 3) array."""
        return self._read_images(self._normalise_indices(indices))

    def _read_images(self, wanted: np.ndarray) -> np.ndarray:
        if wanted.size == 0:
            return np.empty((0, 96, 96, 3), dtype=np.uint8)
        source = self._image_source()
        try:
            if isinstance(source, np.memmap):
                return source[wanted]
            return _read_chunked(source, wanted)
        except (OSError, RuntimeError) as exc:
            raise PCamFormatError(f"{self.files.images}: cannot read images ({exc})") from exc

    # --- helpers -----------------------------------------------------------------------------
    def _check_index(self, index: int) -> int:
        count = len(self._labels)
        index = int(index)
        if index < 0:
            index += count
        if not 0 <= index < count:
            raise IndexError(f"index {index} out of range for {count} items")
        return index

    def _normalise_indices(self, indices: Sequence[int]) -> np.ndarray:
        wanted = np.asarray(indices, dtype=np.int64).reshape(-1)
        count = len(self._labels)
        wanted = np.where(wanted < 0, wanted + count, wanted)
        if wanted.size and (wanted.min() < 0 or wanted.max() >= count):
            raise IndexError(f"batch has indices out of range for {count} items")
        return wanted

    def _make_item(self, image: np.ndarray, label: int) -> tuple[Any, Any]:
        out_image: Any = image
        if self.image_format == "pil":
            from PIL import Image

            out_image = Image.fromarray(image)
        if self.transform is not None:
            out_image = self.transform(out_image)
        out_label: Any = label
        if self.target_transform is not None:
            out_label = self.target_transform(label)
        return out_image, out_label

    def __repr__(self) -> str:
        return f"PCam(root={str(self.root)!r}, split={self.split!r}, items={len(self)})"


def _contiguous_offset(dataset: h5py.Dataset) -> int | None:
    """File offset of an uncompressed contiguous dataset (None if chunked, filtered or unallocated)."""
    plist = dataset.id.get_create_plist()
    if plist.get_layout() != h5py.h5d.CONTIGUOUS or plist.get_nfilters() != 0:
        return None
    return dataset.id.get_offset()


def _read_chunked(dataset: h5py.Dataset, wanted: np.ndarray) -> np.ndarray:
    """Gather rows from a chunked dataset in file order, so each chunk is decoded once per batch."""
    unique, inverse = np.unique(wanted, return_inverse=True)
    first, last = int(unique[0]), int(unique[-1])
    if last - first + 1 <= _CONTIGUOUS_SPAN_FACTOR * unique.size:
        block = dataset[first : last + 1]
        return block[unique - first][inverse]
    rows = np.empty((unique.size, *dataset.shape[1:]), dtype=dataset.dtype)
    for k, index in enumerate(unique):
        rows[k] = dataset[int(index)]
    return rows[inverse]
