"""Does scale (sharpness) alone separate a sample's labels? Probe AUC on full vs degraded patches.

Trains the evaluation module's probe CNN (histoaug.evaluation.classifier) on a PCam root's train
split and scores its test split, once on the patches as they are and once on patches with their
cellular detail removed (box-downsampled 8x to 12x12 and enlarged back; and a Gaussian blur,
sigma 4 px), train and test degraded alike. If the labels differed mainly in magnification or
sharpness, the degraded probes would still separate them; if they differ in tissue, the
degraded probes lose most of their AUC. Used for histoaug/sample_data/DATA_CARD.md:

    OMP_NUM_THREADS=1 python scripts/sample_scale_probe.py [ROOT ...] [--test-split valid]  # default: the sample
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from histoaug import PCam, sample_root
from histoaug.evaluation.classifier import ClassifierConfig, fit_classifier, gaussian_blur, predict_scores


def downsample_8x(images: np.ndarray) -> np.ndarray:
    small = [Image.fromarray(image).resize((12, 12), Image.Resampling.BOX) for image in images]
    return np.stack([np.asarray(image.resize((96, 96), Image.Resampling.BICUBIC)) for image in small])


def blur_4px(images: np.ndarray) -> np.ndarray:
    batch = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    return gaussian_blur(batch, 4.0).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


DEGRADATIONS = {"full": lambda images: images, "downsampled 8x": downsample_8x, "blurred sigma 4": blur_4px}


def probe_aucs(root: Path, test_split: str = "test") -> dict[str, float]:
    train, test = PCam(root, "train"), PCam(root, test_split)
    x_train, x_test = train.read_images(range(len(train))), test.read_images(range(len(test)))
    results = {}
    for name, degrade in DEGRADATIONS.items():
        model = fit_classifier(degrade(x_train), train.labels, ClassifierConfig(seed=0))
        results[name] = float(roc_auc_score(test.labels, predict_scores(model, degrade(x_test))))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("roots", nargs="*", type=Path, help="PCam roots (default: the bundled sample)")
    parser.add_argument("--test-split", default="test", help="split the probes are scored on (default: test)")
    args = parser.parse_args()
    for root in args.roots or [sample_root()]:
        print(json.dumps({"root": str(root), f"{args.test_split}_auc": probe_aucs(root, args.test_split)}))


if __name__ == "__main__":
    main()
