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


def correlation_histograms(columns: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, *,
                           correlation_threshold: float, feature_threshold: float, feature_name: str) -> Path:
    """``histoaug audit``: histograms of best aligned detail correlation and nearest feature distance per set.

    ``columns`` maps a set name to (correlations, feature distances); the thresholds are drawn as lines.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.6))
    for index, (name, (correlation, distance)) in enumerate(columns.items()):
        colour = REAL_COLOUR if index == len(columns) - 1 else set_colour(index)
        axes[0].hist(correlation, bins=np.linspace(-0.2, 1.0, 61), density=True, alpha=0.5, color=colour,
                     label=f"{name} ({len(correlation)})")
        finite = distance[np.isfinite(distance)]
        axes[1].hist(finite, bins=40, density=True, alpha=0.5, color=colour, label=f"{name} ({len(finite)})")
    axes[0].axvline(correlation_threshold, color="black", linestyle="--", linewidth=1,
                    label=f"copy threshold {correlation_threshold:.3f}")
    axes[1].axvline(feature_threshold, color="black", linestyle=":", linewidth=1,
                    label=f"reference tail {feature_threshold:.3g}")
    axes[0].set_xlabel("best aligned detail correlation with a training patch", fontsize=8)
    axes[1].set_xlabel(f"nearest training distance, {feature_name} features (standardised)", fontsize=8)
    for ax in axes:
        ax.set_ylabel("density", fontsize=8)
        ax.legend(fontsize=6, loc="best")
    fig.suptitle("nearest training patch: synthetic vs held-out real reference", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def pair_grid(pairs: Sequence[tuple[str, np.ndarray, np.ndarray]], path: Path, *, columns: int = 4) -> Path:
    """``histoaug audit``: (caption, query patch, training patch) pairs side by side, captions below, one PNG."""
    if not pairs:
        raise ValueError("no pairs to draw")
    tile = pairs[0][1].shape[0]
    caption = 30
    cell_w, cell_h = 2 * tile + 8, tile + caption
    rows = -(-len(pairs) // columns)
    grid = Image.new("RGB", (columns * cell_w + 8, rows * cell_h + 4), "white")
    draw = ImageDraw.Draw(grid)
    for k, (text, query, train) in enumerate(pairs):
        x, y = 4 + (k % columns) * cell_w, 4 + (k // columns) * cell_h
        grid.paste(Image.fromarray(query), (x, y))
        grid.paste(Image.fromarray(train), (x + tile, y))
        for line, part in enumerate(text.split("\n")):
            draw.text((x, y + tile + 2 + 12 * line), part, fill="black")
    grid.quantize(256, method=Image.Quantize.MEDIANCUT).save(path, format="PNG", optimize=True)
    return path
