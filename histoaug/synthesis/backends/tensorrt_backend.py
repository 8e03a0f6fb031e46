"""TensorRT backend: engines built from an artifact's ONNX graphs, with batch profiles, cached per GPU.

Written against TensorRT 10's documented Python API, following NVIDIA's TensorRT diffusion demo
(``demo/Diffusion/demo_diffusion/engine.py``: export, build and run kept apart; dynamic-shape
engines with min/opt/max profiles; strongly typed networks; a timing cache; its own stream):

- build (:func:`build_engine`): ``Builder.create_network`` with ``STRONGLY_TYPED`` (the export's
  dtype is in the graph's casts, so no FP16/BF16 builder flags), ``OnnxParser.parse_from_file``,
  one ``IOptimizationProfile`` per batch range (``set_shape(name, min, opt, max)``), a timing
  cache loaded from and saved back to disk, ``build_serialized_network``;
- run (:class:`_EngineRunner`): one ``IExecutionContext`` per profile
  (``set_optimization_profile_async`` once), static device buffers at the profile's max batch,
  ``set_input_shape`` + ``set_tensor_address`` before each ``execute_async_v3`` on the backend's
  own CUDA stream, under ``torch.cuda.device`` of the backend's GPU (``cuda:N``).

Engines are built in :meth:`TensorRTBackend.prepare` for the batch sizes asked for (outside any
timing); a smaller batch runs on the profile that covers it, only a larger one needs a rebuild.
Engine files and the timing cache are keyed by GPU, compute capability, TensorRT version, graph
hash and settings, and written atomically under unique temporary names (histoaug.atomic_files).

Version gate: opset-23 ``Attention`` nodes (histoaug's exports) parse from TensorRT 10.14 on;
an older TensorRT is refused with one line naming the version needed.

TensorRT cannot be installed in the development workplace (its libraries are not on the
reachable registries), so only the parts that run without it are tested there
(tests/test_tensorrt_units.py); the engine path itself is untested until a GPU session runs it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from histoaug.atomic_files import write_bytes
from histoaug.errors import ArtifactError, InvalidArgumentError
from histoaug.synthesis.artifact_format import UNET_FILE, VAE_DECODER_FILE, sha256_file

logger = logging.getLogger(__name__)

MIN_TENSORRT = (10, 0)  # TensorRT 10's API (explicit batch only, execute_async_v3, set_input_shape)
ATTENTION_TENSORRT = (10, 14)  # the ONNX parser handles opset-23 Attention from 10.14 (release notes)
MAX_PROFILES = 4  # each profile is another set of tactics in the engine: keep builds bounded
BUILDER_OPTIMIZATION_LEVEL = 3  # TensorRT's default, as the diffusion demo uses


def parse_version(text: str) -> tuple[int, ...]:
    """'10.14.1.48' -> (10, 14, 1, 48); a non-numeric tail ends it ('10.14.0rc1' -> (10, 14, 0))."""
    match = re.match(r"\d+(?:\.\d+)*", text.strip())
    return tuple(int(part) for part in match.group(0).split(".")) if match else ()


def installed_version() -> str | None:
    """The installed TensorRT's version, or None (found without importing its CUDA libraries)."""
    if importlib.util.find_spec("tensorrt") is None:
        return None
    import tensorrt as trt

    return str(trt.__version__)


def unavailable_reason(device: torch.device | None = None) -> str | None:
    """Why TensorRT cannot run here, or None when it can."""
    if importlib.util.find_spec("tensorrt") is None:
        return "tensorrt is not installed (pip install 'histoaug[tensorrt]'; needs an NVIDIA GPU)"
    version = installed_version() or "0"
    if parse_version(version) < MIN_TENSORRT:
        return f"tensorrt {version} is too old; histoaug needs TensorRT >= {'.'.join(map(str, MIN_TENSORRT))}"
    if not torch.cuda.is_available():
        return "tensorrt needs a CUDA device and none is visible"
    if device is not None and device.type != "cuda":
        return f"tensorrt runs on CUDA devices only, not {device}"
    return None


