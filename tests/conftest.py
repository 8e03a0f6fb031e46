"""Test-wide settings: nothing may reach the network; small thread counts on the 2-core CI."""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import tempfile

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_OFFLINE", "1")
# compiled UNets (histoaug.synthesis.compile_cache) go to a throw-away dir, never the user's cache
os.environ["HISTOAUG_CACHE"] = tempfile.mkdtemp(prefix="histoaug-test-cache-")
atexit.register(shutil.rmtree, os.environ["HISTOAUG_CACHE"], ignore_errors=True)


def _import_triton_for_its_interpreter() -> None:
    """Without CUDA, import Triton in interpreter mode before any test does: Triton fixes at import
    whether ``tl.sum`` & co. are interpreted, and the kernel tests run under TRITON_INTERPRET=1."""
    if importlib.util.find_spec("triton") is None or torch.cuda.is_available():
        return
    previous = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        import triton.language  # noqa: F401
    finally:
        if previous is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = previous


_import_triton_for_its_interpreter()


def pytest_report_header(config) -> str:
    """Which histoaug runs: scripts/gpu_check.sh tests the installed copy (its dry run checks this line)."""
    import histoaug

    return f"histoaug: {os.path.dirname(histoaug.__file__)}"


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module: on a shared 2-core machine, 2 threads were measured up to
    15x slower under contention. Restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture()
def no_pool_leftovers():
    """Fails the test if it leaves a producer process, a temporary store or shared memory behind."""
    import gc

    from pool_processes import leftovers, producer_pids, wait_until

    processes, files = producer_pids(), leftovers()
    yield
    gc.collect()  # abandoned datasets: their producers stop when they are collected
    wait_until(lambda: producer_pids() <= processes, timeout_s=15)
    assert leftovers() <= files, f"left behind: {sorted(leftovers() - files)}"
