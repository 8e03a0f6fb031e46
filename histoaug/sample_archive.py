"""The bundled sample's shipped form: lossless WebP patch mosaics plus a JSON index.

Raw 96x96 patches are ~27 KB each; lossless WebP stores them in about half of that, so the
package ships one mosaic per split (patches in rows of ``MOSAIC_COLUMNS``) and ``index.json``
(labels, source of every patch, the sources' provenance and the mosaics' sha256). The PCam-format
HDF5 files are unpacked from these once, offline, into a cache (see :mod:`histoaug.sample`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from histoaug.atomic_files import atomic_path
from histoaug.errors import PCamFilesNotFoundError

INDEX_FORMAT = "histoaug.sample/1"
INDEX_NAME = "index.json"
TILE = 96
MOSAIC_COLUMNS = 32


@dataclass(frozen=True)
class SampleSplit:
    """One split as stored: its patches, labels and where each patch was cut."""

    images: np.ndarray  # (N, 96, 96, 3) uint8
    labels: np.ndarray  # (N,) uint8
    origins: np.ndarray  # (N, 3) int32: source index, top, left (in the source at the common scale)


def mosaic_name(split: str) -> str:
    return f"patches_{split}.webp"


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def to_mosaic(images: np.ndarray) -> np.ndarray:
    """Tile (N, 96, 96, 3) patches row-major into one image, ``MOSAIC_COLUMNS`` per row (zero padded)."""
    rows = -(-len(images) // MOSAIC_COLUMNS)
    padded = np.zeros((rows * MOSAIC_COLUMNS, TILE, TILE, 3), np.uint8)
    padded[: len(images)] = images
    return padded.reshape(rows, MOSAIC_COLUMNS, TILE, TILE, 3).transpose(0, 2, 1, 3, 4).reshape(
        rows * TILE, MOSAIC_COLUMNS * TILE, 3
    )


def from_mosaic(mosaic: np.ndarray, count: int) -> np.ndarray:
    """Inverse of :func:`to_mosaic`: the first ``count`` patches, contiguous."""
    rows = mosaic.shape[0] // TILE
    tiles = mosaic.reshape(rows, TILE, MOSAIC_COLUMNS, TILE, 3).transpose(0, 2, 1, 3, 4)
    return np.ascontiguousarray(tiles.reshape(-1, TILE, TILE, 3)[:count])


def write_archive(folder: Path, splits: dict[str, SampleSplit], provenance: dict) -> None:
    """Write the mosaics (lossless WebP, slowest/smallest encoder setting) and ``index.json``."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    index = {"format": INDEX_FORMAT, "tile": TILE, "mosaic_columns": MOSAIC_COLUMNS, **provenance, "splits": {}}
    for split, data in splits.items():
        path = folder / mosaic_name(split)
        with atomic_path(path) as staging:
            Image.fromarray(to_mosaic(data.images)).save(staging, "WEBP", lossless=True, quality=100, method=6)
        path.chmod(0o644)  # package data: readable by all, whatever the umask
        index["splits"][split] = {
            "file": path.name,
            "sha256": file_sha256(path),
            "n": len(data.labels),
            "labels": [int(v) for v in data.labels],
            "origins": [[int(v) for v in row] for row in data.origins],
        }
    with atomic_path(folder / INDEX_NAME) as staging:
        staging.write_text(json.dumps(index, indent=1) + "\n")
    (folder / INDEX_NAME).chmod(0o644)


def read_index(folder: Path) -> dict:
    path = folder / INDEX_NAME
    if not path.is_file():
        raise PCamFilesNotFoundError(
            f"the bundled sample is incomplete: {path} is missing; reinstall histoaug or rebuild it "
            "with scripts/build_sample.py"
        )
    index = json.loads(path.read_text())
    if index.get("format") != INDEX_FORMAT:
        raise PCamFilesNotFoundError(f"{path} is not a {INDEX_FORMAT} index")
    return index


def read_split(folder: Path, index: dict, split: str) -> SampleSplit:
    """Decode one split's mosaic, checking its sha256 against the index."""
    from PIL import Image, features

    if not features.check("webp"):
        raise PCamFilesNotFoundError("this Pillow has no WebP support, needed to unpack the bundled sample; "
                                     "install a Pillow wheel from PyPI (they include libwebp)")

    entry = index["splits"][split]
    path = folder / entry["file"]
    if not path.is_file() or file_sha256(path) != entry["sha256"]:
        raise PCamFilesNotFoundError(
            f"the bundled sample file {path} is missing or corrupt (sha256 mismatch); reinstall histoaug"
        )
    with Image.open(path) as image:
        mosaic = np.asarray(image.convert("RGB"))
    return SampleSplit(
        images=from_mosaic(mosaic, entry["n"]),
        labels=np.asarray(entry["labels"], np.uint8),
        origins=np.asarray(entry["origins"], np.int32).reshape(-1, 3),
    )
