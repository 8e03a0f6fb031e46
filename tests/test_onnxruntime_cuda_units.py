"""The ONNX Runtime CUDA path's parts that run on ORT-CPU: provider options, the node-placement check
(on a real ORT profile), where reduced-precision exports are verified."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from histoaug.errors import InvalidArgumentError
from histoaug.synthesis.backends import onnxruntime_backend as ortb


def _conv_graph(path) -> None:
    """Conv + MatMul (compute) next to Shape/Gather (tiny shape arithmetic ORT keeps on the CPU)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 3, 16, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 8, 16, 16])
    n = helper.make_tensor_value_info("n", TensorProto.INT64, [1])
    w = helper.make_tensor("w", TensorProto.FLOAT, [8, 3, 3, 3], np.random.rand(8 * 27).astype(np.float32))
    m = helper.make_tensor("m", TensorProto.FLOAT, [16, 16], np.random.rand(256).astype(np.float32))
    idx = helper.make_tensor("i", TensorProto.INT64, [1], [0])
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("MatMul", ["c", "m"], ["y"], name="matmul"),
             helper.make_node("Shape", ["x"], ["s"], name="shape"),
             helper.make_node("Gather", ["s", "i"], ["n"], name="gather")]
    graph = helper.make_graph(nodes, "g", [x], [y, n], initializer=[w, m, idx])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_placement_check_finds_compute_nodes_outside_cuda(tmp_path) -> None:
    """A real ORT profile of a CPU session: every compute node is 'not on CUDA'; shape ops are not flagged."""
    path = tmp_path / "g.onnx"
    _conv_graph(path)
    session = ortb.open_session(path, torch.device("cpu"), threads=1, profile_dir=tmp_path)
    session.run(None, {"x": np.random.rand(2, 3, 16, 16).astype(np.float32)})
    profile = session.end_profiling()
    flagged = ortb.cpu_placed_nodes(profile)
    ops = {entry.split("(")[1].split(" on ")[0] for entry in flagged}  # names change under ORT's graph optimiser
    assert {"Conv", "MatMul"} <= ops and not ops & {"Shape", "Gather"}
    assert all(entry.endswith("on CPUExecutionProvider)") for entry in flagged)


def test_placement_check_accepts_an_all_cuda_profile(tmp_path) -> None:
    events = [{"cat": "Node", "name": "conv_kernel_time", "args": {"op_name": "Conv", "provider": ortb.CUDA_PROVIDER}},
              {"cat": "Node", "name": "shape_kernel_time",
               "args": {"op_name": "Shape", "provider": "CPUExecutionProvider", "output_size": "16"}},
              {"cat": "Node", "name": "add_kernel_time",  # a big tensor op on the CPU is flagged whatever its type
               "args": {"op_name": "Add", "provider": "CPUExecutionProvider", "output_size": str(1 << 20)}},
              {"cat": "Session", "name": "model_run", "args": {}}]
    profile = tmp_path / "p.json"
    profile.write_text(json.dumps(events))
    assert ortb.cpu_placed_nodes(profile) == ["add (Add on CPUExecutionProvider)"]
    profile.write_text(json.dumps(events[:2]))
    assert ortb.cpu_placed_nodes(profile) == []


def test_cuda_without_onnxruntime_gpu_is_one_clear_error(monkeypatch) -> None:
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(InvalidArgumentError, match="needs onnxruntime-gpu"):
        ortb.providers_for(torch.device("cuda", 1))


def test_cuda_provider_options_use_the_stream_and_graphs(monkeypatch) -> None:
    """Documented CUDA EP options: the device index, torch's stream as user_compute_stream, CUDA graphs;
    no CPUExecutionProvider listed (ORT's implicit CPU provider is what the placement check watches)."""
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: [ortb.CUDA_PROVIDER, "CPUExecutionProvider"])
    stream = SimpleNamespace(cuda_stream=0x7F00AB)
    [(name, options)] = ortb.providers_for(torch.device("cuda", 1), stream=stream, cuda_graph=True)
    assert name == ortb.CUDA_PROVIDER
    assert options == {"device_id": "1", "has_user_compute_stream": "1", "user_compute_stream": str(0x7F00AB),
                       "enable_cuda_graph": "1"}
    [(_, plain)] = ortb.providers_for(torch.device("cuda"))
    assert plain == {"device_id": "0"}


def test_reduced_precision_exports_are_verified_where_they_run(monkeypatch) -> None:
    import onnxruntime as ort

    assert ortb.verification_device("fp32") == torch.device("cpu")
    if ortb.CUDA_PROVIDER not in ort.get_available_providers() or not torch.cuda.is_available():
        assert ortb.verification_device("fp16") == torch.device("cpu")  # ORT-CPU upcast path, recorded as such
        with pytest.raises(InvalidArgumentError, match="no bf16 kernels"):
            ortb.verification_device("bf16")
    monkeypatch.setattr(ort, "get_available_providers", lambda: [ortb.CUDA_PROVIDER, "CPUExecutionProvider"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for dtype in ("fp16", "bf16"):
        assert ortb.verification_device(dtype) == torch.device("cuda", 0)
    assert ortb.verification_device("fp32") == torch.device("cpu")


def test_cpu_backend_lifecycle(tmp_path_factory) -> None:
    """prepare/close/runtime_id exist on the CPU path too (prepare is a no-op there)."""
    from synthesis_models import tiny_artifact_dir

    backend = ortb.OnnxRuntimeBackend(tiny_artifact_dir(tmp_path_factory) / "onnx", torch.device("cpu"), "fp32",
                                      threads=1)
    backend.prepare([2, 4])
    runtime = backend.runtime_id
    assert runtime["backend"] == "onnxruntime" and runtime["provider"] == "CPUExecutionProvider"
    assert runtime["device"] == "cpu" and runtime["onnxruntime"]
    backend.close()
    backend.close()
