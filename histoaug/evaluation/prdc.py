"""Precision, recall, density and coverage of a synthetic feature set against a real one.

k-nearest-neighbour manifolds (Naeem et al., 2020, "Reliable Fidelity and Diversity Metrics for
Generative Models"; the ``prdc`` package's definitions, checked against it in the tests):
each real point owns a ball reaching its k-th nearest real neighbour (likewise for synthetic).

* **precision** -- fraction of synthetic points inside some real ball (fidelity);
* **recall** -- fraction of real points inside some synthetic ball (diversity);
* **density** -- real balls containing each synthetic point, divided by k, averaged (fidelity
  that rewards sitting where real data is dense; 1 on average for identical distributions);
* **coverage** -- fraction of real balls containing at least one synthetic point (the
  paper's "coverage of the real distribution", robust to synthetic outliers).

Distances are computed in blocks with ``torch.cdist`` so large sets never build the full
matrix at once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from histoaug.errors import InvalidArgumentError

_BLOCK = 2048


@dataclass(frozen=True)
class PRDC:
    precision: float
    recall: float
    density: float
    coverage: float
    k: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _kth_neighbour_radii(points: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each point to its k-th nearest other point."""
    radii = []
    for start in range(0, len(points), _BLOCK):
        distances = torch.cdist(points[start:start + _BLOCK], points)
        radii.append(torch.kthvalue(distances, k + 1, dim=1).values)  # the smallest is the point itself
    return torch.cat(radii)


def compute_prdc(real: np.ndarray, synthetic: np.ndarray, k: int = 5) -> PRDC:
    """PRDC of (N, D) ``synthetic`` features against (M, D) ``real`` ones with k-NN balls."""
    if k < 1:
        raise InvalidArgumentError(f"k must be >= 1, got {k}")
    if min(len(real), len(synthetic)) <= k:
        raise InvalidArgumentError(f"precision/recall with k={k} needs more than {k} real and synthetic "
                                   f"points (got {len(real)} and {len(synthetic)})")
    real_t = torch.from_numpy(np.asarray(real, dtype=np.float64))
    fake_t = torch.from_numpy(np.asarray(synthetic, dtype=np.float64))
    real_radii = _kth_neighbour_radii(real_t, k)
    fake_radii = _kth_neighbour_radii(fake_t, k)
    inside_real_count = torch.zeros(len(fake_t), dtype=torch.float64)  # per synthetic point
    real_recalled = torch.zeros(len(real_t), dtype=torch.bool)
    real_covered = torch.zeros(len(real_t), dtype=torch.bool)
    for start in range(0, len(fake_t), _BLOCK):
        block = torch.cdist(real_t, fake_t[start:start + _BLOCK])  # (M, b)
        inside_real = block < real_radii[:, None]
        inside_real_count[start:start + _BLOCK] = inside_real.sum(dim=0).double()
        real_recalled |= (block < fake_radii[None, start:start + _BLOCK]).any(dim=1)
        real_covered |= inside_real.any(dim=1)
    return PRDC(
        precision=float((inside_real_count > 0).double().mean()),
        recall=float(real_recalled.double().mean()),
        density=float(inside_real_count.mean() / k),
        coverage=float(real_covered.double().mean()),
        k=k,
    )
