"""The study report's PNG figures: kappa heatmaps, readers' sensitivity / specificity, agreed-patch grids.

matplotlib (the ``eval`` extra) on the non-interactive Agg backend; patch grids are plain PIL. Reader
names are drawn as plain text (mathtext's ``$`` is escaped), never interpreted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from histoaug.errors import InvalidArgumentError
from histoaug.study.scoring import ScoredPatch

GRID_TILE = 144


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise InvalidArgumentError("the study report's figures need matplotlib: pip install 'histoaug[eval]'") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _plain(text: str, limit: int = 24) -> str:
    text = text if len(text) <= limit else text[: limit - 1] + "\u2026"
    return text.replace("$", r"\$")


def kappa_figure(kappa: dict[str, dict[str, Any]], path: Path) -> Path:
    """Two heatmaps, real and synthetic patches: Cohen's kappa of every reader pair, with mean and SD."""
    plt = _pyplot()
    names = [_plain(name) for name in kappa["real"]["readers"]]
    size = max(3.6, 0.55 * len(names) + 2.2)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 0.8, size), squeeze=False)
    image = None
    for ax, source in zip(axes[0], ("real", "synthetic"), strict=True):
        entry = kappa[source]
        values = np.array([[np.nan if v is None else v for v in row] for row in entry["matrix"]], dtype=float)
        image = ax.imshow(values, vmin=-1, vmax=1, cmap="RdBu")
        for i in range(len(names)):
            for j in range(len(names)):
                text = "-" if np.isnan(values[i, j]) else f"{values[i, j]:.2f}"
                ax.text(j, i, text, ha="center", va="center", fontsize=9,
                        color="white" if not np.isnan(values[i, j]) and abs(values[i, j]) > 0.6 else "black")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=9)
        ax.set_yticks(range(len(names)), names if source == "real" else [], fontsize=9)  # same readers both sides
        mean, std = entry["mean"], entry["std"]
        summary = "undefined" if mean is None else f"mean {mean:.2f}" + ("" if std is None else f" \u00b1 {std:.2f} SD")
        ax.set_title(f"{source} patches: kappa {summary}\n({entry['defined_pairs']} of {entry['pairs']} pairs)",
                     fontsize=10)
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="Cohen's kappa (label decisions)")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def readers_figure(readers: list[dict[str, Any]], medians: tuple[float | None, float | None], path: Path) -> Path:
    """Each reader's specificity (x) against sensitivity (y) for spotting synthetic patches; chance is 0.5."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 5.0))
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    ax.axvline(0.5, color="grey", linestyle=":", linewidth=1)
    ax.plot([0, 1], [1, 0], color="#bbbbbb", linewidth=1, label="chance (sens + spec = 1)")
    for row in readers:
        if row["sensitivity"] is None or row["specificity"] is None:
            continue
        ax.scatter(row["specificity"], row["sensitivity"], s=40, color="#1f77b4", zorder=3)
        ax.annotate(_plain(row["reader"]), (row["specificity"], row["sensitivity"]), xytext=(5, 4),
                    textcoords="offset points", fontsize=8)
    sens, spec = medians
    if sens is not None and spec is not None:
        ax.scatter(spec, sens, marker="*", s=180, color="#d62728", zorder=4,
                   label=f"median: sens {sens:.2f}, spec {spec:.2f}")
    ax.scatter(0.55, 0.55, marker="x", s=60, color="black", zorder=4, label="the paper's median (0.55 / 0.55)")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("specificity: real patches called real", fontsize=9)
    ax.set_ylabel("sensitivity: synthetic patches called synthetic", fontsize=9)
    ax.set_title("Telling real from synthetic, per reader", fontsize=10)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def agreement_grid(rows: list[tuple[str, list[ScoredPatch]]], patch_file: Any, path: Path, per_row: int = 6) -> Path:
    """Captioned rows of the most agreed patches (``patch_file(patch_id)`` -> the study's PNG), at 1.5x."""
    caption_width, gap = 230, 4
    font = ImageFont.load_default(size=16)
    grid = Image.new("RGB", (caption_width + per_row * (GRID_TILE + gap), len(rows) * (GRID_TILE + gap)), "white")
    draw = ImageDraw.Draw(grid)
    for row, (caption, items) in enumerate(rows):
        top = row * (GRID_TILE + gap)
        if items:
            low, high = min(item.agreement or 0 for item in items), max(item.agreement or 0 for item in items)
            caption += f"\nagreement {low:.2f}" + ("" if low == high else f" to {high:.2f}")
        else:
            caption += "\n(none in this study)"
        lines = caption.split("\n")
        for line, text in enumerate(lines):
            draw.text((8, top + GRID_TILE // 2 - 11 * len(lines) + 22 * line), text, fill="black", font=font)
        for column, item in enumerate(items[:per_row]):
            with Image.open(patch_file(item.patch)) as image:
                tile = image.convert("RGB").resize((GRID_TILE, GRID_TILE), Image.Resampling.NEAREST)
            grid.paste(tile, (caption_width + column * (GRID_TILE + gap), top))
    # a 256-colour adaptive palette, as the eval report's grids: a third of the size, hard to tell apart on H&E
    grid.quantize(256, method=Image.Quantize.MEDIANCUT).save(path, format="PNG", optimize=True)
    return path
