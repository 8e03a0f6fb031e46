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
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from collections.abc import Callable, Sequence
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


class TorchBackend:
    name = "torch"

    def __init__(self, root: Path, device: torch.device, dtype: str = "fp32", *,
                 channels_last: bool | None = None, compile: bool = False, model_id: str | None = None,
                 latent_shape: tuple[int, int, int] | None = None, text_shape: tuple[int, int] | None = None) -> None:
        from diffusers import AutoencoderKL, UNet2DConditionModel

        if dtype not in DTYPES:
            raise InvalidArgumentError(f"torch backend dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        if dtype == "fp16" and device.type == "cpu":
            raise InvalidArgumentError("fp16 on the CPU is slow and inexact in torch; use bf16 or fp32")
        if compile and (reason := compile_unavailable_reason(device)) is not None:
            raise InvalidArgumentError(f"torch backend cannot compile here: {reason}")
        self.device, self.dtype, self.torch_dtype = device, dtype, DTYPES[dtype]
        try:
            cast = {} if dtype == "fp32" else {"torch_dtype": self.torch_dtype}
            self.unet = UNet2DConditionModel.from_pretrained(root, subfolder="unet", use_safetensors=True, **cast)
            vae = AutoencoderKL.from_pretrained(root, subfolder="vae", use_safetensors=True, **cast)
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{root}: cannot load unet/vae weights ({exc})") from exc
        self.unet = self.unet.to(device=device).eval().requires_grad_(False)
        self.vae = vae.to(device=device).eval().requires_grad_(False)
        # channels-last lets oneDNN run bf16 convolutions without layout reorders; neutral for fp32
        self.channels_last = dtype != "fp32" if channels_last is None else channels_last
        if self.channels_last:
            self.unet = self.unet.to(memory_format=torch.channels_last)
            self.vae = self.vae.to(memory_format=torch.channels_last)
        self.attention = attention_name(device)
        if self.attention == XFORMERS_ATTENTION:
            self.unet.enable_xformers_memory_efficient_attention()
            logger.info("torch backend: xformers attention enabled")
        elif self.attention == SHORT_SEQUENCE_ATTENTION:
            from histoaug.kernels.attention import use_short_sequence_attention

            use_short_sequence_attention(self.unet)
            use_short_sequence_attention(self.vae)
        self.compiled = bool(compile)
        self._model_id = model_id or str(root)
        channels = int(self.unet.config.in_channels)
        size = int(self.unet.config.sample_size)
        self._latent_shape = latent_shape or (channels, size, size)
        self._text_shape = text_shape
        self._compiled_unets: dict[tuple[str, tuple[tuple[int, ...], ...]], Callable] = {}
        self._deep_cache = None

    @property
    def runtime_id(self) -> dict[str, str]:
        return {"backend": self.name, "device": device_description(self.device), "dtype": self.dtype,
                "attention": self.attention, "channels_last": str(self.channels_last),
                "compile": "aotinductor" if self.compiled else "eager",
                "libraries": library_versions("torch", "diffusers")}

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(device=self.device, dtype=self.torch_dtype)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.ndim == 4 else x

    def _unet_inputs(self, latents: torch.Tensor, timesteps: torch.Tensor, embeddings: torch.Tensor):
        return (self._prepare(latents), timesteps.to(device=self.device, dtype=torch.float32).contiguous(),
                embeddings.to(device=self.device, dtype=self.torch_dtype).contiguous())

    def prepare(self, batch_sizes: Sequence[int]) -> None:
        """Compile (or load from the compile cache) the UNet for these UNet batch sizes now."""
        if not self.compiled:
            return
        if self._text_shape is None:
            raise InvalidArgumentError("torch backend: prepare() needs the prompt embedding shape (text_shape)")
        for batch in sorted(set(int(b) for b in batch_sizes)):
            inputs = self._unet_inputs(torch.zeros(batch, *self._latent_shape), torch.full((batch,), 999.0),
                                       torch.zeros(batch, *self._text_shape))
            self._compiled_unet(inputs)

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
        if not self.compiled:
            return self.unet(*inputs, return_dict=False)[0].float().contiguous()
        return self._compiled_unet(inputs)(*inputs).float().contiguous()

    @torch.inference_mode()
    def predict_noise_full(self, latents: torch.Tensor, timesteps: torch.Tensor,
                           embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Deep cache: the whole UNet, returning (eps, the deep feature to reuse at the next steps)."""
        inputs = self._unet_inputs(latents, timesteps, embeddings)
        run = self._compiled_unet(inputs, "deep-cache-full") if self.compiled else self.deep_cache.full
        eps, feature = run(*inputs)
        return eps.float().contiguous(), feature

    @torch.inference_mode()
    def predict_noise_shallow(self, latents: torch.Tensor, timesteps: torch.Tensor, embeddings: torch.Tensor,
                              feature: torch.Tensor) -> torch.Tensor:
        """Deep cache: the shallow branch only, on a deep ``feature`` kept from an earlier step."""
        inputs = (*self._unet_inputs(latents, timesteps, embeddings), feature.contiguous())
        run = self._compiled_unet(inputs, "deep-cache-shallow") if self.compiled else self.deep_cache.shallow
        return run(*inputs).float().contiguous()

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(self._prepare(latents), return_dict=False)[0].float().contiguous()

    def close(self) -> None:
        """Drop the compiled UNets and the networks (idempotent)."""
        self._compiled_unets.clear()
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
