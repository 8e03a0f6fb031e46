"""The embedded model's few-step student ("default-fast"): shipped, verified, runs on every CPU backend,
and is what `histoaug generate --fast` uses on the embedded model."""

from __future__ import annotations

import logging

import h5py
import numpy as np
import pytest
from synthesis_models import psnr

import histoaug
from histoaug.cli.main import main
from histoaug.synthesis.artifact_format import verify_manifest
from histoaug.synthesis.model_source import DEFAULT_STUDENT_DIR, open_model


def test_the_student_is_shipped_verified_and_samples_like_a_student() -> None:
    verify_manifest(DEFAULT_STUDENT_DIR)
    student, teacher = open_model("default-fast"), open_model("default")
    assert (student.sampler.scheduler, student.sampler.guidance) == ("lcm", 1.0)
    assert student.sampler.steps in (2, 4)  # its model card's choice
    assert [p.text for p in student.prompts] == [p.text for p in teacher.prompts]  # the same label x morphology
    card = DEFAULT_STUDENT_DIR / "MODEL_CARD.md"
    assert card.is_file() and "histoaug distill" in card.read_text()


def test_the_student_generates_on_torch_and_onnxruntime() -> None:
    labels, seeds = [0, 1, 0, 1], [3, 4, 5, 6]
    eager = histoaug.load_synthesizer("default-fast", backend="torch", compile=False)
    onnx = histoaug.load_synthesizer("default-fast", backend="onnxruntime")
    a, b = eager.generate(labels, seeds), onnx.generate(labels, seeds)
    assert a.shape == (4, 96, 96, 3) and a.dtype == np.uint8 and a.std() > 1
    assert psnr(a, b) >= 35  # fp32 on both: the same patches up to rounding
    assert np.array_equal(a, eager.generate(labels, seeds))  # deterministic, LCM's step noise included


def test_generate_fast_on_the_embedded_model_is_the_student(tmp_path, caplog) -> None:
    out = tmp_path / "fast.h5"
    with caplog.at_level(logging.WARNING):
        assert main(["generate", "--n", "4", "--out", str(out), "--fast", "--backend", "torch", "--quiet"]) == 0
    assert "few-step student" in caplog.text
    with h5py.File(out) as handle:
        assert handle.attrs["model"] == "default-fast" and handle.attrs["sampler"] == "lcm"
        assert int(handle.attrs["deep_cache"]) == 1 and float(handle.attrs["guidance"]) == 1.0


def test_fast_on_the_student_samples_it_as_it_is(tmp_path) -> None:
    out = tmp_path / "student.h5"
    assert main(["generate", "--n", "2", "--out", str(out), "--model", "default-fast", "--fast", "--quiet"]) == 0
    with h5py.File(out) as handle:  # no deep cache on top (which would need the torch backend)
        assert handle.attrs["model"] == "default-fast" and int(handle.attrs["deep_cache"]) == 1


@pytest.mark.parametrize("flags", [["--deep-cache", "2"], ["--guidance-until", "0.5"]])
def test_explicit_fast_mode_options_keep_the_teacher(tmp_path, flags) -> None:
    out = tmp_path / "dc.h5"
    assert main(["generate", "--n", "2", "--batch-size", "2", "--out", str(out), "--fast", "--backend", "torch",
                 "--steps", "2", "--quiet", *flags]) == 0
    with h5py.File(out) as handle:
        assert handle.attrs["model"] == "default" and handle.attrs["sampler"] == "dpmsolver++"
