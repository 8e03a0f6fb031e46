"""``histoaug.SyntheticPCam``: PCam with a fraction of its items replaced by synthetic patches.

A drop-in for ``torchvision.datasets.PCAM`` / ``histoaug.PCam`` in a training loop:

    dataset = histoaug.SyntheticPCam(root, ratio=0.5)             # half synthetic each epoch
    for epoch in range(epochs):
        dataset.set_epoch(epoch)                                   # new synthetic subset
        for images, labels in DataLoader(dataset, batch_size=256, shuffle=True, num_workers=4): ...

Length and indexing are the real split's: item ``i`` is real item ``i`` or a synthetic patch in
its place (``is_synthetic(i)``). ``ratio=0`` gives exactly ``histoaug.PCam``'s items;
``ratio=1`` is the paper's synthetic-only setting. By default a synthetic item has the label of
the real item it replaces, so the label distribution is the real one (``synthetic_labels``
changes that). The epoch lives in shared memory, so ``set_epoch`` reaches persistent workers.
"""

from __future__ import annotations

import os
import tempfile
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset, Sampler

from histoaug.data.pcam import PCam
from histoaug.errors import InvalidArgumentError
from histoaug.mixing.epoch_plan import EpochPlan, PlanRecipe, build_epoch_plan, parse_synthetic_labels, shard_positions
from histoaug.mixing.pool import PoolClient, PoolConfig, PoolStats, ProducerSpec, SynthesisPool
from histoaug.mixing.pool_control import EPOCH, ControlBlock
from histoaug.mixing.sources import FileSource, ModelSource, open_source


