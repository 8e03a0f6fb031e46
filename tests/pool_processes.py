"""What a synthesis pool may leave behind, for tests that assert it left nothing: producer
processes, temporary stores and epoch cells, shared-memory files."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

PRODUCER_MODULE = "histoaug.mixing.producer"


def producer_pids() -> set[int]:
    """Live (not zombie) producer processes of any pool on this machine."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if PRODUCER_MODULE.encode() in command and state not in (b"Z", b"X"):
            pids.add(int(entry.name))
    return pids


def process_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in (b"Z", b"X")


def wait_until(condition, timeout_s: float, interval_s: float = 0.05) -> float:
    """Seconds until ``condition()`` held; raises AssertionError after ``timeout_s``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"not within {timeout_s} s")
        time.sleep(interval_s)
    return time.monotonic() - started


def leftovers() -> set[Path]:
    """Temporary pool sessions/stores, epoch cells and shared-memory files now present."""
    temp = Path(tempfile.gettempdir())
    found = set(temp.glob("histoaug-pool-*")) | set(temp.glob("histoaug-epoch-*"))
    shm = Path("/dev/shm")
    if shm.is_dir():
        found |= {p for p in shm.iterdir() if p.name.startswith(("histoaug", "torch_", "psm_"))}
    return found
