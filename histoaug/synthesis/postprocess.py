"""Decoded images in [-1, 1] (NCHW) -> uint8 NHWC patches at the output size, in one pass."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

PATCH_SIZE = 96


def to_uint8_patches(images: torch.Tensor, size: int = PATCH_SIZE) -> np.ndarray:
    """Same arithmetic as diffusers' ``(x / 2 + 0.5).clamp(0, 1) * 255`` rounding, plus resize.

    A model larger than ``size`` is downsampled with an antialiased bilinear filter; a smaller
    one (test models) is upsampled bilinearly.
    """
    images = (images.float() / 2 + 0.5).clamp(0, 1)
    if images.shape[-1] != size or images.shape[-2] != size:
        images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True,
                               align_corners=False).clamp(0, 1)
    patches = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    return to_host(patches).numpy()


def to_host(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` on the CPU; from CUDA through pinned memory (torch's caching host allocator reuses the
    block), since a copy into pageable memory is staged through a driver buffer and runs at a fraction
    of the bus's rate."""
    if tensor.device.type != "cuda":
        return tensor.cpu()
    host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    host.copy_(tensor, non_blocking=True)
    torch.cuda.current_stream(tensor.device).synchronize()
    return host