class SyntheticPCam(Dataset):
    """Real PCam items mixed with synthetic ones at a fixed ``ratio`` per epoch.

    Args:
        root, split: the real data, as for ``histoaug.PCam``.
        ratio: fraction of synthetic items per epoch, in [0, 1].
        synthesizer: ``"default"`` (embedded model), a model or artifact dir, a ``Synthesizer``,
            or a file written by ``histoaug generate`` (then no model runs).
        transform, target_transform: applied to every item, real or synthetic.
        seed: with the epoch, decides which items are synthetic and what they show.
        synthetic_labels: ``"match"`` (default), ``"balanced"`` or a fraction of label 1.
        backend, device, dtype, compile: how the model runs, as for ``load_synthesizer``.
            With the defaults, ``auto`` compiles the UNet (bf16, on the CPU) when one epoch's
            synthetic share is large enough for the compile to pay (see docs/synthesis.md);
            ``compile=False`` keeps it eager.
        generate_options: passed to ``generate`` (``steps``, ``guidance``, ...).
        pool: with a model, run it in one background producer process that generates ahead
            of the loader (default, ``True`` or a ``PoolConfig``); ``False`` generates on
            demand inside each DataLoader worker instead. Ignored for a generated file.

    Under an initialised ``torch.distributed``, ``sampler()`` yields this rank's shard of each
    epoch (the ranks' shards are disjoint and cover the epoch once) and the pool's producer
    generates only that shard.

    Copies (pickled into DataLoader workers, ``copy.deepcopy``) are views: they share the
    original's producer, store and epoch, and never start or stop a producer; ``close()`` (or
    dropping the original) stops it for all of them.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        ratio: float = 0.5,
        synthesizer: Any = "default",
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[int], Any] | None = None,
        seed: int = 0,
        *,
        synthetic_labels: str | float = "match",
        backend: str = "auto",
        device: str | None = None,
        dtype: str | None = None,
        compile: bool | None = None,
        generate_options: dict[str, Any] | None = None,
        pool: bool | PoolConfig = True,
    ) -> None:
        if not 0.0 <= float(ratio) <= 1.0:
            raise InvalidArgumentError(f"ratio must lie in [0, 1], got {ratio}")
        self.real = PCam(root, split)
        self.ratio = float(ratio)
        self.seed = int(seed)
        self.transform = transform
        self.target_transform = target_transform
        self.synthetic_labels = parse_synthetic_labels(synthetic_labels)
        self.rank, self.world_size = _distributed_rank()
        self._plan: EpochPlan | None = None
        self.source = None
        if self.ratio > 0:
            # auto decides compiling from the job size: one epoch's synthetic share
            self.source = open_source(
                synthesizer, backend=backend, device=device, dtype=dtype, compile=compile,
                generate_options=generate_options, expected_patches=round(self.ratio * len(self.real)),
            )
        self._pool: SynthesisPool | None = None
        self._pool_client: PoolClient | None = None
        if isinstance(self.source, ModelSource) and pool is not False:
            config = pool if isinstance(pool, PoolConfig) else PoolConfig()
            recipe = PlanRecipe(self.real.labels, self.ratio, self.seed, self.synthetic_labels,
                                self.rank, self.world_size)
            self._pool = SynthesisPool(ProducerSpec(self.source.producer_model(), self.source.generate_options, recipe,
                                                    config))
            self._pool_client = self._pool.client()
            self._epoch = self._pool.control
        else:
            self._epoch = _epoch_cell(self)
        if isinstance(self.source, FileSource):
            self.source.check_labels(set(np.unique(self.plan.slot_labels).tolist()))

    # --- pool ----------------------------------------------------------------------------------
    def pool_stats(self) -> PoolStats | None:
        """Producer patches/s, hits, reuses, waits and wait time (None without a pool)."""
        return self._pool.stats() if self._pool is not None else None

    def warm_up(self, timeout_s: float = 600.0) -> float:
        """Wait until the pool has generated the current epoch; returns the seconds waited."""
        return self._pool.wait_until_ready(self.plan, timeout_s) if self._pool is not None else 0.0

    def close(self) -> None:
        """Stop the pool's producer process (also done when the dataset is garbage collected, and
        at interpreter exit)."""
        if self._pool is not None:
            self._pool.close()

    def __enter__(self) -> SyntheticPCam:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        # copies get the client (paths and values), never the process: see the class docstring
        return {**self.__dict__, "_pool": None, "_plan": None}

    def sampler(self) -> EpochOrderSampler:
        """A sampler visiting the epoch's items in the order the pool generates ahead of (this
        rank's shard under ``torch.distributed``)."""
        return EpochOrderSampler(self)

    # --- epochs --------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch (call before each epoch; visible to persistent workers too)."""
        self._epoch.set(EPOCH, int(epoch))

    @property
    def epoch(self) -> int:
        return self._epoch.get(EPOCH)

    @property
    def plan(self) -> EpochPlan:
        epoch = self.epoch
        if self._plan is None or self._plan.epoch != epoch:
            self._plan = build_epoch_plan(
                self.real.labels, ratio=self.ratio, seed=self.seed, epoch=epoch,
                synthetic_labels=self.synthetic_labels,
            )
        return self._plan

    def is_synthetic(self, index: int) -> bool:
        """Whether item ``index`` is synthetic in the current epoch."""
        return bool(self.plan.synthetic_mask[self.real._check_index(index)])

    @property
    def labels(self) -> np.ndarray:
        """Labels of all items in the current epoch (synthetic items: their generated label)."""
        plan = self.plan
        labels = self.real.labels.copy()
        labels[plan.synthetic_mask] = plan.slot_labels[plan.slot_of[plan.synthetic_mask]]
        return labels

    # --- items ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.real)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[Any, Any]]:
        """A batch: real items in one read, synthetic ones in one source fetch."""
        wanted = self.real._normalise_indices(indices)
        plan = self.plan
        synthetic = plan.synthetic_mask[wanted]
        images = np.empty((wanted.size, 96, 96, 3), dtype=np.uint8)
        labels = self.real.labels[wanted].astype(np.int64)
        if (~synthetic).any():
            images[~synthetic] = self.real.read_images(wanted[~synthetic])
        if synthetic.any():
            slots = plan.slot_of[wanted[synthetic]]
            fetcher = self._pool_client if self._pool_client is not None else self.source
            images[synthetic] = fetcher.fetch(plan, slots)
            labels[synthetic] = plan.slot_labels[slots]
        return [self._make_item(images[k], int(labels[k])) for k in range(wanted.size)]

    def _make_item(self, image: np.ndarray, label: int) -> tuple[Any, Any]:
        out_image: Any = image if self.transform is None else self.transform(image)
        out_label: Any = label if self.target_transform is None else self.target_transform(label)
        return out_image, out_label

    def __repr__(self) -> str:
        return (f"SyntheticPCam(root={str(self.real.root)!r}, split={self.real.split!r}, "
                f"ratio={self.ratio}, items={len(self)}, epoch={self.epoch})")


class EpochOrderSampler(Sampler[int]):
    """Yields the dataset's current epoch order (shuffled per (seed, epoch)); with the pool, the
    producer generates synthetic items in exactly this order, so a warm-up is rarely needed."""

    def __init__(self, dataset: SyntheticPCam) -> None:
        self.dataset = dataset

    def __iter__(self) -> Iterator[int]:
        return iter(self._positions().tolist())

    def _positions(self) -> np.ndarray:
        dataset = self.dataset
        return shard_positions(dataset.plan.order, dataset.rank, dataset.world_size)

    def __len__(self) -> int:
        return self._positions().size


def _distributed_rank() -> tuple[int, int]:
    """(rank, world size) under an initialised ``torch.distributed``, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _epoch_cell(owner: SyntheticPCam) -> ControlBlock:
    """A small shared file holding the epoch of a dataset without a pool, so ``set_epoch`` reaches
    persistent workers, forked or spawned; removed when ``owner`` is garbage collected."""
    descriptor, name = tempfile.mkstemp(prefix="histoaug-epoch-")
    os.close(descriptor)
    cell = ControlBlock(name, create=True)
    weakref.finalize(owner, _remove_cell, name, os.getpid())
    return cell


def _remove_cell(path: str, owner_pid: int) -> None:
    if os.getpid() == owner_pid:  # not from a forked DataLoader worker's copy
        Path(path).unlink(missing_ok=True)
