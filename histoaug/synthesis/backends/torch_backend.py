"""torch backend: the diffusers UNet and VAE in PyTorch (CPU or CUDA), eager or compiled.

Weights are cast to the requested dtype (bf16 uses the AVX-512-bf16/AMX matmuls of recent
CPUs; fp16 is for CUDA); inputs and outputs of the two calls stay float32 so the scheduler
math is identical across backends. Attention: on the CPU the short-sequence kernel of
``histoaug.kernels.attention`` (faster than the fused SDPA kernel at these lengths), on CUDA
SDPA, or xformers when installed.

``compile=True`` compiles the UNet ahead of time with AOTInductor (weights frozen into the graph),
one package per UNet batch shape, cached on disk across processes (``histoaug.synthesis.compile_cache``):
the UNet is evaluated 2 x steps times per batch, so fusing its norms, activations and attention
pays for the one-time compile (~40 s on a 2-core CPU per batch shape, then ~1 s to load in any
later process). The decoder runs once per batch and stays eager (compiling it measured slower
here). Inductor needs a C++ compiler on the CPU.

``graphs=True`` (CUDA only) captures the UNet call once per UNet batch shape into a CUDA graph in
``prepare`` (static input/output buffers per shape, warm-up on a side stream, one shared memory pool)
and replays it at every step: a small UNet on 12x12 latents is launch-bound on any GPU, and a replay
issues its hundreds of kernels in one launch. The replay runs the captured kernels on the same
inputs, so it is bit-identical to eager on the same GPU (``tests/test_gpu_runtime.py``). It is
refused on the CPU, with compile (the AOTInductor runner is not captured) and for deep cache's
passes (those run eager), each with its reason.

fp16 and the VAE: a VAE whose config says ``force_upcast`` (SD's and histoaug's) decodes in fp32
under fp16, as diffusers' SDXL pipelines do (``needs_upcasting``): its decoder can overflow fp16 (NaN
patches). bf16 has fp32's range and keeps the VAE in bf16.

On CUDA, the backend pins ``cudnn.benchmark`` off inside its calls (autotuning picks kernels per run,
so a user's ``torch.backends.cudnn.benchmark = True`` would break bit-identity) and ``runtime_id``
records the TF32 and cuDNN flags in force, which change the rounding.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from histoaug.dtypes import DTYPES
from histoaug.errors import ArtifactError, InvalidArgumentError
from histoaug.synthesis.backends.runtime_info import device_description, library_versions

if TYPE_CHECKING:
    from histoaug.synthesis.model_source import ModelFiles

logger = logging.getLogger(__name__)


class _UNetCall(torch.nn.Module):
    """The UNet with plain tensor inputs and output: what torch.export traces."""

    def __init__(self, unet: torch.nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor):
        return self.unet(sample, timestep, encoder_hidden_states, return_dict=False)[0]


def graphs_unavailable_reason(device: torch.device, compile: bool = False) -> str | None:
    """None when the torch backend can capture its UNet into CUDA graphs on ``device``, else why not."""
    if device.type != "cuda":
        return f"CUDA graphs need a CUDA device, not {device.type}"
    if compile:
        return "CUDA graphs apply to the eager UNet; the AOTInductor-compiled UNet is not captured"
    return None


def vae_upcast(vae_config, dtype: str) -> bool:
    """Whether the VAE decodes in fp32 under ``dtype``: fp16 with ``force_upcast`` (diffusers' rule).
    ``vae_config``: the VAE's config object or its dict."""
    force = vae_config.get("force_upcast", False) if isinstance(vae_config, dict) else \
        getattr(vae_config, "force_upcast", False)
    return dtype == "fp16" and bool(force)


@dataclass
class _CapturedUNet:
    """One UNet batch shape captured into a CUDA graph: static inputs, the graph, its static output."""

    sample: torch.Tensor
    timestep: torch.Tensor
    text: torch.Tensor
    graph: torch.cuda.CUDAGraph
    output: torch.Tensor


class TorchBackend:
    name = "torch"

    def __init__(self, root: Path | None, device: torch.device, dtype: str = "fp32", *,
                 channels_last: bool | None = None, compile: bool = False, model_id: str | None = None,
                 latent_shape: tuple[int, int, int] | None = None, text_shape: tuple[int, int] | None = None,
                 graphs: bool = False, modules: tuple[torch.nn.Module, torch.nn.Module] | None = None) -> None:
        """Load ``root``'s unet/vae, or take ``modules`` = (unet, vae) already built (benchmarks: random
        weights of a published architecture, built on the GPU without a file)."""
        if dtype not in DTYPES:
            raise InvalidArgumentError(f"torch backend dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        if dtype == "fp16" and device.type == "cpu":
            raise InvalidArgumentError("fp16 on the CPU is slow and inexact in torch; use bf16 or fp32")
        if compile and (reason := compile_unavailable_reason(device)) is not None:
            raise InvalidArgumentError(f"torch backend cannot compile here: {reason}")
        if graphs and (reason := graphs_unavailable_reason(device, compile)) is not None:
            raise InvalidArgumentError(f"torch backend cannot use CUDA graphs here: {reason}")
        self.device, self.dtype, self.torch_dtype = device, dtype, DTYPES[dtype]
        unet, vae = modules if modules is not None else _load_modules(root, dtype)
        self.unet = _to(unet, device, self.torch_dtype).eval().requires_grad_(False)
        self.vae_upcast = vae is not None and vae_upcast(vae.config, dtype)
        self.vae_dtype = torch.float32 if self.vae_upcast else self.torch_dtype
        self.vae = None if vae is None else _to(vae, device, self.vae_dtype).eval().requires_grad_(False)
        # channels-last lets oneDNN run bf16 convolutions without layout reorders; neutral for fp32
        self.channels_last = dtype != "fp32" if channels_last is None else channels_last
        if self.channels_last:
            self.unet = self.unet.to(memory_format=torch.channels_last)
            if self.vae is not None:
                self.vae = self.vae.to(memory_format=torch.channels_last)
        self.attention = attention_name(device)
        if self.attention == XFORMERS_ATTENTION:
            self.unet.enable_xformers_memory_efficient_attention()
            logger.info("torch backend: xformers attention enabled")
        elif self.attention == SHORT_SEQUENCE_ATTENTION:
            from histoaug.kernels.attention import use_short_sequence_attention

            use_short_sequence_attention(self.unet)
            if self.vae is not None:
                use_short_sequence_attention(self.vae)
        self.compiled = bool(compile)
        self.graphs = bool(graphs)
        self.fused_norms = False
        self._captured: dict[tuple[int, ...], _CapturedUNet] = {}
        self._graph_pool = None
        self._model_id = model_id or str(root)
        channels = int(self.unet.config.in_channels)
        size = int(self.unet.config.sample_size)
        self._latent_shape = latent_shape or (channels, size, size)
        self._text_shape = text_shape
        self._compiled_unets: dict[tuple[str, tuple[tuple[int, ...], ...]], Callable] = {}
        self._deep_cache = None

    def use_fused_norms(self) -> dict[str, int]:
        """Swap the UNet's and VAE's GroupNorm(+SiLU) modules for ``histoaug.kernels``' fused op (Triton on
        CUDA, the torch reference elsewhere), before any compile or capture. Opt-in, not a default: the
        device check times it against the plain modules first (docs/gpu.md, "Triton kernels")."""
        if self._captured or self._compiled_unets:
            raise InvalidArgumentError("use_fused_norms() must come before prepare() (graphs, compiles)")
        from histoaug.kernels.diffusers_fusion import fuse_group_norms

        counts = fuse_group_norms(self.unet)
        if self.vae is not None:
            for name, count in fuse_group_norms(self.vae).items():
                counts[name] = counts.get(name, 0) + count
        self.fused_norms = True
        return counts

    @property
    def runtime_id(self) -> dict[str, str]:
        info = {"backend": self.name, "device": device_description(self.device), "dtype": self.dtype,
                "attention": self.attention, "channels_last": str(self.channels_last),
                "compile": "aotinductor" if self.compiled else "eager",
                "libraries": library_versions("torch", "diffusers")}
        if self.fused_norms:  # only when asked: other ids stay as they were
            from histoaug.kernels.dispatch import kernels_runtime_id

            info["norms"] = "fused: " + kernels_runtime_id(self.device)["kernels"]
        if self.device.type == "cuda":  # CPU ids stay as they were (resume fingerprints, pool keys)
            info.update(cuda_numerics())
            info["graphs"] = "cuda graphs" if self.graphs else "off"
            info["vae_dtype"] = "fp32 (force_upcast)" if self.vae_upcast else self.dtype
        return info

    def _prepare(self, x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        x = x.to(device=self.device, dtype=dtype or self.torch_dtype)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.ndim == 4 else x

    def _unet_inputs(self, latents: torch.Tensor, timesteps: torch.Tensor, embeddings: torch.Tensor):
        return (self._prepare(latents), timesteps.to(device=self.device, dtype=torch.float32).contiguous(),
                embeddings.to(device=self.device, dtype=self.torch_dtype).contiguous())

    def prepare(self, batch_sizes: Sequence[int]) -> None:
        """Compile (or load from the compile cache) or capture the UNet for these UNet batch sizes now."""
        if not (self.compiled or self.graphs):
            return
        if self._text_shape is None:
            raise InvalidArgumentError("torch backend: prepare() needs the prompt embedding shape (text_shape)")
        for batch in sorted(set(int(b) for b in batch_sizes)):
            sample, text = (batch, *self._latent_shape), (batch, *self._text_shape)
            if (self.graphs and sample + text in self._captured) or \
                    (not self.graphs and ("unet", (sample, (batch,), text)) in self._compiled_unets):
                continue  # generate() prepares on every call: no input tensors for shapes already built
            inputs = self._unet_inputs(torch.zeros(sample), torch.full((batch,), 999.0), torch.zeros(text))
            if self.graphs:
                self._captured_unet(inputs)
            else:
                self._compiled_unet(inputs)

    @torch.inference_mode()
    def _captured_unet(self, inputs: tuple[torch.Tensor, ...]) -> _CapturedUNet:
        """The CUDA graph for these input shapes, captured on first use (documented recipe: warm-up
        on a side stream, then ``torch.cuda.graph`` capture; static buffers reused by every replay)."""
        key = tuple(inputs[0].shape) + tuple(inputs[2].shape)
        captured = self._captured.get(key)
        if captured is not None:
            return captured
        with torch.cuda.device(self.device), _pinned_cudnn():
            static = tuple(torch.empty_like(t) for t in inputs)  # keeps channels-last strides
            for buffer, value in zip(static, inputs, strict=True):
                buffer.copy_(value)
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(3):  # allocator, cuBLAS/cuDNN handles and workspaces before the capture
                    self.unet(*static, return_dict=False)
            torch.cuda.current_stream(self.device).wait_stream(side)
            if self._graph_pool is None:
                self._graph_pool = torch.cuda.graph_pool_handle()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._graph_pool):
                output = self.unet(*static, return_dict=False)[0]
            logger.info("torch backend: captured the UNet into a CUDA graph for input %s", tuple(inputs[0].shape))
        captured = _CapturedUNet(*static, graph=graph, output=output)
        self._captured[key] = captured
        return captured

    def _replay(self, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Copy ``inputs`` into the graph's static buffers, replay, copy the output out (graphs of other
        shapes share the memory pool, so the static output is only valid until the next replay)."""
        captured = self._captured_unet(inputs)
        captured.sample.copy_(inputs[0])
        captured.timestep.copy_(inputs[1])
        captured.text.copy_(inputs[2])
        captured.graph.replay()
        return captured.output.float().contiguous() if captured.output.dtype != torch.float32 \
            else captured.output.clone()

    def _graph(self, name: str) -> torch.nn.Module:
        """The module traced for graph ``name``: the plain UNet call, or a deep-cache pass."""
        if name == "unet":
            return _UNetCall(self.unet)
        from histoaug.synthesis.deep_cache import FullPass, ShallowPass

        return FullPass(self.deep_cache) if name == "deep-cache-full" else ShallowPass(self.deep_cache)

    @property
    def deep_cache(self):
        """The UNet's full / shallow passes for DeepCache-style reuse (fast mode)."""
        if self._deep_cache is None:
            from histoaug.synthesis.deep_cache import DeepCacheUNet

            self._deep_cache = DeepCacheUNet(self.unet)
        return self._deep_cache

    def _compiled_unet(self, inputs: tuple[torch.Tensor, ...], graph: str = "unet") -> Callable:
        shapes = tuple(tuple(t.shape) for t in inputs)
        runner = self._compiled_unets.get((graph, shapes))
        if runner is None:
            from histoaug.synthesis import compile_cache

            key = unet_package_key(self._model_id, self.dtype, shapes, self.device, self.attention,
                                   self.channels_last, graph)
            try:
                runner = compile_cache.load_or_compile(self._graph(graph), inputs, key)
            except InvalidArgumentError:
                raise
            except Exception as exc:  # Inductor, the C++ toolchain or export: one line, not a build log
                first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise InvalidArgumentError(f"torch.compile cannot compile this model here ({first_line[:300]}); "
                                           "run without compile") from exc
            self._compiled_unets[(graph, shapes)] = runner
        return runner

    @torch.inference_mode()
    def predict_noise(self, latents: torch.Tensor, timesteps: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        inputs = self._unet_inputs(latents, timesteps, embeddings)
        if self.graphs:
            return self._replay(inputs)
        with self._numerics():
            if not self.compiled:
                return self.unet(*inputs, return_dict=False)[0].float().contiguous()
            return self._compiled_unet(inputs)(*inputs).float().contiguous()

    def _numerics(self) -> contextlib.AbstractContextManager:
        return _pinned_cudnn() if self.device.type == "cuda" else contextlib.nullcontext()

    @torch.inference_mode()
    def predict_noise_full(self, latents: torch.Tensor, timesteps: torch.Tensor,
                           embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Deep cache: the whole UNet, returning (eps, the deep feature to reuse at the next steps)."""
        inputs = self._unet_inputs(latents, timesteps, embeddings)
        run = self._compiled_unet(inputs, "deep-cache-full") if self.compiled else self.deep_cache.full
        with self._numerics():
            eps, feature = run(*inputs)
        return eps.float().contiguous(), feature

    @torch.inference_mode()
    def predict_noise_shallow(self, latents: torch.Tensor, timesteps: torch.Tensor, embeddings: torch.Tensor,
                              feature: torch.Tensor) -> torch.Tensor:
        """Deep cache: the shallow branch only, on a deep ``feature`` kept from an earlier step."""
        inputs = (*self._unet_inputs(latents, timesteps, embeddings), feature.contiguous())
        run = self._compiled_unet(inputs, "deep-cache-shallow") if self.compiled else self.deep_cache.shallow
        with self._numerics():
            return run(*inputs).float().contiguous()

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        if self.vae is None:
            raise InvalidArgumentError("this torch backend was built without a VAE (UNet-only benchmark)")
        with self._numerics():
            return self.vae.decode(self._prepare(latents, self.vae_dtype), return_dict=False)[0].float().contiguous()

    def close(self) -> None:
        """Drop the compiled UNets, the captured graphs and the networks (idempotent)."""
        self._compiled_unets.clear()
        self._captured.clear()
        self._graph_pool = None
        self.unet = self.vae = self._deep_cache = None


XFORMERS_ATTENTION = "xformers"
SHORT_SEQUENCE_ATTENTION = "histoaug short-sequence (sdpa where unsupported)"


def attention_name(device: torch.device) -> str:
    """The attention the backend installs on ``device`` (part of its runtime id and compile key)."""
    if device.type == "cuda" and importlib.util.find_spec("xformers") is not None:
        return XFORMERS_ATTENTION
    return SHORT_SEQUENCE_ATTENTION if device.type == "cpu" else "sdpa"


def unet_package_key(model_id: str, dtype: str, shapes: tuple[tuple[int, ...], ...], device: torch.device,
                     attention: str, channels_last: bool, graph: str = "unet") -> str:
    """The compile-cache key of one compiled UNet graph (``histoaug.synthesis.compile_cache``)."""
    from histoaug.synthesis import compile_cache

    names = ("sample", "timestep", "text", "feature")
    return compile_cache.package_key(model_id, dtype, dict(zip(names, shapes, strict=False)), device,
                                     {"attention": attention, "graph": graph, "channels_last": str(channels_last)})


def compiled_unet_cached(model: ModelFiles, device: torch.device, dtype: str, unet_batch: int) -> bool:
    """Whether the compile cache holds the plain UNet graph of ``model`` for this UNet batch, as a
    TorchBackend built by ``auto`` would compile it (loading it costs ~1 s instead of a compile)."""
    from histoaug.synthesis import compile_cache

    latent = (unet_batch, model.latent_channels, model.latent_size, model.latent_size)
    shapes = (latent, (unet_batch,), (unet_batch, *model.embeddings.cond.shape[1:]))
    key = unet_package_key(model.model_id, dtype, shapes, device, attention_name(device),
                           channels_last=dtype != "fp32")
    return compile_cache.package_path(key).is_file()


def _to(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """``module`` on ``device`` in ``dtype``, cast only where it is not already (diffusers warns on every cast)."""
    module = module.to(device=device)
    return module if next(module.parameters()).dtype == dtype else module.to(dtype=dtype)


def _load_modules(root: Path | None, dtype: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    if root is None:
        raise InvalidArgumentError("torch backend needs a model dir or modules")
    cast = {} if dtype == "fp32" else {"torch_dtype": DTYPES[dtype]}
    try:
        unet = UNet2DConditionModel.from_pretrained(root, subfolder="unet", use_safetensors=True, **cast)
        upcast = vae_upcast(AutoencoderKL.load_config(root, subfolder="vae"), dtype)
        vae = AutoencoderKL.from_pretrained(root, subfolder="vae", use_safetensors=True, **({} if upcast else cast))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{root}: cannot load unet/vae weights ({exc})") from exc
    return unet, vae


def cuda_numerics() -> dict[str, str]:
    """The process-wide CUDA flags that change a result's rounding (TF32 for matmuls and convolutions, through
    the legacy ``allow_tf32`` flags or the newer ``fp32_precision`` ones; fp32 matmul precision; reduced-precision
    reductions; cuDNN deterministic) and the cuDNN benchmark flag as the user left it (pinned off in calls)."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    flags = {"tf32_matmul": lambda: bool(matmul.allow_tf32), "tf32_cudnn": lambda: bool(cudnn.allow_tf32),
             "matmul_fp32_precision": lambda: matmul.fp32_precision,
             "cudnn_conv_fp32_precision": lambda: cudnn.conv.fp32_precision,
             "float32_matmul_precision": torch.get_float32_matmul_precision,
             "fp16_reduced_reduction": lambda: bool(matmul.allow_fp16_reduced_precision_reduction),
             "bf16_reduced_reduction": lambda: bool(matmul.allow_bf16_reduced_precision_reduction),
             "cudnn_deterministic": lambda: bool(cudnn.deterministic)}
    info = {name: _read_flag(read) for name, read in flags.items()}
    info["cudnn_benchmark"] = "off (pinned by histoaug)"
    return info


def _read_flag(read: Callable[[], object]) -> str:
    """A flag's value as text; torch raises on the legacy TF32 getters once both of its APIs were used."""
    try:
        return str(read())
    except (AttributeError, RuntimeError) as exc:
        return f"unreadable ({type(exc).__name__})"


@contextlib.contextmanager
def _pinned_cudnn() -> Iterator[None]:
    """cuDNN benchmark off for the call (autotuning may pick other kernels on another run); nothing else is
    touched, so the user's TF32 settings stay as ``runtime_id`` records them."""
    previous = torch.backends.cudnn.benchmark
    if previous:
        torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        if previous:
            torch.backends.cudnn.benchmark = previous


def compile_unavailable_reason(device: torch.device) -> str | None:
    """None when Inductor can build kernels for ``device``, else why not.

    Probed once per process and compiler setting (``auto`` asks on every load), the answer cached.
    """
    import os

    from torch._inductor import config as inductor_config

    return _compile_probe(device.type, str(inductor_config.cpp.cxx), os.environ.get("CXX"))


@functools.cache
def _compile_probe(device_type: str, configured_cxx: str, env_cxx: str | None) -> str | None:
    if device_type == "cpu":
        from torch._inductor import cpp_builder

        try:  # the same search Inductor itself makes (torch._inductor.config.cpp.cxx, $CXX)
            cpp_builder.get_cpp_compiler()
        except Exception as exc:  # InvalidCxxCompiler and whatever the probe raises
            return f"Inductor finds no working C++ compiler ({exc}); install g++ or set $CXX"
        return None
    if device_type == "cuda" and importlib.util.find_spec("triton") is None:
        return "Inductor needs triton on CUDA"
    return None
