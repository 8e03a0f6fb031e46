"""SyntheticPCam over a pre-generated synthetic file (no model): ratio, determinism, workers."""

from __future__ import annotations

import multiprocessing

import numpy as np
import pytest
import torch
from pcam_files import random_patches, write_release_split
from torch.utils.data import DataLoader

from histoaug import InvalidArgumentError, PCam, PCamWriter, SyntheticPCam

REAL_ITEMS = 200


@pytest.fixture()
def data(tmp_path):
    images, labels = random_patches(REAL_ITEMS, seed=0)
    write_release_split(tmp_path / "real", "train", images, labels)
    synthetic_images, _ = random_patches(60, seed=1)
    synthetic_labels = np.arange(60) % 2
    path = tmp_path / "synthetic.h5"
    with PCamWriter(path, 60, extra={"prompt_id": np.int32, "seed": np.int64}) as writer:
        writer.write(0, x=synthetic_images, y=synthetic_labels, prompt_id=np.zeros(60), seed=np.arange(60))
    return tmp_path / "real", path, synthetic_images, synthetic_labels


def all_items(dataset):
    items = dataset.__getitems__(list(range(len(dataset))))
    return np.stack([image for image, _ in items]), np.array([label for _, label in items])


def test_ratio_zero_is_exactly_pcam(data):
    real_root, synthetic_file, _, _ = data
    dataset = SyntheticPCam(real_root, ratio=0.0, synthesizer=synthetic_file)
    reference = PCam(real_root)
    images, labels = all_items(dataset)
    np.testing.assert_array_equal(images, reference.read_images(range(REAL_ITEMS)))
    np.testing.assert_array_equal(labels, reference.labels)
    assert not any(dataset.is_synthetic(i) for i in range(REAL_ITEMS))


@pytest.mark.parametrize("ratio", [0.25, 0.5, 1.0])
def test_ratio_is_exact_and_synthetic_items_come_from_the_file(data, ratio):
    real_root, synthetic_file, synthetic_images, synthetic_labels = data
    dataset = SyntheticPCam(real_root, ratio=ratio, synthesizer=synthetic_file, seed=3)
    reference = PCam(real_root)
    images, labels = all_items(dataset)
    flags = np.array([dataset.is_synthetic(i) for i in range(REAL_ITEMS)])
    assert flags.sum() == round(ratio * REAL_ITEMS)
    real_images = reference.read_images(range(REAL_ITEMS))
    np.testing.assert_array_equal(images[~flags], real_images[~flags])
    np.testing.assert_array_equal(labels, reference.labels)  # "match": the replaced item's label
    for image, label in zip(images[flags], labels[flags], strict=True):
        row = np.flatnonzero((synthetic_images == image).all(axis=(1, 2, 3)))
        assert row.size == 1 and synthetic_labels[row[0]] == label
    np.testing.assert_array_equal(dataset.labels, labels)


def test_same_seed_and_epoch_reproduce_other_epochs_differ(data):
    real_root, synthetic_file, _, _ = data
    a = SyntheticPCam(real_root, ratio=0.5, synthesizer=synthetic_file, seed=1)
    b = SyntheticPCam(real_root, ratio=0.5, synthesizer=synthetic_file, seed=1)
    np.testing.assert_array_equal(all_items(a)[0], all_items(b)[0])
    mask_epoch0 = a.plan.synthetic_mask.copy()
    a.set_epoch(1)
    assert not np.array_equal(a.plan.synthetic_mask, mask_epoch0)
    b.set_epoch(1)
    np.testing.assert_array_equal(all_items(a)[0], all_items(b)[0])
    c = SyntheticPCam(real_root, ratio=0.5, synthesizer=synthetic_file, seed=2)
    assert not np.array_equal(c.plan.synthetic_mask, mask_epoch0)


def test_balanced_synthetic_labels(data):
    real_root, synthetic_file, _, _ = data
    dataset = SyntheticPCam(real_root, ratio=0.5, synthesizer=synthetic_file, synthetic_labels="balanced")
    _, labels = all_items(dataset)
    flags = dataset.plan.synthetic_mask
    assert labels[flags].sum() == flags.sum() // 2


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_workers_and_persistent_workers_follow_set_epoch(data, context):
    real_root, synthetic_file, _, _ = data
    dataset = SyntheticPCam(real_root, ratio=0.5, synthesizer=synthetic_file, seed=5)
    loader = DataLoader(
        dataset, batch_size=16, shuffle=False, num_workers=2, persistent_workers=True,
        multiprocessing_context=multiprocessing.get_context(context),
    )
    for epoch in (0, 1):
        dataset.set_epoch(epoch)
        expected_images, expected_labels = all_items(dataset)
        got = [(images.numpy(), labels.numpy()) for images, labels in loader]
        np.testing.assert_array_equal(np.concatenate([g[0] for g in got]), expected_images)
        np.testing.assert_array_equal(np.concatenate([g[1] for g in got]), expected_labels)


def test_shuffled_loader_sees_every_item_once(data):
    real_root, synthetic_file, _, _ = data
    dataset = SyntheticPCam(real_root, ratio=0.5, synthesizer=synthetic_file)
    loader = DataLoader(dataset, batch_size=32, shuffle=True, num_workers=2,
                        generator=torch.Generator().manual_seed(0))
    labels = torch.cat([labels for _, labels in loader]).numpy()
    assert sorted(labels.tolist()) == sorted(dataset.labels.tolist())


def test_bad_arguments(data, tmp_path):
    real_root, synthetic_file, _, _ = data
    with pytest.raises(InvalidArgumentError, match="ratio"):
        SyntheticPCam(real_root, ratio=1.5, synthesizer=synthetic_file)
    with pytest.raises(InvalidArgumentError, match="synthetic_labels"):
        SyntheticPCam(real_root, ratio=0.5, synthesizer=synthetic_file, synthetic_labels="half")
    only_healthy = tmp_path / "healthy.h5"
    images, _ = random_patches(4, seed=9)
    with PCamWriter(only_healthy, 4) as writer:
        writer.write(0, x=images, y=np.zeros(4, np.uint8))
    with pytest.raises(InvalidArgumentError, match="no synthetic patch of label 1"):
        SyntheticPCam(real_root, ratio=0.5, synthesizer=only_healthy)


def test_distributed_sampler_ranks_cover_the_epoch(data):
    from torch.utils.data.distributed import DistributedSampler

    real_root, synthetic_file, _, _ = data
    dataset = SyntheticPCam(real_root, ratio=0.5, synthesizer=synthetic_file, seed=4)
    dataset.set_epoch(2)
    expected_images, _ = all_items(dataset)
    seen = {}
    for rank in (0, 1):
        sampler = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=True, seed=4)
        sampler.set_epoch(2)
        indices = list(sampler)
        batches = DataLoader(dataset, batch_size=8, sampler=sampler, num_workers=1)
        images = torch.cat([b[0] for b in batches]).numpy()
        for index, image in zip(indices, images, strict=True):
            seen[index] = image
    assert sorted(seen) == list(range(REAL_ITEMS))
    for index, image in seen.items():
        np.testing.assert_array_equal(image, expected_images[index])
