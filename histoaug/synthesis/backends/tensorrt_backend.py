"""TensorRT backend: engines built from an artifact's ONNX graphs, cached per GPU and settings.

Written against TensorRT 10's documented Python API (``trt.Builder``, ``trt.OnnxParser``,
``IBuilderConfig`` with a timing cache, ``build_serialized_network``, ``IExecutionContext``
with ``set_tensor_address`` / ``execute_async_v3``), following NVIDIA's diffusion demo: export,
build and run are separate, shapes are static (one engine per batch size), fp16/bf16 are
builder flags. TensorRT cannot be installed in the development workplace, so this module is
not exercised by the CPU test suite (its tests skip with that reason).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from pathlib import Path

import torch

from histoaug.atomic_files import write_bytes
from histoaug.errors import ArtifactError, InvalidArgumentError
from histoaug.synthesis.artifact_format import UNET_FILE, VAE_DECODER_FILE, sha256_file

logger = logging.getLogger(__name__)


def unavailable_reason(device: torch.device | None = None) -> str | None:
    """Why TensorRT cannot run here, or None when it can."""
    if importlib.util.find_spec("tensorrt") is None:
        return "tensorrt is not installed (pip install 'histoaug[tensorrt]'; needs an NVIDIA GPU)"
    if not torch.cuda.is_available():
        return "tensorrt needs a CUDA device and none is visible"
    if device is not None and device.type != "cuda":
        return f"tensorrt runs on CUDA devices only, not {device}"
    return None


def cache_dir() -> Path:
    base = os.environ.get("HISTOAUG_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "histoaug")
    return Path(base) / "tensorrt"


def engine_key(onnx_path: Path, dtype: str, shapes: dict[str, tuple[int, ...]], device: torch.device) -> str:
    """Engines depend on the graph, the GPU, TensorRT's version, the precision and the shapes."""
    import tensorrt as trt

    gpu = torch.cuda.get_device_name(device)
    capability = torch.cuda.get_device_capability(device)
    text = f"{sha256_file(onnx_path)}|{gpu}|{capability}|{trt.__version__}|{dtype}|{sorted(shapes.items())}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def build_engine(onnx_path: Path, engine_path: Path, dtype: str, shapes: dict[str, tuple[int, ...]],
                 timing_cache_path: Path) -> None:
    """Parse the ONNX graph and build a static-shape engine, reusing/updating the timing cache."""
    import tensorrt as trt

    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ArtifactError(f"{onnx_path}: TensorRT cannot parse the graph ({errors})")
    config = builder.create_builder_config()
    if dtype == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif dtype == "bf16":
        config.set_flag(trt.BuilderFlag.BF16)
    timing_bytes = timing_cache_path.read_bytes() if timing_cache_path.exists() else b""
    timing_cache = config.create_timing_cache(timing_bytes)
    config.set_timing_cache(timing_cache, ignore_mismatch=False)
    profile = builder.create_optimization_profile()
    for name, shape in shapes.items():
        profile.set_shape(name, shape, shape, shape)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ArtifactError(f"{onnx_path}: TensorRT engine build failed (see TensorRT log)")
    write_bytes(engine_path, bytes(serialized))
    write_bytes(timing_cache_path, bytes(config.get_timing_cache().serialize()))


class _Engine:
    """A deserialised engine with one execution context, run on torch CUDA tensors."""

    def __init__(self, path: Path) -> None:
        import tensorrt as trt

        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise ArtifactError(f"{path}: cannot deserialise TensorRT engine (delete it to rebuild)")
        self.context = self.engine.create_execution_context()
        self.names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.outputs = [n for n in self.names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]

    def __call__(self, feeds: dict[str, torch.Tensor]) -> torch.Tensor:
        stream = torch.cuda.current_stream()
        keep = []
        for name, tensor in feeds.items():
            tensor = tensor.to(torch.float32).contiguous()
            keep.append(tensor)
            self.context.set_tensor_address(name, tensor.data_ptr())
        out_name = self.outputs[0]
        out = torch.empty(tuple(self.context.get_tensor_shape(out_name)), dtype=torch.float32, device=keep[0].device)
        self.context.set_tensor_address(out_name, out.data_ptr())
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        return out


class TensorRTBackend:
    name = "tensorrt"

    def __init__(self, onnx_dir: Path, device: torch.device, dtype: str, *, latent_channels: int,
                 latent_size: int, text_shape: tuple[int, int]) -> None:
        reason = unavailable_reason(device)
        if reason:
            raise InvalidArgumentError(f"backend 'tensorrt' is unavailable: {reason}")
        if dtype not in ("fp32", "fp16", "bf16"):
            raise InvalidArgumentError(f"tensorrt dtype must be fp32, fp16 or bf16, got {dtype!r}")
        self.device, self.dtype = device, dtype
        self.onnx_dir, self.latent = onnx_dir, (latent_channels, latent_size, latent_size)
        self.text_shape = text_shape
        self._engines: dict[tuple[str, int], _Engine] = {}

    def _engine(self, which: str, batch: int) -> _Engine:
        key = (which, batch)
        if key not in self._engines:
            c, h, w = self.latent
            if which == "unet":
                onnx_path = self.onnx_dir / UNET_FILE
                shapes = {"sample": (batch, c, h, w), "timestep": (batch,),
                          "encoder_hidden_states": (batch, *self.text_shape)}
            else:
                onnx_path = self.onnx_dir / VAE_DECODER_FILE
                shapes = {"latent": (batch, c, h, w)}
            name = engine_key(onnx_path, self.dtype, shapes, self.device)
            path = cache_dir() / f"{which}-{name}.plan"
            if not path.exists():
                logger.info("building TensorRT %s engine for batch %d (%s); cached at %s",
                            which, batch, self.dtype, path)
                build_engine(onnx_path, path, self.dtype, shapes, cache_dir() / "timing.cache")
            self._engines[key] = _Engine(path)
        return self._engines[key]

    def predict_noise(self, latents: torch.Tensor, timesteps: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        engine = self._engine("unet", latents.shape[0])
        return engine({"sample": latents.to(self.device), "timestep": timesteps.to(self.device),
                       "encoder_hidden_states": embeddings.to(self.device)})

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self._engine("vae", latents.shape[0])({"latent": latents.to(self.device)})
