"""The GPU code paths' decisions, checked where no GPU is: CUDA graphs refused off CUDA with the reason,
``auto`` on CUDA limited to gpu_verified.json (order, filters, the empty-list choice, fall-through when a
listed runtime cannot be built), fp16's VAE upcast rule, and the Triton dispatch's fallback when a kernel
fails to build. The CUDA halves of these (capture, replay, bit-identity) are in tests/test_gpu_runtime.py."""

from __future__ import annotations

import logging

import pytest
import torch
from synthesis_models import tiny_model_dir

import histoaug
from histoaug.errors import InvalidArgumentError
from histoaug.synthesis import synthesizer as synthesizer_module
from histoaug.synthesis.backends.gpu_verified import verified_runtimes
from histoaug.synthesis.backends.selection import choose_runtime, cuda_auto_candidates
from histoaug.synthesis.backends.torch_backend import graphs_unavailable_reason, vae_upcast
from histoaug.synthesis.model_source import open_model

CUDA = torch.device("cuda")  # never touched: the candidates are computed without a device call


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return open_model(tiny_model_dir(tmp_path_factory))


def test_graphs_are_refused_on_the_cpu_with_the_reason(model) -> None:
    assert "CUDA graphs need a CUDA device" in graphs_unavailable_reason(torch.device("cpu"))
    assert "AOTInductor" in graphs_unavailable_reason(CUDA, compile=True)
    assert graphs_unavailable_reason(CUDA) is None
    with pytest.raises(InvalidArgumentError, match="cannot use CUDA graphs here: CUDA graphs need a CUDA device"):
        histoaug.load_synthesizer(model.root, backend="torch", device="cpu", graphs=True)
    synth = histoaug.load_synthesizer(model.root, backend="torch", device="cpu", graphs=False)
    assert not synth.graphs and "graphs" not in synth.runtime  # CPU runtime ids keep their keys


def test_the_shipped_list_is_empty_so_auto_on_cuda_runs_plain_torch_fp32(model) -> None:
    assert verified_runtimes() == []
    (choice,) = cuda_auto_candidates(model, CUDA)
    assert (choice.backend, choice.dtype, choice.compile, choice.graphs) == ("torch", "fp32", False, False)
    assert "lists no runtime verified on a GPU yet" in choice.reason
    assert choose_runtime(model, CUDA) == choice
    assert cuda_auto_candidates(model, CUDA, dtype="bf16")[0].dtype == "bf16"


def test_auto_on_cuda_takes_the_listed_runtimes_fastest_first(model) -> None:
    table = {
        "slow": {"backend": "torch", "dtype": "fp16", "graphs": False, "patches_per_second": 9000.0},
        "fast": {"backend": "torch", "dtype": "fp16", "graphs": True, "patches_per_second": 30000.0,
                 "device": "NVIDIA H200"},
        "bf16": {"backend": "torch", "dtype": "bf16", "graphs": True, "patches_per_second": 20000.0},
        "ort": {"backend": "onnxruntime", "dtype": None, "patches_per_second": 50000.0},
    }
    candidates = cuda_auto_candidates(model, CUDA, table=table)
    assert [(c.backend, c.dtype, c.graphs) for c in candidates] == [
        ("torch", "fp16", True), ("torch", "bf16", True), ("torch", "fp16", False), ("torch", "fp32", False)]
    assert "NVIDIA H200" in candidates[0].reason and "30000 patches/s" in candidates[0].reason
    assert "could be built" in candidates[-1].reason  # the last resort says what it is
    only_fp16 = cuda_auto_candidates(model, CUDA, dtype="fp16", table=table)
    assert [c.dtype for c in only_fp16] == ["fp16", "fp16", "fp16"]
    ort_only = cuda_auto_candidates(model, CUDA, table={"ort": table["ort"]})
    assert len(ort_only) == 1 and "runs exported artifacts" in ort_only[0].reason


def test_a_listed_runtime_that_cannot_be_built_falls_through(model, monkeypatch, caplog) -> None:
    """An ORT CUDA provider that is listed but does not load: the next verified runtime runs, and it is logged."""
    table = {"first": {"backend": "torch", "dtype": "fp16", "graphs": True, "patches_per_second": 2.0},
             "second": {"backend": "torch", "dtype": "bf16", "patches_per_second": 1.0}}
    built = []
    cpu_backend = histoaug.load_synthesizer(model.root, backend="torch", device="cpu", dtype="fp32")._backend

    def fake_create(name, model_, device, dtype, *, compile=False, graphs=False):
        if graphs:
            raise InvalidArgumentError("onnxruntime did not enable CUDAExecutionProvider")
        built.append((name, dtype))
        return cpu_backend

    monkeypatch.setattr(synthesizer_module, "create_backend", fake_create)
    monkeypatch.setattr(synthesizer_module, "cuda_auto_candidates",
                        lambda m, d, dtype: cuda_auto_candidates(m, d, dtype, table=table))
    with caplog.at_level(logging.WARNING):
        choice, _ = synthesizer_module._build_cuda_auto(model, CUDA, None)
    assert built == [("torch", "bf16")] and choice.dtype == "bf16"
    assert "skipped: torch: onnxruntime did not enable" in choice.reason
    assert "trying the next verified runtime" in caplog.text


