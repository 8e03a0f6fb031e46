"""GPU suite (``pytest -m gpu``): every GPU runtime generates, the determinism contract on CUDA, CUDA vs
CPU agreement, and prepared/captured state reused across calls with new seeds and labels.

Skipped without CUDA. Tolerances below are the contract's stated bounds; scripts/gpu_check.sh runs
this file on a GPU machine (docs/gpu.md).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from synthesis_models import psnr

import histoaug

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]

STEPS = 8
# another batch size on CUDA: cuBLAS/cuDNN may pick other kernels, so equal within this bound
OTHER_BATCH_MIN_PSNR_DB = 30.0
# torch fp32 on CUDA (TF32 off) against torch fp32 on the CPU, same seeds
CUDA_VS_CPU_MIN_PSNR_DB = 35.0


def _ort_cuda() -> bool:
    if importlib.util.find_spec("onnxruntime") is None:
        return False
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def _runtimes() -> list:
    specs = [("torch", "fp32", False), ("torch", "fp16", False), ("torch", "bf16", False), ("torch", "bf16", True),
             ("onnxruntime", None, False), ("tensorrt", None, False)]
    return [pytest.param(spec, id=":".join(str(s) for s in spec if s not in (None, False))) for spec in specs]


def _load(spec):
    backend, dtype, compile_ = spec
    if dtype == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    if backend == "onnxruntime" and not _ort_cuda():
        pytest.skip("onnxruntime-gpu is not installed (too large to carry to the GPU machine; docs/gpu.md)")
    if backend == "tensorrt" and importlib.util.find_spec("tensorrt") is None:
        pytest.skip("tensorrt is not installable in this workplace (docs/gpu.md)")
    return histoaug.load_synthesizer("default", backend=backend, device="cuda", dtype=dtype, compile=compile_)


def _workload(n: int, offset: int = 0):
    return [i % 2 for i in range(n)], [1000 + offset + i for i in range(n)]


@pytest.fixture(params=_runtimes())
def synth(request):
    synthesizer = _load(request.param)
    yield synthesizer
    if hasattr(synthesizer, "close"):
        synthesizer.close()


def test_every_gpu_runtime_generates(synth) -> None:
    labels, seeds = _workload(6)
    out = synth.generate(labels, seeds, steps=STEPS, batch_size=6)
    assert out.shape == (6, 96, 96, 3) and out.dtype == np.uint8
    assert synth.device.type == "cuda"
    assert all(out[i].std() > 1.0 for i in range(6))  # real images, not constant fills
    assert not np.array_equal(out[0], out[2])  # different seeds, different patches


def test_same_batch_layout_is_bit_identical_and_other_sizes_are_close(synth) -> None:
    labels, seeds = _workload(8)
    first = synth.generate(labels, seeds, steps=STEPS, batch_size=8)
    again = synth.generate(labels, seeds, steps=STEPS, batch_size=8)
    reordered = synth.generate(labels[::-1], seeds[::-1], steps=STEPS, batch_size=8)[::-1]
    assert np.array_equal(first, again)
    assert np.array_equal(first, reordered)  # position in the batch does not matter
    other = synth.generate(labels, seeds, steps=STEPS, batch_size=3)
    assert psnr(other, first) >= OTHER_BATCH_MIN_PSNR_DB


def test_prepared_state_is_reused_with_new_seeds_and_labels(synth) -> None:
    """Captured graphs / static buffers / engines: a call with new inputs never returns stale outputs."""
    if hasattr(synth, "prepare"):
        synth.prepare([16])
    labels_a, seeds_a = _workload(8)
    labels_b, seeds_b = [1 - label for label in labels_a], _workload(8, offset=500)[1]
    a1 = synth.generate(labels_a, seeds_a, steps=STEPS, batch_size=8)
    b = synth.generate(labels_b, seeds_b, steps=STEPS, batch_size=8)
    a2 = synth.generate(labels_a, seeds_a, steps=STEPS, batch_size=8)
    assert np.array_equal(a1, a2) and not np.array_equal(a1, b)
    backend, dtype, compile_ = synth.backend, synth.dtype, synth.compiled
    fresh = histoaug.load_synthesizer("default", backend=backend, device="cuda", dtype=dtype, compile=compile_)
    assert np.array_equal(b, fresh.generate(labels_b, seeds_b, steps=STEPS, batch_size=8))


def test_cuda_fp32_agrees_with_cpu_fp32(monkeypatch) -> None:
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    labels, seeds = _workload(4)
    cuda = histoaug.load_synthesizer("default", backend="torch", device="cuda", dtype="fp32")
    cpu = histoaug.load_synthesizer("default", backend="torch", device="cpu", dtype="fp32")
    assert psnr(cuda.generate(labels, seeds, steps=STEPS), cpu.generate(labels, seeds, steps=STEPS)) \
        >= CUDA_VS_CPU_MIN_PSNR_DB


def test_reduced_precision_agrees_with_fp32_on_cuda() -> None:
    labels, seeds = _workload(8)
    reference = histoaug.load_synthesizer("default", backend="torch", device="cuda", dtype="fp32")
    dtype = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    reduced = histoaug.load_synthesizer("default", backend="torch", device="cuda", dtype=dtype)
    assert psnr(reduced.generate(labels, seeds, steps=STEPS), reference.generate(labels, seeds, steps=STEPS)) >= 30
