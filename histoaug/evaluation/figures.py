"""The report's PNG figures: coverage map, ROC curves, real-vs-synthetic patch grids.

Plots use matplotlib's non-interactive Agg backend (the ``eval`` extra); patch grids are plain
PIL (captioned rows of patches at full resolution, stored with a 256-colour adaptive palette:
a third of the size, and on H&E patches hard to tell from the original). Every function writes one PNG to the path
given (the report writes into its staging directory, so the whole report appears atomically).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from histoaug.evaluation.downstream import ArmResult
from histoaug.evaluation.projection import Projection

REAL_COLOUR = "#1f77b4"  # blue, as the paper's real set
SET_COLOURS = ("#d62728", "#222222", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
_CAPTION_WIDTH = 150


def _pyplot():
    from histoaug.training.requirements import require

    matplotlib = require("matplotlib", purpose="the report's figures")
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def set_colour(index: int) -> str:
    return SET_COLOURS[index % len(SET_COLOURS)]


def projection_figure(projection: Projection, path: Path, *, title: str, reference: str = "real") -> Path:
    """Scatter of every set in the shared 2-D map; the method (and a PCA fallback's reason) in the title."""
    plt = _pyplot()
    others = [name for name in projection.coordinates if name != reference]
    fig, axes = plt.subplots(1, max(1, len(others)), figsize=(4.2 * max(1, len(others)), 4.2), squeeze=False)
    real = projection.coordinates[reference]
    for column, name in enumerate(others or [reference]):
        ax = axes[0, column]
        ax.scatter(real[:, 0], real[:, 1], s=8, c=REAL_COLOUR, alpha=0.6, label=f"real ({len(real)})", linewidths=0)
        if name != reference:
            points = projection.coordinates[name]
            ax.scatter(points[:, 0], points[:, 1], s=8, c=set_colour(column), alpha=0.5,
                       label=f"{name} ({len(points)})", linewidths=0)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=7, loc="best", markerscale=2)
    method = projection.method + (f" -- {projection.note}" if projection.method != "UMAP" else "")
    fig.suptitle(f"{title}: {method}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def roc_figure(results: Sequence[ArmResult], test_labels: np.ndarray, set_names: Sequence[str], path: Path) -> Path:
    """One panel per synthetic set: ROC curves on the real test split of every arm (each seed a line)."""
    from sklearn.metrics import roc_curve

    plt = _pyplot()
    panels = list(set_names) or ["real only"]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2), squeeze=False)
    arms = list(dict.fromkeys(result.arm for result in results))
    cmap = plt.get_cmap("tab10")
    for column, panel in enumerate(panels):
        ax = axes[0, column]
        for result in results:
            if result.synthetic_set not in (None, panel):
                continue
            colour = cmap(arms.index(result.arm) % 10)
            for k, scores in enumerate(result.test_scores):
                fpr, tpr, _ = roc_curve(test_labels, scores)
                label = f"{result.arm}: AUC {result.interval.mean:.3f}" if k == 0 else None
                ax.plot(fpr, tpr, color=colour, alpha=0.7, linewidth=1, label=label)
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel("false positive rate", fontsize=8)
        ax.set_ylabel("true positive rate", fontsize=8)
        ax.legend(fontsize=6, loc="lower right")
    fig.suptitle("ROC on the real test split (one line per seed; AUC = mean over seeds)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def patch_rows(rows: Sequence[tuple[str, np.ndarray]], path: Path, *, per_row: int = 6) -> Path:
    """Captioned rows of uint8 (N, H, W, 3) patches (up to ``per_row`` each) as one PNG."""
    if not rows:
        raise ValueError("no rows to draw")
    tile = rows[0][1].shape[1] if len(rows[0][1]) else 96
    grid = Image.new("RGB", (_CAPTION_WIDTH + per_row * tile, len(rows) * tile), "white")
    draw = ImageDraw.Draw(grid)
    for row, (caption, images) in enumerate(rows):
        for line, text in enumerate(caption.split("\n")):
            draw.text((6, row * tile + tile // 2 - 12 + 12 * line), text, fill="black")
        for column, image in enumerate(images[:per_row]):
            grid.paste(Image.fromarray(image), (_CAPTION_WIDTH + column * tile, row * tile))
    grid.quantize(256, method=Image.Quantize.MEDIANCUT).save(path, format="PNG", optimize=True)
    return path
