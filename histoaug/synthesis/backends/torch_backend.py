"""torch backend: the diffusers UNet and VAE in PyTorch (CPU or CUDA), eager or compiled.

Weights are cast to the requested dtype (bf16 uses the AVX-512-bf16/AMX matmuls of recent
CPUs; fp16 is for CUDA); inputs and outputs of the two calls stay float32 so the scheduler
math is identical across backends. Attention: on the CPU the short-sequence kernel of
``histoaug.kernels.attention`` (faster than the fused SDPA kernel at these lengths), on CUDA
SDPA, or xformers when installed.

``compile=True`` runs the UNet through ``torch.compile`` (Inductor, weights frozen into the
graph): the UNet is evaluated 2 x steps times per batch, so fusing its norms, activations and
attention pays for the one-time compile (about 30 s on a 2-core CPU, once per batch shape; Inductor
caches the result on disk for later processes). The decoder runs once per batch and stays eager
(compiling it measured slower here). Inductor needs a C++ compiler on the CPU.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from pathlib import Path

import torch

from histoaug.dtypes import DTYPES
from histoaug.errors import ArtifactError, InvalidArgumentError

logger = logging.getLogger(__name__)


class TorchBackend:
    name = "torch"

    def __init__(self, root: Path, device: torch.device, dtype: str = "fp32", *,
                 channels_last: bool | None = None, compile: bool = False) -> None:
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
        if device.type == "cuda" and importlib.util.find_spec("xformers") is not None:
            self.unet.enable_xformers_memory_efficient_attention()
            logger.info("torch backend: xformers attention enabled")
        elif device.type == "cpu":
            from histoaug.kernels.attention import use_short_sequence_attention

            use_short_sequence_attention(self.unet)
            use_short_sequence_attention(self.vae)
        self.compiled = bool(compile)
        self._compiled_shapes: set[tuple[int, ...]] = set()
        if self.compiled:
            # freezing folds the (inference-only) weights into the graph, so Inductor can prepack them
            self.unet = torch.compile(self.unet, dynamic=False, options={"freezing": True})
            logger.info("torch backend: UNet compiled with Inductor on first use of each batch shape")

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(device=self.device, dtype=self.torch_dtype)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.ndim == 4 else x

    @torch.inference_mode()
    def predict_noise(self, latents: torch.Tensor, timesteps: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        inputs = (self._prepare(latents), timesteps.to(self.device),
                  embeddings.to(device=self.device, dtype=self.torch_dtype))
        if not self.compiled:
            return self.unet(*inputs, return_dict=False)[0].float().contiguous()
        shape = tuple(inputs[0].shape)
        if shape not in self._compiled_shapes:
            limit = torch._dynamo.config.recompile_limit
            if len(self._compiled_shapes) >= limit:
                logger.warning("torch backend: %d batch shapes compiled already; torch.compile's recompile limit "
                               "(%d) runs new shapes eagerly (slower, rounds differently). Use one batch size.",
                               len(self._compiled_shapes), limit)
            else:
                logger.info("torch backend: compiling the UNet for batch shape %s (once per shape)", shape)
        try:
            with warnings.catch_warnings():
                # tracing diffusers' cached torch-version checks warns once per check; they are constants
                warnings.filterwarnings("ignore", message="Dynamo detected a call to a `functools.lru_cache`")
                out = self.unet(*inputs, return_dict=False)[0]
        except (torch._dynamo.exc.BackendCompilerFailed, torch._inductor.exc.InductorError) as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InvalidArgumentError(f"torch.compile cannot compile this model here ({first_line}); "
                                       "run without compile") from exc
        self._compiled_shapes.add(shape)
        return out.float().contiguous()

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(self._prepare(latents), return_dict=False)[0].float().contiguous()


def compile_unavailable_reason(device: torch.device) -> str | None:
    """None when ``torch.compile`` (Inductor) can build kernels for ``device``, else why not."""
    if device.type == "cpu":
        from torch._inductor import cpp_builder

        try:  # the same search Inductor itself makes (torch._inductor.config.cpp.cxx, $CXX)
            cpp_builder.get_cpp_compiler()
        except Exception as exc:  # InvalidCxxCompiler and whatever the probe raises
            return f"Inductor finds no working C++ compiler ({exc}); install g++ or set $CXX"
        return None
    if device.type == "cuda" and importlib.util.find_spec("triton") is None:
        return "Inductor needs triton on CUDA"
    return None
