"""Data-loading benchmark: ``histoaug.PCam`` vs a reader written the way torchvision's PCAM reads.

torchvision's ``PCAM.__getitem__`` opens the images file and the labels file with h5py for every
item, reads one row of each, and builds a PIL image. ``TorchvisionStylePCam`` below does exactly
that (returning the PIL image as a numpy array so the default collate can batch it).
``histoaug.PCam`` keeps one handle per worker and serves each batch with one sorted read.

Both read the same files in the same process, through ``DataLoader(batch_size=256,
num_workers=2, shuffle=True)``, one full epoch each, after one untimed pass that warms the OS
page cache. Run:

    python benchmarks/data_loading.py --n 32768 --json benchmarks/results/data_loading.json
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from histoaug import PCam, sample_root
from histoaug.data.pcam_files import split_file_name
from histoaug.data.pcam_writer import write_pcam_split


class TorchvisionStylePCam(Dataset):
    """The baseline: torchvision's PCAM item logic (one open of each file per item)."""

    def __init__(self, root: Path, split: str) -> None:
        self.images_path = root / split_file_name(split, "x")
        self.labels_path = root / split_file_name(split, "y")
        with h5py.File(self.labels_path) as labels:
            self.length = labels["y"].shape[0]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, idx: int) -> tuple[np.ndarray, int]:
        with h5py.File(self.images_path) as images_data:
            image = Image.fromarray(images_data["x"][idx]).convert("RGB")
        with h5py.File(self.labels_path) as targets_data:
            target = int(targets_data["y"][idx, 0, 0, 0])
        return np.asarray(image), target


def build_files(folder: Path, count: int, *, compressed: bool, seed: int = 0) -> Path:
    """A PCam-format split of ``count`` real sample patches (flipped/rotated copies)."""
    sample = PCam(sample_root(), "train")
    base = sample.read_images(range(len(sample)))
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(base), size=count)
    images = base[picks]
    for k in range(4):  # rotations so copies are not identical bytes
        chosen = rng.random(count) < 0.5
        images[chosen] = np.rot90(images[chosen], k=k + 1, axes=(1, 2))
    labels = sample.labels[picks]
    folder.mkdir(parents=True, exist_ok=True)
    write_pcam_split(
        folder, "train", images, labels,
        compression="gzip" if compressed else None, compression_level=1, chunk_items=1,
    )
    return folder


def run_epoch(dataset: Dataset, *, batch_size: int, workers: int, seed: int = 0) -> dict[str, float]:
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
        generator=torch.Generator().manual_seed(seed),
    )
    start = time.perf_counter()
    first_batch = None
    items = 0
    for images, _ in loader:
        if first_batch is None:
            first_batch = time.perf_counter() - start
        items += len(images)
    elapsed = time.perf_counter() - start
    return {"items": items, "seconds": elapsed, "items_per_s": items / elapsed,
            "first_batch_s": first_batch or 0.0}


@dataclass
class Comparison:
    layout: str
    items: int
    baseline_items_per_s: float
    histoaug_items_per_s: float
    speedup: float
    baseline_first_batch_s: float
    histoaug_first_batch_s: float


def compare(folder: Path, layout: str, *, batch_size: int, workers: int) -> Comparison:
    ours = PCam(folder, "train")
    baseline = TorchvisionStylePCam(folder, "train")
    run_epoch(ours, batch_size=batch_size, workers=workers)  # warm the page cache, untimed
    base = run_epoch(baseline, batch_size=batch_size, workers=workers)
    fast = run_epoch(ours, batch_size=batch_size, workers=workers)
    return Comparison(
        layout=layout, items=fast["items"],
        baseline_items_per_s=base["items_per_s"], histoaug_items_per_s=fast["items_per_s"],
        speedup=fast["items_per_s"] / base["items_per_s"],
        baseline_first_batch_s=base["first_batch_s"], histoaug_first_batch_s=fast["first_batch_s"],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32768, help="items per file (PCam valid/test: 32768)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for layout, compressed in (("uncompressed, contiguous", False), ("gzip-1, 1-item chunks", True)):
            folder = build_files(Path(scratch) / layout.split(",")[0], args.n, compressed=compressed)
            results.append(compare(folder, layout, batch_size=args.batch_size, workers=args.workers))
    print(f"DataLoader batch {args.batch_size}, {args.workers} workers, shuffle, {args.n} items, "
          f"torch {torch.__version__}, h5py {h5py.__version__}, {platform.processor() or platform.machine()}")
    print(f"{'layout':<26} {'torchvision-style':>18} {'histoaug.PCam':>14} {'speedup':>8}")
    for r in results:
        print(f"{r.layout:<26} {r.baseline_items_per_s:>14.0f} it/s {r.histoaug_items_per_s:>10.0f} it/s "
              f"{r.speedup:>7.1f}x")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"settings": vars(args) | {"json": str(args.json)},
                                         "results": [asdict(r) for r in results]}, indent=2) + "\n")


if __name__ == "__main__":
    main()
