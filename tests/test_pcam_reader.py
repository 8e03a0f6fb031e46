"""histoaug.PCam against real HDF5 files written like the PCam release."""

from __future__ import annotations

import multiprocessing
import shutil

import h5py
import numpy as np
import pytest
import torch
from pcam_files import random_patches, write_release_split
from torch.utils.data import DataLoader

from histoaug import PCam, PCamFilesNotFoundError, PCamFormatError
from histoaug.data.pcam_files import split_file_name


@pytest.mark.parametrize(
    ("compression", "chunks"),
    [(None, None), (None, (8, 96, 96, 3)), ("gzip", (1, 96, 96, 3)), ("lzf", (16, 96, 96, 3))],
)
@pytest.mark.parametrize("layout", ["pcam", "flat"])
def test_reads_exact_arrays_and_labels(tmp_path, compression, chunks, layout):
    images, labels = random_patches(50, seed=1)
    folder = tmp_path / "pcam" if layout == "pcam" else tmp_path
    write_release_split(folder, "valid", images, labels, compression=compression, chunks=chunks)

    dataset = PCam(tmp_path, split="valid")

    assert len(dataset) == 50
    for index in (0, 17, 49, -1):
        image, label = dataset[index]
        assert image.dtype == np.uint8 and image.shape == (96, 96, 3)
        np.testing.assert_array_equal(image, images[index])
        assert label == int(labels[index]) and isinstance(label, int)
    np.testing.assert_array_equal(dataset.labels, labels)


def test_flat_labels_and_single_file(tmp_path):
    images, labels = random_patches(12, seed=2)
    write_release_split(tmp_path, "test", images, labels, label_shape="flat")
    np.testing.assert_array_equal(PCam(tmp_path, "test").labels, labels)

    single = tmp_path / "generated.h5"
    with h5py.File(single, "w") as handle:
        handle["x"] = images
        handle["y"] = labels.reshape(-1, 1, 1, 1)
        handle["prompt_id"] = np.arange(12)
    dataset = PCam(single)
    np.testing.assert_array_equal(dataset[5][0], images[5])


@pytest.mark.parametrize("chunks", [None, (4, 96, 96, 3)])
def test_batched_fetch_matches_single_items(tmp_path, chunks):
    images, labels = random_patches(300, seed=3)
    compression = "gzip" if chunks else None
    write_release_split(tmp_path, "train", images, labels, chunks=chunks, compression=compression)
    dataset = PCam(tmp_path, "train")
    rng = np.random.default_rng(0)
    batches = [
        rng.permutation(300)[:64],                   # sparse, shuffled
        np.arange(100, 164)[::-1],                   # contiguous, reversed
        np.array([5, 5, 299, 0, 5, -1]),             # repeats and negatives
    ]
    for batch in batches:
        items = dataset.__getitems__(list(batch))
        assert len(items) == len(batch)
        for (image, label), index in zip(items, batch, strict=True):
            np.testing.assert_array_equal(image, images[index])
            assert label == int(labels[index])
    assert dataset.__getitems__([]) == []
    with pytest.raises(IndexError):
        dataset.__getitems__([0, 300])
    with pytest.raises(IndexError):
        dataset[300]


def test_transforms_and_pil_format(tmp_path):
    images, labels = random_patches(4, seed=4)
    write_release_split(tmp_path, "train", images, labels)
    dataset = PCam(
        tmp_path, "train",
        transform=lambda image: image[::2, ::2],
        target_transform=lambda label: label + 10,
    )
    image, label = dataset[1]
    np.testing.assert_array_equal(image, images[1][::2, ::2])
    assert label == labels[1] + 10

    pil_image, _ = PCam(tmp_path, "train", image_format="pil")[2]
    assert pil_image.size == (96, 96) and pil_image.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(pil_image), images[2])


def _collect(dataset, context, workers=2, batch_size=16):
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
        multiprocessing_context=context,
    )
    images, labels = [], []
    for batch_images, batch_labels in loader:
        images.append(batch_images.numpy())
        labels.append(batch_labels.numpy())
    return np.concatenate(images), np.concatenate(labels)


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_workers_read_everything(tmp_path, context):
    images, labels = random_patches(70, seed=5)
    write_release_split(tmp_path, "train", images, labels, compression="gzip", chunks=(8, 96, 96, 3))
    dataset = PCam(tmp_path, "train")
    dataset[0]  # the parent opens its handle before forking: children must not reuse it

    got_images, got_labels = _collect(dataset, multiprocessing.get_context(context))

    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    assert dataset[69][1] == labels[69]  # parent handle still fine afterwards


