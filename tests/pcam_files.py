"""Test helpers: PCam files written with plain h5py, the way the real release is laid out."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from histoaug.data.pcam_files import split_file_name


def random_patches(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(count, 96, 96, 3), dtype=np.uint8)
    labels = rng.integers(0, 2, size=count, dtype=np.uint8)
    return images, labels


def write_release_split(
    folder: Path,
    split: str,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    compression: str | None = None,
    chunks: tuple[int, ...] | bool | None = None,
    label_shape: str = "release",
    x_dtype: np.dtype | None = None,
) -> tuple[Path, Path]:
    """Write ``..._x.h5`` / ``..._y.h5`` as the PCam release does (x: N,96,96,3; y: N,1,1,1)."""
    folder.mkdir(parents=True, exist_ok=True)
    x_path = folder / split_file_name(split, "x")
    y_path = folder / split_file_name(split, "y")
    with h5py.File(x_path, "w") as handle:
        handle.create_dataset(
            "x", data=images if x_dtype is None else images.astype(x_dtype),
            compression=compression, chunks=chunks,
        )
    y = labels.reshape(-1, 1, 1, 1) if label_shape == "release" else labels.reshape(-1)
    with h5py.File(y_path, "w") as handle:
        handle.create_dataset("y", data=y)
    return x_path, y_path
