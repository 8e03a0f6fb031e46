"""The one table of synthesis backends: name -> availability check + factory.

Adding a runtime means adding a row here (and its module); selection, the CLI's choices and
``histoaug bench`` read the table, so no if-chain elsewhere names the backends.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

import torch

from histoaug.synthesis.model_source import ModelFiles
from histoaug.synthesis.sampling import Backend


def _export_dtype(model: ModelFiles) -> str | None:
    return model.export_dtype


@dataclass(frozen=True)
class BackendEntry:
    """One runtime: what it runs, whether it can run here, and how to build it."""

    name: str
    needs_export: bool  # runs an artifact's ONNX graphs (not a diffusers pipeline dir)
    fixed_dtype: Callable[[ModelFiles], str | None]  # the dtype it must run (ONNX: the export dtype), None: any
    unavailable: Callable[[torch.device], str | None]  # None when its libraries/device are present
    create: Callable[..., Backend]  # (model, device, dtype, compile, graphs=False) -> backend
    compiles: bool = False  # takes ``compile=True``
    graphs: bool = False  # takes ``graphs=True`` (CUDA graphs of its own; ORT's are a provider option)


def _torch_unavailable(device: torch.device) -> str | None:
    return None


def _create_torch(model: ModelFiles, device: torch.device, dtype: str | None, compile: bool,
                  graphs: bool = False) -> Backend:
    from histoaug.synthesis.backends.torch_backend import TorchBackend

    return TorchBackend(model.root, device, dtype or ("fp32" if device.type == "cpu" else "fp16"), compile=compile,
                        graphs=graphs, model_id=model.model_id,
                        latent_shape=(model.latent_channels, model.latent_size, model.latent_size),
                        text_shape=tuple(model.embeddings.cond.shape[1:]))


def _onnxruntime_unavailable(device: torch.device) -> str | None:
    if importlib.util.find_spec("onnxruntime") is None:
        return "onnxruntime is not installed"
    import onnxruntime as ort

    if device.type == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
        return "onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)"
    return None


def _create_onnxruntime(model: ModelFiles, device: torch.device, dtype: str | None, compile: bool,
                        graphs: bool = False) -> Backend:
    from histoaug.synthesis.backends.onnxruntime_backend import OnnxRuntimeBackend

    return OnnxRuntimeBackend(model.onnx_dir, device, _export_dtype(model))


def _tensorrt_unavailable(device: torch.device) -> str | None:
    from histoaug.synthesis.backends.tensorrt_backend import unavailable_reason

    return unavailable_reason(device)


def _create_tensorrt(model: ModelFiles, device: torch.device, dtype: str | None, compile: bool,
                     graphs: bool = False) -> Backend:
    from histoaug.synthesis.backends.tensorrt_backend import TensorRTBackend

    return TensorRTBackend(model.onnx_dir, device, _export_dtype(model), latent_channels=model.latent_channels,
                           latent_size=model.latent_size, text_shape=tuple(model.embeddings.cond.shape[1:]))


BACKENDS: dict[str, BackendEntry] = {
    entry.name: entry for entry in (
        BackendEntry("torch", needs_export=False, fixed_dtype=lambda model: None, unavailable=_torch_unavailable,
                     create=_create_torch, compiles=True, graphs=True),
        BackendEntry("onnxruntime", needs_export=True, fixed_dtype=_export_dtype, unavailable=_onnxruntime_unavailable,
                     create=_create_onnxruntime),
        BackendEntry("tensorrt", needs_export=True, fixed_dtype=_export_dtype, unavailable=_tensorrt_unavailable,
                     create=_create_tensorrt),
    )
}
BACKEND_NAMES = tuple(BACKENDS)
