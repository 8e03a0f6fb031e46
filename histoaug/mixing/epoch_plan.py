"""Which items of an epoch are synthetic, and what each synthetic item is.

``SyntheticPCam`` keeps the real dataset's indexing: item ``i`` is either real item ``i`` or a
synthetic patch that takes its place. In epoch ``e`` exactly ``round(ratio * N)`` positions,
drawn by a permutation seeded with (seed, e), are synthetic. The epoch also has a visiting
``order`` (what ``SyntheticPCam.sampler()`` yields); the ``j``-th synthetic position in that
order is synthetic slot ``j``, so a producer generating slots ``0, 1, 2, ...`` in fixed blocks
stays ahead of a loader that follows the order. A slot's label, prompt and noise seed are pure
functions of (seed, e, j). So every worker process computes the same plan on its own, the same seed and
epoch reproduce the same items, and across epochs a different subset of real items is replaced.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from histoaug.seeding import index_hash, labels_for, parse_label_spec

_EPOCH_STREAM = 0x5EED


def parse_synthetic_labels(spec: str | float) -> str | float:
    """``"match"`` (the replaced real item's label), ``"balanced"`` (0.5), or a fraction of label 1."""
    return parse_label_spec(spec, name="synthetic_labels", keywords=("match",))


@dataclass(frozen=True)
class EpochPlan:
    """The synthetic/real layout of one epoch."""

    epoch: int
    synthetic_mask: np.ndarray  # (N,) bool
    order: np.ndarray  # (N,) int64: the epoch's visiting order of positions
    slot_of: np.ndarray  # (N,) int64: slot number of each synthetic position, -1 for real
    slot_labels: np.ndarray  # (n_synthetic,) uint8
    slot_rank: np.ndarray  # (n_synthetic,) int64: rank of each slot among slots of its label
    epoch_seed: int

    @property
    def synthetic_count(self) -> int:
        return int(self.slot_labels.size)


def epoch_seed(seed: int, epoch: int) -> int:
    """A run seed per (seed, epoch) for the synthetic slots' prompts and noise."""
    return int(index_hash(seed, np.asarray([epoch]), stream=_EPOCH_STREAM)[0] >> np.uint64(1))


def build_epoch_plan(
    real_labels: np.ndarray, *, ratio: float, seed: int, epoch: int, synthetic_labels: str | float
) -> EpochPlan:
    count = real_labels.size
    synthetic_count = round(ratio * count)
    rng = np.random.Generator(np.random.Philox(key=[seed, epoch]))
    chosen = rng.permutation(count)[:synthetic_count]
    mask = np.zeros(count, dtype=bool)
    mask[chosen] = True
    order = rng.permutation(count)
    synthetic_in_order = order[mask[order]]
    slot_of = np.full(count, -1, dtype=np.int64)
    slot_of[synthetic_in_order] = np.arange(synthetic_count)
    slots = np.arange(synthetic_count)
    if synthetic_labels == "match":
        slot_labels = real_labels[synthetic_in_order].astype(np.uint8)
    else:
        fraction = 0.5 if synthetic_labels == "balanced" else float(synthetic_labels)
        # spread over slots in a seeded order, so labels are not tied to positions
        slot_labels = labels_for(rng.permutation(synthetic_count), fraction) if synthetic_count else slots
        slot_labels = np.asarray(slot_labels, dtype=np.uint8)
    slot_rank = np.zeros(synthetic_count, dtype=np.int64)
    for label in (0, 1):
        of_label = slot_labels == label
        slot_rank[of_label] = np.arange(int(of_label.sum()))
    return EpochPlan(
        epoch=epoch, synthetic_mask=mask, order=order, slot_of=slot_of, slot_labels=slot_labels,
        slot_rank=slot_rank, epoch_seed=epoch_seed(seed, epoch),
    )


def shard_positions(order: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """Rank ``rank``'s share of an epoch's visiting order: every ``world_size``-th position
    from ``rank`` on, so the ranks' shards are disjoint and together cover the epoch once."""
    return order[rank::world_size]


@dataclass(frozen=True)
class PlanRecipe:
    """What any process needs to rebuild an epoch plan (and a rank's share of its slots)."""

    real_labels: np.ndarray
    ratio: float
    seed: int
    synthetic_labels: str | float
    rank: int = 0
    world_size: int = 1

    def build(self, epoch: int) -> EpochPlan:
        return build_epoch_plan(self.real_labels, ratio=self.ratio, seed=self.seed, epoch=epoch,
                                synthetic_labels=self.synthetic_labels)

    def shard_slots(self, plan: EpochPlan) -> np.ndarray:
        """The synthetic slots this rank visits, ascending (all slots for a single process)."""
        if self.world_size == 1:
            return np.arange(plan.synthetic_count)
        slots = plan.slot_of[shard_positions(plan.order, self.rank, self.world_size)]
        return np.sort(slots[slots >= 0])