def required_version(onnx_path: Path) -> tuple[int, int]:
    """The oldest TensorRT whose ONNX parser takes this graph (Attention nodes need 10.14)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    ops = {node.op_type for node in model.graph.node if node.domain in ("", "ai.onnx")}
    for function in model.functions:
        ops.update(node.op_type for node in function.node if node.domain in ("", "ai.onnx"))
    return ATTENTION_TENSORRT if "Attention" in ops else MIN_TENSORRT


def check_version(installed: str, required: tuple[int, int], graph: Path) -> None:
    """Refuse, in one line naming the needed version, a TensorRT that cannot parse ``graph``."""
    if parse_version(installed) < required:
        needed = ".".join(map(str, required))
        raise InvalidArgumentError(
            f"{graph.name} has ONNX opset-23 Attention nodes, which TensorRT parses from {needed} on; "
            f"tensorrt {installed} is installed (pip install 'tensorrt>={needed}')")


# --- batch profiles ---------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class BatchProfile:
    """One optimisation profile's batch range: TensorRT tunes its kernels for ``opt``."""

    min: int
    opt: int
    max: int

    def covers(self, batch: int) -> bool:
        return self.min <= batch <= self.max


def plan_profiles(batch_sizes: Sequence[int], max_profiles: int = MAX_PROFILES) -> tuple[BatchProfile, ...]:
    """Contiguous profiles from 1 to the largest size, each tuned (``opt``) for one asked-for size.

    Sizes [13, 64] give [1..13 opt 13] and [14..64 opt 64]: the full batches run on kernels
    tuned for them, the last smaller batch on its own, and nothing below 64 needs a rebuild.
    Beyond ``max_profiles`` sizes, the largest ones keep their own profile and the smallest
    share the first.
    """
    sizes = sorted({int(b) for b in batch_sizes})
    if not sizes or sizes[0] <= 0:
        raise InvalidArgumentError(f"batch sizes must be positive integers, got {list(batch_sizes)!r}")
    sizes = sizes[-max_profiles:]
    profiles, low = [], 1
    for size in sizes:
        profiles.append(BatchProfile(low, size, size))
        low = size + 1
    return tuple(profiles)


def profile_index(profiles: Sequence[BatchProfile], batch: int) -> int | None:
    """The profile that runs ``batch``, or None when none covers it."""
    return next((i for i, p in enumerate(profiles) if p.covers(batch)), None)


def input_shapes(which: str, profile: BatchProfile, latent: tuple[int, int, int],
                 text_shape: tuple[int, int]) -> dict[str, tuple[tuple[int, ...], ...]]:
    """Each graph input -> its (min, opt, max) shapes under ``profile`` (only the batch dim varies)."""
    if which == "unet":
        per_sample = {"sample": latent, "timestep": (), "encoder_hidden_states": text_shape}
    elif which == "vae":
        per_sample = {"latent": latent}
    else:
        raise ValueError(f"unknown graph {which!r}")
    return {name: tuple((b, *rest) for b in (profile.min, profile.opt, profile.max))
            for name, rest in per_sample.items()}


# --- caches -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuIdentity:
    """What makes an engine or a timing cache valid on a GPU: its name, capability, TensorRT version."""

    name: str
    capability: tuple[int, int]
    tensorrt: str

    @classmethod
    def of(cls, device: torch.device) -> GpuIdentity:
        return cls(torch.cuda.get_device_name(device), tuple(torch.cuda.get_device_capability(device)),
                   installed_version() or "none")

    @property
    def slug(self) -> str:
        text = f"{self.name}|sm{self.capability[0]}{self.capability[1]}|trt{self.tensorrt}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_dir() -> Path:
    base = os.environ.get("HISTOAUG_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "histoaug")
    return Path(base) / "tensorrt"


def engine_key(graph_digest: str, gpu: GpuIdentity, dtype: str, profiles: Sequence[BatchProfile],
               shapes: dict[str, Any]) -> str:
    """An engine depends on the graph, the GPU, TensorRT, the precision, the profiles and the build settings."""
    settings = {"graph": graph_digest, "gpu": gpu.name, "capability": list(gpu.capability),
                "tensorrt": gpu.tensorrt, "dtype": dtype, "strongly_typed": True,
                "optimization_level": BUILDER_OPTIMIZATION_LEVEL,
                "profiles": [[p.min, p.opt, p.max] for p in profiles], "shapes": shapes}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:24]


def engine_path(which: str, key: str, root: Path | None = None) -> Path:
    return (root or cache_dir()) / f"{which}-{key}.plan"


def timing_cache_path(gpu: GpuIdentity, root: Path | None = None) -> Path:
    """Timing caches hold per-GPU, per-TensorRT measurements: one file per GpuIdentity."""
    return (root or cache_dir()) / f"timing-{gpu.slug}.cache"


