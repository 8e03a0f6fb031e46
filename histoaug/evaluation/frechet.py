"""The Frechet distance between two feature sets, each summarised as a Gaussian (FID's formula).

``d^2 = |mu_1 - mu_2|^2 + tr(S_1) + tr(S_2) - 2 tr((S_1 S_2)^(1/2))``. The trace of the matrix
square root is computed from the eigenvalues of ``A S_2 A`` with ``A = S_1^(1/2)`` (symmetric,
positive semi-definite, same non-zero eigenvalues as ``S_1 S_2``), which stays real and exact
for the singular covariances of small sets, where ``scipy.linalg.sqrtm(S_1 S_2)`` needs the
epsilon offsets and complex-part clipping of the usual implementations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from histoaug.errors import InvalidArgumentError


@dataclass(frozen=True)
class GaussianStatistics:
    """Mean and covariance of a feature set (what FID compares), with the number of samples."""

    mean: np.ndarray
    covariance: np.ndarray
    count: int

    @classmethod
    def of(cls, features: np.ndarray) -> GaussianStatistics:
        """Statistics of (N, D) features (unbiased covariance, as FID implementations use)."""
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or features.shape[0] < 2:
            raise InvalidArgumentError(f"need (N >= 2, D) features, got shape {features.shape}")
        if not np.isfinite(features).all():
            raise InvalidArgumentError("features contain NaN or infinite values")
        return cls(features.mean(axis=0), np.atleast_2d(np.cov(features, rowvar=False)), features.shape[0])


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(first: GaussianStatistics, second: GaussianStatistics) -> float:
    """Squared Frechet (2-Wasserstein) distance between the two Gaussians (the FID value)."""
    if first.mean.shape != second.mean.shape:
        raise InvalidArgumentError(f"feature dimensions differ: {first.mean.shape[0]} vs {second.mean.shape[0]}")
    root = _psd_sqrt(first.covariance)
    middle = root @ second.covariance @ root
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)).sum()
    diff = first.mean - second.mean
    value = diff @ diff + np.trace(first.covariance) + np.trace(second.covariance) - 2.0 * trace_sqrt
    return float(max(value, 0.0))


def frechet_distance_of(first: np.ndarray, second: np.ndarray) -> float:
    """:func:`frechet_distance` of two (N, D) feature arrays."""
    return frechet_distance(GaussianStatistics.of(first), GaussianStatistics.of(second))
