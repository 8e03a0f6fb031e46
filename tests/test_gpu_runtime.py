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


# (backend, dtype, mode): the test id is BACKEND[:DTYPE][:MODE], the name scripts/gpu_check_report.py and
# benchmarks/gpu_bench.py give the runtime (mode: graphs = CUDA graphs, compile = AOTInductor, which runs only
# in gpu_check.sh's optional second call: cold compiles, one per UNet shape)
RUNTIMES = [("torch", "fp32", None), ("torch", "fp16", None), ("torch", "bf16", None), ("torch", "fp16", "graphs"),
            ("torch", "bf16", "graphs"), ("torch", "bf16", "compile"), ("onnxruntime", None, None),
            ("tensorrt", None, None)]
# one patch batch for every test of a runtime (and 3 for the other-size check): few shapes to compile or capture
BATCH = 8


def _runtimes() -> list:
    return [pytest.param(spec, id=":".join(s for s in spec if s)) for spec in RUNTIMES]


def _load(spec):
    backend, dtype, mode = spec
    if dtype == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    if backend == "onnxruntime" and not _ort_cuda():
        pytest.skip("onnxruntime-gpu is not installed (too large to carry to the GPU machine; docs/gpu.md)")
    if backend == "tensorrt" and importlib.util.find_spec("tensorrt") is None:
        pytest.skip("tensorrt is not installable in this workplace (docs/gpu.md)")
    return histoaug.load_synthesizer("default", backend=backend, device="cuda", dtype=dtype,
                                     compile=mode == "compile", graphs=mode == "graphs")


def _workload(n: int, offset: int = 0):
    return [i % 2 for i in range(n)], [1000 + offset + i for i in range(n)]


@pytest.fixture(params=_runtimes())
def synth(request):
    synthesizer = _load(request.param)
    yield synthesizer
    if hasattr(synthesizer, "close"):
        synthesizer.close()


def test_every_gpu_runtime_generates(synth) -> None:
    labels, seeds = _workload(BATCH)
    out = synth.generate(labels, seeds, steps=STEPS, batch_size=BATCH)
    assert out.shape == (BATCH, 96, 96, 3) and out.dtype == np.uint8
    assert synth.device.type == "cuda"
    assert all(out[i].std() > 1.0 for i in range(BATCH))  # real images, not constant fills
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
    synth.prepare([BATCH])  # patch batch: prepare doubles it for guidance (cond and uncond in one UNet call)
    labels_a, seeds_a = _workload(8)
    labels_b, seeds_b = [1 - label for label in labels_a], _workload(8, offset=500)[1]
    a1 = synth.generate(labels_a, seeds_a, steps=STEPS, batch_size=8)
    b = synth.generate(labels_b, seeds_b, steps=STEPS, batch_size=8)
    a2 = synth.generate(labels_a, seeds_a, steps=STEPS, batch_size=8)
    assert np.array_equal(a1, a2) and not np.array_equal(a1, b)
    fresh = histoaug.load_synthesizer("default", backend=synth.backend, device="cuda", dtype=synth.dtype,
                                      compile=synth.compiled, graphs=synth.graphs)
    assert np.array_equal(b, fresh.generate(labels_b, seeds_b, steps=STEPS, batch_size=8))


@pytest.mark.parametrize("dtype", [pytest.param("fp16", id="torch:fp16:graphs"),
                                   pytest.param("bf16", id="torch:bf16:graphs")])
def test_cuda_graphs_are_bit_identical_to_eager(dtype) -> None:
    """Replaying the captured UNet gives exactly eager's patches on the same GPU, and the graph replays."""
    if dtype == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    labels, seeds = _workload(BATCH)
    eager = histoaug.load_synthesizer("default", backend="torch", device="cuda", dtype=dtype, graphs=False)
    graphed = histoaug.load_synthesizer("default", backend="torch", device="cuda", dtype=dtype, graphs=True)
    graphed.prepare([BATCH])
    assert len(graphed._backend._captured) == 1  # one UNet shape (2 x BATCH), captured in prepare
    out = graphed.generate(labels, seeds, steps=STEPS, batch_size=BATCH)
    assert np.array_equal(out, eager.generate(labels, seeds, steps=STEPS, batch_size=BATCH))
    assert len(graphed._backend._captured) == 1  # replayed, not captured again
    assert graphed.runtime["graphs"] == "cuda graphs" and eager.runtime["graphs"] == "off"


def test_fp16_decodes_in_fp32_where_the_vae_asks_for_it() -> None:
    """The embedded VAE says force_upcast: fp16 keeps it in fp32 (diffusers' rule), so no NaN patches."""
    synth = histoaug.load_synthesizer("default", backend="torch", device="cuda", dtype="fp16")
    assert synth._backend.vae.dtype == torch.float32 and synth.runtime["vae_dtype"] == "fp32 (force_upcast)"
    out = synth.generate(*_workload(4), steps=STEPS)
    assert out.std() > 1.0


def test_runtime_id_records_the_cuda_numerics(monkeypatch) -> None:
    """TF32 and cuDNN flags change the rounding: they are part of the runtime id; benchmark is pinned off."""
    synth = histoaug.load_synthesizer("default", backend="torch", device="cuda", dtype="fp32")
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    before = synth.runtime_id
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", True)
    assert synth.runtime_id != before
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    labels, seeds = _workload(4)
    first = synth.generate(labels, seeds, steps=STEPS)
    assert np.array_equal(first, synth.generate(labels, seeds, steps=STEPS))
    assert synth.runtime["cudnn_benchmark"] == "off (pinned by histoaug)"


def test_auto_on_cuda_runs_only_what_gpu_verified_lists() -> None:
    synth = histoaug.load_synthesizer("default", device="cuda")
    from histoaug.synthesis.backends.gpu_verified import verified_runtimes

    if not verified_runtimes():
        assert (synth.backend, synth.dtype, synth.compiled, synth.graphs) == ("torch", "fp32", False, False)
        assert "lists no runtime verified on a GPU" in synth.choice.reason
    else:
        assert "verified on a GPU" in synth.choice.reason


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
