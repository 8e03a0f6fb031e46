"""Decoded images -> uint8 NHWC patches in one pass: clamp, antialiased resize, quantise, transpose.

The torch path (:func:`to_uint8_nhwc_reference`, the arithmetic of
``histoaug.synthesis.postprocess.to_uint8_patches``) makes five passes over the VAE output
(scale and clamp, resize, clamp, scale and round, permute to NHWC) with float intermediates the
size of the decoder's output: for a 512x512 Stable Diffusion decode, 3 MB read and written per
image per pass, to produce 27 KB of uint8. The kernel reads each needed input pixel once per
output tap, computes the separable antialiased bilinear filter (the same weights as
``F.interpolate(mode="bilinear", antialias=True, align_corners=False)``: horizontal taps first,
then vertical, as torch does) and writes only the uint8 NHWC result.

Rounding is half-to-even like ``torch.round``. The resize sums taps in a different order than
torch's kernels, so a resized pixel can differ from the reference by one level where the exact
value sits at a rounding boundary; without a resize the result is bit-identical.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from histoaug.kernels.dispatch import interpreting, jit, mark_broken, triton_import_error, use_triton

if triton_import_error() is None:
    import triton.language as tl
else:  # the kernel below is never built then; the annotations still need a name
    from types import SimpleNamespace

    tl = SimpleNamespace(constexpr=None)

OP_NAME = "decode_postprocess"


def to_uint8_nhwc_reference(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 3, H, W) in [-1, 1] -> (N, size, size, 3) uint8 on the same device (plain torch)."""
    images = (images.float() / 2 + 0.5).clamp(0, 1)
    if images.shape[-1] != size or images.shape[-2] != size:
        images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True,
                               align_corners=False).clamp(0, 1)
    return (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def to_uint8_nhwc(images: torch.Tensor, size: int) -> torch.Tensor:
    """The fused op: Triton on CUDA tensors when Triton imports, the torch reference otherwise."""
    if use_triton(OP_NAME, images):
        try:
            return to_uint8_nhwc_triton(images, size)
        except ValueError:
            raise
        except Exception as exc:  # a Triton compile or launch failure: the reference runs from then on
            mark_broken(OP_NAME, exc)
    return to_uint8_nhwc_reference(images, size)


@functools.cache
def antialias_taps(in_size: int, out_size: int) -> tuple[tuple[int, ...], tuple[tuple[float, ...], ...]]:
    """First input index and normalised weights of each output pixel along one axis.

    torch's antialiased bilinear weights (``_compute_indices_min_size_weights_aa``): a triangle
    filter widened by the downscale factor, centred at ``scale * (i + 0.5)``, cut to the image.
    """
    scale = in_size / out_size
    support = scale if scale >= 1.0 else 1.0
    inv_scale = 1.0 / scale if scale >= 1.0 else 1.0
    starts, weights = [], []
    for i in range(out_size):
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)
        count = min(int(center + support + 0.5), in_size) - lo
        raw = [max(0.0, 1.0 - abs((j + lo - center + 0.5) * inv_scale)) for j in range(count)]
        total = sum(raw)
        starts.append(lo)
        weights.append(tuple(w / total if total else w for w in raw))
    return tuple(starts), tuple(weights)


def _tap_tables(in_size: int, out_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(starts int32 (out,), weights fp32 (out, taps) zero-padded, taps) for one axis."""
    starts, weights = antialias_taps(in_size, out_size)
    taps = max(len(w) for w in weights)
    table = torch.zeros(out_size, taps, dtype=torch.float32)
    for i, w in enumerate(weights):
        table[i, : len(w)] = torch.tensor(w, dtype=torch.float32)
    return torch.tensor(starts, dtype=torch.int32, device=device), table.to(device), taps


def _postprocess_kernel(x_ptr, out_ptr, ys_ptr, yw_ptr, xs_ptr, xw_ptr, H, W, SIZE,
                        sxn, sxc, sxh, sxw,
                        TAPS_Y: tl.constexpr, TAPS_X: tl.constexpr, BLOCK: tl.constexpr):
    image = tl.program_id(0).to(tl.int64)  # int64 offsets: image * stride passes 2^31 on large batches
    pixels = tl.program_id(1).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    mask = pixels < SIZE * SIZE
    oy = pixels // SIZE
    ox = pixels % SIZE
    y0 = tl.load(ys_ptr + oy, mask=mask, other=0)
    x0 = tl.load(xs_ptr + ox, mask=mask, other=0)
    base = x_ptr + image * sxn
    out_base = out_ptr + image * SIZE * SIZE * 3 + pixels * 3
    for channel in tl.static_range(3):
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for ty in tl.static_range(TAPS_Y):
            wy = tl.load(yw_ptr + oy * TAPS_Y + ty, mask=mask, other=0.0)
            row = tl.minimum(y0 + ty, H - 1)
            line = tl.zeros([BLOCK], dtype=tl.float32)
            for tx in tl.static_range(TAPS_X):
                wx = tl.load(xw_ptr + ox * TAPS_X + tx, mask=mask, other=0.0)
                col = tl.minimum(x0 + tx, W - 1)
                v = tl.load(base + channel * sxc + row * sxh + col * sxw, mask=mask, other=0.0).to(tl.float32)
                v = tl.minimum(tl.maximum(v / 2 + 0.5, 0.0), 1.0)
                line += wx * v
            acc += wy * line
        v = tl.minimum(tl.maximum(acc, 0.0), 1.0) * 255.0
        # round half to even, as torch.round
        r = tl.floor(v + 0.5)
        r = tl.where((r - v == 0.5) & (r - 2.0 * tl.floor(r * 0.5) == 1.0), r - 1.0, r)
        tl.store(out_base + channel, r.to(tl.uint8), mask=mask)


def to_uint8_nhwc_triton(images: torch.Tensor, size: int) -> torch.Tensor:
    """The Triton kernel (CUDA, or the CPU under ``TRITON_INTERPRET=1``)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected (N, 3, H, W) images, got {tuple(images.shape)}")
    n, _, h, w = images.shape
    ys, yw, taps_y = _tap_tables(h, size, images.device)
    xs, xw, taps_x = _tap_tables(w, size, images.device)
    out = torch.empty((n, size, size, 3), dtype=torch.uint8, device=images.device)
    if n == 0:
        return out
    block = 4096 if interpreting() else 256  # the interpreter's cost is per program, not per element
    grid = (n, -(-size * size // block))
    warps = {} if interpreting() else {"num_warps": 4}
    jit(_postprocess_kernel)[grid](images, out, ys, yw, xs, xw, h, w, size, *images.stride(),
                                   TAPS_Y=taps_y, TAPS_X=taps_x, BLOCK=block, **warps)
    return out
