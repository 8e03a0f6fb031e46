"""Test data for histoaug.evaluation: a balanced slice of the bundled sample and synthetic-format files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pcam_files import write_release_split

from histoaug import PCam, PCamWriter, sample_root

# split of the small root -> (split of the bundled sample, first patch per label, patches per label).
# The sample's own test split is held-out images (hard for a 24-patch probe); these tests check the
# probes' machinery, so both "test" and "valid" here come from the sample's valid split (the training
# images' other pixels), disjoint slices.
SLICES = {"train": ("train", 0, 12), "test": ("valid", 0, 8), "valid": ("valid", 8, 8)}


def real_split(split: str, root: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    data = PCam(root or sample_root(), split)
    return data.read_images(np.arange(len(data))), data.labels.astype(np.int64)


def write_small_real(root: Path) -> Path:
    """A balanced slice of the bundled sample (real H&E), small enough for quick probes."""
    for split, (source, start, per_label) in SLICES.items():
        x, y = real_split(source)
        keep = np.concatenate([np.flatnonzero(y == label)[start:start + per_label] for label in (0, 1)])
        write_release_split(root, split, x[keep], y[keep].astype(np.uint8))
    return root


def write_synthetic_file(path: Path, images: np.ndarray, labels: np.ndarray, prompt_ids: np.ndarray | None = None,
                         attrs: dict | None = None) -> Path:
    """A one-file PCam set as `histoaug generate` writes it (x, y and optionally prompt_id)."""
    extra = {"prompt_id": np.int32} if prompt_ids is not None else None
    with PCamWriter(path, len(images), extra=extra, attrs=attrs) as writer:
        columns = {"x": images, "y": np.asarray(labels).astype(np.uint8)}
        if prompt_ids is not None:
            columns["prompt_id"] = np.asarray(prompt_ids, dtype=np.int32)
        writer.write(0, **columns)
    return path
