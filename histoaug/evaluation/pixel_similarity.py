"""Pixel-space similarity invariant to the 8 flips/rotations: what tells a near-copy from a look-alike.

A generator that memorised a training patch reproduces its *pixels*, possibly flipped or rotated
(training used dihedral augmentation) and blurred by decoding or compression; a patch of the same
tissue that shares no pixel is similar only in its statistics. So the memorization audit
(:mod:`histoaug.evaluation.memorization`) decides on pixels:

* :func:`detail` -- the band-pass detail of a patch: its grey image, 2 x 2 mean-pooled to 48 x 48,
  Gaussian-blurred with sigma 0.5 px minus blurred with sigma 2 px (1 and 4 px of the patch; a
  difference of Gaussians with reflect boundaries, as two small matrix products). The fine blur
  and the pooling remove noise and JPEG block artefacts, the coarse blur removes what look-alikes
  share: the tissue / background layout and the stain's slow gradients. What is left (nuclei,
  fibres, edges at the positions they have) is what a copy reproduces and a look-alike does not.
* :func:`aligned_correlation` -- the normalised (Pearson) correlation of the detail of a query
  and of a candidate, under each of the 8 dihedral transforms of the query, best one kept.
  Measured on the bundled sample (60 planted copies, all 330 held-out patches, brute force over
  the 1,200 training patches; docs/audit.md): copies score >= 0.98 after JPEG quality 50 or 75
  or noise sigma 8, >= 0.94 at noise sigma 15; held-out patches of the very slides trained on
  score <= 0.25, patches of other slides <= 0.24. (Raw-pixel correlation does not separate them:
  same-slide look-alikes reach 0.89 there, noisy copies drop to 0.85.) A flat patch (detail std
  < 0.5 levels) has no defined correlation and scores 0.
* :class:`ThumbnailEmbedder` -- 8 x 8 x 3 block means (12 x 12 px blocks), mean-centred and
  unit-normalised: their Euclidean distance is a low-pass view of the patch, insensitive to
  noise and JPEG, and the dihedral transforms of a thumbnail are the thumbnails of the
  transformed patch (exactly, for 96 / 12). Searching them with all 8 transforms of each query
  finds the candidates of flipped, rotated or noisy copies that a feature space misses
  (learned and handcrafted features are neither rotation- nor noise-invariant).

Pooling and blur with reflect boundaries commute with flips and rotations, so the detail of a
transformed patch is the transformed detail: each patch is filtered once.
"""

from __future__ import annotations

import hashlib
from functools import cache

import numpy as np
import torch

DIHEDRAL_NAMES = ("identity", "rot90", "rot180", "rot270", "flip", "flip+rot90", "flip+rot180", "flip+rot270")
THUMBNAIL_BLOCK = 12
THUMBNAIL_VERSION = "histoaug-thumbnail/1:block12:centred-unit"
_FLAT_STD = 0.5  # pixel levels: below this a patch is flat and its correlation undefined (scored 0)
DETAIL_POOL = 2  # detail is computed on the 2 x 2 mean-pooled (48 x 48) grey image
DETAIL_SIGMAS = (0.5, 2.0)  # px of the pooled image (1 and 4 px of the patch): the band-pass of :func:`detail`


def dihedral(images: np.ndarray | torch.Tensor, transform: int) -> np.ndarray | torch.Tensor:
    """Transform ``transform`` (0..7, see :data:`DIHEDRAL_NAMES`) of (..., H, W, C) images.

    0-3: rotation by 90 degrees x transform (counter-clockwise); 4-7: horizontal flip, then that rotation.
    """
    if not 0 <= transform < 8:
        raise ValueError(f"dihedral transform must be 0..7, got {transform}")
    h_axis, w_axis = images.ndim - 3, images.ndim - 2
    if isinstance(images, torch.Tensor):
        out = torch.flip(images, dims=(w_axis,)) if transform >= 4 else images
        return torch.rot90(out, k=transform % 4, dims=(h_axis, w_axis))
    out = np.flip(images, axis=w_axis) if transform >= 4 else images
    return np.rot90(out, k=transform % 4, axes=(h_axis, w_axis))


def centred_unit(values: torch.Tensor, flat_std: float) -> torch.Tensor:
    """Rows minus their mean, divided by their norm; rows with std < ``flat_std`` become zero."""
    values = values - values.mean(dim=1, keepdim=True)
    norm = values.norm(dim=1, keepdim=True)
    flat = norm < flat_std * values.shape[1] ** 0.5
    return torch.where(flat, torch.zeros_like(values), values / norm.clamp_min(1e-12))


@cache
def _detail_matrices() -> tuple[torch.Tensor, torch.Tensor]:
    """(48, 96) matrices: 2 x 2 mean pooling, then a Gaussian blur (reflect boundary) of each sigma."""
    side = 96 // DETAIL_POOL
    pool = torch.zeros(side, 96, dtype=torch.float64)
    for i in range(side):
        pool[i, DETAIL_POOL * i:DETAIL_POOL * (i + 1)] = 1.0 / DETAIL_POOL
    blurs = []
    for sigma in DETAIL_SIGMAS:
        radius = int(3 * sigma + 0.5)
        taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
        kernel = torch.exp(-(taps**2) / (2 * sigma * sigma))
        kernel = kernel / kernel.sum()
        blur = torch.zeros(side, side, dtype=torch.float64)
        for i in range(side):
            for offset, weight in zip(range(-radius, radius + 1), kernel.tolist(), strict=True):
                j = i + offset
                j = -j if j < 0 else 2 * (side - 1) - j if j >= side else j  # reflect (edge not repeated)
                blur[i, j] += weight
        blurs.append((blur @ pool).float())
    return blurs[0], blurs[1]


