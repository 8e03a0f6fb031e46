"""``histoaug generate`` end to end with a tiny real model: content, resume after SIGKILL, errors."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from synthesis_models import tiny_model_dir, tiny_prompts

from histoaug import PCam, load_synthesizer
from histoaug.cli.main import main
from histoaug.synthesis.defaults import FAST_DEEP_CACHE, FAST_GUIDANCE_UNTIL

FAST = ["--steps", "3", "--quiet"]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny_model_dir(tmp_path_factory)


def datasets(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path) as handle:
        return {name: handle[name][...] for name in ("x", "y", "prompt_id", "seed")}


def assert_same_data(a: Path, b: Path) -> None:
    left, right = datasets(a), datasets(b)
    for name in left:
        np.testing.assert_array_equal(left[name], right[name], err_msg=name)


def test_pcam_output_content_and_provenance(model, tmp_path, capsys):
    out = tmp_path / "synthetic.h5"
    code = main(["generate", "--n", "10", "--out", str(out), "--model", str(model), "--batch-size", "4",
                 "--labels", "0.3", "--seed", "5", "--preview", str(tmp_path / "grid.png"), *FAST])
    assert code == 0
    report = capsys.readouterr().out
    assert "per label:  0: 7, 1: 3" in report and "patches/s" in report
    data = datasets(out)
    assert data["x"].shape == (10, 96, 96, 3) and data["x"].dtype == np.uint8
    assert data["y"].shape == (10, 1, 1, 1) and data["y"].sum() == 3
    bank = tiny_prompts()
    assert all(bank[int(p)].label == int(y) for p, y in zip(data["prompt_id"], data["y"].ravel(), strict=True))
    dataset = PCam(out)  # histoaug.PCam reads it unchanged
    np.testing.assert_array_equal(dataset.read_images(range(10)), data["x"])
    with h5py.File(out) as handle:
        attrs = dict(handle.attrs)
    assert attrs["steps"] == 3 and attrs["sampler"] == "dpmsolver++" and attrs["seed"] == 5
    assert attrs["model_id"] and "histoaug generate" in attrs["command_line"]
    # the runtime auto resolved to, and why: a 10-patch job is too short for compiling to pay
    assert json.loads(attrs["runtime_id"])["compile"] == "eager" and attrs["guidance_until"] == 1.0
    assert attrs["runtime_choice"].startswith("--backend auto: not compiled: a 10-patch job saves ~0 s")
    assert (tmp_path / "grid.png").stat().st_size > 0
    # sample i is what the synthesizer makes from (label, seed, prompt) of row i
    synthesizer = load_synthesizer(str(model), backend="torch")
    again = synthesizer.generate(data["y"].ravel()[:4], data["seed"][:4], data["prompt_id"][:4],
                                 steps=3, guidance=2.0, batch_size=4)
    np.testing.assert_array_equal(again, data["x"][:4])


def test_same_settings_same_file_content(model, tmp_path):
    for name in ("a.h5", "b.h5"):
        assert main(["generate", "--n", "6", "--out", str(tmp_path / name), "--model", str(model),
                     "--batch-size", "3", *FAST]) == 0
    assert_same_data(tmp_path / "a.h5", tmp_path / "b.h5")


@pytest.mark.parametrize(("flags", "recorded"), [
    (["--fast"], (FAST_GUIDANCE_UNTIL, FAST_DEEP_CACHE)),  # the preset
    (["--fast", "--deep-cache", "3"], (FAST_GUIDANCE_UNTIL, 3)),  # given values win
    (["--fast", "--guidance-until", "0.5"], (0.5, FAST_DEEP_CACHE)),  # the former preset
])
def test_fast_mode_is_recorded(model, tmp_path, flags, recorded):
    out = tmp_path / "fast.h5"
    assert main(["generate", "--n", "4", "--out", str(out), "--model", str(model), "--batch-size", "4",
                 *flags, *FAST]) == 0
    with h5py.File(out) as handle:
        assert (handle.attrs["guidance_until"], handle.attrs["deep_cache"]) == recorded


def test_png_tree(model, tmp_path):
    out = tmp_path / "pngs"
    assert main(["generate", "--n", "5", "--out", str(out), "--model", str(model), "--format", "png",
                 "--batch-size", "5", *FAST]) == 0
    rows = list(csv.DictReader((out / "index.csv").open()))
    assert len(rows) == 5
    from PIL import Image

    for row in rows:
        image = np.asarray(Image.open(out / row["path"]))
        assert image.shape == (96, 96, 3) and row["path"].startswith(f"{row['label']}/")
    assert json.loads((out / "provenance.json").read_text())["steps"] == 3
    assert not (tmp_path / "pngs.partial").exists()


@pytest.mark.slow
def test_sigkill_midway_then_resume_gives_identical_datasets(model, tmp_path, capsys):
    env = {**os.environ, "HDF5_USE_FILE_LOCKING": "FALSE"}
    args = ["--n", "24", "--model", str(model), "--batch-size", "4", *FAST]
    killed = tmp_path / "killed.h5"
    work = tmp_path / "killed.h5.partial"
    process = subprocess.Popen([sys.executable, "-m", "histoaug.cli.main", "generate", "--out", str(killed), *args],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows_done = 0
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if work.exists():
            try:
                with h5py.File(work, "r") as handle:
                    rows_done = int(handle["histoaug_written"][...].sum())
            except (OSError, KeyError):
                rows_done = 0
            if rows_done >= 8:
                break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert 8 <= rows_done < 24, "the run was not killed midway"
    assert not killed.exists() and work.exists()

    # another runtime rounds differently: resuming under it would mix two runtimes in one file
    assert main(["generate", "--out", str(killed), "--resume", "--dtype", "bf16", *args]) == 2
    assert "another runtime" in capsys.readouterr().err and work.exists()
    assert main(["generate", "--out", str(killed), "--resume", *args]) == 0
    assert not work.exists()
    assert main(["generate", "--out", str(tmp_path / "straight.h5"), *args]) == 0
    assert_same_data(killed, tmp_path / "straight.h5")


@pytest.mark.slow
def test_ray_two_workers_equal_single_process(model, tmp_path, monkeypatch):
    pytest.importorskip("ray", reason="Ray is in the 'distributed' and 'dev' extras")
    # from the repository root: Ray puts the driver's working directory on its workers' sys.path
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    args = ["--n", "12", "--model", str(model), "--batch-size", "4", *FAST]
    assert main(["generate", "--out", str(tmp_path / "single.h5"), *args]) == 0
    assert main(["generate", "--out", str(tmp_path / "ray.h5"), "--ray", "--ray-workers", "2", *args]) == 0
    assert_same_data(tmp_path / "single.h5", tmp_path / "ray.h5")
    assert not (tmp_path / "ray.h5.shards").exists()


def test_user_error_in_a_real_process_has_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "histoaug.cli.main", "generate", "--n", "-3", "--out",
                             str(tmp_path / "a.h5")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["histoaug: error: --n must be positive, got -3"]


def test_bad_input_is_one_line_exit_2_and_writes_nothing(model, tmp_path, capsys):
    existing = tmp_path / "existing.h5"
    existing.write_bytes(b"keep me")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    broken_model = tmp_path / "broken_model"
    broken_model.mkdir()
    (broken_model / "model_index.json").write_text("{}")
    cases = [
        (["--n", "0", "--out", str(tmp_path / "a.h5")], "--n must be positive"),
        (["--n", "2", "--out", str(tmp_path / "missing_dir" / "a.h5")], "does not exist"),
        (["--n", "2", "--out", str(existing)], "exists"),
        (["--n", "2", "--out", str(tmp_path / "a.h5"), "--model", str(tmp_path / "nowhere")], ""),
        (["--n", "2", "--out", str(tmp_path / "a.h5"), "--model", str(broken_model)], ""),
        (["--n", "2", "--out", str(tmp_path / "a.h5"), "--model", str(model), "--prompts", "9"], "prompt id 9"),
        (["--n", "2", "--out", str(tmp_path / "a.h5"), "--labels", "lots"], "--labels"),
        (["--n", "2", "--out", str(tmp_path / "a.h5"), "--model", str(model), "--scheduler", "foo"],
         "unknown scheduler 'foo'"),
    ]
    if os.geteuid() != 0:  # root ignores directory permissions
        cases.append((["--n", "2", "--out", str(locked / "a.h5")], "not writable"))
    for args, needle in cases:
        code = main(["generate", *args])
        lines = capsys.readouterr().err.strip().splitlines()
        assert code == 2, (args, lines)
        assert len(lines) == 1 and lines[0].startswith("histoaug: error:") and needle in lines[0], (args, lines)
    assert existing.read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken_model", "existing.h5", "locked"]
