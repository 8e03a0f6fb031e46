"""A labelled image grid of synthetic patches, to eyeball a model or a generated file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from histoaug.atomic_files import atomic_path

LABEL_NAMES = {0: "0 healthy", 1: "1 tumour"}
_MARGIN = 84  # left column for the row caption


def preview_grid(images: np.ndarray, labels: np.ndarray, *, per_label: int = 8) -> Image.Image:
    """One row per label present, up to ``per_label`` patches each, captioned with the label."""
    images = np.asarray(images)
    labels = np.asarray(labels).reshape(-1)
    rows = [label for label in (0, 1) if (labels == label).any()]
    tile = images.shape[1]
    grid = Image.new("RGB", (_MARGIN + per_label * tile, max(1, len(rows)) * tile), "white")
    draw = ImageDraw.Draw(grid)
    for row, label in enumerate(rows):
        chosen = np.flatnonzero(labels == label)[:per_label]
        draw.text((6, row * tile + tile // 2 - 6), LABEL_NAMES[label], fill="black")
        for column, index in enumerate(chosen):
            grid.paste(Image.fromarray(images[index]), (_MARGIN + column * tile, row * tile))
    return grid


def save_preview(images: np.ndarray, labels: np.ndarray, path: Path, *, per_label: int = 8) -> Path:
    """Write the grid as PNG, atomically."""
    path = Path(path)
    with atomic_path(path) as staging:
        preview_grid(images, labels, per_label=per_label).save(staging, format="PNG")
    return path
