"""``PCamWriter``: write PCam-format HDF5 files that readers of the real release open unchanged.

Rows are written by index block into a work file next to the target (``NAME.partial``) and
the finished file is moved into place with an atomic rename, so a crash never leaves a
half-written file under the final name. ``NAME.partial`` is a resume protocol, not an atomic
write (see :mod:`histoaug.atomic_files`): ``resume=True`` finds the interrupted work there.
Extra per-item datasets (``prompt_id``, ``seed``, ...) and provenance attributes ride along;
PCam readers ignore them.

Crash safety and resume: every dataset is allocated when the work file is created and all
metadata (shapes, attributes) is written then, so later writes touch raw data only. Each block
is flushed before its rows are marked done in the ``histoaug_written`` dataset (flushed again),
so after a ``kill -9`` at any moment the work file is readable and lists exactly the rows that
are complete; ``resume=True`` reopens it and only the missing rows need writing. This holds for
the default uncompressed layout; compressed chunks change size as they are written, so a
compressed work file is atomic on commit but not guaranteed resumable after a crash.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np

from histoaug.atomic_files import publish
from histoaug.data.pcam_files import PATCH_SHAPE, split_file_name
from histoaug.errors import InvalidArgumentError, OutputExistsError, OutputWriteError

logger = logging.getLogger(__name__)

PARTS = ("x", "y")
WRITTEN = "histoaug_written"
PLAN_ATTR = "histoaug_plan"


def work_path(path: Path) -> Path:
    """The in-progress file a writer fills before the atomic rename to ``path``."""
    return path.with_name(path.name + ".partial")


def _early_allocation(fill: bool) -> h5py.h5p.PropDCID:
    """Creation properties that allocate storage now, so writes never change metadata."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_ALLOC if fill else h5py.h5d.FILL_TIME_NEVER)
    return dcpl


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
        overwrite: replace an existing ``path`` (and discard an existing work file).
        resume: continue an existing work file written with the same ``plan``.
        plan: identifies what the rows will hold (settings, seeds, layout); a work file is only
            resumed under the same plan, so a resumed file equals an uninterrupted one.
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
        resume: bool = False,
        plan: str = "",
    ) -> None:
        self.path = Path(path)
        if length <= 0:
            raise InvalidArgumentError(f"length must be positive, got {length}")
        unknown = set(parts) - set(PARTS)
        if unknown or not parts:
            raise InvalidArgumentError(f"parts must be a non-empty subset of {PARTS}, got {parts}")
        if compression not in ("gzip", "lzf", None):
            raise InvalidArgumentError(f"compression must be 'gzip', 'lzf' or None, not {compression!r}")
        self._extra = {name: np.dtype(dtype) for name, dtype in (extra or {}).items()}
        reserved = set(self._extra) & {*PARTS, WRITTEN}
        if reserved:
            raise InvalidArgumentError(f"extra dataset names {sorted(reserved)} are reserved")
        if self.path.exists() and not overwrite:
            raise OutputExistsError(f"{self.path} exists; pass overwrite=True (--overwrite) to replace it")
        self.length = int(length)
        self.parts = tuple(parts)
        self.overwrite = overwrite
        self.plan = plan
        self._work = work_path(self.path)
        if self._work.exists() and resume:
            self._file = self._reopen()
        else:
            if self._work.exists() and not overwrite:
                raise OutputExistsError(
                    f"{self._work} holds an interrupted write; resume it (--resume) "
                    "or discard it (--overwrite)"
                )
            self._file = self._create(attrs or {}, compression, compression_level, chunk_items)
        self._written = np.asarray(self._file[WRITTEN][...], dtype=bool)

    def _create(
        self, attrs: Mapping[str, Any], compression: str | None, level: int, chunk_items: int
    ) -> h5py.File:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._work.unlink(missing_ok=True)
            handle = h5py.File(self._work, "w")
        except OSError as exc:
            raise OutputWriteError(f"cannot create {self._work}: {exc.strerror or exc}") from exc
        try:
            raw = {"dcpl": _early_allocation(fill=False)}
            if "x" in self.parts:
                layout: dict[str, Any] = raw
                if compression is not None:
                    chunk = (max(1, min(chunk_items, self.length)), *PATCH_SHAPE)
                    layout = {"compression": compression, "chunks": chunk}
                    if compression == "gzip":
                        layout["compression_opts"] = level
                handle.create_dataset("x", shape=(self.length, *PATCH_SHAPE), dtype=np.uint8, **layout)
            if "y" in self.parts:
                handle.create_dataset("y", shape=(self.length, 1, 1, 1), dtype=np.uint8, **raw)
            for name, dtype in self._extra.items():
                handle.create_dataset(name, shape=(self.length,), dtype=dtype, **raw)
            handle.create_dataset(
                WRITTEN, shape=(self.length,), dtype=np.uint8, dcpl=_early_allocation(fill=True)
            )
            handle.attrs[PLAN_ATTR] = self.plan
            for key, value in attrs.items():
                handle.attrs[key] = value
            handle.flush()
        except OSError as exc:
            handle.close()
            self._work.unlink(missing_ok=True)
            raise OutputWriteError(f"cannot create {self._work}: {exc}") from exc
        return handle

    def _reopen(self) -> h5py.File:
        try:
            handle = h5py.File(self._work, "r+")
        except OSError as exc:
            raise OutputWriteError(
                f"{self._work} cannot be resumed ({exc}); discard it with --overwrite"
            ) from exc
        expected = {*self.parts, *self._extra, WRITTEN}
        found = {name for name, obj in handle.items() if isinstance(obj, h5py.Dataset)}
        same_plan = handle.attrs.get(PLAN_ATTR, None) == self.plan
        same_shape = WRITTEN in handle and handle[WRITTEN].shape == (self.length,)
        if found != expected or not same_plan or not same_shape:
            handle.close()
            raise InvalidArgumentError(
                f"{self._work} was written with other settings or another runtime (backend, dtype, compile, "
                "device); it cannot be resumed with these (discard it with --overwrite)"
            )
        logger.info("resuming %s", self._work)
        return handle

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
            self._file.flush()  # the rows reach the file before they are marked done
            self._file[WRITTEN][start:stop] = 1
            self._file.flush()
        except OSError as exc:
            raise OutputWriteError(f"cannot write {self._work}: {exc}") from exc
        self._written[start:stop] = True

    @property
    def rows_written(self) -> np.ndarray:
        """Boolean mask of rows already in the file (after ``resume``: what survived)."""
        return self._written.copy()

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
            publish(self._work, self.path, durable=True)
        except OSError as exc:
            raise OutputWriteError(f"cannot finish {self.path}: {exc.strerror or exc}") from exc
        logger.info("wrote %s (%d items)", self.path, self.length)
        return self.path

    def close(self) -> None:
        """Close the work file and keep it, so a later ``resume=True`` can finish it."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def abort(self) -> None:
        """Close and delete the work file; the target path is left untouched."""
        self.close()
        self._work.unlink(missing_ok=True)

    def __enter__(self) -> PCamWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Commit on success; on an error or Ctrl-C keep the work file for ``resume``."""
        if exc_type is None:
            self.commit()
        else:
            self.close()
            logger.warning("write of %s interrupted; %s can be resumed", self.path, self._work)


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
