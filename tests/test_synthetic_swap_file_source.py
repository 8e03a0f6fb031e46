"""SyntheticSwap inside albumentations pipelines, with patches from a generated file."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest
from pcam_files import random_patches

from histoaug import InvalidArgumentError, PCamWriter
from histoaug.mixing.synthetic_swap import SyntheticSwap


@pytest.fixture()
def synthetic_file(tmp_path):
    images, _ = random_patches(20, seed=1)
    labels = np.arange(20) % 2
    path = tmp_path / "synthetic.h5"
    with PCamWriter(path, 20) as writer:
        writer.write(0, x=images, y=labels)
    return path, images, labels


def row_of(images, patch):
    rows = np.flatnonzero((images == patch).all(axis=(1, 2, 3)))
    assert rows.size == 1, "output is not one of the synthetic patches"
    return int(rows[0])


def test_p0_leaves_images_unchanged_p1_swaps_with_same_label(synthetic_file):
    path, images, labels = synthetic_file
    real, _ = random_patches(30, seed=2)
    keep = A.Compose([SyntheticSwap(path, p=0.0)], seed=0)
    swap = A.Compose([SyntheticSwap(path, p=1.0)], seed=0)
    for k, image in enumerate(real):
        label = k % 2
        np.testing.assert_array_equal(keep(image=image, label=label)["image"], image)
        out = swap(image=image, label=label)
        assert out["image"].shape == image.shape and out["image"].dtype == np.uint8
        assert labels[row_of(images, out["image"])] == label
        assert out["label"] == label


def test_probability_and_reproducibility_under_compose_seed(synthetic_file):
    path, _images, _ = synthetic_file
    real, _ = random_patches(200, seed=3)

    def run(seed):
        pipeline = A.Compose([SyntheticSwap(path, p=0.5)], seed=seed)
        return np.stack([pipeline(image=image, label=1)["image"] for image in real])

    first, again, other = run(7), run(7), run(8)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    swapped = ~(first == real).all(axis=(1, 2, 3))
    assert 70 < swapped.sum() < 130  # p = 0.5 of 200


def test_replay_compose_replays_the_same_patch(synthetic_file):
    path, _images, _ = synthetic_file
    real, _ = random_patches(2, seed=4)
    pipeline = A.ReplayCompose([SyntheticSwap(path, p=1.0), A.HorizontalFlip(p=0.5)])
    first = pipeline(image=real[0], label=0)
    replayed = A.ReplayCompose.replay(first["replay"], image=real[1], label=0)
    np.testing.assert_array_equal(replayed["image"], first["image"])


def test_size_and_float_dtype_preserved(synthetic_file):
    path, images, labels = synthetic_file
    swap = A.Compose([SyntheticSwap(path, p=1.0)], seed=0)
    small = np.zeros((64, 64, 3), np.uint8)
    assert swap(image=small, label=1)["image"].shape == (64, 64, 3)
    as_float = np.zeros((96, 96, 3), np.float32)
    out = swap(image=as_float, label=0)["image"]
    assert out.dtype == np.float32 and out.min() >= 0.0 and out.max() <= 1.0
    assert labels[row_of(images, np.round(out * 255).astype(np.uint8))] == 0


def test_missing_label_is_a_clear_error(synthetic_file):
    path, _, _ = synthetic_file
    swap = A.Compose([SyntheticSwap(path, p=1.0)], seed=0)
    with pytest.raises(InvalidArgumentError, match="needs the image's label"):
        swap(image=np.zeros((96, 96, 3), np.uint8))
    with pytest.raises(InvalidArgumentError, match="label must be 0 or 1"):
        swap(image=np.zeros((96, 96, 3), np.uint8), label=3)
    never = A.Compose([SyntheticSwap(path, p=0.0)], seed=0)  # checked on every call, not only when it swaps
    with pytest.raises(InvalidArgumentError, match="needs the image's label"):
        never(image=np.zeros((96, 96, 3), np.uint8))
