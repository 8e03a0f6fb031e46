"""Per-split statistics of a PCam-format dataset (counts, label balance, colour)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from histoaug.data.pcam import PCam
from histoaug.data.pcam_files import SPLITS
from histoaug.errors import PCamFilesNotFoundError

_BLOCK = 1024


@dataclass(frozen=True)
class SplitSummary:
    split: str
    items: int
    label_counts: tuple[int, int]
    mean_rgb: tuple[float, float, float]
    std_rgb: tuple[float, float, float]


def summarise_split(dataset: PCam, *, progress: bool = False) -> SplitSummary:
    """Count labels and compute per-channel mean/std in one blocked pass over the images."""
    total = np.zeros(3)
    total_sq = np.zeros(3)
    count = len(dataset)
    for start in tqdm(range(0, count, _BLOCK), desc=dataset.split, disable=not progress):
        block = dataset.read_images(np.arange(start, min(start + _BLOCK, count)))
        pixels = block.reshape(-1, 3).astype(np.float64)
        total += pixels.sum(axis=0)
        total_sq += np.square(pixels).sum(axis=0)
    n_pixels = count * 96 * 96
    mean = total / n_pixels
    std = np.sqrt(np.maximum(total_sq / n_pixels - mean**2, 0.0))
    labels = dataset.labels
    return SplitSummary(
        split=dataset.split,
        items=count,
        label_counts=(int((labels == 0).sum()), int((labels == 1).sum())),
        mean_rgb=tuple(float(v) for v in mean),
        std_rgb=tuple(float(v) for v in std),
    )


def summarise_root(root: str | Path, *, progress: bool = False) -> list[SplitSummary]:
    """Summaries of every split present under ``root``; at least one must exist.

    ``root`` may also be one PCam-format file (e.g. from ``histoaug generate``): one summary."""
    if Path(root).is_file():
        dataset = PCam(root)
        try:
            return [summarise_split(dataset, progress=progress)]
        finally:
            dataset.close()
    summaries = []
    for split in SPLITS:
        try:
            dataset = PCam(root, split)
        except PCamFilesNotFoundError:
            continue
        summaries.append(summarise_split(dataset, progress=progress))
        dataset.close()
    if not summaries:
        raise PCamFilesNotFoundError(f"no PCam split found under {root}")
    return summaries
