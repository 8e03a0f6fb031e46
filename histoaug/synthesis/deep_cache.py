"""DeepCache-style feature reuse for a diffusers UNet2DConditionModel (fast mode, approximate).

DeepCache (Ma et al., 2024) observes that the deep features of a UNet change slowly between
adjacent denoising steps. Every ``interval`` steps the whole UNet runs and the input of its last
up block (the deep branch, already upsampled) is kept; the steps in between run only the shallow
branch (``conv_in``, the first down block, the last up block and ``conv_out``) on top of the kept
feature. On the embedded model the shallow branch is the 12x12 level without attention.

The UNet's forward is re-stated here for the configurations histoaug builds (SD 1.x-style: no
class / addition embeddings, no adapters or ControlNet, no attention masks); ``supports`` says
which, and ``DeepCacheUNet.full`` equals ``unet(...)`` bit for bit (tested). diffusers itself has
no UNet support for this (its cache hooks target transformer blocks).
"""

from __future__ import annotations

import torch

from histoaug.errors import InvalidArgumentError


def unsupported_reason(unet: torch.nn.Module) -> str | None:
    """None when this UNet's forward is the one re-stated below, else why not."""
    config = unet.config
    checks = {
        "class embeddings": config.class_embed_type is not None or config.num_class_embeds is not None,
        "addition embeddings": config.addition_embed_type is not None,
        "an encoder hidden-state projection": unet.encoder_hid_proj is not None,
        "a time-embedding activation": unet.time_embed_act is not None,
        "centred inputs": bool(config.center_input_sample),
        "fewer than two resolution levels": len(unet.down_blocks) < 2,
    }
    found = [name for name, present in checks.items() if present]
    return f"deep cache does not support a UNet with {', '.join(found)}" if found else None


class DeepCacheUNet(torch.nn.Module):
    """``full`` (eps and the deep feature) and ``shallow`` (eps from a kept deep feature) passes."""

    def __init__(self, unet: torch.nn.Module) -> None:
        super().__init__()
        if (reason := unsupported_reason(unet)) is not None:
            raise InvalidArgumentError(reason)
        self.unet = unet

    def _embed(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return self.unet.time_embedding(self.unet.get_time_embed(sample=sample, timestep=timestep))

    @staticmethod
    def _block(block, sample, emb, encoder_hidden_states, **kwargs):
        if getattr(block, "has_cross_attention", False):
            return block(hidden_states=sample, temb=emb, encoder_hidden_states=encoder_hidden_states, **kwargs)
        return block(hidden_states=sample, temb=emb, **kwargs)

    def _upsample_size(self, sample: torch.Tensor, skips: tuple[torch.Tensor, ...]):
        factor = 2 ** self.unet.num_upsamplers
        return skips[-1].shape[2:] if any(dim % factor for dim in sample.shape[-2:]) else None

    def _out(self, sample: torch.Tensor) -> torch.Tensor:
        unet = self.unet
        if unet.conv_norm_out is not None:
            sample = unet.conv_act(unet.conv_norm_out(sample))
        return unet.conv_out(sample)

    def full(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor):
        """The whole UNet: (eps, deep feature entering the last up block)."""
        unet, original = self.unet, sample
        emb = self._embed(sample, timestep)
        sample = unet.conv_in(sample)
        skips: tuple[torch.Tensor, ...] = (sample,)
        for block in unet.down_blocks:
            sample, res = self._block(block, sample, emb, encoder_hidden_states)
            skips += res
        if unet.mid_block is not None:
            if getattr(unet.mid_block, "has_cross_attention", False):
                sample = unet.mid_block(sample, emb, encoder_hidden_states=encoder_hidden_states)
            else:
                sample = unet.mid_block(sample, emb)
        feature = sample
        for i, block in enumerate(unet.up_blocks):
            res, skips = skips[-len(block.resnets):], skips[: -len(block.resnets)]
            size = self._upsample_size(original, skips) if i < len(unet.up_blocks) - 1 else None
            if i == len(unet.up_blocks) - 1:
                feature = sample
            sample = self._block(block, sample, emb, encoder_hidden_states, res_hidden_states_tuple=res,
                                 upsample_size=size)
        return self._out(sample), feature

    def shallow(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                feature: torch.Tensor) -> torch.Tensor:
        """eps from ``conv_in``, the first down block, the kept deep ``feature`` and the last up block."""
        unet = self.unet
        emb = self._embed(sample, timestep)
        sample = unet.conv_in(sample)
        _, res = self._block(unet.down_blocks[0], sample, emb, encoder_hidden_states)
        skips = (sample, *res)[: len(unet.up_blocks[-1].resnets)]
        last = unet.up_blocks[-1]
        out = self._block(last, feature, emb, encoder_hidden_states, res_hidden_states_tuple=skips,
                          upsample_size=None)
        return self._out(out)


class FullPass(torch.nn.Module):
    """``DeepCacheUNet.full`` as a module's forward: what torch.export traces."""

    def __init__(self, deep: DeepCacheUNet) -> None:
        super().__init__()
        self.deep = deep

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.deep.full(sample, timestep, encoder_hidden_states)


class ShallowPass(torch.nn.Module):
    """``DeepCacheUNet.shallow`` as a module's forward."""

    def __init__(self, deep: DeepCacheUNet) -> None:
        super().__init__()
        self.deep = deep

    def forward(self, sample, timestep, encoder_hidden_states, feature):
        return self.deep.shallow(sample, timestep, encoder_hidden_states, feature)
