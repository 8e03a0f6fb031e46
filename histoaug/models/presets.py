"""Named model sizes as dataclass configs: what each component of a built pipeline looks like."""

from __future__ import annotations

from dataclasses import dataclass

from histoaug.errors import InvalidArgumentError


@dataclass(frozen=True)
class PipelinePreset:
    """Sizes of an SD 1.x-style pipeline (VAE, cross-attention UNet, CLIP text encoder).

    ``image_size`` is the model's native resolution; the VAE downsamples by
    ``2 ** (len(vae_channels) - 1)``; the UNet works on latents of ``latent_size``.
    """

    name: str
    image_size: int
    vae_channels: tuple[int, ...]
    vae_layers_per_block: int
    unet_channels: tuple[int, ...]
    unet_down_blocks: tuple[str, ...]
    unet_up_blocks: tuple[str, ...]
    unet_layers_per_block: int
    unet_attention_heads: int
    norm_num_groups: int
    text_hidden_size: int
    text_layers: int
    text_heads: int
    text_intermediate_size: int
    max_text_length: int = 77
    latent_channels: int = 4
    vae_norm_groups: int | None = None  # default: norm_num_groups

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae_channels) - 1)

    @property
    def latent_size(self) -> int:
        return self.image_size // self.vae_scale_factor


# Test-sized: a 32x32 model (latent 16x16) that samples a batch in well under a second on CPU.
TINY = PipelinePreset(
    name="tiny",
    image_size=32,
    vae_channels=(16, 32),
    vae_layers_per_block=1,
    unet_channels=(32, 64),
    unet_down_blocks=("CrossAttnDownBlock2D", "DownBlock2D"),
    unet_up_blocks=("UpBlock2D", "CrossAttnUpBlock2D"),
    unet_layers_per_block=1,
    unet_attention_heads=2,
    norm_num_groups=16,
    text_hidden_size=32,
    text_layers=2,
    text_heads=2,
    text_intermediate_size=64,
)

# CPU-sized: native 96x96 (PCam's size), latent 4x24x24, a UNet of a few M parameters with
# cross-attention at 24x24 and 12x12 and in the mid block. Used for the CPU benchmarks as a
# stand-in of the embedded default model's size.
SMALL = PipelinePreset(
    name="small",
    image_size=96,
    vae_channels=(32, 64, 64),
    vae_layers_per_block=1,
    unet_channels=(64, 128, 128),
    unet_down_blocks=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    unet_up_blocks=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    unet_layers_per_block=1,
    unet_attention_heads=4,
    norm_num_groups=32,
    text_hidden_size=128,
    text_layers=2,
    text_heads=4,
    text_intermediate_size=256,
)

# The embedded default model's architecture (see histoaug/default_model/MODEL_CARD.md for the
# measured cost/quality comparison that chose it): VAE downsampling 8x to a 4x12x12 latent with a
# thin full-resolution decoder; a two-level UNet (32, 64 channels) with cross-attention at 6x6 and
# in the mid block only -- self-attention over the 144 tokens at 12x12 cost 60% of the UNet's CPU
# time. ~1.2 M UNet and ~1 M VAE parameters.
HISTO96 = PipelinePreset(
    name="histo96",
    image_size=96,
    vae_channels=(16, 32, 64, 64),
    vae_layers_per_block=1,
    vae_norm_groups=8,
    latent_channels=4,
    unet_channels=(32, 64),
    unet_down_blocks=("DownBlock2D", "CrossAttnDownBlock2D"),
    unet_up_blocks=("CrossAttnUpBlock2D", "UpBlock2D"),
    unet_layers_per_block=1,
    unet_attention_heads=2,
    norm_num_groups=16,
    text_hidden_size=64,
    text_layers=2,
    text_heads=2,
    text_intermediate_size=128,
)

PRESETS: dict[str, PipelinePreset] = {p.name: p for p in (TINY, SMALL, HISTO96)}


def get_preset(name: str) -> PipelinePreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise InvalidArgumentError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}") from None
