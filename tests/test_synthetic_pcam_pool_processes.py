"""The synthesis pool as real processes: how it starts, fails, cleans up, and shares its store.

Every test here runs the real producer program (``python -m histoaug.mixing.producer``) on a
tiny real model and asserts that no producer process, temporary store or shared-memory file is
left behind (``no_pool_leftovers``).
"""

from __future__ import annotations

import copy
import gc
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from pcam_files import random_patches, write_release_split
from pool_processes import process_gone, producer_pids, wait_until
from safetensors.torch import load_file, save_file
from synthesis_models import tiny_model_dir
from torch.utils.data import DataLoader

from histoaug import OutputWriteError, PoolConfig, SyntheticPCam
from histoaug.mixing.pool import SynthesisPoolError
from histoaug.mixing.pool_store import epoch_path

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("no_pool_leftovers")]

OPTIONS = {"steps": 1, "guidance": 2.0}
ITEMS = 8


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return str(tiny_model_dir(tmp_path_factory))


@pytest.fixture(scope="module")
def real_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    images, labels = random_patches(ITEMS, seed=0)
    write_release_split(root, "train", images, labels)
    return root


def pooled(real_root, model, **config) -> SyntheticPCam:
    options = config.pop("generate_options", OPTIONS)
    ratio = config.pop("ratio", 0.5)
    settings = {"batch_size": 2, "lookahead_epochs": 0, "producer_threads": 1, **config}
    return SyntheticPCam(real_root, ratio=ratio, synthesizer=model, backend="torch", generate_options=options,
                         pool=PoolConfig(**settings))


def synthetic_items(dataset: SyntheticPCam) -> np.ndarray:
    positions = [i for i in range(len(dataset)) if dataset.is_synthetic(i)]
    return np.stack([image for image, _ in dataset.__getitems__(positions)])


# --- starting without a main guard -----------------------------------------------------------
USER_CODE = """
import sys
from histoaug import PoolConfig, SyntheticPCam

dataset = SyntheticPCam(sys.argv[1], ratio=0.5, synthesizer=sys.argv[2], backend="torch",
                        generate_options={"steps": 1}, pool=PoolConfig(batch_size=2, lookahead_epochs=0))
index = next(i for i in range(len(dataset)) if dataset.is_synthetic(i))
image, label = dataset[index]
print("ok", image.shape, image.std() > 0, flush=True)
"""
# what a notebook kernel does: run a cell's code in a __main__ namespace that has no __file__
REPOSITORY_ROOT = Path(__file__).resolve().parents[1]

KERNEL_DRIVER = """
import sys, types
main = types.ModuleType("__main__")
sys.modules["__main__"] = main
exec(compile(sys.stdin.read(), "<cell>", "exec"), main.__dict__)
"""


