"""``PCamWriter``: write PCam-format HDF5 files that readers of the real release open unchanged.

Rows are written by index block into a work file next to the target (``NAME.partial``) and
the finished file is moved into place with an atomic rename, so a crash never leaves a
half-written file under the final name. Extra per-item datasets (``prompt_id``, ``seed``, ...)
and provenance attributes ride along; PCam readers ignore them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np

from histoaug.data.pcam_files import PATCH_SHAPE, split_file_name
from histoaug.errors import InvalidArgumentError, OutputExistsError, OutputWriteError

logger = logging.getLogger(__name__)

PARTS = ("x", "y")


def work_path(path: Path) -> Path:
    """The in-progress file a writer fills before the atomic rename to ``path``."""
    return path.with_name(path.name + ".partial")


class PCamWriter:
    """Fill a PCam-format HDF5 file block by block, then commit it atomically.

    Args:
        path: final file name.
        length: number of items (rows are preallocated).
        parts: which of ``"x"`` (images) and ``"y"`` (labels) the file holds; the real release
            keeps them in two files, ``histoaug generate`` in one.
        extra: additional per-item datasets, name -> numpy dtype.
        attrs: file attributes (provenance); values must be HDF5-storable.
        compression: ``None`` (default: contiguous and uncompressed, like the PCam release;
            H&E patches shrink only ~8% under gzip, and readers can memory-map the images),
            ``"gzip"`` or ``"lzf"`` (chunked).
        chunk_items: images per HDF5 chunk when compressed (random access decodes a whole
            chunk per item, so keep it small).
        overwrite: replace an existing ``path`` on commit.
    """

    def __init__(
        self,
        path: str | Path,
        length: int,
        *,
        parts: Sequence[str] = PARTS,
        extra: Mapping[str, Any] | None = None,
        attrs: Mapping[str, Any] | None = None,
        compression: str | None = None,
        compression_level: int = 4,
        chunk_items: int = 1,
        overwrite: bool = False,
    ) -> None:
        self.path = Path(path)
        if length <= 0:
            raise InvalidArgumentError(f"length must be positive, got {length}")
        unknown = set(parts) - set(PARTS)
        if unknown or not parts:
            raise InvalidArgumentError(f"parts must be a non-empty subset of {PARTS}, got {parts}")
        if compression not in ("gzip", "lzf", None):
            raise InvalidArgumentError(f"compression must be 'gzip', 'lzf' or None, not {compression!r}")
        if self.path.exists() and not overwrite:
            raise OutputExistsError(f"{self.path} exists; pass overwrite=True (--overwrite) to replace it")
        self.length = int(length)
        self.parts = tuple(parts)
        self.overwrite = overwrite
        self._written = np.zeros(self.length, dtype=bool)
        self._work = work_path(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self._work.exists():
                logger.warning("removing stale work file %s from an interrupted write", self._work)
                self._work.unlink()
            self._file = h5py.File(self._work, "w")
        except OSError as exc:
            raise OutputWriteError(f"cannot create {self._work}: {exc.strerror or exc}") from exc
        layout: dict[str, Any] = {}
        if compression is not None:
            chunk = (max(1, min(chunk_items, self.length)), *PATCH_SHAPE)
            layout = {"compression": compression, "chunks": chunk}
            if compression == "gzip":
                layout["compression_opts"] = compression_level
        if "x" in self.parts:
            self._file.create_dataset("x", shape=(self.length, *PATCH_SHAPE), dtype=np.uint8, **layout)
        if "y" in self.parts:
            self._file.create_dataset("y", shape=(self.length, 1, 1, 1), dtype=np.uint8)
        self._extra = {name: np.dtype(dtype) for name, dtype in (extra or {}).items()}
        for name, dtype in self._extra.items():
            if name in PARTS:
                raise InvalidArgumentError(f"extra dataset name {name!r} is reserved")
            self._file.create_dataset(name, shape=(self.length,), dtype=dtype)
        for key, value in (attrs or {}).items():
            self._file.attrs[key] = value

    @property
    def complete(self) -> bool:
        """True once every row has been written."""
        return bool(self._written.all())

    def write(self, start: int, **columns: np.ndarray) -> None:
        """Write rows ``start .. start+B`` of each given dataset (``x``, ``y``, extras)."""
        if self._file is None:
            raise InvalidArgumentError(f"{self.path}: writer is already closed")
        expected = set(self.parts) | set(self._extra)
        if set(columns) != expected:
            raise InvalidArgumentError(
                f"write() needs exactly the datasets {sorted(expected)}, got {sorted(columns)}"
            )
        sizes = {len(np.asarray(value)) for value in columns.values()}
        if len(sizes) != 1:
            raise InvalidArgumentError(f"all datasets of one write need the same length, got {sizes}")
        count = sizes.pop()
        stop = start + count
        if start < 0 or stop > self.length:
            raise InvalidArgumentError(f"rows {start}..{stop} outside 0..{self.length}")
        if "x" in columns:
            columns["x"] = _checked_images(columns["x"])
        if "y" in columns:
            columns["y"] = _checked_labels(columns["y"]).reshape(-1, 1, 1, 1)
        try:
            for name, value in columns.items():
                self._file[name][start:stop] = value
        except OSError as exc:
            raise OutputWriteError(f"cannot write {self._work}: {exc}") from exc
        self._written[start:stop] = True

    def commit(self) -> Path:
        """Check every row was written, then move the file into place atomically."""
        if not self.complete:
            missing = np.flatnonzero(~self._written)
            raise InvalidArgumentError(
                f"{self.path}: {missing.size} of {self.length} rows were never written "
                f"(first: {int(missing[0])})"
            )
        if self.path.exists() and not self.overwrite:
            self.abort()
            raise OutputExistsError(f"{self.path} appeared while writing; not overwriting it")
        try:
            self._file.flush()
            self._file.close()
            self._file = None
            with open(self._work, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(self._work, self.path)
        except OSError as exc:
            raise OutputWriteError(f"cannot finish {self.path}: {exc.strerror or exc}") from exc
        logger.info("wrote %s (%d items)", self.path, self.length)
        return self.path

    def abort(self) -> None:
        """Close and delete the work file; the target path is left untouched."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._work.unlink(missing_ok=True)

    def __enter__(self) -> PCamWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def _checked_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != PATCH_SHAPE:
        raise InvalidArgumentError(
            f"images must be uint8 (B, 96, 96, 3), got {images.dtype} {images.shape}"
        )
    return images


def _checked_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels).reshape(-1)
    if labels.dtype.kind not in "biu" or ((labels != 0) & (labels != 1)).any():
        raise InvalidArgumentError("labels must be integers 0 or 1")
    return labels.astype(np.uint8)


def write_pcam_split(
    root: str | Path,
    split: str,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    attrs: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    **writer_options: Any,
) -> tuple[Path, Path]:
    """Write a split as the two standard PCam files (``..._x.h5``, ``..._y.h5``) under ``root``."""
    root = Path(root)
    paths = []
    for part, values in (("x", images), ("y", labels)):
        path = root / split_file_name(split, part)
        with PCamWriter(
            path, len(values), parts=(part,), attrs=attrs, overwrite=overwrite, **writer_options
        ) as writer:
            writer.write(0, **{part: values})
        paths.append(path)
    return paths[0], paths[1]
