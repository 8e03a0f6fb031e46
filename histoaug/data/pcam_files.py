"""Locating and validating the HDF5 files of a PCam split.

PCam ships each split as two files, ``camelyonpatch_level_2_split_{split}_x.h5`` (dataset
``x``, (N, 96, 96, 3) uint8) and ``..._y.h5`` (dataset ``y``, (N, 1, 1, 1) uint8). torchvision
keeps them under ``root/pcam/``; many users keep them directly under ``root``. A single file
holding both ``x`` and ``y`` (what ``histoaug generate`` writes) is accepted too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from histoaug.errors import PCamFilesNotFoundError, PCamFormatError

SPLITS = ("train", "valid", "test")
PATCH_SHAPE = (96, 96, 3)
_FILE_TEMPLATE = "camelyonpatch_level_2_split_{split}_{part}.h5"


def split_file_name(split: str, part: str) -> str:
    """Standard PCam file name of one part (``x`` or ``y``) of a split."""
    return _FILE_TEMPLATE.format(split=split, part=part)


@dataclass(frozen=True)
class SplitFiles:
    """Where the images and labels of one split live (may be the same file)."""

    images: Path
    labels: Path


def locate_split(root: str | Path, split: str) -> SplitFiles:
    """Find the files of ``split`` under ``root/pcam/`` or ``root``, or a single HDF5 file.

    Raises PCamFilesNotFoundError naming what is missing and, when only ``.h5.gz`` files are
    present, the command that unpacks them.
    """
    if split not in SPLITS:
        raise PCamFormatError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    root = Path(root).expanduser()
    if root.is_file():
        return SplitFiles(images=root, labels=root)
    if not root.exists():
        raise PCamFilesNotFoundError(f"PCam root {str(root)!r} does not exist")
    names = [split_file_name(split, "x"), split_file_name(split, "y")]
    for folder in (root / "pcam", root):
        if all((folder / name).is_file() for name in names):
            return SplitFiles(images=folder / names[0], labels=folder / names[1])
    gzipped = [
        folder / f"{name}.gz"
        for folder in (root / "pcam", root)
        for name in names
        if (folder / f"{name}.gz").is_file()
    ]
    if gzipped:
        raise PCamFilesNotFoundError(
            f"PCam {split} split under {str(root)!r} is still gzipped "
            f"({', '.join(p.name for p in gzipped)}); run: histoaug pcam unpack {root}"
        )
    raise PCamFilesNotFoundError(
        f"PCam {split} split not found: expected {names[0]} and {names[1]} "
        f"in {str(root / 'pcam')!r} or {str(root)!r}"
    )


def open_hdf5(path: Path, *, chunk_cache_bytes: int = 0) -> h5py.File:
    """Open an HDF5 file read-only, turning low-level failures into PCamFormatError."""
    kwargs = {"rdcc_nbytes": chunk_cache_bytes} if chunk_cache_bytes else {}
    try:
        return h5py.File(path, "r", **kwargs)
    except FileNotFoundError as exc:
        raise PCamFilesNotFoundError(f"{path}: file not found") from exc
    except OSError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PCamFormatError(f"{path}: not a readable HDF5 file ({reason})") from exc


def _dataset(handle: h5py.File, name: str, path: Path) -> h5py.Dataset:
    obj = handle.get(name)
    if not isinstance(obj, h5py.Dataset):
        found = ", ".join(sorted(handle.keys())) or "nothing"
        raise PCamFormatError(f"{path}: no dataset {name!r} (found: {found})")
    return obj


def validate_split(files: SplitFiles) -> np.ndarray:
    """Check shapes, dtypes, label values and readability; return all labels (flat uint8).

    Reads all labels (N bytes) and the first and last image, so truncated or corrupt data is
    reported here, at construction, rather than in a DataLoader worker hours later.
    """
    with open_hdf5(files.images) as images_file:
        x = _dataset(images_file, "x", files.images)
        if x.ndim != 4 or tuple(x.shape[1:]) != PATCH_SHAPE:
            raise PCamFormatError(
                f"{files.images}: dataset 'x' has shape {x.shape}, expected (N, 96, 96, 3)"
            )
        if x.dtype != np.uint8:
            raise PCamFormatError(f"{files.images}: dataset 'x' has dtype {x.dtype}, expected uint8")
        count = int(x.shape[0])
        if count == 0:
            raise PCamFormatError(f"{files.images}: dataset 'x' is empty")
        try:
            x[0]
            x[count - 1]
        except (OSError, ValueError, RuntimeError) as exc:
            raise PCamFormatError(f"{files.images}: image data cannot be read ({exc})") from exc
    with open_hdf5(files.labels) as labels_file:
        y = _dataset(labels_file, "y", files.labels)
        if y.shape not in ((count, 1, 1, 1), (count,)):
            raise PCamFormatError(
                f"{files.labels}: dataset 'y' has shape {y.shape}, expected ({count}, 1, 1, 1) "
                f"or ({count},) to match {count} images"
            )
        if y.dtype.kind not in "biu":
            raise PCamFormatError(f"{files.labels}: dataset 'y' has dtype {y.dtype}, expected integers")
        try:
            labels = np.asarray(y[...]).reshape(-1)
        except (OSError, ValueError, RuntimeError) as exc:
            raise PCamFormatError(f"{files.labels}: label data cannot be read ({exc})") from exc
    bad = labels[(labels != 0) & (labels != 1)]
    if bad.size:
        raise PCamFormatError(
            f"{files.labels}: labels must be 0 or 1, found {np.unique(bad)[:5].tolist()}"
        )
    return labels.astype(np.uint8, copy=False)