def detail(images: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """(B, 96, 96, 3) uint8 -> (B, 48, 48, 1) float32 band-pass detail of the grey image (module docstring)."""
    grey = torch.from_numpy(np.ascontiguousarray(images)).to(device).float().mean(dim=3)  # (B, 96, 96)
    fine, coarse = (matrix.to(grey.device) for matrix in _detail_matrices())
    out = fine @ grey @ fine.T - coarse @ grey @ coarse.T
    return out.unsqueeze(3)


def aligned_correlation(queries: np.ndarray, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best-of-8-transforms correlation of the detail of each query with that of each of its candidates.

    ``queries`` (B, 96, 96, 3) uint8, ``candidates`` (B, C, 96, 96, 3) uint8 (or distinct patches and
    indices into them: :func:`aligned_correlation_indexed`) -> (B, C) float64 correlations and (B, C)
    transform ids ``t`` such that ``dihedral(query, t)`` matches the candidate.
    """
    b, c = candidates.shape[:2]
    flat = candidates.reshape(b * c, *candidates.shape[2:])
    return aligned_correlation_indexed(queries, flat, np.arange(b * c).reshape(b, c))


def detail_units(images: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """(B, 96, 96, 3) uint8 -> (B, 2304) centred unit vectors of their detail (flat patches: zero), on ``device``."""
    return centred_unit(detail(images, device).reshape(len(images), -1), _FLAT_STD)


def aligned_scores(queries: np.ndarray, candidate_units: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Best-of-8 correlation of each query's detail with (B, C, P) candidate :func:`detail_units`.

    Runs on the device of ``candidate_units``; returns CPU arrays.
    """
    b = len(queries)
    q = detail(queries, candidate_units.device)
    transformed = torch.stack([dihedral(q, t).reshape(b, -1) for t in range(8)], dim=1)  # (B, 8, P)
    transformed = centred_unit(transformed.reshape(b * 8, -1), _FLAT_STD).reshape(b, 8, -1)
    scores = torch.einsum("btp,bcp->bct", transformed, candidate_units)  # (B, C, 8)
    best, which = scores.max(dim=2)
    return best.double().cpu().numpy(), which.cpu().numpy()


def aligned_correlation_indexed(queries: np.ndarray, patches: np.ndarray, candidate_index: np.ndarray,
                                device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """:func:`aligned_correlation` with candidates given as indices into ``patches`` (each filtered once)."""
    units = detail_units(patches, device)
    index = torch.from_numpy(np.asarray(candidate_index, dtype=np.int64)).to(units.device)
    return aligned_scores(queries, units[index])


def thumbnails(images: np.ndarray) -> torch.Tensor:
    """(B, 96, 96, 3) uint8 -> (B, 8, 8, 3) float32 block means (12 x 12 px blocks)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float()
    b, h, w, ch = x.shape
    s = THUMBNAIL_BLOCK
    return x.reshape(b, h // s, s, w // s, s, ch).mean(dim=(2, 4))


def thumbnail_vectors(thumbs: torch.Tensor) -> torch.Tensor:
    """(B, 8, 8, 3) thumbnails -> (B, 192) centred unit vectors (flat thumbnails: zero)."""
    return centred_unit(thumbs.reshape(len(thumbs), -1), _FLAT_STD)


class ThumbnailPreprocessing:
    """Picklable 'preprocessor' of :class:`ThumbnailEmbedder`: the thumbnails themselves."""

    def __call__(self, images: np.ndarray) -> torch.Tensor:
        return thumbnails(images)


class ThumbnailEmbedder:
    """An :class:`~histoaug.training.embedding.ImageEmbedder` of (B, 192) unit thumbnail vectors.

    Embedded through :func:`histoaug.training.embedding.embed_dataset`, so a training split's
    thumbnails are cached with its features.
    """

    source = "thumbnail"

    def __init__(self) -> None:
        self.preprocessor = ThumbnailPreprocessing()

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(THUMBNAIL_VERSION.encode()).hexdigest()

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return thumbnail_vectors(pixels.float())

    def embed(self, images: np.ndarray) -> torch.Tensor:
        return self.encode(self.preprocessor(images))


def dihedral_thumbnail_vectors(vectors: np.ndarray) -> np.ndarray:
    """(Q, 192) unit thumbnail vectors -> (8, Q, 192): each of the 8 transforms of every thumbnail.

    Centring and normalising commute with a permutation of the blocks, so transforming the vector
    equals the vector of the transformed patch.
    """
    grid = vectors.reshape(len(vectors), 96 // THUMBNAIL_BLOCK, 96 // THUMBNAIL_BLOCK, 3)
    return np.stack([np.ascontiguousarray(dihedral(grid, t)).reshape(len(vectors), -1) for t in range(8)])