def test_fp16_upcasts_a_vae_that_asks_for_it() -> None:
    class Config:
        force_upcast = True

    assert vae_upcast(Config, "fp16") and not vae_upcast(Config, "bf16") and not vae_upcast(Config, "fp32")
    Config.force_upcast = False
    assert not vae_upcast(Config, "fp16")


def test_a_failing_triton_kernel_falls_back_to_the_reference(monkeypatch, caplog) -> None:
    from histoaug.kernels import dispatch, group_norm

    monkeypatch.setattr(dispatch, "_BROKEN", {})
    monkeypatch.setattr(group_norm, "use_triton", lambda op, tensor: dispatch._BROKEN.get(op) is None)

    def broken(*args, **kwargs):
        raise RuntimeError("PassManager::run failed\nlong compiler log")

    monkeypatch.setattr(group_norm, "group_norm_triton", broken)
    x = torch.randn(2, 8, 4, 4)
    with caplog.at_level(logging.WARNING):
        out = group_norm.group_norm(x, 4, silu=True)
    assert torch.equal(out, group_norm.group_norm_reference(x, 4, silu=True))
    assert "PassManager::run failed" in dispatch._BROKEN["group_norm"] and "long compiler log" not in caplog.text
    assert torch.equal(group_norm.group_norm(x, 4, silu=True), out)  # the reference from then on


class _RecordingGraph:
    """Stand-in for torch.cuda.CUDAGraph on the CPU: ``replay`` re-runs what was "captured" (the test
    registers it), so the backend's buffer handling is checked end to end; real capture is a GPU test."""

    replays = 0

    def __init__(self) -> None:
        self.body = None

    def replay(self) -> None:
        type(self).replays += 1
        self.body()


def test_graph_capture_flow_with_a_recording_stand_in(model, monkeypatch) -> None:
    """The capture/replay bookkeeping on the CPU (CUDA's calls replaced by recorders): one capture per UNet
    shape, inputs copied into the static buffers, replays return fresh outputs equal to eager."""
    import contextlib

    from histoaug.synthesis.backends import torch_backend

    synth = histoaug.load_synthesizer(model.root, backend="torch", device="cpu", dtype="fp32")
    backend = synth._backend
    labels, seeds = [0, 1, 0], [5, 6, 7]
    eager = synth.generate(labels, seeds, steps=3, batch_size=3)
    captures = []

    @contextlib.contextmanager
    def graph(g, pool=None):
        captures.append(pool)
        yield

    original = torch_backend._CapturedUNet

    def remember(*args, **kwargs):  # what the captured graph would replay: the UNet on the static buffers
        captured = original(*args, **kwargs)
        captured.graph.body = lambda: captured.output.copy_(
            backend.unet(captured.sample, captured.timestep, captured.text, return_dict=False)[0])
        return captured

    class Stream:
        def __init__(self, device=None) -> None:
            pass

        def wait_stream(self, other) -> None:
            pass

    fake_cuda = {"device": lambda d: contextlib.nullcontext(), "Stream": Stream,
                 "stream": lambda s: contextlib.nullcontext(), "graph": graph, "CUDAGraph": _RecordingGraph,
                 "graph_pool_handle": lambda: "pool", "current_stream": lambda d=None: Stream()}
    for name, value in fake_cuda.items():
        monkeypatch.setattr(torch.cuda, name, value)
    monkeypatch.setattr(torch_backend, "_CapturedUNet", remember)
    backend.graphs = True
    synth.prepare([3])
    assert len(backend._captured) == 1 and captures == ["pool"]  # one UNet shape: 2 x 3 (CFG)
    graphed = synth.generate(labels, seeds, steps=3, batch_size=3)
    assert len(backend._captured) == 1 and _RecordingGraph.replays == 3  # replayed at each step, not recaptured
    assert graphed.tobytes() == eager.tobytes()
    other = synth.generate([1, 1, 0], [8, 9, 10], steps=3, batch_size=3)
    assert other.tobytes() != graphed.tobytes()  # new inputs reach the static buffers
