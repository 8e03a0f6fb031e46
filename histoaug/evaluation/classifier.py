"""The probe classifier of the evaluation measures: a small CNN trained from scratch, seeded.

A stride-2 5x5 stem (16 channels, so full-resolution detail is seen but most of the cost is
spent at 48x48 and below), three conv blocks (32-64-64) and a linear head; random flips and 90-degree
rotations (H&E has no orientation); optionally random Gaussian focus blur (``blur_sigma_max``:
out-of-focus regions are a common scanner artefact, and a standard augmentation for pathology
classifiers); AdamW; a fixed number of epochs. Deterministic on CPU for a given seed, so a
report can be reproduced.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from histoaug.errors import InvalidArgumentError


@dataclass(frozen=True)
class ClassifierConfig:
    epochs: int = 15
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    min_steps: int = 300  # small training sets get more epochs so every probe sees enough steps
    blur_sigma_max: float = 0.0  # > 0: half the batches get a Gaussian blur, sigma ~ U(0, max) px


def small_cnn() -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(3, 16, 5, stride=2, padding=2), nn.BatchNorm2d(16), nn.ReLU()]
    channels = [16, 32, 64, 64]
    for c_in, c_out in itertools.pairwise(channels):
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 1))


def _to_input(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def gaussian_blur(batch: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of an NCHW batch (reflect padding)."""
    radius = max(1, int(3 * sigma + 0.5))
    offsets = torch.arange(-radius, radius + 1, dtype=batch.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(batch.device)
    channels = batch.shape[1]
    padded = nn.functional.pad(batch, (radius, radius, radius, radius), mode="reflect")
    rows = nn.functional.conv2d(padded, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    return nn.functional.conv2d(rows, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)


def _augment(batch: torch.Tensor, generator: torch.Generator, blur_sigma_max: float = 0.0) -> torch.Tensor:
    turns = int(torch.randint(4, (1,), generator=generator))
    batch = torch.rot90(batch, turns, dims=(2, 3))
    if bool(torch.randint(2, (1,), generator=generator)):
        batch = batch.flip(3)
    if blur_sigma_max > 0:
        blur, sigma = torch.rand(2, generator=generator).tolist()
        if blur < 0.5 and sigma * blur_sigma_max > 0.05:
            batch = gaussian_blur(batch, sigma * blur_sigma_max)
    return batch


EpochData = Callable[[int], tuple[np.ndarray, np.ndarray]]
"""Epoch number -> the (images, labels) to train on in that epoch (same length every epoch)."""


def _check_training_set(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels).reshape(-1).astype(np.float32)
    if len(images) != len(labels) or len(images) < 2:
        raise InvalidArgumentError(f"need matching images and labels (got {len(images)} and {len(labels)})")
    if set(np.unique(labels).tolist()) != {0.0, 1.0}:
        raise InvalidArgumentError("the training patches must include both labels")
    return labels


def fit_classifier(images: np.ndarray, labels: np.ndarray, config: ClassifierConfig | None = None,
                   *, progress: bool = False, desc: str = "classifier") -> nn.Module:
    """Train :func:`small_cnn` on uint8 (N, 96, 96, 3) patches with 0/1 ``labels``."""
    labels = _check_training_set(images, labels)
    return fit_classifier_per_epoch(lambda epoch: (images, labels), config, progress=progress, desc=desc)


def fit_classifier_per_epoch(epoch_data: EpochData, config: ClassifierConfig | None = None,
                             *, progress: bool = False, desc: str = "classifier") -> nn.Module:
    """Train :func:`small_cnn` on a training set that may change every epoch.

    ``epoch_data(e)`` gives epoch ``e``'s patches and labels, e.g. a
    :class:`~histoaug.SyntheticPCam` epoch after ``set_epoch(e)``, whose synthetic items differ
    from epoch to epoch; every epoch must have the same number of items. With the same data
    every epoch this is :func:`fit_classifier`.
    """
    config = config or ClassifierConfig()
    if not (config.blur_sigma_max >= 0 and np.isfinite(config.blur_sigma_max)):
        raise InvalidArgumentError(f"blur_sigma_max must be >= 0, got {config.blur_sigma_max}")
    images, labels = epoch_data(0)
    labels = _check_training_set(images, labels)
    size = len(images)
    generator = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = small_cnn()
    per_epoch = -(-size // config.batch_size)
    epochs = max(config.epochs, -(-config.min_steps // per_epoch))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=epochs * per_epoch)
    loss_fn = nn.BCEWithLogitsLoss()
    model.train()
    for epoch in tqdm(range(epochs), desc=desc, unit="epoch", disable=not progress):
        if epoch > 0:
            images, labels = epoch_data(epoch)
            labels = _check_training_set(images, labels)
            if len(images) != size:
                raise InvalidArgumentError(f"epoch {epoch} has {len(images)} training items, epoch 0 had {size}")
        y_all = torch.from_numpy(labels)
        order = torch.randperm(size, generator=generator)
        for start in range(0, size, config.batch_size):
            index = order[start:start + config.batch_size]
            if len(index) < 2:  # BatchNorm needs two samples
                continue
            logits = model(_augment(_to_input(images[index.numpy()]), generator, config.blur_sigma_max)).squeeze(1)
            loss = loss_fn(logits, y_all[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    return model.eval()


@torch.no_grad()
def predict_scores(model: nn.Module, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Probability of label 1 for each patch."""
    model.eval()
    out = [torch.sigmoid(model(_to_input(images[s:s + batch_size])).squeeze(1)).numpy()
           for s in range(0, len(images), batch_size)]
    return np.concatenate(out).astype(np.float64)
