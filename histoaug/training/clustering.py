"""K-means morphology types: the paper groups DINO embeddings of the training patches into K=33.

Fitted on the training split only (other splits are assigned to the nearest centre with
:func:`assign_clusters`), deterministic under a seed. Embeddings are L2-normalised first by
default (cosine geometry, usual for DINO features). Cluster sizes and the silhouette score are
reported so a user can compare choices of K.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from histoaug.errors import InvalidArgumentError
from histoaug.training.requirements import require

logger = logging.getLogger(__name__)

DEFAULT_CLUSTERS = 33
# Above this many embeddings MiniBatchKMeans is used (full Lloyd K-means over PCam's 262k
# training patches is slow and gives nearly the same partition).
MINIBATCH_THRESHOLD = 50_000
SILHOUETTE_SAMPLE = 10_000


@dataclass(frozen=True)
class ClusterConfig:
    clusters: int = DEFAULT_CLUSTERS
    seed: int = 0
    normalize: bool = True
    n_init: int = 4
    minibatch_threshold: int = MINIBATCH_THRESHOLD


@dataclass(frozen=True)
class ClusteringResult:
    assignments: np.ndarray  # (N,) int64 cluster of each embedding
    centers: np.ndarray  # (K, D) float32, in the (normalised) space used for fitting
    sizes: np.ndarray  # (K,) int64 members per cluster
    silhouette: float  # mean silhouette (on a seeded sample of at most 10k points)
    inertia: float
    algorithm: str
    normalize: bool

    def summary(self) -> str:
        return (
            f"K={len(self.sizes)} ({self.algorithm}), silhouette {self.silhouette:.4f}, "
            f"cluster sizes min {self.sizes.min()} / median {int(np.median(self.sizes))} / max {self.sizes.max()}"
        )


def _prepare(embeddings: np.ndarray | torch.Tensor, normalize: bool) -> np.ndarray:
    array = embeddings.numpy() if isinstance(embeddings, torch.Tensor) else np.asarray(embeddings)
    if array.ndim != 2:
        raise InvalidArgumentError(f"embeddings must be (N, D), got shape {array.shape}")
    array = array.astype(np.float32, copy=True)
    if not np.isfinite(array).all():
        raise InvalidArgumentError("embeddings contain NaN or infinite values")
    if normalize:
        array /= np.maximum(np.linalg.norm(array, axis=1, keepdims=True), 1e-12)
    return array


def fit_clusters(embeddings: np.ndarray | torch.Tensor, config: ClusterConfig = ClusterConfig()) -> ClusteringResult:
    """Fit K-means (MiniBatchKMeans above ``minibatch_threshold`` points) and assign every point."""
    cluster = require("sklearn.cluster", purpose="morphology clustering")
    metrics = require("sklearn.metrics", purpose="morphology clustering")
    data = _prepare(embeddings, config.normalize)
    n, k = len(data), config.clusters
    if k < 2:
        raise InvalidArgumentError(f"the number of clusters must be at least 2, got {k}")
    if k > n:
        raise InvalidArgumentError(f"cannot make {k} clusters from {n} patches; pass --clusters at most {n}")
    distinct = len(np.unique(data, axis=0))
    if k > distinct:
        raise InvalidArgumentError(
            f"cannot make {k} clusters from {distinct} distinct embeddings ({n} patches); pass --clusters at most "
            f"{distinct}"
        )
    if n > config.minibatch_threshold:
        model = cluster.MiniBatchKMeans(
            n_clusters=k, random_state=config.seed, n_init=config.n_init, batch_size=4096, max_iter=100
        )
        algorithm = "MiniBatchKMeans"
    else:
        model = cluster.KMeans(n_clusters=k, random_state=config.seed, n_init=config.n_init)
        algorithm = "KMeans"
    assignments = model.fit_predict(data).astype(np.int64)
    sizes = np.bincount(assignments, minlength=k).astype(np.int64)
    silhouette = _silhouette(metrics, data, assignments, config.seed)
    result = ClusteringResult(
        assignments=assignments,
        centers=model.cluster_centers_.astype(np.float32),
        sizes=sizes,
        silhouette=silhouette,
        inertia=float(model.inertia_),
        algorithm=algorithm,
        normalize=config.normalize,
    )
    logger.info("clustering: %s", result.summary())
    return result


def _silhouette(metrics, data: np.ndarray, assignments: np.ndarray, seed: int) -> float:
    """Mean silhouette on a seeded sample of at most 10k points (NaN with fewer than 2 clusters)."""
    if len(np.unique(assignments)) < 2 or len(np.unique(assignments)) >= len(data):
        return float("nan")
    return float(metrics.silhouette_score(data, assignments, sample_size=min(len(data), SILHOUETTE_SAMPLE),
                                          random_state=seed))


def silhouette(embeddings: np.ndarray | torch.Tensor, assignments: np.ndarray, *, normalize: bool = True,
               seed: int = 0) -> float:
    """Silhouette of a given assignment (e.g. of a split assigned to clusters fitted on train)."""
    metrics = require("sklearn.metrics", purpose="the silhouette score")
    return _silhouette(metrics, _prepare(embeddings, normalize), np.asarray(assignments), seed)


def assign_clusters(
    embeddings: np.ndarray | torch.Tensor, centers: np.ndarray, *, normalize: bool = True
) -> np.ndarray:
    """Nearest-centre assignment of new embeddings (e.g. valid/test) to clusters fitted on train."""
    data = _prepare(embeddings, normalize)
    centers = np.asarray(centers, dtype=np.float32)
    if centers.ndim != 2 or centers.shape[1] != data.shape[1]:
        raise InvalidArgumentError(f"centres of shape {centers.shape} do not match embeddings of width {data.shape[1]}")
    # ||x - c||^2 up to the per-row constant ||x||^2: no (N, K, D) temporary.
    distances = (centers**2).sum(1)[None, :] - 2.0 * data @ centers.T
    return distances.argmin(1).astype(np.int64)
