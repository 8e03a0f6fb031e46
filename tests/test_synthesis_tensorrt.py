"""TensorRT backend: runs only where tensorrt and a CUDA GPU exist; elsewhere it must say why."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from synthesis_models import psnr, tiny_artifact_dir

import histoaug
from histoaug.errors import InvalidArgumentError
from histoaug.synthesis.backends.tensorrt_backend import unavailable_reason

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available()


@pytest.mark.slow  # builds (or reuses) the session's tiny ONNX artifact
@pytest.mark.skipif(HAS_TENSORRT, reason="tensorrt is installed here; the unavailable path cannot be checked")
def test_unavailable_tensorrt_is_an_error_with_reason(tmp_path_factory) -> None:
    reason = unavailable_reason(torch.device("cpu"))
    assert reason is not None and ("not installed" in reason or "CUDA" in reason)
    artifact = tiny_artifact_dir(tmp_path_factory)
    with pytest.raises(InvalidArgumentError, match=r"tensorrt.*unavailable"):
        histoaug.load_synthesizer(artifact, backend="tensorrt")


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_TENSORRT, reason="tensorrt is not installable in this workplace (needs NVIDIA's index "
                                             "and a CUDA GPU); the TensorRT backend is untested here")
def test_tensorrt_matches_onnxruntime(tmp_path_factory) -> None:
    artifact = tiny_artifact_dir(tmp_path_factory)
    trt = histoaug.load_synthesizer(artifact, backend="tensorrt", device="cuda")
    ort = histoaug.load_synthesizer(artifact, backend="onnxruntime", device="cpu")
    labels, seeds = [0, 1, 0, 1], [1, 2, 3, 4]
    assert psnr(trt.generate(labels, seeds, steps=4), ort.generate(labels, seeds, steps=4)) >= 30
