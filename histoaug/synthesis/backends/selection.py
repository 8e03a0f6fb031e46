"""Which backends can run a model on a device, the ``auto`` choice, and construction.

No silent fallback: asking for a backend that cannot run raises InvalidArgumentError with the
reason; ``auto`` logs what it picked and why.
"""

from __future__ import annotations

import importlib.util
import logging

import torch

from histoaug.errors import InvalidArgumentError
from histoaug.synthesis.model_source import ModelFiles

logger = logging.getLogger(__name__)

BACKEND_NAMES = ("torch", "onnxruntime", "tensorrt")


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidArgumentError(f"unknown device {device!r}") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InvalidArgumentError(f"device {device!r} asked for, but no CUDA device is visible")
    if resolved.type not in ("cpu", "cuda"):
        raise InvalidArgumentError(f"device {device!r} is not supported (cpu or cuda)")
    return resolved


def unavailable_reason(name: str, model: ModelFiles, device: torch.device) -> str | None:
    """None when backend ``name`` can run ``model`` on ``device``, else why not."""
    if name not in BACKEND_NAMES:
        raise InvalidArgumentError(f"unknown backend {name!r}; choose auto or one of {', '.join(BACKEND_NAMES)}")
    if name == "torch":
        return None
    if model.kind != "artifact":
        return (f"{name} runs exported artifacts; export this model first "
                f"(histoaug export {model.root} OUT --format onnx)")
    if name == "onnxruntime":
        if importlib.util.find_spec("onnxruntime") is None:
            return "onnxruntime is not installed"
        import onnxruntime as ort

        if device.type == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
            return "onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)"
        return None
    if name == "tensorrt":
        from histoaug.synthesis.backends.tensorrt_backend import unavailable_reason as trt_reason

        return trt_reason(device)
    return None


# Measured order on CPU (benchmarks/RESULTS.md, "Synthesis (issue 3)") and the usual order on GPUs.
CPU_PREFERENCE = (("onnxruntime", None), ("torch", "fp32"))
# None: the ONNX backends run the artifact's export dtype (export with --dtype fp16 for fp16 engines)
CUDA_PREFERENCE = (("tensorrt", None), ("onnxruntime", None), ("torch", "fp16"))


def choose_auto(model: ModelFiles, device: torch.device, dtype: str | None = None) -> tuple[str, str | None]:
    """The fastest backend (and dtype) that can run here, in ``dtype`` when one is asked for."""
    preference = CUDA_PREFERENCE if device.type == "cuda" else CPU_PREFERENCE
    export_dtype = model.export_dtype
    skipped = []
    for name, preferred in preference:
        reason = unavailable_reason(name, model, device)
        if reason is None and dtype is not None and name != "torch" and dtype != export_dtype:
            reason = f"runs the artifact's export dtype {export_dtype}, not {dtype}"
        if reason is None:
            chosen = dtype or preferred
            logger.info("backend auto -> %s%s on %s (%s)", name, f" {chosen}" if chosen else "", device,
                        "; ".join(skipped) or "first choice")
            return name, chosen
        skipped.append(f"{name}: {reason}")
    raise InvalidArgumentError("no backend can run this model: " + "; ".join(skipped))


def create_backend(name: str, model: ModelFiles, device: torch.device, dtype: str | None, *, compile: bool = False):
    """Construct backend ``name``; ``dtype`` None means the model's/backend's default.

    ``compile`` (torch.compile of the UNet) exists for the torch backend only; the ONNX backends
    are graph-optimised by their runtime already.
    """
    reason = unavailable_reason(name, model, device)
    if reason is not None:
        raise InvalidArgumentError(f"backend {name!r} is unavailable: {reason}")
    if compile and name != "torch":
        raise InvalidArgumentError(f"compile applies to the torch backend, not {name!r}")
    export_dtype = model.export_dtype
    if name == "torch":
        from histoaug.synthesis.backends.torch_backend import TorchBackend

        return TorchBackend(model.root, device, dtype or ("fp32" if device.type == "cpu" else "fp16"), compile=compile)
    if dtype is not None and dtype != export_dtype:
        raise InvalidArgumentError(f"this artifact was exported as {export_dtype}; {name} runs it in that dtype "
                                   f"(re-export with --dtype {dtype})")
    if name == "onnxruntime":
        from histoaug.synthesis.backends.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(model.onnx_dir, device, export_dtype)
    from histoaug.synthesis.backends.tensorrt_backend import TensorRTBackend

    return TensorRTBackend(model.onnx_dir, device, export_dtype, latent_channels=model.latent_channels,
                           latent_size=model.latent_size, text_shape=tuple(model.embeddings.cond.shape[1:]))
