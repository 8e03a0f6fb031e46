"""How often is a planted copy's original among histoaug audit's candidates: feature search vs thumbnail search.

200 training patches of the bundled sample, each flipped/rotated one of the 8 ways, then left
plain, JPEG-compressed (quality 75) or noised (sigma 6, 15); the audit's own training index
(stain-texture features, standardised; thumbnails) and exact search, 10 candidates each
(docs/audit.md, "What it computes"). Run:

    OMP_NUM_THREADS=1 .venv/bin/python scripts/audit_candidate_recall.py     # ~1 min
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from histoaug import PCam, sample_root
from histoaug.evaluation.features import load_feature_space
from histoaug.evaluation.memorization import AuditConfig, DataSplit, build_training_index
from histoaug.evaluation.nearest_neighbours import nearest_neighbours
from histoaug.evaluation.pixel_similarity import ThumbnailEmbedder, dihedral, dihedral_thumbnail_vectors
from histoaug.training.stain_embedding import stain_texture_features


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.array(Image.open(buffer))


def _alter(image: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind == "JPEG 75":
        return _jpeg(image, 75)
    if kind.startswith("noise"):
        sigma = float(kind.split()[1])
        return np.clip(image + rng.normal(0, sigma, image.shape), 0, 255).astype(np.uint8)
    return image


def main() -> None:
    torch.set_num_threads(1)
    root = sample_root()
    train = PCam(root, "train")
    images = train.read_images(np.arange(len(train)))
    config = AuditConfig(train=DataSplit(root, "train", "sample:train"), reference=DataSplit(root, "valid", "v"))
    index = build_training_index(train, load_feature_space("stain-texture"), config, False)
    rng = np.random.default_rng(0)
    sources = rng.choice(len(images), 200, replace=False)
    print("| copies | original in feature top-10 (top-1) | original in thumbnail candidates |")
    print("| --- | ---: | ---: |")
    for kind in ("plain", "JPEG 75", "noise 6", "noise 15"):
        queries = np.stack([_alter(np.ascontiguousarray(dihedral(images[i], j % 8)), kind, rng)
                            for j, i in enumerate(sources)])
        features = index.standardise(stain_texture_features(queries).astype(np.float64))
        by_features = nearest_neighbours(features, index.features, 10).indices
        thumbs = ThumbnailEmbedder().embed(queries).numpy()
        turned = dihedral_thumbnail_vectors(thumbs).reshape(8 * len(queries), -1)
        by_thumbs = nearest_neighbours(turned, index.thumbnails, 10).indices
        by_thumbs = by_thumbs.reshape(8, len(queries), 10).transpose(1, 0, 2).reshape(len(queries), -1)
        in_features = np.mean([s in row for s, row in zip(sources, by_features, strict=True)])
        top1 = np.mean(by_features[:, 0] == sources)
        in_thumbs = np.mean([s in row for s, row in zip(sources, by_thumbs, strict=True)])
        print(f"| {kind} | {in_features:.3f} ({top1:.3f}) | {in_thumbs:.3f} |", flush=True)


if __name__ == "__main__":
    main()
