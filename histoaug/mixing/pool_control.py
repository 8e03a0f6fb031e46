"""State the synthesis pool's processes share through small files instead of multiprocessing objects.

The training process, its DataLoader workers (forked or spawned, persistent or not) and the
producer program (``python -m histoaug.mixing.producer``) are separate processes with no common
parent object, so what they share lives in a session directory:

* ``control``: one memory-mapped block of int64 fields (current epoch, stop flag, producer
  state, producer pid, heartbeat in ns). Aligned 8-byte writes are atomic, so no lock is needed.
* ``error.json``: the producer's failure (exception type and message), written atomically; the
  parent and every worker re-raise it with the same type.
* ``stats-<pid>-<n>``: one small counter file per process that counts (producer, each worker):
  nobody shares a counter, so no lock is taken on the fetch path and a killed worker cannot
  leave a lock held. ``read_stats`` sums the files.

Everything here is a path plus plain values, so objects holding it pickle and deep-copy.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

import histoaug.errors as errors
from histoaug.atomic_files import write_bytes, write_text

CONTROL_FILE = "control"
ERROR_FILE = "error.json"
READY_FILE = "ready.json"
STATS_PREFIX = "stats-"

# control block fields (int64 each)
EPOCH, STOP, STATE, PRODUCER_PID, HEARTBEAT_NS = range(5)
_FIELDS = 8
# producer states
STARTING, RUNNING, FAILED, STOPPED = range(4)

# statistics counters (float64 each)
PRODUCED, PRODUCER_SECONDS, HITS, REUSES, WAITS, WAIT_SECONDS = range(6)
_COUNTERS = 8


class SynthesisPoolError(RuntimeError):
    """The synthesis pool's producer died, stalled, was closed, or failed with a non-histoaug error
    (the message then starts with the original exception type)."""


class ControlBlock:
    """The shared int64 fields of one pool session (or the epoch cell of a dataset without a pool).

    Pickles as its path and the last value seen of each field; the receiving process maps the
    file again on first use. When the file is gone (its owner closed), reads return the
    pickled values and writes stay local.
    """

    def __init__(self, path: str | Path, *, create: bool = False) -> None:
        self.path = Path(path)
        if create:
            write_bytes(self.path, bytes(8 * _FIELDS))
        self._values = np.zeros(_FIELDS, dtype=np.int64)
        self._map: np.ndarray | None = None
        self._pid = -1

    def _fields(self) -> np.ndarray:
        if self._map is None or self._pid != os.getpid():
            try:
                with open(self.path, "r+b") as handle:
                    buffer = mmap.mmap(handle.fileno(), 8 * _FIELDS)
                self._map = np.frombuffer(buffer, dtype=np.int64)
            except (FileNotFoundError, ValueError):
                self._map = self._values  # owner gone: keep working on the last values seen
            self._pid = os.getpid()
        return self._map

    def get(self, field: int) -> int:
        value = int(self._fields()[field])
        self._values[field] = value
        return value

    def set(self, field: int, value: int) -> None:
        self._fields()[field] = value
        self._values[field] = value

    def heartbeat_age_s(self) -> float:
        beat = self.get(HEARTBEAT_NS)
        return (time.time_ns() - beat) / 1e9 if beat else 0.0

    def __getstate__(self) -> dict[str, Any]:
        for field in range(_FIELDS):
            with contextlib.suppress(Exception):
                self.get(field)
        return {"path": self.path, "_values": self._values.copy()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = state["path"]
        self._values = state["_values"]
        self._map = None
        self._pid = -1


class StatsFile:
    """This process's own counters (created lazily, one file per process)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._map: np.ndarray | None = None
        self._pid = -1

    def add(self, counter: int, amount: float) -> None:
        if self._map is None or self._pid != os.getpid():
            self._pid = os.getpid()
            try:
                path = self.directory / f"{STATS_PREFIX}{self._pid}-{time.monotonic_ns()}"
                # never re-create the session: it may be being removed (an orphaned producer's clean-up)
                write_bytes(path, bytes(8 * _COUNTERS), make_parents=False)
                with open(path, "r+b") as handle:
                    self._map = np.frombuffer(mmap.mmap(handle.fileno(), 8 * _COUNTERS), dtype=np.float64)
            except OSError:  # session removed (pool closed): statistics are best effort
                self._map = np.zeros(_COUNTERS, dtype=np.float64)
        self._map[counter] += amount

    def __getstate__(self) -> dict[str, Any]:
        return {"directory": self.directory}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["directory"])


def read_stats(directory: Path) -> np.ndarray:
    """The sum of every process's counters in ``directory``."""
    total = np.zeros(_COUNTERS, dtype=np.float64)
    for path in Path(directory).glob(f"{STATS_PREFIX}*"):
        with contextlib.suppress(OSError, ValueError):
            values = np.fromfile(path, dtype=np.float64)
            if values.size == _COUNTERS:
                total += values
    return total


# --- errors crossing the process boundary ----------------------------------------------------
def write_error(directory: Path, error: BaseException) -> None:
    """Record ``error`` for the parent and the workers (atomically: never read half-written)."""
    write_text(Path(directory) / ERROR_FILE,
               json.dumps({"type": type(error).__name__, "message": str(error)}))


def read_error(directory: Path) -> Exception | None:
    """The producer's recorded failure, rebuilt with its type: histoaug's own error types as
    themselves, anything else as ``SynthesisPoolError`` naming the original type."""
    try:
        report = json.loads((Path(directory) / ERROR_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return rebuild_error(str(report.get("type", "Exception")), str(report.get("message", "")))


def rebuild_error(type_name: str, message: str) -> Exception:
    kind = getattr(errors, type_name, None)
    if isinstance(kind, type) and issubclass(kind, errors.HistoaugError):
        return kind(message)
    return SynthesisPoolError(f"synthesis pool producer failed: {type_name}: {message}")


# --- processes -------------------------------------------------------------------------------
def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped by its parent, counts as dead)."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            state = handle.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (macOS): ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
