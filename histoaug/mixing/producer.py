"""The synthesis pool's producer, a program of its own: ``python -m histoaug.mixing.producer SPEC``.

Started by ``SynthesisPool`` with ``subprocess``, never with ``multiprocessing``: nothing of the
user's program is imported or re-run here (no ``if __name__ == "__main__"`` guard needed, and
``python -c``, standard input and notebook kernels work). ``SPEC`` is a JSON file naming the
model, runtime, epoch plan recipe and pool settings.

Life cycle:

1. Guard the parent: ``prctl(PR_SET_PDEATHSIG)`` on Linux, plus a watchdog thread that sees
   the parent's pipe reach EOF or the parent pid change (portable). When the parent dies the
   producer removes the session (and a temporary store) and exits at once. The same thread
   writes a heartbeat into the control block every 0.25 s, so workers can tell a stalled
   producer from a slow one.
2. Load the model, compute the store key (model content, resolved runtime, settings), claim
   the store (``flock``), reserve the current epoch's file, then write ``ready.json``; any
   failure is written to ``error.json`` (type and message) for the parent to re-raise.
3. Fill the current and look-ahead epochs in fixed blocks, wanted slots first, until the stop
   flag is set; a failure is written to ``error.json`` and the state set to FAILED, which the
   workers check.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import logging
import os
import select
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from histoaug.atomic_files import write_text
from histoaug.mixing.epoch_plan import EpochPlan, PlanRecipe
from histoaug.mixing.pool_control import (
    CONTROL_FILE,
    EPOCH,
    FAILED,
    HEARTBEAT_NS,
    PRODUCED,
    PRODUCER_PID,
    PRODUCER_SECONDS,
    READY_FILE,
    RUNNING,
    STATE,
    STOP,
    STOPPED,
    ControlBlock,
    StatsFile,
    write_error,
)
from histoaug.mixing.pool_store import EpochStore, allocate_epoch, claim_store, open_epoch, remove_epochs_outside

logger = logging.getLogger("histoaug.mixing.producer")

HEARTBEAT_INTERVAL_S = 0.25
_PR_SET_PDEATHSIG = 1
PARENT_DEATH_GRACE_S = 2.0


def store_key(synthesizer: Any, spec: dict[str, Any], real_labels: np.ndarray) -> str:
    """Everything that decides the stored patches: the model's content (manifest file hashes, or
    the pipeline dir's content digest; never its path), the resolved runtime, the settings."""
    model = synthesizer.model
    content = json.dumps(model.manifest, sort_keys=True) if model.manifest else str(model.model_id)
    recipe = spec["recipe"]
    payload = json.dumps({
        "model": hashlib.sha256(content.encode()).hexdigest(),
        "runtime": json.dumps(synthesizer.runtime_id, sort_keys=True, default=str),
        "options": spec["generate_options"], "seed": recipe["seed"], "ratio": recipe["ratio"],
        "labels": str(recipe["synthetic_labels"]), "real": hashlib.sha256(real_labels.tobytes()).hexdigest(),
        "block": spec["pool"]["batch_size"], "shard": [recipe["rank"], recipe["world_size"]],
    }, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class ParentGuard:
    """Exit (after removing the session and a temporary store) as soon as the parent dies;
    beat the heartbeat meanwhile."""

    def __init__(self, spec: dict[str, Any], control: ControlBlock) -> None:
        self.parent_pid = int(spec["parent_pid"])
        self.pipe_fd = int(spec["pipe_fd"])
        self.leftovers = [Path(p) for p in spec["remove_on_parent_death"]]
        self.control = control
        self._wakeup_read, wakeup_write = os.pipe()
        os.set_blocking(wakeup_write, False)
        # a caught signal (the death signal, or SIGTERM from the parent's close) writes to the
        # wakeup pipe at once, even while the main thread is busy inside a long model call
        signal.set_wakeup_fd(wakeup_write, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, lambda *_: None)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C goes to the parent, which stops us
        if spec.get("death_signal") and sys.platform.startswith("linux"):
            with contextlib.suppress(OSError, AttributeError):
                libc = ctypes.CDLL(None, use_errno=True)
                libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    def parent_gone(self) -> bool:
        return os.getppid() != self.parent_pid

    def start(self) -> None:
        if self.parent_gone():  # died before the death signal was armed
            self._exit_orphaned()
        threading.Thread(target=self._watch, name="histoaug-producer-watchdog", daemon=True).start()

    def _watch(self) -> None:
        while True:
            self.control.set(HEARTBEAT_NS, time.time_ns())
            readable, _, _ = select.select([self.pipe_fd, self._wakeup_read], [], [], HEARTBEAT_INTERVAL_S)
            if self.pipe_fd in readable and not os.read(self.pipe_fd, 1):
                self._exit_orphaned()
            if self._wakeup_read in readable:
                os.read(self._wakeup_read, 64)
                if self.control.get(STOP):
                    if self.parent_gone():  # it asked, then died before its own clean-up
                        self._exit_orphaned()
                    os._exit(128 + signal.SIGTERM)  # the parent asked us to stop now; it cleans up
                # the death signal can arrive before getppid() reports the new parent (seen here):
                # give the kernel a moment to show whether the parent died or someone else sent it
                if self._parent_dies_within(PARENT_DEATH_GRACE_S):
                    self._exit_orphaned()
                os._exit(128 + signal.SIGTERM)  # terminated from outside; the living parent reports it
            if self.parent_gone():
                self._exit_orphaned()

    def _parent_dies_within(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while not self.parent_gone():
            if time.monotonic() > deadline:
                return False
            readable, _, _ = select.select([self.pipe_fd], [], [], 0.01)
            if readable and not os.read(self.pipe_fd, 1):
                return True
        return True

    def _exit_orphaned(self) -> None:
        for path in self.leftovers:
            remove_while_written(path)
        os._exit(0)


def remove_while_written(path: Path, attempts: int = 20) -> None:
    """Remove a directory that the main thread may still be writing into (a statistics file, an
    epoch cell): rename it first, so no new file can appear under its name, then remove the
    renamed tree until a file created in the meantime is gone too."""
    doomed = path.with_name(f"{path.name}.removing-{os.getpid()}")
    try:
        os.rename(path, doomed)
    except FileNotFoundError:
        return
    except OSError:
        doomed = path
    for _ in range(attempts):
        shutil.rmtree(doomed, ignore_errors=True)
        if not doomed.exists():
            return
        time.sleep(0.01)


@dataclass
class _OpenEpoch:
    plan: EpochPlan
    slots: np.ndarray  # the slots this producer fills, ascending; store row i holds slots[i]
    store: EpochStore | None
    done: bool = False


@dataclass
class EpochFiller:
    """Fills the current and look-ahead epochs' stores in fixed blocks of rows."""

    source: Any
    recipe: PlanRecipe
    directory: Path
    control: ControlBlock
    stats: StatsFile
    batch_size: int
    lookahead: int
    epochs: dict[int, _OpenEpoch] = field(default_factory=dict)
    _window: range | None = field(default=None, init=False)

    def _open(self, epoch: int) -> _OpenEpoch:
        plan = self.recipe.build(epoch)
        slots = self.recipe.shard_slots(plan)
        store = None
        if slots.size:
            allocate_epoch(self.directory, epoch, slots.size)
            store = open_epoch(self.directory, epoch, slots.size)
        return _OpenEpoch(plan, slots, store, done=store is None)

    def follow_epoch(self) -> range:
        """The epochs to fill now; on an epoch change, free the ones outside and reserve the current."""
        current = self.control.get(EPOCH)
        window = range(current, current + 1 + self.lookahead)
        if window != self._window:
            remove_epochs_outside(self.directory, window.start, window.stop - 1)
            self.epochs = {e: entry for e, entry in self.epochs.items() if e in window}
            self._window = window
            if current not in self.epochs:
                self.epochs[current] = self._open(current)
        return window

    def run(self) -> None:
        while not self.control.get(STOP):
            work = None
            for epoch in self.follow_epoch():
                entry = self.epochs.get(epoch) or self.epochs.setdefault(epoch, self._open(epoch))
                rows = None if entry.done else _next_block(entry.store, self.batch_size)
                if rows is None:
                    entry.done = True
                    continue
                work = (entry, rows)
                break
            if work is None:
                time.sleep(0.05)
                continue
            entry, rows = work
            started = time.perf_counter()
            entry.store.images[rows] = self.source.fetch(entry.plan, entry.slots[rows])
            entry.store.ready[rows] = 1
            self.stats.add(PRODUCED, rows.size)
            self.stats.add(PRODUCER_SECONDS, time.perf_counter() - started)


def _next_block(store: EpochStore, batch_size: int) -> np.ndarray | None:
    """The block holding the first wanted-but-missing row, else the first missing block."""
    ready = np.asarray(store.ready, dtype=bool)
    if ready.all():
        return None
    wanted = np.flatnonzero(np.asarray(store.wanted, dtype=bool) & ~ready)
    first = int(wanted[0]) if wanted.size else int(np.argmin(ready))
    start = first - first % batch_size
    return np.arange(start, min(start + batch_size, ready.size))


def start_filler(spec: dict[str, Any], control: ControlBlock, session: Path) -> tuple[EpochFiller, dict[str, Any]]:
    """Load the model, claim the store and reserve the current epoch; what ``ready.json`` reports."""
    from histoaug.mixing.sources import ModelSource

    pool = spec["pool"]
    if pool.get("producer_threads"):
        import torch

        torch.set_num_threads(int(pool["producer_threads"]))
    model = spec["model"]
    source = ModelSource(model["source"], backend=model["backend"], device=model["device"], dtype=model["dtype"],
                         compile=model["compile"], expected_patches=model.get("expected_patches"),
                         graphs=model.get("graphs"),
                         generate_options=spec["generate_options"])
    synthesizer = source.synthesizer
    recipe_spec = spec["recipe"]
    real_labels = np.load(recipe_spec["labels_file"])
    recipe = PlanRecipe(real_labels, recipe_spec["ratio"], recipe_spec["seed"], recipe_spec["synthetic_labels"],
                        recipe_spec["rank"], recipe_spec["world_size"])
    key = store_key(synthesizer, spec, real_labels)
    directory, _lock = claim_store(Path(spec["store_root"]), key)  # held until this process exits
    filler = EpochFiller(source, recipe, directory, control, StatsFile(session), int(pool["batch_size"]),
                         int(pool["lookahead_epochs"]))
    filler.follow_epoch()  # reserve the current epoch now: a full disk fails the start
    return filler, {"store": str(directory), "key": key, "pid": os.getpid(),
                    "runtime_id": json.dumps(synthesizer.runtime_id, sort_keys=True, default=str),
                    "device": str(synthesizer.device)}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(args[0]).read_text())
    logging.basicConfig(level=spec.get("log_level", logging.WARNING), format="histoaug producer: %(message)s")
    session = Path(spec["session"])
    control = ControlBlock(session / CONTROL_FILE)
    control.set(PRODUCER_PID, os.getpid())
    ParentGuard(spec, control).start()
    try:
        filler, ready = start_filler(spec, control, session)
    except Exception as exc:  # reported to the parent, which raises it with the same type
        write_error(session, exc)
        control.set(STATE, FAILED)
        return 1
    write_text(session / READY_FILE, json.dumps(ready))
    control.set(STATE, RUNNING)
    try:
        filler.run()
    except Exception as exc:  # reported to every worker, which raise it with the same type
        logger.exception("synthesis pool producer failed")
        write_error(session, exc)
        control.set(STATE, FAILED)
        return 1
    control.set(STATE, STOPPED)
    return 0


if __name__ == "__main__":
    sys.exit(main())