def test_persistent_workers_and_shuffle(tmp_path):
    images, labels = random_patches(40, seed=6)
    write_release_split(tmp_path, "train", images, labels)
    loader = DataLoader(
        PCam(tmp_path, "train"), batch_size=8, shuffle=True, num_workers=2,
        persistent_workers=True, generator=torch.Generator().manual_seed(0),
    )
    for _ in range(2):
        seen = sorted(
            int(np.flatnonzero((images == image.numpy()).all(axis=(1, 2, 3)))[0])
            for batch, _ in loader
            for image in batch
        )
        assert seen == list(range(40))


def test_pickled_dataset_has_no_handle(tmp_path):
    import pickle

    images, labels = random_patches(3, seed=7)
    write_release_split(tmp_path, "train", images, labels)
    dataset = PCam(tmp_path, "train")
    dataset[0]
    clone = pickle.loads(pickle.dumps(dataset))
    assert clone._file is None
    np.testing.assert_array_equal(clone[2][0], images[2])
    dataset.close()
    np.testing.assert_array_equal(dataset[1][0], images[1])


# --- errors ------------------------------------------------------------------------------------
def test_missing_split_names_the_files(tmp_path):
    with pytest.raises(PCamFilesNotFoundError, match=split_file_name("train", "x")):
        PCam(tmp_path, "train")
    with pytest.raises(PCamFilesNotFoundError, match="does not exist"):
        PCam(tmp_path / "nowhere", "train")
    with pytest.raises(PCamFormatError, match="unknown split"):
        PCam(tmp_path, "validation")


def test_gzipped_release_points_to_unpack(tmp_path):
    (tmp_path / "pcam").mkdir()
    for part in ("x", "y"):
        (tmp_path / "pcam" / f"{split_file_name('test', part)}.gz").write_bytes(b"\x1f\x8b")
    with pytest.raises(PCamFilesNotFoundError, match="histoaug pcam unpack"):
        PCam(tmp_path, "test")


def test_corrupt_and_truncated_files(tmp_path):
    images, labels = random_patches(40, seed=8)
    x_path, _ = write_release_split(tmp_path, "train", images, labels)

    data = x_path.read_bytes()
    x_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(PCamFormatError, match=x_path.name):
        PCam(tmp_path, "train")

    x_path.write_bytes(b"not an hdf5 file" * 100)
    with pytest.raises(PCamFormatError, match="not a readable HDF5 file"):
        PCam(tmp_path, "train")


def test_corrupt_compressed_chunk(tmp_path):
    images, labels = random_patches(8, seed=9)
    x_path, _ = write_release_split(
        tmp_path, "train", images, labels, compression="gzip", chunks=(8, 96, 96, 3)
    )
    with h5py.File(x_path) as handle:
        offset = handle["x"].id.get_chunk_info(0).byte_offset
    data = bytearray(x_path.read_bytes())
    data[offset + 10 : offset + 400] = bytes(390)
    x_path.write_bytes(bytes(data))
    with pytest.raises(PCamFormatError, match="cannot be read"):
        PCam(tmp_path, "train")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda im, lb: (im[:, :64], lb), r"shape .* expected \(N, 96, 96, 3\)"),
        (lambda im, lb: (im.astype(np.float32), lb), "dtype float32, expected uint8"),
        (lambda im, lb: (im, lb[:-1]), "to match 10 images"),
        (lambda im, lb: (im, lb + 1), "labels must be 0 or 1"),
        (lambda im, lb: (im, lb.astype(np.float32)), "expected integers"),
    ],
)
def test_wrong_shapes_dtypes_and_labels(tmp_path, mutate, message):
    images, labels = random_patches(10, seed=10)
    images, labels = mutate(images, labels)
    write_release_split(tmp_path, "train", images, labels)
    with pytest.raises(PCamFormatError, match=message):
        PCam(tmp_path, "train")


def test_missing_dataset_key(tmp_path):
    images, labels = random_patches(5, seed=11)
    x_path, _ = write_release_split(tmp_path, "train", images, labels)
    with h5py.File(x_path, "w") as handle:
        handle["images"] = images
    with pytest.raises(PCamFormatError, match=r"no dataset 'x'.*images"):
        PCam(tmp_path, "train")


def test_same_arrays_after_copy_to_new_root(tmp_path):
    images, labels = random_patches(6, seed=12)
    write_release_split(tmp_path / "a", "valid", images, labels)
    shutil.copytree(tmp_path / "a", tmp_path / "b" / "pcam")
    np.testing.assert_array_equal(PCam(tmp_path / "b", "valid").read_images(range(6)), images)
