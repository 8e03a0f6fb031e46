"""2-D maps of real and synthetic features for the coverage figure: UMAP, or PCA said out loud.

The paper's figure is a 2-D UMAP of Inception-v3 features of real and synthetic patches. One
map is fitted on all sets together (features standardised per dimension with the real set's
statistics), so the sets share coordinates. UMAP (umap-learn, seeded) is used when installed
and the sets are large enough; otherwise PCA, and :class:`Projection` says which and why, so the
figure can print it.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np

from histoaug.errors import InvalidArgumentError

logger = logging.getLogger(__name__)

UMAP_NEIGHBOURS = 15


@dataclass(frozen=True)
class Projection:
    coordinates: dict[str, np.ndarray]  # set name -> (N, 2)
    method: str  # "UMAP" or "PCA"
    note: str  # why this method (empty for UMAP)


def _standardise(features: dict[str, np.ndarray], reference: str) -> dict[str, np.ndarray]:
    ref = features[reference]
    mean, std = ref.mean(axis=0), ref.std(axis=0)
    std[std == 0] = 1.0
    return {name: (values - mean) / std for name, values in features.items()}


def project(features: dict[str, np.ndarray], *, reference: str = "real", method: str = "auto",
            seed: int = 0) -> Projection:
    """Fit one 2-D map on all ``features`` (name -> (N, D)) and return each set's coordinates.

    ``method``: ``"auto"`` (UMAP when umap-learn is installed and there are enough points),
    ``"umap"`` (required: an error if it cannot run) or ``"pca"``.
    """
    if method not in ("auto", "umap", "pca"):
        raise InvalidArgumentError(f"projection method must be auto, umap or pca, not {method!r}")
    if reference not in features:
        raise InvalidArgumentError(f"no {reference!r} set among {sorted(features)}")
    scaled = _standardise(features, reference)
    names = list(scaled)
    stacked = np.concatenate([scaled[name] for name in names]).astype(np.float32)
    note = ""
    use_umap = method in ("auto", "umap")
    if use_umap and len(stacked) <= UMAP_NEIGHBOURS + 1:
        note = f"PCA: only {len(stacked)} points, UMAP needs more than {UMAP_NEIGHBOURS + 1}"
        use_umap = False
    if use_umap:
        try:
            import umap
        except ImportError:
            note = "PCA: umap-learn is not installed (pip install 'histoaug[eval]')"
            use_umap = False
    if method == "umap" and not use_umap:
        raise InvalidArgumentError(f"UMAP projection not possible: {note}")
    if use_umap:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "n_jobs overridden by random_state", numba notices
            reducer = umap.UMAP(n_components=2, n_neighbors=UMAP_NEIGHBOURS, min_dist=0.1, random_state=seed)
            flat = reducer.fit_transform(stacked)
        used = "UMAP"
    else:
        from sklearn.decomposition import PCA

        flat = PCA(n_components=2, random_state=seed).fit_transform(stacked)
        used = "PCA"
        if not note:
            note = "PCA: asked for"
    logger.info("projection: %s %s", used, note)
    bounds = np.cumsum([0] + [len(scaled[name]) for name in names])
    return Projection({name: np.asarray(flat[bounds[i]:bounds[i + 1]], dtype=np.float64)
                       for i, name in enumerate(names)}, used, note)
