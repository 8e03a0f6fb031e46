"""Build a real diffusers ``StableDiffusionPipeline`` from a preset, with seeded random weights.

Everything comes from configs in code: the VAE, the cross-attention UNet, the CLIP text encoder,
the tokenizer (see :mod:`histoaug.models.tokenizer`) and a DPM-Solver++ scheduler with SD 1.x's
noise schedule. Nothing is downloaded, so tests and benchmarks run offline.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from histoaug.errors import OutputExistsError
from histoaug.models.presets import PipelinePreset, get_preset
from histoaug.models.tokenizer import build_tokenizer

logger = logging.getLogger(__name__)

# Stable Diffusion 1.x's training noise schedule.
SD1_SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "steps_offset": 1,
}


def build_scheduler() -> DPMSolverMultistepScheduler:
    return DPMSolverMultistepScheduler(**SD1_SCHEDULE, algorithm_type="dpmsolver++", solver_order=2)


def build_vae(preset: PipelinePreset) -> AutoencoderKL:
    levels = len(preset.vae["block_out_channels"])
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * levels,
                         up_block_types=("UpDecoderBlock2D",) * levels, latent_channels=preset.latent_channels,
                         sample_size=preset.image_size, **preset.vae)


def build_unet(preset: PipelinePreset) -> UNet2DConditionModel:
    # SD 1.x quirk kept by the configs: ``attention_head_dim`` is the head count
    return UNet2DConditionModel(sample_size=preset.latent_size, in_channels=preset.latent_channels,
                                out_channels=preset.latent_channels,
                                cross_attention_dim=preset.text_encoder["hidden_size"], **preset.unet)


def build_text_encoder(preset: PipelinePreset, vocab_size: int) -> CLIPTextModel:
    config = CLIPTextConfig(vocab_size=vocab_size, max_position_embeddings=preset.max_text_length,
                            projection_dim=preset.text_encoder["hidden_size"], bos_token_id=vocab_size - 2,
                            eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1, **preset.text_encoder)
    return CLIPTextModel(config)


def build_pipeline(preset: str = "tiny", seed: int = 0) -> StableDiffusionPipeline:
    """A complete SD 1.x-style pipeline of the named preset; weights are a function of ``seed``."""
    spec = get_preset(preset)
    tokenizer = build_tokenizer(max_length=spec.max_text_length)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = build_vae(spec)
        unet = build_unet(spec)
        text_encoder = build_text_encoder(spec, vocab_size=len(tokenizer))
    pipe = StableDiffusionPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        unet=unet.eval(),
        scheduler=build_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    logger.debug("built %s pipeline (seed %d): unet %.2f M params", preset, seed,
                 sum(p.numel() for p in unet.parameters()) / 1e6)
    return pipe


def save_pipeline(pipe: StableDiffusionPipeline, directory: str | Path, *, overwrite: bool = False) -> Path:
    """Write a diffusers pipeline dir (safetensors weights only)."""
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()) and not overwrite:
        raise OutputExistsError(f"{directory} exists and is not empty; pass overwrite=True to replace it")
    pipe.save_pretrained(directory, safe_serialization=True)
    return directory
