"""A handcrafted stain-and-texture embedder: morphology types without a pretrained network.

The paper clusters DINO ViT-S/16 embeddings. Where no pretrained vision model can be loaded
(offline machines, this project's CI), ``--embedder stain-texture`` clusters these features
instead -- chosen by name, never substituted silently. Per patch (a 34-dim vector):

* optical density (OD = -log10(I/255)) of each RGB channel: mean, standard deviation and the
  10/50/90th percentiles (stain amount and spread: haematoxylin-rich nuclei vs eosin stroma);
* an 8-bin histogram of total OD (how much of the patch is dense, nuclear, pale or empty);
* gradient energy of the grey image at 1, 2 and 4 px scales, and the fraction of strong edges
  (texture fineness: packed nuclei vs smooth stroma);
* 3x3 OD covariance (upper triangle) and the fraction of haematoxylin-dominant pixels.

Each group is multiplied by a fixed weight that brings it to a range of about 0..1 (gradient
energies and covariances are small numbers), so after the L2 normalisation that clustering
applies, colour and texture weigh alike. The features are cheap and deterministic, so the
fingerprint is a constant of the version below.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

STAIN_TEXTURE = "stain-texture"
FEATURES_VERSION = "stain-texture/1"
_OD_MAX = 2.0
_TEXTURE_WEIGHT = 5.0  # gradient energies (~0.02..0.2) and OD covariances (~0..0.2) -> ~0..1


def stain_texture_features(images: np.ndarray) -> np.ndarray:
    """(B, 96, 96, 3) uint8 -> (B, 34) float32 features (see the module docstring)."""
    x = np.asarray(images, dtype=np.float32)
    od = np.clip(-np.log10(np.maximum(x, 1.0) / 255.0), 0.0, _OD_MAX)  # (B, H, W, 3)
    b = od.shape[0]
    flat = od.reshape(b, -1, 3)
    mean = flat.mean(axis=1)
    std = flat.std(axis=1)
    percentiles = np.percentile(flat, [10, 50, 90], axis=1).transpose(1, 0, 2).reshape(b, -1)
    total = flat.sum(axis=2)
    hist = np.stack([np.histogram(t, bins=8, range=(0.0, 3 * _OD_MAX / 2))[0] for t in total]).astype(np.float32)
    hist /= total.shape[1]
    grey = x.mean(axis=3) / 255.0
    energies = []
    for step in (1, 2, 4):
        gx = grey[:, :, step:] - grey[:, :, :-step]
        gy = grey[:, step:, :] - grey[:, :-step, :]
        energies.append(np.sqrt((gx**2).mean(axis=(1, 2)) + (gy**2).mean(axis=(1, 2))))
    gx = np.abs(grey[:, :, 1:] - grey[:, :, :-1])
    strong = (gx > 0.1).mean(axis=(1, 2))
    centred = flat - mean[:, None, :]
    cov = np.einsum("bnc,bnd->bcd", centred, centred) / flat.shape[1]
    upper = cov[:, np.triu_indices(3)[0], np.triu_indices(3)[1]]
    haematoxylin = (flat[:, :, 0] > flat[:, :, 1]).mean(axis=1)  # red absorbed more than green: blue-purple
    features = np.concatenate(
        [mean, std, percentiles, hist, _TEXTURE_WEIGHT * np.stack(energies, axis=1), strong[:, None],
         _TEXTURE_WEIGHT * upper, haematoxylin[:, None]],
        axis=1,
    )
    return features.astype(np.float32)


class StainTexturePreprocessing:
    """Picklable: runs in DataLoader workers, returns the features as the 'model input'."""

    def __call__(self, images: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(stain_texture_features(images))


class StainTextureEmbedder:
    """The :class:`~histoaug.training.embedding.ImageEmbedder` over :func:`stain_texture_features`."""

    source = STAIN_TEXTURE

    def __init__(self) -> None:
        self.preprocessor = StainTexturePreprocessing()

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(FEATURES_VERSION.encode()).hexdigest()

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels.float().cpu()

    def embed(self, images: np.ndarray) -> torch.Tensor:
        return self.encode(self.preprocessor(images))
