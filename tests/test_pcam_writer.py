"""PCamWriter: PCam-compatible output, atomic commit, and refusal of bad input."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from pcam_files import random_patches

from histoaug import InvalidArgumentError, OutputExistsError, PCam, PCamWriter
from histoaug.data.pcam_writer import work_path, write_pcam_split


def test_single_file_with_extras_reads_back_everywhere(tmp_path):
    images, labels = random_patches(70, seed=0)
    path = tmp_path / "synthetic.h5"
    with PCamWriter(
        path, 70, extra={"prompt_id": np.int16, "seed": np.int64},
        attrs={"sampler": "dpmsolver++", "steps": 20}, compression="gzip", chunk_items=16,
    ) as writer:
        for start in (32, 0, 64):  # blocks in any order
            stop = min(start + 32, 70)
            writer.write(
                start, x=images[start:stop], y=labels[start:stop],
                prompt_id=np.arange(start, stop) % 3, seed=np.arange(start, stop) * 7,
            )
        assert not path.exists(), "the final name must appear only at commit"
        assert work_path(path).exists()
    assert not work_path(path).exists()

    with h5py.File(path) as handle:  # the way torchvision-style readers look at it
        assert handle["x"].shape == (70, 96, 96, 3) and handle["x"].dtype == np.uint8
        assert handle["y"].shape == (70, 1, 1, 1) and handle["y"].dtype == np.uint8
        assert int(handle["y"][3, 0, 0, 0]) == labels[3]
        np.testing.assert_array_equal(handle["seed"][:], np.arange(70) * 7)
        assert handle.attrs["sampler"] == "dpmsolver++"
        assert handle["x"].compression == "gzip"
    dataset = PCam(path)
    np.testing.assert_array_equal(dataset.read_images(range(70)), images)
    np.testing.assert_array_equal(dataset.labels, labels)


def test_release_layout_split(tmp_path):
    images, labels = random_patches(9, seed=1)
    write_pcam_split(tmp_path, "test", images, labels)
    dataset = PCam(tmp_path, "test")
    assert isinstance(dataset._image_source(), np.memmap)  # contiguous: memory-mapped fast path
    np.testing.assert_array_equal(dataset.read_images(range(9)), images)
    np.testing.assert_array_equal(dataset.labels, labels)


def test_interrupted_write_resumes_to_the_same_file(tmp_path):
    images, labels = random_patches(6, seed=2)
    path = tmp_path / "out.h5"
    with pytest.raises(RuntimeError), PCamWriter(path, 6, plan="p1", attrs={"steps": 20}) as writer:
        writer.write(0, x=images[:2], y=labels[:2])
        raise RuntimeError("generation crashed")
    assert not path.exists() and work_path(path).exists()

    with pytest.raises(OutputExistsError, match="--resume"):
        PCamWriter(path, 6, plan="p1")
    with pytest.raises(InvalidArgumentError, match="other settings"):
        PCamWriter(path, 6, plan="p2", resume=True)

    with PCamWriter(path, 6, plan="p1", resume=True) as writer:
        np.testing.assert_array_equal(writer.rows_written, [1, 1, 0, 0, 0, 0])
        writer.write(2, x=images[2:], y=labels[2:])
    straight = tmp_path / "straight.h5"
    with PCamWriter(straight, 6, plan="p1", attrs={"steps": 20}) as writer:
        writer.write(0, x=images, y=labels)
    assert path.read_bytes() == straight.read_bytes()
    np.testing.assert_array_equal(PCam(path).read_images(range(6)), images)


def test_abort_removes_the_work_file(tmp_path):
    writer = PCamWriter(tmp_path / "out.h5", 2)
    writer.abort()
    assert not work_path(tmp_path / "out.h5").exists()


def test_incomplete_file_is_not_committed(tmp_path):
    images, labels = random_patches(4, seed=3)
    path = tmp_path / "out.h5"
    writer = PCamWriter(path, 4)
    writer.write(0, x=images[:3], y=labels[:3])
    with pytest.raises(InvalidArgumentError, match="1 of 4 rows were never written"):
        writer.commit()
    assert not path.exists()
    writer.abort()
    assert not work_path(path).exists()


def test_existing_output_needs_overwrite(tmp_path):
    images, labels = random_patches(2, seed=4)
    path = tmp_path / "out.h5"
    path.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="overwrite"):
        PCamWriter(path, 2)
    assert path.read_bytes() == b"precious"
    with PCamWriter(path, 2, overwrite=True) as writer:
        writer.write(0, x=images, y=labels)
    np.testing.assert_array_equal(PCam(path).read_images([0, 1]), images)


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"x": np.zeros((2, 96, 96, 3), np.float32), "y": np.zeros(2, np.uint8)}, "uint8"),
        ({"x": np.zeros((2, 64, 64, 3), np.uint8), "y": np.zeros(2, np.uint8)}, r"\(B, 96, 96, 3\)"),
        ({"x": np.zeros((2, 96, 96, 3), np.uint8), "y": np.array([0, 2])}, "0 or 1"),
        ({"x": np.zeros((2, 96, 96, 3), np.uint8)}, "exactly the datasets"),
        ({"x": np.zeros((2, 96, 96, 3), np.uint8), "y": np.zeros(3, np.uint8)}, "same length"),
    ],
)
def test_bad_blocks_are_refused(tmp_path, columns, message):
    writer = PCamWriter(tmp_path / "out.h5", 4)
    with pytest.raises(InvalidArgumentError, match=message):
        writer.write(0, **columns)
    with pytest.raises(InvalidArgumentError, match="outside"):
        writer.write(3, x=np.zeros((2, 96, 96, 3), np.uint8), y=np.zeros(2, np.uint8))
    writer.abort()


def test_invalid_construction(tmp_path):
    with pytest.raises(InvalidArgumentError, match="positive"):
        PCamWriter(tmp_path / "a.h5", 0)
    with pytest.raises(InvalidArgumentError, match="parts"):
        PCamWriter(tmp_path / "a.h5", 2, parts=("z",))
    with pytest.raises(InvalidArgumentError, match="compression"):
        PCamWriter(tmp_path / "a.h5", 2, compression="zstd")
