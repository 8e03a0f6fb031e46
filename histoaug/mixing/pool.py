"""The synthesis pool: one producer process generates ahead of the loader into a shared store.

Generation is far slower per sample than a classifier step, so ``SyntheticPCam`` does not make
each DataLoader worker run the model. Instead one producer process owns the model (on the GPU
when there is one), generates the epoch's synthetic slots in fixed blocks of ``batch_size``
in the order ``SyntheticPCam.sampler()`` visits them, and writes them into memory-mapped files
(``pool_store``); workers read patches from there. Fixed blocks keep the batch layout, and so
every patch, independent of timing, worker count or restarts.

When a worker needs a slot that is not ready yet, the ``policy`` decides:

* ``"wait"`` (default): mark the slot wanted (the producer does its block next) and wait;
  results are exactly reproducible.
* ``"reuse"``: take an already generated patch of the same label from this epoch instead
  (the item's transform still applies, so it is not a plain duplicate); never stalls once any
  patch of that label exists, but which patch is reused depends on timing. With no patch of
  that label generated yet, it waits.

Statistics (``SynthesisPool.stats()``): producer patches/s, hits, reuses, waits, wait time.
The store directory is keyed by the model and settings: pass ``directory`` to keep it across
runs (a warm pool); by default a temporary directory is used and removed on ``close()``.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import multiprocessing
import queue
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from histoaug.errors import ArtifactError, InvalidArgumentError
from histoaug.mixing.epoch_plan import EpochPlan, build_epoch_plan
from histoaug.mixing.pool_store import EpochStore, open_epoch, remove_epochs_before

logger = logging.getLogger(__name__)

POLICIES = ("wait", "reuse")
# shared statistics slots
_PRODUCED, _PRODUCER_SECONDS, _HITS, _REUSES, _WAITS, _WAIT_SECONDS, _FAILED = range(7)


@dataclass(frozen=True)
class PoolConfig:
    """How the synthesis pool runs.

    Args:
        directory: where generated epochs are stored (kept across runs); None: a temporary
            directory removed on close.
        policy: ``"wait"`` or ``"reuse"`` (see the module docstring).
        batch_size: patches per model call (the fixed block size).
        lookahead_epochs: how many epochs beyond the current one the producer may fill.
        wait_timeout_s: a worker waiting longer than this raises (a dead or stuck producer).
        start_timeout_s: how long the producer may take to load the model.
        producer_threads: torch threads in the producer (None: torch's default).
    """

    directory: Path | None = None
    policy: str = "wait"
    batch_size: int = 64
    lookahead_epochs: int = 1
    wait_timeout_s: float = 600.0
    start_timeout_s: float = 600.0
    producer_threads: int | None = None

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise InvalidArgumentError(f"pool policy must be one of {POLICIES}, not {self.policy!r}")
        if self.batch_size <= 0:
            raise InvalidArgumentError(f"pool batch_size must be positive, got {self.batch_size}")


@dataclass
class PoolStats:
    produced: int
    producer_seconds: float
    hits: int
    reuses: int
    waits: int
    wait_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def producer_patches_per_s(self) -> float:
        return self.produced / self.producer_seconds if self.producer_seconds else 0.0

    @property
    def hit_rate(self) -> float:
        served = self.hits + self.reuses + self.waits
        return self.hits / served if served else 0.0


@dataclass(frozen=True)
class PlanRecipe:
    """What any process needs to rebuild an epoch plan."""

    real_labels: np.ndarray
    ratio: float
    seed: int
    synthetic_labels: str | float

    def build(self, epoch: int) -> EpochPlan:
        return build_epoch_plan(self.real_labels, ratio=self.ratio, seed=self.seed, epoch=epoch,
                                synthetic_labels=self.synthetic_labels)


def _producer_main(
    source: Any, recipe: PlanRecipe, config: PoolConfig, directory: Path,
    epoch_value: Any, stop: Any, stats: Any, started: Any,
) -> None:
    """Producer process: load the model, report, then fill epochs until told to stop."""
    import torch

    if config.producer_threads:
        torch.set_num_threads(config.producer_threads)
    try:
        _ = source.synthesizer  # load the model now, so a bad model fails the pool's start
    except Exception as exc:  # reported to the parent, which raises it
        started.put((type(exc).__name__, str(exc)))
        return
    started.put(None)
    try:
        _fill_epochs(source, recipe, config, directory, epoch_value, stop, stats)
    except Exception:
        stats[_FAILED] = 1
        logger.exception("synthesis pool producer failed")
        raise


def _fill_epochs(
    source: Any, recipe: PlanRecipe, config: PoolConfig, directory: Path,
    epoch_value: Any, stop: Any, stats: Any,
) -> None:
    """Generate the next missing block of the current or a look-ahead epoch, until stopped.

    Plans and store maps are built once per epoch and finished epochs are remembered, so an
    idle producer costs next to nothing while the loader runs on the same cores.
    """
    open_epochs: dict[int, tuple[EpochPlan, EpochStore | None]] = {}
    finished: set[int] = set()
    seen = None
    while not stop.is_set():
        current = int(epoch_value.value)
        if current != seen:
            remove_epochs_before(directory, current)
            open_epochs = {e: entry for e, entry in open_epochs.items() if e >= current}
            seen = current
        block = None
        for epoch in range(current, current + 1 + config.lookahead_epochs):
            if epoch in finished:
                continue
            if epoch not in open_epochs:
                plan = recipe.build(epoch)
                store = open_epoch(directory, epoch, plan.synthetic_count) if plan.synthetic_count else None
                open_epochs[epoch] = (plan, store)
            plan, store = open_epochs[epoch]
            block = None if store is None else _next_block(store, plan.synthetic_count, config.batch_size)
            if block is not None:
                break
            finished.add(epoch)
        if block is None:
            stop.wait(0.05)
            continue
        started = time.perf_counter()
        images = source.fetch(plan, block)
        store.images[block] = images
        store.ready[block] = 1
        with stats.get_lock():
            stats[_PRODUCED] += block.size
            stats[_PRODUCER_SECONDS] += time.perf_counter() - started


def _next_block(store: EpochStore, slots: int, batch_size: int) -> np.ndarray | None:
    """The block holding the first wanted-but-missing slot, else the first missing block."""
    ready = np.asarray(store.ready[:slots], dtype=bool)
    if ready.all():
        return None
    wanted = np.flatnonzero(np.asarray(store.wanted[:slots], dtype=bool) & ~ready)
    first = int(wanted[0]) if wanted.size else int(np.argmin(ready))
    start = first - first % batch_size
    return np.arange(start, min(start + batch_size, slots))


class SynthesisPool:
    """Owns the producer process and the shared store; lives in the main process."""

    def __init__(self, source: Any, recipe: PlanRecipe, epoch_value: Any, config: PoolConfig,
                 model_key: str) -> None:
        self.config = config
        self.recipe = recipe
        self._temporary = config.directory is None
        root = Path(tempfile.mkdtemp(prefix="histoaug-pool-")) if self._temporary else Path(config.directory)
        self.directory = root / model_key
        self.directory.mkdir(parents=True, exist_ok=True)
        context = multiprocessing.get_context("spawn")
        self._stats = context.Array("d", 7)
        self._stop = context.Event()
        started = context.Queue()
        self._process = context.Process(
            target=_producer_main, name="histoaug-synthesis-pool", daemon=True,
            args=(source, recipe, config, self.directory, epoch_value, self._stop, self._stats, started),
        )
        self._root = root
        self._process.start()
        atexit.register(self.close)
        failure = self._await_start(started, config.start_timeout_s)
        if failure is not None:
            self.close()
            kind, message = failure
            error = ArtifactError if kind in ("ArtifactError", "PromptsFileError") else RuntimeError
            raise error(f"synthesis pool could not start: {message}")
        logger.info("synthesis pool started (pid %s, store %s, policy %s)",
                    self._process.pid, self.directory, config.policy)

    def _await_start(self, started: Any, timeout_s: float) -> tuple[str, str] | None:
        """The producer's start report: None once the model is loaded, else (error type, message)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                return started.get(timeout=0.5)
            except queue.Empty:
                if not self._process.is_alive():
                    return ("RuntimeError", f"the producer process exited with code {self._process.exitcode} "
                            "before loading the model (with the spawn start method, a script must guard "
                            "its entry point with `if __name__ == '__main__':`)")
        return ("TimeoutError", f"the producer did not load the model in {timeout_s} s")

    def client(self) -> PoolClient:
        return PoolClient(self.directory, self.config, self._stats, self._process.pid)

    def stats(self) -> PoolStats:
        values = list(self._stats)
        return PoolStats(
            produced=int(values[_PRODUCED]), producer_seconds=values[_PRODUCER_SECONDS],
            hits=int(values[_HITS]), reuses=int(values[_REUSES]), waits=int(values[_WAITS]),
            wait_seconds=values[_WAIT_SECONDS],
        )

    def wait_until_ready(self, plan: EpochPlan, timeout_s: float = 600.0) -> float:
        """Block until every slot of ``plan``'s epoch is generated; return the seconds waited."""
        store = open_epoch(self.directory, plan.epoch, plan.synthetic_count)
        started = time.perf_counter()
        while plan.synthetic_count and not store.complete:
            if not self._process.is_alive():
                raise RuntimeError("the synthesis pool's producer process died")
            if time.perf_counter() - started > timeout_s:
                raise TimeoutError(f"the pool did not fill epoch {plan.epoch} in {timeout_s} s")
            time.sleep(0.05)
        return time.perf_counter() - started

    def close(self) -> None:
        """Stop the producer (no orphan process) and remove a temporary store."""
        if self._process is not None:
            self._stop.set()
            self._process.join(timeout=10)
            if self._process.is_alive():
                self._process.terminate()
                self._process.join(timeout=5)
            logger.info("synthesis pool stopped: %s", self.stats())
            self._process = None
        if self._temporary:
            shutil.rmtree(self._root, ignore_errors=True)
        atexit.unregister(self.close)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown: nothing left to clean safely
            self.close()


class PoolClient:
    """The part a DataLoader worker holds: maps the store, applies the policy, counts stats."""

    def __init__(self, directory: Path, config: PoolConfig, stats: Any, producer_pid: int | None) -> None:
        self.directory = directory
        self.config = config
        self.stats = stats
        self.producer_pid = producer_pid
        self._store: tuple[int, EpochStore] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_store": None}

    def _epoch_store(self, plan: EpochPlan) -> EpochStore:
        if self._store is None or self._store[0] != plan.epoch:
            self._store = (plan.epoch, open_epoch(self.directory, plan.epoch, plan.synthetic_count))
        return self._store[1]

    def fetch(self, plan: EpochPlan, slots: np.ndarray) -> np.ndarray:
        store = self._epoch_store(plan)
        ready = np.asarray(store.ready[slots], dtype=bool)
        served = slots.copy()
        reused = 0
        if not ready.all() and self.config.policy == "reuse":
            for k in np.flatnonzero(~ready):
                label = plan.slot_labels[slots[k]]
                candidates = np.flatnonzero(np.asarray(store.ready[: plan.synthetic_count], dtype=bool)
                                            & (plan.slot_labels == label))
                if candidates.size:
                    served[k] = candidates[int(slots[k]) % candidates.size]
                    ready[k] = True
                    reused += 1
        waited = 0.0
        if not ready.all():
            missing = served[~ready]
            store.wanted[missing] = 1
            started = time.perf_counter()
            while not np.asarray(store.ready[missing], dtype=bool).all():
                if self.stats[_FAILED]:
                    raise RuntimeError("the synthesis pool's producer failed (see its log)")
                if time.perf_counter() - started > self.config.wait_timeout_s:
                    raise TimeoutError(
                        f"synthesis pool: slots not generated after {self.config.wait_timeout_s} s "
                        "(is the producer running?)"
                    )
                time.sleep(0.002)
            waited = time.perf_counter() - started
        images = np.array(store.images[served])
        with self.stats.get_lock():
            self.stats[_HITS] += int(slots.size - reused - (~ready).sum())
            self.stats[_REUSES] += reused
            self.stats[_WAITS] += int((~ready).sum())
            self.stats[_WAIT_SECONDS] += waited
        return images
