"""Swap the GroupNorm (+SiLU) modules of a diffusers UNet or VAE for the fused kernel.

Module surgery, not a forward rewrite: every ``nn.GroupNorm`` becomes a :class:`FusedGroupNorm`
(same class hierarchy, same parameters and state-dict keys), and where a norm is always followed
by a SiLU the SiLU moves into the norm:

- ``ResnetBlock2D`` (``time_embedding_norm="default"``, ``nonlinearity`` an ``nn.SiLU``): norm1
  and norm2 fuse the SiLU and the block's ``nonlinearity`` becomes the identity; its time
  embedding projection, which the block feeds through that same SiLU unless ``skip_time_act``,
  becomes a :class:`SiLUInputLinear` (same keys) so the time path is unchanged;
- models with ``conv_norm_out`` + ``conv_act`` (UNet output, VAE encoder/decoder output): the
  norm fuses the SiLU and ``conv_act`` becomes the identity.

Everything else (attention stays on SDPA) is untouched. The swapped model computes the same
function; on CUDA with Triton the norms run the fused kernel, elsewhere the torch reference
(``F.group_norm`` then ``F.silu``: bit-identical to the unswapped model). Meant for inference
models that the caller owns (the torch backend's); the swap is in place and returns counts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from histoaug.kernels.group_norm import group_norm


class FusedGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` (optionally followed by SiLU) through :func:`histoaug.kernels.group_norm.group_norm`."""

    silu: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return group_norm(x, self.num_groups, self.weight, self.bias, self.eps, silu=self.silu)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", silu=True" if self.silu else "")


class SiLUInputLinear(nn.Linear):
    """``nn.Linear`` applied to ``silu(x)``: a time-embedding projection whose SiLU moved here."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.silu(x))


def _fuse(norm: nn.Module, silu: bool) -> bool:
    if type(norm) is not nn.GroupNorm and type(norm) is not FusedGroupNorm:
        return False
    norm.__class__ = FusedGroupNorm
    norm.silu = silu
    return True


def _fuse_resnet_block(block: nn.Module) -> bool:
    """norm1/norm2 + SiLU of a diffusers ResnetBlock2D, when its forward is the plain default one."""
    if (getattr(block, "time_embedding_norm", None) != "default" or type(block.nonlinearity) is not nn.SiLU
            or type(block.norm1) is not nn.GroupNorm or type(block.norm2) is not nn.GroupNorm):
        return False
    projection = block.time_emb_proj
    if projection is not None and not block.skip_time_act:
        if type(projection) is not nn.Linear:
            return False
        projection.__class__ = SiLUInputLinear
    _fuse(block.norm1, silu=True)
    _fuse(block.norm2, silu=True)
    block.nonlinearity = nn.Identity()
    return True


def fuse_group_norms(model: nn.Module) -> dict[str, int]:
    """Swap ``model``'s GroupNorm(+SiLU) modules in place; returns how many of each kind were swapped."""
    from diffusers.models.resnet import ResnetBlock2D

    counts = {"resnet_blocks": 0, "output_norms": 0, "plain_norms": 0}
    for module in list(model.modules()):
        if isinstance(module, ResnetBlock2D):
            counts["resnet_blocks"] += _fuse_resnet_block(module)
        elif (isinstance(getattr(module, "conv_norm_out", None), nn.GroupNorm)
              and type(getattr(module, "conv_act", None)) is nn.SiLU and _fuse(module.conv_norm_out, silu=True)):
            module.conv_act = nn.Identity()
            counts["output_norms"] += 1
    for module in model.modules():
        if type(module) is nn.GroupNorm:
            counts["plain_norms"] += _fuse(module, silu=False)
    return counts
