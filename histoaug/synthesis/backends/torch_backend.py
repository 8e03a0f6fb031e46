"""torch backend: the diffusers UNet and VAE in eager PyTorch (CPU or CUDA, SDPA attention).

Weights are cast to the requested dtype (bf16 uses the AVX-512-bf16/AMX matmuls of recent
CPUs; fp16 is for CUDA); inputs and outputs of the two calls stay float32 so the scheduler
math is identical across backends. xformers attention is enabled on CUDA when installed.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import torch

from histoaug.errors import ArtifactError, InvalidArgumentError

logger = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class TorchBackend:
    name = "torch"

    def __init__(self, root: Path, device: torch.device, dtype: str = "fp32", *,
                 channels_last: bool | None = None) -> None:
        from diffusers import AutoencoderKL, UNet2DConditionModel

        if dtype not in DTYPES:
            raise InvalidArgumentError(f"torch backend dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        if dtype == "fp16" and device.type == "cpu":
            raise InvalidArgumentError("fp16 on the CPU is slow and inexact in torch; use bf16 or fp32")
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

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(device=self.device, dtype=self.torch_dtype)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.ndim == 4 else x

    @torch.inference_mode()
    def predict_noise(self, latents: torch.Tensor, timesteps: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        out = self.unet(self._prepare(latents), timesteps.to(self.device),
                        embeddings.to(device=self.device, dtype=self.torch_dtype), return_dict=False)[0]
        return out.float().contiguous()

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(self._prepare(latents), return_dict=False)[0].float().contiguous()