def read_timing_cache(path: Path) -> bytes:
    """The saved timing cache, or empty bytes when there is none (a fresh cache)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def store_build(engine_file: Path, engine_bytes: bytes, timing_file: Path, timing_bytes: bytes) -> None:
    """Write the engine and the updated timing cache, each atomically under a unique temporary name.

    Two processes building the same engine each write their own temporary file; the last rename
    wins and neither ever reads a half-written plan or cache.
    """
    write_bytes(engine_file, engine_bytes)
    write_bytes(timing_file, timing_bytes)


# --- build ------------------------------------------------------------------------------------


def build_engine(trt: Any, onnx_path: Path, profiles_shapes: Sequence[dict[str, tuple[tuple[int, ...], ...]]],
                 timing_file: Path) -> tuple[bytes, bytes]:
    """Parse ``onnx_path`` into a strongly typed network and build one engine with these profiles.

    ``trt`` is the ``tensorrt`` module (a parameter so the build sequence is testable without it).
    Returns (serialized engine, serialized timing cache).
    """
    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    # strongly typed: tensor types come from the graph (the export's casts), not from builder flags
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ArtifactError(f"{onnx_path}: TensorRT cannot parse the graph ({errors})")
    config = builder.create_builder_config()
    config.builder_optimization_level = BUILDER_OPTIMIZATION_LEVEL
    timing_cache = config.create_timing_cache(read_timing_cache(timing_file))
    config.set_timing_cache(timing_cache, ignore_mismatch=False)
    for shapes in profiles_shapes:
        profile = builder.create_optimization_profile()
        for name, (low, opt, high) in shapes.items():
            profile.set_shape(name, low, opt, high)
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ArtifactError(f"{onnx_path}: TensorRT engine build failed (see the TensorRT log above)")
    return bytes(serialized), bytes(config.get_timing_cache().serialize())


# --- run --------------------------------------------------------------------------------------


def torch_dtype(trt: Any, trt_type: Any) -> torch.dtype:
    table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16,
             trt.DataType.BF16: torch.bfloat16, trt.DataType.INT32: torch.int32,
             trt.DataType.INT64: torch.int64, trt.DataType.BOOL: torch.bool}
    return table[trt_type]


class _EngineRunner:
    """A deserialised engine: one execution context and static IO buffers per profile."""

    def __init__(self, trt: Any, plan: bytes, profiles: Sequence[BatchProfile], device: torch.device,
                 stream: torch.cuda.Stream, path: Path) -> None:
        self.trt, self.device, self.stream, self.profiles = trt, device, stream, tuple(profiles)
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise ArtifactError(f"{path}: cannot deserialise TensorRT engine (delete it to rebuild)")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.contexts, self.buffers = [], []
        for index in range(len(self.profiles)):
            context = self.engine.create_execution_context()
            context.set_optimization_profile_async(index, stream.cuda_stream)
            for name in self.inputs:  # every input at the profile's max batch, to size the outputs
                context.set_input_shape(name, tuple(self.engine.get_tensor_profile_shape(name, index)[2]))
            buffers = {name: torch.empty(tuple(context.get_tensor_shape(name)), device=device,
                                         dtype=torch_dtype(trt, self.engine.get_tensor_dtype(name)))
                       for name in names}
            self.contexts.append(context)
            self.buffers.append(buffers)

    def __call__(self, feeds: dict[str, torch.Tensor]) -> torch.Tensor:
        batch = next(iter(feeds.values())).shape[0]
        index = profile_index(self.profiles, batch)
        if index is None:
            raise InvalidArgumentError(f"batch {batch} is outside the prepared TensorRT profiles {self.profiles}")
        context, buffers = self.contexts[index], self.buffers[index]
        producer = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(producer)  # the inputs were written on torch's stream
        with torch.cuda.stream(self.stream):
            for name, tensor in feeds.items():
                target = buffers[name][:batch]
                target.copy_(tensor, non_blocking=True)
                context.set_input_shape(name, tuple(target.shape))
                context.set_tensor_address(name, target.data_ptr())
            for name in self.outputs:
                context.set_tensor_address(name, buffers[name].data_ptr())
            if not context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT execution failed (see the TensorRT log)")
            out = buffers[self.outputs[0]][:batch].to(torch.float32, copy=True)
        producer.wait_stream(self.stream)
        out.record_stream(producer)
        return out


class TensorRTBackend:
    """UNet and VAE decoder engines for one artifact on one GPU."""

    name = "tensorrt"

    def __init__(self, onnx_dir: Path, device: torch.device, dtype: str, *, latent_channels: int,
                 latent_size: int, text_shape: tuple[int, int]) -> None:
        reason = unavailable_reason(device)
        if reason:
            raise InvalidArgumentError(f"backend 'tensorrt' is unavailable: {reason}")
        if dtype not in ("fp32", "fp16", "bf16"):
            raise InvalidArgumentError(f"tensorrt dtype must be fp32, fp16 or bf16, got {dtype!r}")
        import tensorrt as trt

        self._trt = trt
        self.device = torch.device("cuda", device.index if device.index is not None else torch.cuda.current_device())
        self.dtype, self.onnx_dir = dtype, onnx_dir
        self.latent = (latent_channels, latent_size, latent_size)
        self.text_shape = tuple(text_shape)
        self.graphs = {"unet": onnx_dir / UNET_FILE, "vae": onnx_dir / VAE_DECODER_FILE}
        for path in self.graphs.values():
            check_version(trt.__version__, required_version(path), path)
        self.gpu = GpuIdentity.of(self.device)
        with torch.cuda.device(self.device):
            self.stream = torch.cuda.Stream(device=self.device)
        self._digests = {which: sha256_file(path) for which, path in self.graphs.items()}
        self._prepared: set[int] = set()
        self._profiles: tuple[BatchProfile, ...] = ()
        self._runners: dict[str, _EngineRunner] = {}

    @property
    def runtime_id(self) -> dict[str, str]:
        return {"backend": self.name, "device": f"{self.device} {self.gpu.name}", "dtype": self.dtype,
                "attention": "tensorrt fused (ONNX Attention)", "graph_mode": "tensorrt engine, strongly typed",
                "tensorrt": self.gpu.tensorrt, "torch": torch.__version__}

    def prepare(self, batch_sizes: Sequence[int]) -> None:
        """Build (or load from the cache) engines whose profiles cover these UNet batch sizes."""
        wanted = {int(b) for b in batch_sizes}
        if self._profiles and all(profile_index(self._profiles, b) is not None for b in wanted):
            return
        sizes = self._prepared | wanted
        profiles = plan_profiles(sorted(sizes))
        with torch.cuda.device(self.device):
            runners = {which: self._load_or_build(which, profiles) for which in self.graphs}
        self._runners, self._profiles, self._prepared = runners, profiles, sizes

    def _load_or_build(self, which: str, profiles: tuple[BatchProfile, ...]) -> _EngineRunner:
        shapes = [input_shapes(which, p, self.latent, self.text_shape) for p in profiles]
        key = engine_key(self._digests[which], self.gpu, self.dtype, profiles,
                         {"latent": list(self.latent), "text": list(self.text_shape)})
        path = engine_path(which, key)
        try:
            plan = path.read_bytes()
        except FileNotFoundError:
            logger.info("building TensorRT %s engine (%s, batch profiles %s); cached at %s", which, self.dtype,
                        ", ".join(f"{p.min}-{p.max}" for p in profiles), path)
            timing_file = timing_cache_path(self.gpu)
            plan, timing = build_engine(self._trt, self.graphs[which], shapes, timing_file)
            store_build(path, plan, timing_file, timing)
        return _EngineRunner(self._trt, plan, profiles, self.device, self.stream, path)

    def _runner(self, which: str, batch: int) -> _EngineRunner:
        if profile_index(self._profiles, batch) is None:
            logger.warning("tensorrt: batch %d is outside the prepared profiles; building engines now "
                           "(call Synthesizer.prepare with every batch size first to keep builds out of runs)", batch)
            self.prepare([batch])
        return self._runners[which]

    def predict_noise(self, latents: torch.Tensor, timesteps: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        runner = self._runner("unet", latents.shape[0])
        with torch.cuda.device(self.device):
            return runner({"sample": latents.to(self.device), "timestep": timesteps.to(self.device),
                           "encoder_hidden_states": embeddings.to(self.device)})

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        runner = self._runner("vae", latents.shape[0])
        with torch.cuda.device(self.device):
            return runner({"latent": latents.to(self.device)})

    def close(self) -> None:
        """Drop contexts, engines and buffers (idempotent); cached engine files stay on disk."""
        self._runners, self._profiles, self._prepared = {}, (), set()
