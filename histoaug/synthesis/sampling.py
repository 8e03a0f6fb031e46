"""The denoising loop every backend shares: scheduler steps, batched CFG, VAE decode, uint8.

Backends only provide two tensor functions (UNet noise prediction and VAE decoding); the
loop, the schedulers (diffusers) and the guidance arithmetic are the same for all of them, so
backends differ only in how fast (and how exactly) they evaluate the networks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from histoaug.errors import ArtifactError, InvalidArgumentError
from histoaug.synthesis.defaults import (
    DEFAULT_GUIDANCE,
    DEFAULT_GUIDANCE_RESCALE,
    DEFAULT_SCHEDULER,
    DEFAULT_STEPS,
    check_guidance_rescale,
)
from histoaug.synthesis.postprocess import PATCH_SIZE, to_uint8_patches
from histoaug.synthesis.schedulers import SCHEDULER_NAMES, make_scheduler


class Backend(Protocol):
    """What the sampling loop needs from a runtime, and its lifecycle (prepare -> calls -> close)."""

    name: str
    device: torch.device
    dtype: str

    def prepare(self, batch_sizes: Sequence[int]) -> None:
        """Do all compilation / graph capture / engine building for these (UNet) batch sizes now,
        outside any timing. Idempotent; generate() calls it lazily for shapes not prepared yet."""
        ...

    def close(self) -> None:
        """Release sessions / engines / graphs / compiled code. Idempotent."""
        ...

    @property
    def runtime_id(self) -> dict[str, str]:
        """Everything besides (model, prompt, seed, sampler settings) that decides the rounding:
        backend, device (type + name), dtype, attention implementation, compile / graph mode and
        the runtime library versions. ``Synthesizer.runtime_id`` serialises it (sorted JSON)."""
        ...

    def predict_noise(self, latents: torch.Tensor, timesteps: torch.Tensor,
                      embeddings: torch.Tensor) -> torch.Tensor:
        """UNet epsilon for (B, C, h, w) float32 latents, (B,) float32 timesteps, (B, L, D) embeddings."""
        ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """VAE decoder: already-unscaled latents -> images in [-1, 1], (B, 3, H, W) float32."""
        ...


@dataclass(frozen=True)
class SamplerSettings:
    """Sampler settings; with the model, prompt and seed they decide a sample.

    Fast mode, approximations chosen knowingly (defaults: exact):
    ``guidance_until``: classifier-free guidance runs over the first ``guidance_until`` fraction of
    the steps only; the later, low-noise steps use the cond prediction alone, at half the UNet batch.
    ``deep_cache``: the whole UNet runs every ``deep_cache`` steps only; the steps in between reuse
    its deep feature and run the shallow branch (``histoaug.synthesis.deep_cache``; torch backend).

    ``guidance_rescale`` (not an approximation, a different sampler): see :func:`guided_noise`.
    """

    steps: int = DEFAULT_STEPS
    guidance: float = DEFAULT_GUIDANCE
    scheduler: str = DEFAULT_SCHEDULER
    guidance_until: float = 1.0
    deep_cache: int = 1
    guidance_rescale: float = DEFAULT_GUIDANCE_RESCALE

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or self.steps <= 0:
            raise InvalidArgumentError(f"steps must be a positive integer, got {self.steps!r}")
        if not np.isfinite(self.guidance) or self.guidance < 1.0:
            raise InvalidArgumentError(f"guidance must be a finite number >= 1, got {self.guidance!r}")
        if not 0.0 < self.guidance_until <= 1.0:
            raise InvalidArgumentError(f"guidance_until must be in (0, 1], got {self.guidance_until!r}")
        check_guidance_rescale(self.guidance_rescale)
        if not isinstance(self.deep_cache, int) or self.deep_cache < 1:
            raise InvalidArgumentError(f"deep_cache must be a positive integer (1 = off), got {self.deep_cache!r}")
        if self.scheduler not in SCHEDULER_NAMES:
            raise InvalidArgumentError(
                f"unknown scheduler {self.scheduler!r}; choose one of {', '.join(SCHEDULER_NAMES)}")

    @property
    def uses_guidance(self) -> bool:
        return self.guidance > 1.0

    @property
    def guided_steps(self) -> int:
        """How many of the first steps run CFG (all of them unless ``guidance_until`` < 1)."""
        if not self.uses_guidance:
            return 0
        return max(1, round(self.steps * self.guidance_until))

    def unet_batch_factors(self) -> set[int]:
        """UNet batch / patch batch over the run: 2 for guided steps, 1 for unguided ones."""
        return {2 if step < self.guided_steps else 1 for step in range(self.steps)}


def guided_noise(uncond: torch.Tensor, cond: torch.Tensor, guidance: float, rescale: float = 0.0) -> torch.Tensor:
    """Classifier-free guidance, then (``rescale`` > 0) diffusers' ``rescale_noise_cfg``: each sample's
    guided prediction is scaled back to the cond prediction's standard deviation by the fraction
    ``rescale``. A high guidance inflates that deviation, which shows as over-saturated stain (in
    histoaug's stain-texture features: a larger Frechet distance, measured in the model card); the
    rescale keeps the label signal of the high guidance with the cond prediction's scale. Shared by
    the sampler and ``histoaug distill``'s teacher, so a student learns the teacher's own sampler."""
    guided = uncond + guidance * (cond - uncond)
    if rescale == 0.0:
        return guided
    # diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion.rescale_noise_cfg, written out: importing
    # that module pulls in transformers (seconds, and warnings) on paths that need neither; a test checks the two
    # agree
    dims = list(range(1, guided.ndim))
    rescaled = guided * (cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True))
    return rescale * rescaled + (1 - rescale) * guided


def denoise(backend: Backend, scheduler_config: dict[str, Any], noise: torch.Tensor, cond: torch.Tensor,
            uncond: torch.Tensor, settings: SamplerSettings,
            step_generators: list[torch.Generator] | None = None) -> torch.Tensor:
    """Run the scheduler from ``noise`` (float32, on the backend's device) to clean latents.

    Cond and uncond go through the UNet as one batch ``[uncond; cond]`` (as diffusers does);
    guidance 1 runs the cond half only, and so do the steps after ``settings.guided_steps``.
    ``step_generators`` (one per sample, :func:`histoaug.synthesis.noise.step_noise_generators`)
    feed the noise LCM injects between its steps; a stochastic sampler without them is refused,
    since a shared stream would make a sample depend on its batch.
    """
    scheduler = make_scheduler(settings.scheduler, scheduler_config)
    stochastic = settings.scheduler == "lcm"
    if stochastic and (step_generators is None or len(step_generators) != noise.shape[0]):
        raise InvalidArgumentError("the lcm sampler needs one step-noise generator per sample")
    try:
        scheduler.set_timesteps(settings.steps, device=noise.device)
    except ValueError as exc:  # LCM: more steps than its original (distillation) grid
        raise InvalidArgumentError(f"{settings.scheduler} cannot run {settings.steps} steps ({exc})") from exc
    latents = noise * scheduler.init_noise_sigma
    n = latents.shape[0]
    guided_embeddings = torch.cat([uncond.expand(n, -1, -1), cond]) if settings.uses_guidance else cond
    if settings.deep_cache > 1 and not hasattr(backend, "predict_noise_shallow"):
        raise InvalidArgumentError(f"deep_cache runs on the torch backend, not {backend.name!r}")
    feature = None
    for step, t in enumerate(scheduler.timesteps):
        guided = step < settings.guided_steps
        embeddings = guided_embeddings if guided else cond
        model_input = torch.cat([latents, latents]) if guided else latents
        model_input = scheduler.scale_model_input(model_input, t)
        timesteps = t.to(torch.float32).expand(model_input.shape[0])
        if settings.deep_cache == 1:
            eps = backend.predict_noise(model_input, timesteps, embeddings)
        elif step % settings.deep_cache:  # reuse: the cond half of a guided step's feature when guidance stopped
            eps = backend.predict_noise_shallow(model_input, timesteps, embeddings,
                                                feature[-model_input.shape[0]:])
        else:
            eps, feature = backend.predict_noise_full(model_input, timesteps, embeddings)
        if guided:
            eps_uncond, eps_cond = eps.chunk(2)
            eps = guided_noise(eps_uncond, eps_cond, settings.guidance, settings.guidance_rescale)
        if stochastic:
            latents = scheduler.step(eps, t, latents, generator=step_generators, return_dict=False)[0]
        else:
            latents = scheduler.step(eps, t, latents, return_dict=False)[0]
    return latents


def sample_patches(backend: Backend, scheduler_config: dict[str, Any], noise: torch.Tensor,
                   cond: torch.Tensor, uncond: torch.Tensor, settings: SamplerSettings,
                   scaling_factor: float, size: int = PATCH_SIZE,
                   step_generators: list[torch.Generator] | None = None) -> np.ndarray:
    """One batch: noise -> latents -> decoded images -> uint8 (N, size, size, 3)."""
    latents = denoise(backend, scheduler_config, noise, cond, uncond, settings, step_generators)
    images = backend.decode(latents / scaling_factor)
    if not torch.isfinite(images).all():
        raise ArtifactError(f"the model produced NaN/Inf images on the {backend.name} backend ({backend.dtype}); "
                            "its weights may be corrupt or the dtype too narrow")
    return to_uint8_patches(images, size)
