"""Train a small CNN on PCam mixed with synthetic patches and report ROC AUC on the valid and test splits.

    python examples/train_classifier.py --ratio 0.5            # half synthetic, bundled sample
    python examples/train_classifier.py --ratio 0              # real only (baseline)
    python examples/train_classifier.py --ratio 1              # synthetic only (the paper's TSTR)
    python examples/train_classifier.py --root /data --synthesizer synthetic.h5 --epochs 5

The training loop is ordinary PyTorch: the only histoaug lines are the two datasets. The
synthesizer is "default" (the embedded model), a model or artifact dir, or a file written by
``histoaug generate``.

Both held-out splits are reported, because they answer different questions. On the bundled
sample the valid split is cut from the *same images* as train (other pixels), so it says how well
the classifier learned those slides; the test split holds *other images* (other tissues), so it
says how well it generalises. A synthetic set can score high on valid and low on test (it copies
the training slides' look); on real PCam, valid and test are both other patients.
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

import histoaug


def small_cnn() -> nn.Module:
    """Four conv blocks and a linear head: enough to separate the sample's classes."""
    layers: list[nn.Module] = []
    channels = [3, 16, 32, 64, 64]
    for c_in, c_out in itertools.pairwise(channels):
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 1))


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """HWC uint8 -> CHW float in [0, 1] (what torchvision's ToTensor does)."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div(255)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney U statistic (ties count half)."""
    positives, negatives = scores[labels == 1], scores[labels == 0]
    if positives.size == 0 or negatives.size == 0:
        return float("nan")
    greater = (positives[:, None] > negatives[None, :]).sum()
    ties = (positives[:, None] == negatives[None, :]).sum()
    return float((greater + 0.5 * ties) / (positives.size * negatives.size))


def evaluate(model: nn.Module, loader: DataLoader) -> float:
    model.eval()
    scores, labels = [], []
    with torch.no_grad():
        for images, targets in loader:
            scores.append(model(images).squeeze(1).numpy())
            labels.append(targets.numpy())
    return roc_auc(np.concatenate(labels), np.concatenate(scores))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="PCam root (default: the bundled sample)")
    parser.add_argument("--ratio", type=float, default=0.5, help="fraction of synthetic training items")
    parser.add_argument("--synthesizer", default="default", help="'default', a model/artifact dir or a .h5 file")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="sampler steps when a model generates")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    root = args.root or histoaug.sample_root()
    train = histoaug.SyntheticPCam(root, "train", ratio=args.ratio, synthesizer=args.synthesizer,
                                   transform=to_tensor, seed=args.seed, generate_options={"steps": args.steps})
    valid = histoaug.PCam(root, "valid", transform=to_tensor)
    valid_loader = DataLoader(valid, batch_size=256, num_workers=args.workers)
    test = histoaug.PCam(root, "test", transform=to_tensor)
    test_loader = DataLoader(test, batch_size=256, num_workers=args.workers)
    model = small_cnn()
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    print(f"train: {len(train)} items, {args.ratio:.0%} synthetic; valid: {len(valid)}, test: {len(test)} real items")
    with train:
        for epoch in range(args.epochs):
            train.set_epoch(epoch)
            model.train()
            started, total = time.perf_counter(), 0.0
            for images, targets in DataLoader(train, batch_size=args.batch_size, sampler=train.sampler(),
                                              num_workers=args.workers):
                optimiser.zero_grad()
                loss = loss_fn(model(images).squeeze(1), targets.float())
                loss.backward()
                optimiser.step()
                total += loss.item() * len(targets)
            print(f"epoch {epoch}: loss {total / len(train):.4f}, valid AUC {evaluate(model, valid_loader):.3f} "
                  f"({time.perf_counter() - started:.1f} s)")
        if train.pool_stats() is not None:
            print(f"synthesis pool: {train.pool_stats()}")
    print(f"final validation ROC AUC: {evaluate(model, valid_loader):.4f} (valid split)")
    print(f"final test ROC AUC: {evaluate(model, test_loader):.4f} (test split)")
    if args.root is None:
        print("note: on the bundled sample, valid shares its source images with train and test holds other "
              "images (other tissues): read valid as fit to the training slides, test as generalisation")


if __name__ == "__main__":
    main()
