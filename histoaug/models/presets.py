"""Named model sizes, kept as data: one diffusers-style JSON config per preset in ``preset_configs/``.

Each file holds only the choices that make a preset (sizes, block types, depths), under the
names of the diffusers / transformers config fields they set (``AutoencoderKL``,
``UNet2DConditionModel``, ``CLIPTextConfig``); :mod:`histoaug.models.builder` derives the rest
(latent size, cross-attention width, token ids). Add a preset by adding a file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from histoaug.errors import InvalidArgumentError

LATENT_CHANNELS = 4
MAX_TEXT_LENGTH = 77


@dataclass(frozen=True)
class PipelinePreset:
    """An SD 1.x-style pipeline's shape: VAE, cross-attention UNet, CLIP text encoder.

    ``image_size`` is the model's native resolution; the VAE downsamples by
    ``2 ** (len(vae["block_out_channels"]) - 1)``; the UNet works on latents of ``latent_size``.
    """

    name: str
    image_size: int
    vae: dict[str, Any]
    unet: dict[str, Any]
    text_encoder: dict[str, Any]
    description: str = ""
    latent_channels: int = LATENT_CHANNELS
    max_text_length: int = MAX_TEXT_LENGTH

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae["block_out_channels"]) - 1)

    @property
    def latent_size(self) -> int:
        return self.image_size // self.vae_scale_factor


def _load_presets() -> dict[str, PipelinePreset]:
    presets = {}
    for entry in sorted(resources.files("histoaug.models").joinpath("preset_configs").iterdir(),
                        key=lambda e: e.name):
        if entry.name.endswith(".json"):
            name = entry.name.removesuffix(".json")
            presets[name] = PipelinePreset(name=name, **json.loads(entry.read_text()))
    return presets


PRESETS: dict[str, PipelinePreset] = _load_presets()


def get_preset(name: str) -> PipelinePreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise InvalidArgumentError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}") from None