@pytest.mark.parametrize("how", ["script", "dash_c", "stdin", "kernel", "dash_c_at_repository_root"])
def test_a_pool_starts_from_any_entry_point_without_a_main_guard(how, real_root, model, tmp_path):
    script = tmp_path / "train.py"
    script.write_text(USER_CODE)
    command, stdin = {
        "script": ([str(script)], None),
        "dash_c": (["-c", USER_CODE], None),
        "stdin": (["-"], USER_CODE),
        "kernel": (["-c", KERNEL_DRIVER], USER_CODE),
        "dash_c_at_repository_root": (["-c", USER_CODE], None),
    }[how]
    # at the repository root, the root is on sys.path of the user's process and of the producer
    cwd = REPOSITORY_ROOT if how == "dash_c_at_repository_root" else tmp_path
    result = subprocess.run([sys.executable, *command, str(real_root), model], input=stdin, capture_output=True,
                            text=True, cwd=cwd, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok (96, 96, 3) True"


# --- faults ------------------------------------------------------------------------------------
def first_error(loader) -> tuple[type, str] | None:
    """Iterate to the end; the first error's type and message (not the exception: its traceback
    would keep the loader's workers alive until the next garbage collection)."""
    try:
        for _ in loader:
            pass
    except Exception as exc:
        return type(exc), str(exc)
    return None


def test_killing_the_producer_mid_epoch_fails_the_loader_fast(real_root, model):
    dataset = pooled(real_root, model, ratio=1.0, generate_options={"steps": 8}, batch_size=1)
    producer = dataset._pool.process.pid
    loader = iter(DataLoader(dataset, batch_size=1, sampler=dataset.sampler(), num_workers=2))
    next(loader)
    os.kill(producer, signal.SIGKILL)
    started = time.monotonic()
    kind, message = first_error(loader)
    assert time.monotonic() - started < 10
    assert kind is SynthesisPoolError
    assert f"producer (pid {producer}) is gone without reporting an error: it was killed" in message
    loader._shutdown_workers()  # at once: torch's own shutdown of a failed iterator at collection takes 10 s
    dataset.close()


def test_a_stalled_producer_is_noticed_by_its_heartbeat(real_root, model):
    dataset = pooled(real_root, model, ratio=1.0, heartbeat_timeout_s=1.0)
    producer = dataset._pool.process.pid
    os.kill(producer, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(SynthesisPoolError, match="stalled: no heartbeat"):
            dataset.__getitems__(list(range(ITEMS)))
        assert time.monotonic() - started < 5
    finally:
        os.kill(producer, signal.SIGCONT)
        dataset.close()


def test_a_producer_error_after_start_keeps_its_type_and_message(real_root, model):
    dataset = pooled(real_root, model, generate_options={"steps": 1, "no_such_option": 1})
    with pytest.raises(SynthesisPoolError, match=r"TypeError: .*no_such_option"):
        synthetic_items(dataset)
    dataset.close()


WATCHED_SCRIPT = USER_CODE + """
print("producer", dataset._pool.process.pid, dataset._pool.session, flush=True)
import time
time.sleep(600)
"""


def test_killing_the_training_process_stops_the_producer(real_root, model, tmp_path):
    script = tmp_path / "train.py"
    script.write_text(WATCHED_SCRIPT)
    process = subprocess.Popen([sys.executable, str(script), str(real_root), model], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True, cwd=tmp_path)
    try:
        assert process.stdout.readline().startswith("ok")
        _, producer, session = process.stdout.readline().split()
        process.kill()
        process.wait()
        elapsed = wait_until(lambda: process_gone(int(producer)), timeout_s=5)
    finally:
        process.kill()
        process.stdout.close()
    assert elapsed < 5
    wait_until(lambda: not os.path.exists(session), timeout_s=5)  # the producer removed the temporary store


LIMITED_SCRIPT = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
from histoaug import PoolConfig, SyntheticPCam
try:
    SyntheticPCam(sys.argv[1], ratio=1.0, synthesizer=sys.argv[2], backend="torch",
                  pool=PoolConfig(directory=sys.argv[3], batch_size=2))
except Exception as exc:
    print(type(exc).__name__, exc, flush=True)
"""


def test_a_store_beyond_the_file_size_limit_is_a_clear_error(real_root, model, tmp_path):
    result = subprocess.run([sys.executable, "-c", LIMITED_SCRIPT, str(real_root), model, str(tmp_path / "pool")],
                            capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert result.stdout.startswith("OutputWriteError synthesis pool: cannot reserve 0.2 MB for epoch 0"), (
        result.stdout + result.stderr[-2000:])
    assert "File too large" in result.stdout
    assert not list((tmp_path / "pool").rglob("epoch-*")), "no partial epoch file"
    assert issubclass(OutputWriteError, OSError)


# --- store: revisits, sharing, content keys ----------------------------------------------------
def test_an_epoch_deleted_by_set_epoch_is_regenerated_on_revisit(real_root, model):
    with pooled(real_root, model) as dataset:
        first = synthetic_items(dataset)
        store = dataset._pool.directory
        dataset.set_epoch(1)
        synthetic_items(dataset)
        wait_until(lambda: not epoch_path(store, 0).exists(), timeout_s=10)
        dataset.set_epoch(0)
        np.testing.assert_array_equal(synthetic_items(dataset), first)


def test_two_datasets_on_one_directory_keep_their_own_epochs(real_root, model, tmp_path):
    directory = tmp_path / "pool"
    first = pooled(real_root, model, directory=directory)
    second = pooled(real_root, model, directory=directory)
    assert first._pool.key == second._pool.key and first._pool.directory != second._pool.directory
    epoch0 = synthetic_items(first)
    second.set_epoch(1)
    synthetic_items(second)
    wait_until(lambda: not epoch_path(second._pool.directory, 0).exists(), timeout_s=10)
    assert epoch_path(first._pool.directory, 0).exists()  # the second's epoch change left the first's alone
    np.testing.assert_array_equal(synthetic_items(first), epoch0)
    store = first._pool.directory
    first.close()
    second.close()
    with pooled(real_root, model, directory=directory) as warm:  # a later run finds a warm store
        assert warm._pool.directory == store
        np.testing.assert_array_equal(synthetic_items(warm), epoch0)
        assert warm.pool_stats().waits == 0


def test_a_model_retrained_in_place_is_not_served_from_the_old_store(real_root, model, tmp_path):
    import shutil

    retrained = tmp_path / "model"
    shutil.copytree(model, retrained)
    directory = tmp_path / "pool"
    with pooled(real_root, str(retrained), directory=directory) as before:
        old_store, old_items = before._pool.directory, synthetic_items(before)
    weights = retrained / "unet" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(weights)
    save_file({name: tensor * 1.5 for name, tensor in tensors.items()}, weights)  # "retrained" in place
    with pooled(real_root, str(retrained), directory=directory) as after:
        assert after._pool.directory != old_store
        assert not np.array_equal(synthetic_items(after), old_items)


# --- copies and lifetime ------------------------------------------------------------------------
def test_pickled_and_deep_copied_datasets_share_the_producer(real_root, model):
    dataset = pooled(real_root, model)
    producers = producer_pids()
    expected = synthetic_items(dataset)
    copies = [copy.deepcopy(dataset), pickle.loads(pickle.dumps(dataset))]
    assert producer_pids() == producers  # no second producer
    for twin in copies:
        np.testing.assert_array_equal(synthetic_items(twin), expected)
        twin.close()  # a copy does not own the producer
    assert dataset._pool.alive
    dataset.set_epoch(1)
    assert all(twin.epoch == 1 for twin in copies)  # one shared epoch
    process = dataset._pool.process
    del dataset
    gc.collect()  # an abandoned dataset's producer stops when it is collected
    assert process.poll() is not None
    with pytest.raises(SynthesisPoolError, match="closed"):
        synthetic_items(copies[0])


def test_an_orphaned_producer_removes_its_session_while_it_is_still_written(tmp_path):
    """The watchdog removes the session while the main thread may still add files to it."""
    import threading

    from histoaug.mixing.pool_control import StatsFile
    from histoaug.mixing.producer import remove_while_written

    session = tmp_path / "histoaug-pool-session"
    session.mkdir()
    stop = threading.Event()

    def keep_writing() -> None:  # as the producer's main thread does: a new statistics file each time
        while not stop.is_set():
            StatsFile(session).add(0, 1.0)

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        time.sleep(0.05)
        remove_while_written(session)
    finally:
        stop.set()
        writer.join()
    assert not session.exists()
    assert list(tmp_path.iterdir()) == []
