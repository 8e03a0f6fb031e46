"""The synthesis pool: one producer program generates ahead of the loader into a shared store.

Generation is far slower per sample than a classifier step, so ``SyntheticPCam`` does not make
each DataLoader worker run the model. Instead one producer process owns the model (on the GPU
when there is one), generates the epoch's synthetic slots in fixed blocks of ``batch_size``
in the order ``SyntheticPCam.sampler()`` visits them, and writes them into a memory-mapped
store (``pool_store``); workers read patches from there. Fixed blocks keep the batch layout, and
so every patch, independent of timing, worker count or restarts.

The producer is its own program (``histoaug.mixing.producer``) started with ``subprocess``, so
no user module is imported or re-run, whatever the user's script looks like. Everything the
processes share is a file (``pool_control``): the control block (epoch, stop flag, producer
state, heartbeat), the producer's error report and per-process statistics. So a dataset holding
a ``PoolClient`` pickles and deep-copies, and no lock is held on the fetch path.

When a worker needs a slot that is not ready yet, the ``policy`` decides:

* ``"wait"`` (default): mark the slot wanted (the producer does its block next) and wait;
  results are exactly reproducible.
* ``"reuse"``: take an already generated patch of the same label from this epoch instead
  (the item's transform still applies, so it is not a plain duplicate); never stalls once any
  patch of that label exists, but which patch is reused depends on timing. With no patch of
  that label generated yet, it waits.

While waiting, a worker checks the producer every 50 ms: a recorded error is re-raised with
its own type and message; a producer that is gone (killed, OOM-killed, crashed) or whose
heartbeat is older than ``heartbeat_timeout_s`` raises ``SynthesisPoolError`` naming it.

Statistics (``SynthesisPool.stats()``): producer patches/s, hits, reuses, waits, wait time.
The store directory is keyed by the model's content, the resolved runtime and the settings:
pass ``directory`` to keep it across runs (a warm pool); by default a temporary directory is
used and removed on ``close()``, when the dataset is garbage collected, at exit, or by the
producer itself when its parent dies.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from histoaug.errors import InvalidArgumentError
from histoaug.mixing.epoch_plan import EpochPlan, PlanRecipe
from histoaug.mixing.pool_control import (
    CONTROL_FILE,
    EPOCH,
    FAILED,
    HITS,
    PRODUCED,
    PRODUCER_PID,
    PRODUCER_SECONDS,
    READY_FILE,
    REUSES,
    STATE,
    STOP,
    WAIT_SECONDS,
    WAITS,
    ControlBlock,
    StatsFile,
    SynthesisPoolError,
    process_alive,
    read_error,
    read_stats,
)
from histoaug.mixing.pool_store import EpochStore, current_inode, epoch_path, open_epoch

logger = logging.getLogger(__name__)

__all__ = ["PlanRecipe", "PoolClient", "PoolConfig", "PoolStats", "SynthesisPool", "SynthesisPoolError"]

POLICIES = ("wait", "reuse")
PRODUCER_MODULE = "histoaug.mixing.producer"
_CHECK_INTERVAL_S = 0.05


@dataclass(frozen=True)
class PoolConfig:
    """How the synthesis pool runs.

    Args:
        directory: where generated epochs are stored (kept across runs); None: a temporary
            directory removed on close.
        policy: ``"wait"`` or ``"reuse"`` (see the module docstring).
        batch_size: patches per model call (the fixed block size).
        lookahead_epochs: how many epochs beyond the current one the producer may fill.
        wait_timeout_s: a worker waiting longer than this for a live producer raises.
        start_timeout_s: how long the producer may take to load the model.
        heartbeat_timeout_s: a producer whose heartbeat (every 0.25 s) is older is stalled.
        producer_threads: torch threads in the producer (None: torch's default).
    """

    directory: Path | None = None
    policy: str = "wait"
    batch_size: int = 64
    lookahead_epochs: int = 1
    wait_timeout_s: float = 600.0
    start_timeout_s: float = 600.0
    heartbeat_timeout_s: float = 10.0
    producer_threads: int | None = None

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise InvalidArgumentError(f"pool policy must be one of {POLICIES}, not {self.policy!r}")
        if self.batch_size <= 0:
            raise InvalidArgumentError(f"pool batch_size must be positive, got {self.batch_size}")
        if self.lookahead_epochs < 0:
            raise InvalidArgumentError(f"pool lookahead_epochs must be >= 0, got {self.lookahead_epochs}")


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


# the parent's ends of the producers' lifeline pipes: closed in forked children (DataLoader
# workers), so the producer sees EOF as soon as the parent itself dies
_LIFELINES: set[int] = set()


def _close_quietly(descriptor: int) -> None:
    with contextlib.suppress(OSError):
        os.close(descriptor)


def _close_lifelines_in_child() -> None:
    for descriptor in _LIFELINES:
        _close_quietly(descriptor)
    _LIFELINES.clear()


os.register_at_fork(after_in_child=_close_lifelines_in_child)


@dataclass(frozen=True)
class ProducerSpec:
    """What the producer program is told (written as JSON to the session directory)."""

    model: dict[str, Any]
    generate_options: dict[str, Any]
    recipe: PlanRecipe
    config: PoolConfig


class SynthesisPool:
    """Owns the producer process and the session; lives in the process that built the dataset.

    Copies of a dataset (pickled into workers, ``copy.deepcopy``) carry only the ``PoolClient``:
    they share this producer, store and epoch and never start or stop a producer.
    """

    def __init__(self, spec: ProducerSpec) -> None:
        config = spec.config
        self.config = config
        self.recipe = spec.recipe
        self.session = Path(tempfile.mkdtemp(prefix="histoaug-pool-"))
        store_root = Path(config.directory) if config.directory is not None else self.session / "store"
        self.control = ControlBlock(self.session / CONTROL_FILE, create=True)
        labels_file = self.session / "real_labels.npy"
        np.save(labels_file, spec.recipe.real_labels)
        lifeline_read, lifeline_write = os.pipe()
        _LIFELINES.add(lifeline_write)
        spec_file = self.session / "spec.json"
        spec_file.write_text(json.dumps({
            "session": str(self.session), "parent_pid": os.getpid(), "pipe_fd": lifeline_read,
            "death_signal": threading.current_thread() is threading.main_thread(),
            "remove_on_parent_death": [str(self.session)], "store_root": str(store_root),
            "model": spec.model, "generate_options": spec.generate_options,
            "recipe": {"labels_file": str(labels_file), "ratio": spec.recipe.ratio, "seed": spec.recipe.seed,
                       "synthetic_labels": spec.recipe.synthetic_labels, "rank": spec.recipe.rank,
                       "world_size": spec.recipe.world_size},
            "pool": {**asdict(config), "directory": str(store_root)},
            "log_level": logging.getLogger("histoaug").getEffectiveLevel(),
        }, default=str))
        try:
            self.process = subprocess.Popen([sys.executable, "-m", PRODUCER_MODULE, str(spec_file)],
                                            pass_fds=(lifeline_read,), stdin=subprocess.DEVNULL)
        except OSError:
            _stop_producer(None, self.control, self.session, lifeline_write, os.getpid())
            raise
        finally:
            _close_quietly(lifeline_read)
        self._finalizer = weakref.finalize(self, _stop_producer, self.process, self.control, self.session,
                                           lifeline_write, os.getpid())
        try:
            ready = self._await_ready(config.start_timeout_s)
        except BaseException:
            self.close()
            raise
        self.directory = Path(ready["store"])
        self.key = str(ready["key"])
        self.runtime_id = ready["runtime_id"]
        logger.info("synthesis pool started (pid %s, store %s, policy %s, runtime %s)",
                    self.process.pid, self.directory, config.policy, self.runtime_id)

    def _await_ready(self, timeout_s: float) -> dict[str, Any]:
        """The producer's ready report; its recorded error (same type), or its death, raised."""
        deadline = time.monotonic() + timeout_s
        ready_file = self.session / READY_FILE
        while time.monotonic() < deadline:
            if ready_file.exists():  # a later error is the workers' to raise
                return json.loads(ready_file.read_text())
            error = read_error(self.session)
            if error is not None:
                raise error
            code = self.process.poll()
            if code is not None:
                error = read_error(self.session)
                raise error if error is not None else SynthesisPoolError(
                    f"synthesis pool could not start: the producer exited with {_exit_reason(code)} "
                    "before loading the model (its output is above)")
            time.sleep(_CHECK_INTERVAL_S)
        raise SynthesisPoolError(f"synthesis pool could not start: the producer did not load the model in "
                                 f"{timeout_s} s (PoolConfig.start_timeout_s)")

    def client(self) -> PoolClient:
        return PoolClient(self.session, self.directory, self.config, self.recipe, self.control)

    def stats(self) -> PoolStats:
        values = read_stats(self.session)
        return PoolStats(
            produced=int(values[PRODUCED]), producer_seconds=float(values[PRODUCER_SECONDS]),
            hits=int(values[HITS]), reuses=int(values[REUSES]), waits=int(values[WAITS]),
            wait_seconds=float(values[WAIT_SECONDS]),
        )

    def set_epoch(self, epoch: int) -> None:
        self.control.set(EPOCH, epoch)

    def wait_until_ready(self, plan: EpochPlan, timeout_s: float = 600.0) -> float:
        """Block until this process's share of ``plan``'s epoch is generated; return the seconds waited."""
        return self.client().wait_for_epoch(plan, timeout_s)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        """Stop the producer (no orphan process) and remove the session and a temporary store."""
        self._finalizer()


def _exit_reason(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"


def _stop_producer(process: subprocess.Popen | None, control: ControlBlock, session: Path, lifeline: int,
                   owner_pid: int) -> None:
    """Finalizer of a SynthesisPool: never holds the pool itself, so dropping the last reference
    to a dataset stops its producer. Does nothing in a forked child (a DataLoader worker)."""
    if os.getpid() != owner_pid:
        return
    control.set(STOP, 1)
    if process is not None:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.terminate()  # caught by the producer's watchdog: exits at once
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        logger.info("synthesis pool stopped (producer %s)", _exit_reason(process.returncode))
    _LIFELINES.discard(lifeline)
    _close_quietly(lifeline)
    shutil.rmtree(session, ignore_errors=True)


class PoolClient:
    """The part a DataLoader worker holds: maps the store, applies the policy, counts its stats.

    Plain paths and values only, so it pickles (spawned workers) and deep-copies.
    """

    def __init__(self, session: Path, directory: Path, config: PoolConfig, recipe: PlanRecipe,
                 control: ControlBlock) -> None:
        self.session = session
        self.directory = directory
        self.config = config
        self.recipe = recipe
        self.control = control
        self.stats = StatsFile(session)
        self._store: EpochStore | None = None
        self._rows: tuple[int, np.ndarray] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_store": None, "_rows": None}

    # --- the producer's health -------------------------------------------------------------------
    def check_producer(self) -> None:
        """Raise if the producer failed, died, stalled or was stopped."""
        state = self.control.get(STATE)
        if state == FAILED or not process_alive(self.control.get(PRODUCER_PID)):
            error = read_error(self.session)
            if error is not None:
                raise error
            if self.control.get(STOP):
                raise SynthesisPoolError("the synthesis pool was closed (its dataset was closed or garbage "
                                         "collected); a copy of a dataset cannot outlive its original")
            raise SynthesisPoolError(
                f"the synthesis pool's producer (pid {self.control.get(PRODUCER_PID)}) is gone without "
                "reporting an error: it was killed (SIGKILL, the OOM killer) or crashed")
        age = self.control.heartbeat_age_s()
        if age > self.config.heartbeat_timeout_s:
            raise SynthesisPoolError(
                f"the synthesis pool's producer (pid {self.control.get(PRODUCER_PID)}) is stalled: no "
                f"heartbeat for {age:.1f} s (PoolConfig.heartbeat_timeout_s={self.config.heartbeat_timeout_s})")

    def _wait(self, done: Any, what: str, timeout_s: float, poll_s: float = _CHECK_INTERVAL_S) -> float:
        """Poll ``done()`` every ``poll_s`` until true, checking the producer every 50 ms; return
        the seconds waited."""
        started = checked = time.perf_counter()
        while not done():
            now = time.perf_counter()
            if now - checked >= _CHECK_INTERVAL_S:
                self.check_producer()
                checked = now
            if now - started > timeout_s:
                raise TimeoutError(f"synthesis pool: {what} not generated after {timeout_s} s although the "
                                   "producer is alive (PoolConfig.wait_timeout_s)")
            time.sleep(poll_s)
        return time.perf_counter() - started

    # --- the store ---------------------------------------------------------------------------
    def _epoch_store(self, plan: EpochPlan, slots: int) -> EpochStore:
        """This epoch's map; remapped when the producer re-created the file (an epoch revisited)."""
        path = epoch_path(self.directory, plan.epoch)
        store = self._store
        if store is not None and store.path == path and store.inode == current_inode(path):
            return store
        self._store = None

        def opened() -> bool:
            self._store = open_epoch(self.directory, plan.epoch, slots)
            return self._store is not None

        self._wait(opened, f"epoch {plan.epoch}'s store", self.config.wait_timeout_s)
        return self._store

    def _shard_rows(self, plan: EpochPlan) -> np.ndarray:
        """The slots of this rank's shard, ascending (store row i holds the i-th)."""
        if self._rows is None or self._rows[0] != plan.epoch:
            self._rows = (plan.epoch, self.recipe.shard_slots(plan))
        return self._rows[1]

    def rows_of(self, plan: EpochPlan, slots: np.ndarray) -> np.ndarray:
        """Store rows of ``slots`` (the slots themselves for a single process)."""
        if self.recipe.world_size == 1:
            return slots
        shard = self._shard_rows(plan)
        rows = np.searchsorted(shard, slots)
        if (rows >= shard.size).any() or not np.array_equal(shard[rows], slots):
            raise InvalidArgumentError(
                f"synthesis pool of rank {self.recipe.rank}/{self.recipe.world_size}: items of another rank's "
                "shard were asked for; iterate with dataset.sampler()")
        return rows

    def wait_for_epoch(self, plan: EpochPlan, timeout_s: float) -> float:
        rows = self._shard_rows(plan).size
        if rows == 0:
            return 0.0
        started = time.perf_counter()
        store = self._epoch_store(plan, rows)
        self._wait(lambda: store.complete, f"epoch {plan.epoch}", timeout_s)
        return time.perf_counter() - started

    def fetch(self, plan: EpochPlan, slots: np.ndarray) -> np.ndarray:
        if self.control.get(STATE) == FAILED:
            self.check_producer()
        rows = self.rows_of(plan, slots)
        shard = self._shard_rows(plan)
        store = self._epoch_store(plan, shard.size)
        ready = np.asarray(store.ready[rows], dtype=bool)
        served = rows.copy()
        reused = 0
        if not ready.all() and self.config.policy == "reuse":
            labels = plan.slot_labels[shard]
            for k in np.flatnonzero(~ready):
                candidates = np.flatnonzero(np.asarray(store.ready, dtype=bool) & (labels == labels[rows[k]]))
                if candidates.size:
                    served[k] = candidates[int(rows[k]) % candidates.size]
                    ready[k] = True
                    reused += 1
        waited = 0.0
        if not ready.all():
            missing = served[~ready]
            store.wanted[missing] = 1
            waited = self._wait_rows(store, missing)
        images = np.array(store.images[served])
        self.stats.add(HITS, int(slots.size - reused - (~ready).sum()))
        self.stats.add(REUSES, reused)
        self.stats.add(WAITS, int((~ready).sum()))
        self.stats.add(WAIT_SECONDS, waited)
        return images

    def _wait_rows(self, store: EpochStore, rows: np.ndarray) -> float:
        return self._wait(lambda: bool(np.asarray(store.ready[rows], dtype=bool).all()), "slots",
                          self.config.wait_timeout_s, poll_s=0.002)
