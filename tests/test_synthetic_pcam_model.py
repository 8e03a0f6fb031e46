"""SyntheticPCam and SyntheticSwap with a real (tiny) model: on demand and through the pool."""

from __future__ import annotations

import multiprocessing

import albumentations as A
import numpy as np
import pytest
from pcam_files import random_patches, write_release_split
from pool_processes import process_gone
from synthesis_models import tiny_model_dir
from torch.utils.data import DataLoader

from histoaug import ArtifactError, PoolConfig, SyntheticPCam, load_synthesizer
from histoaug.mixing.synthetic_swap import SyntheticSwap
from histoaug.seeding import SampleAssigner

OPTIONS = {"steps": 2, "guidance": 2.0}
ITEMS = 24


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return str(tiny_model_dir(tmp_path_factory))


@pytest.fixture()
def real_root(tmp_path):
    images, labels = random_patches(ITEMS, seed=0)
    write_release_split(tmp_path / "real", "train", images, labels)
    return tmp_path / "real"


def loader_items(dataset, **loader_options):
    batches = list(DataLoader(dataset, batch_size=4, **loader_options))
    return np.concatenate([b[0].numpy() for b in batches]), np.concatenate([b[1].numpy() for b in batches])


def test_on_demand_items_are_the_synthesizers_patches(model, real_root):
    dataset = SyntheticPCam(real_root, ratio=0.5, synthesizer=model, pool=False, generate_options=OPTIONS,
                            backend="torch")
    plan = dataset.plan
    positions = np.flatnonzero(plan.synthetic_mask)[:3]
    items = dataset.__getitems__(list(positions))
    slots = plan.slot_of[positions]
    synthesizer = load_synthesizer(model, backend="torch")
    expected = SampleAssigner(synthesizer.prompts, run_seed=plan.epoch_seed).assign(slots, plan.slot_labels[slots])
    patches = synthesizer.generate(expected.labels, expected.seeds, expected.prompt_ids, batch_size=3, **OPTIONS)
    for (image, label), patch, expected_label in zip(items, patches, expected.labels, strict=True):
        np.testing.assert_array_equal(image, patch)
        assert label == expected_label
    assert len(dataset) == ITEMS and sum(dataset.is_synthetic(i) for i in range(ITEMS)) == ITEMS // 2


@pytest.mark.slow
def test_pool_serves_workers_reproducibly_and_shuts_down(model, real_root, tmp_path):
    config = PoolConfig(directory=tmp_path / "pool", batch_size=4)
    runs = []
    for _ in range(2):
        with SyntheticPCam(real_root, ratio=0.5, synthesizer=model, generate_options=OPTIONS, backend="torch",
                           pool=config) as dataset:
            producer = dataset._pool.process
            images, labels = loader_items(dataset, sampler=dataset.sampler(), num_workers=2,
                                          multiprocessing_context=multiprocessing.get_context("spawn"))
            stats = dataset.pool_stats()
            runs.append((images, labels, stats))
        assert producer.poll() is not None  # stopped on close
    (first, first_labels, cold), (second, second_labels, warm) = runs
    np.testing.assert_array_equal(first, second)  # fixed blocks: same patches whatever the timing
    np.testing.assert_array_equal(first_labels, second_labels)
    assert cold.produced >= ITEMS // 2 and cold.hits + cold.waits == ITEMS // 2  # (+ look-ahead epoch)
    assert warm.hits == ITEMS // 2 and warm.waits == 0  # the stored epoch is reused: no waiting


@pytest.mark.slow
def test_pool_reuse_policy_and_temporary_store(model, real_root):
    dataset = SyntheticPCam(real_root, ratio=1.0, synthesizer=model, generate_options=OPTIONS, backend="torch",
                            pool=PoolConfig(policy="reuse", batch_size=4))
    store = dataset._pool.directory
    images, labels = loader_items(dataset, sampler=dataset.sampler())
    stats = dataset.pool_stats()
    assert images.shape == (ITEMS, 96, 96, 3) and set(labels.tolist()) <= {0, 1}
    assert stats.hits + stats.reuses + stats.waits == ITEMS
    dataset.close()
    assert not store.exists()


def test_pool_with_a_missing_model_fails_at_construction(real_root, tmp_path, no_pool_leftovers):
    with pytest.raises(ArtifactError, match="model directory not found"):  # the producer's own error
        SyntheticPCam(real_root, ratio=0.5, synthesizer=str(tmp_path / "no_model"))


def test_synthetic_swap_with_a_model(model):
    swap = A.Compose([SyntheticSwap(model, p=1.0, backend="torch", generate_options=OPTIONS)], seed=0)
    image = np.zeros((96, 96, 3), np.uint8)
    first = swap(image=image, label=1)["image"]
    assert first.shape == (96, 96, 3) and first.dtype == np.uint8 and first.std() > 0
    again = A.Compose([SyntheticSwap(model, p=1.0, backend="torch", generate_options=OPTIONS)], seed=0)
    np.testing.assert_array_equal(again(image=image, label=1)["image"], first)


INTERRUPTED_SCRIPT = """
import sys, os
from torch.utils.data import DataLoader
from histoaug import PoolConfig, SyntheticPCam


if __name__ == "__main__":
    dataset = SyntheticPCam(sys.argv[1], ratio=1.0, synthesizer=sys.argv[2], backend="torch",
                            generate_options={"steps": 2}, pool=PoolConfig(batch_size=2, policy="wait"))
    print("producer", dataset._pool.process.pid, flush=True)
    for images, labels in DataLoader(dataset, batch_size=2, num_workers=2, sampler=dataset.sampler()):
        print("batch", flush=True)
"""


@pytest.mark.slow
def test_keyboard_interrupt_leaves_no_process_behind(model, real_root, tmp_path):
    import signal
    import subprocess
    import sys
    import tempfile
    import time
    from pathlib import Path

    pools_before = set(Path(tempfile.gettempdir()).glob("histoaug-pool-*"))
    script = tmp_path / "train.py"
    script.write_text(INTERRUPTED_SCRIPT)
    process = subprocess.Popen([sys.executable, str(script), str(real_root), model], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=str(tmp_path))
    producer = int(process.stdout.readline().split()[1])
    assert process.stdout.readline().strip() == "batch"
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=60)
    finally:
        process.kill()
    assert process.returncode != 0  # interrupted, not finished
    deadline = time.time() + 15
    while time.time() < deadline and not process_gone(producer):
        time.sleep(0.2)
    assert process_gone(producer), "the producer process outlived the interrupted script"
    assert set(Path(tempfile.gettempdir()).glob("histoaug-pool-*")) <= pools_before, "temporary store left behind"


@pytest.mark.slow
def test_pool_accepts_a_synthesizer_object(model, real_root):
    synthesizer = load_synthesizer(model, backend="torch")
    with SyntheticPCam(real_root, ratio=0.25, synthesizer=synthesizer, generate_options=OPTIONS,
                       pool=PoolConfig(batch_size=8)) as pooled:
        images, _ = loader_items(pooled, sampler=pooled.sampler())
    direct = SyntheticPCam(real_root, ratio=0.25, synthesizer=synthesizer, generate_options=OPTIONS, pool=False)
    expected, _ = loader_items(direct, sampler=direct.sampler())
    assert np.abs(images.astype(int) - expected.astype(int)).max() <= 2  # other batch layout: stated tolerance
