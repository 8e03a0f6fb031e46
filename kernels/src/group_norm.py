"""GroupNorm fused with its neighbours: an optional pre-norm add, the norm, an optional SiLU.

In a Stable Diffusion UNet or VAE, GroupNorm is followed by SiLU in every ResNet block (and
the time embedding is added just before the second norm), so eager PyTorch reads and writes
each activation two or three times where one read for the statistics and one read + write for
the output suffice. Each norm here is two launches over the same data:

1. statistics: the grid is (batch x groups, chunks of each group's spatial positions), so a
   batch of 2 with 32 groups still fills the GPU; each program writes the partial sum and sum of
   squares (fp32) of its chunk, shifted by the group's first element so that large means lose
   no precision in the single pass;
2. normalise: the same grid combines its group's partials, then normalises its chunk, applies
   the affine weight and bias, the SiLU, and stores in the input's dtype and memory format
   (NCHW or channels-last: any layout whose H and W flatten, through strides).

Reference: :func:`group_norm_reference` (``F.group_norm`` of ``x + add``, then ``F.silu``); the
add is rounded to the input dtype first, as the reference does. Statistics are fp32 in both.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from histoaug.kernels.dispatch import interpreting, jit, mark_broken, triton_import_error, use_triton

if triton_import_error() is None:
    import triton.language as tl
else:  # the kernels below are never built then; the annotations still need a name
    from types import SimpleNamespace

    tl = SimpleNamespace(constexpr=None)

OP_NAME = "group_norm"


def group_norm_reference(x: torch.Tensor, num_groups: int, weight: torch.Tensor | None = None,
                         bias: torch.Tensor | None = None, eps: float = 1e-5, *, add: torch.Tensor | None = None,
                         silu: bool = False) -> torch.Tensor:
    """``silu?(group_norm(x + add))`` in plain torch; ``add`` is x's shape or (N, C, 1, 1)."""
    if add is not None:
        x = x + add
    y = F.group_norm(x, num_groups, weight, bias, eps)
    return F.silu(y) if silu else y


def group_norm(x: torch.Tensor, num_groups: int, weight: torch.Tensor | None = None,
               bias: torch.Tensor | None = None, eps: float = 1e-5, *, add: torch.Tensor | None = None,
               silu: bool = False) -> torch.Tensor:
    """The fused op: Triton on CUDA tensors when Triton imports and its kernel builds, the torch
    reference otherwise (a failed Triton build is logged once and the reference runs from then on)."""
    if x.ndim in (3, 4) and use_triton(OP_NAME, x):
        try:
            if x.ndim == 3:  # (N, C, L): attention blocks' norm
                add3 = None if add is None else add.unsqueeze(-1)
                return group_norm_triton(x.unsqueeze(-1), num_groups, weight, bias, eps, add=add3,
                                         silu=silu).squeeze(-1)
            return group_norm_triton(x, num_groups, weight, bias, eps, add=add, silu=silu)
        except ValueError:
            raise  # bad arguments: the reference would raise the same
        except Exception as exc:  # a Triton compile or launch failure: never lose the call
            mark_broken(OP_NAME, exc)
    return group_norm_reference(x, num_groups, weight, bias, eps, add=add, silu=silu)


def _group_norm_kernel(x_ptr, add_ptr, w_ptr, b_ptr, y_ptr, part_ptr, HW, CPG, G, SPLIT, CHUNK, eps, inv_count,
                       sxn, sxc, sxhw, san, sac, sahw, syn, syc, syhw,
                       NORMALIZE: tl.constexpr, HAS_ADD: tl.constexpr, SILU: tl.constexpr, BLOCK_C: tl.constexpr,
                       BLOCK_HW: tl.constexpr, BLOCK_S: tl.constexpr):
    """One program per (group, chunk). ``NORMALIZE`` False: write the chunk's shifted partial sums
    (pass 1); True: combine the group's partials and normalise the chunk (pass 2)."""
    import triton.language as tl

    # offsets in int64: program ids and small integer arguments are int32, and n * stride or
    # channel * stride passes 2^31 elements on large activations (a batch of 512x512 decodes)
    group = tl.program_id(0).to(tl.int64)
    chunk = tl.program_id(1).to(tl.int64)
    n = group // G
    c0 = (group % G) * CPG
    lane_c = tl.arange(0, BLOCK_C).to(tl.int64)
    c_mask = lane_c < CPG
    channels = c0 + lane_c
    x_base = x_ptr + n * sxn
    a_base = add_ptr + n * san
    pivot = tl.load(x_base + c0 * sxc).to(tl.float32)
    if HAS_ADD:
        pivot = (pivot + tl.load(a_base + c0 * sac).to(tl.float32)).to(x_ptr.dtype.element_ty).to(tl.float32)
    if NORMALIZE:
        parts = tl.arange(0, BLOCK_S)
        p_mask = parts < SPLIT
        p_base = part_ptr + group * SPLIT * 2
        total = tl.sum(tl.load(p_base + parts * 2, mask=p_mask, other=0.0), axis=0)
        total_sq = tl.sum(tl.load(p_base + parts * 2 + 1, mask=p_mask, other=0.0), axis=0)
        mean_shifted = total * inv_count
        var = tl.maximum(total_sq * inv_count - mean_shifted * mean_shifted, 0.0)
        rstd = 1.0 / tl.sqrt(var + eps)
        mean = pivot + mean_shifted
        w = tl.load(w_ptr + channels, mask=c_mask, other=1.0).to(tl.float32)
        b = tl.load(b_ptr + channels, mask=c_mask, other=0.0).to(tl.float32)
        scale = w * rstd
        shift = b - mean * scale
        y_base = y_ptr + n * syn
    acc_sum = tl.zeros([BLOCK_C, BLOCK_HW], dtype=tl.float32)
    acc_sq = tl.zeros([BLOCK_C, BLOCK_HW], dtype=tl.float32)
    for start in range(chunk * CHUNK, tl.minimum(chunk * CHUNK + CHUNK, HW), BLOCK_HW):
        hw = start + tl.arange(0, BLOCK_HW).to(tl.int64)
        mask = c_mask[:, None] & (hw < HW)[None, :]
        v = tl.load(x_base + channels[:, None] * sxc + hw[None, :] * sxhw, mask=mask, other=0.0).to(tl.float32)
        if HAS_ADD:
            a = tl.load(a_base + channels[:, None] * sac + hw[None, :] * sahw, mask=mask, other=0.0)
            v = (v + a.to(tl.float32)).to(x_ptr.dtype.element_ty).to(tl.float32)
        if NORMALIZE:
            y = v * scale[:, None] + shift[:, None]
            if SILU:
                y = y * tl.sigmoid(y)
            tl.store(y_base + channels[:, None] * syc + hw[None, :] * syhw, y.to(y_ptr.dtype.element_ty), mask=mask)
        else:
            d = tl.where(mask, v - pivot, 0.0)
            acc_sum += d
            acc_sq += d * d
    if not NORMALIZE:
        out = part_ptr + (group * SPLIT + chunk) * 2
        tl.store(out, tl.sum(tl.sum(acc_sum, axis=1), axis=0))
        tl.store(out + 1, tl.sum(tl.sum(acc_sq, axis=1), axis=0))


def _with_hw_stride(t: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``t`` (4-D) and the stride of its flattened H*W axis; a contiguous copy when H, W do not flatten."""
    _, _, h, w = t.shape
    if w == 1:
        return t, t.stride(2)
    if h == 1 or t.stride(2) == w * t.stride(3):
        return t, t.stride(3)
    t = t.contiguous()
    return t, t.stride(3)


def _next_power_of_2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def _launch_plan(groups_total: int, hw: int, block_hw: int, device: torch.device) -> tuple[int, int]:
    """(split, chunk): enough programs to fill the GPU (4 per SM), each chunk a whole number of tiles."""
    if device.type == "cuda":
        target = 4 * torch.cuda.get_device_properties(device).multi_processor_count
    else:  # the interpreter: split anyway, so CPU tests exercise the cross-chunk combine
        target = 2 * groups_total
    tiles = -(-hw // block_hw)
    split = max(1, min(tiles, -(-target // groups_total)))
    chunk = -(-tiles // split) * block_hw
    return -(-hw // chunk), chunk


def group_norm_triton(x: torch.Tensor, num_groups: int, weight: torch.Tensor | None = None,
                      bias: torch.Tensor | None = None, eps: float = 1e-5, *, add: torch.Tensor | None = None,
                      silu: bool = False) -> torch.Tensor:
    """The Triton kernels (CUDA, or the CPU under ``TRITON_INTERPRET=1``) for a 4-D ``x``."""
    n, c, h, w = x.shape
    if c % num_groups:
        raise ValueError(f"{c} channels do not split into {num_groups} groups")
    has_add = add is not None
    x, x_hw = _with_hw_stride(x)
    add, a_hw = _with_hw_stride(add.to(x.dtype).expand_as(x)) if add is not None else (x, x_hw)
    weight = torch.ones(c, device=x.device, dtype=x.dtype) if weight is None else weight.contiguous()
    bias = torch.zeros(c, device=x.device, dtype=x.dtype) if bias is None else bias.contiguous()
    y, y_hw = _with_hw_stride(torch.empty_like(x))
    cpg = c // num_groups
    hw = h * w
    block_c = _next_power_of_2(cpg)
    block_hw = max(16, min(_next_power_of_2(hw), 4096 // block_c))
    groups_total = n * num_groups
    split, chunk = _launch_plan(groups_total, hw, block_hw, x.device)
    partials = torch.empty(groups_total * split * 2, device=x.device, dtype=torch.float32)
    strides = (x.stride(0), x.stride(1), x_hw, add.stride(0), add.stride(1), a_hw)
    grid = (groups_total, split)
    warps = {} if interpreting() else {"num_warps": 4 if block_c * block_hw <= 2048 else 8}
    kernel = jit(_group_norm_kernel)[grid]
    arguments = (x, add, weight, bias, y, partials, hw, cpg, num_groups, split, chunk, float(eps), 1.0 / (cpg * hw),
                 *strides, y.stride(0), y.stride(1), y_hw)
    options = {"HAS_ADD": has_add, "SILU": bool(silu), "BLOCK_C": block_c, "BLOCK_HW": block_hw,
               "BLOCK_S": _next_power_of_2(split), **warps}
    kernel(*arguments, NORMALIZE=False, **options)  # pass 1: partial statistics
    kernel(*arguments, NORMALIZE=True, **options)  # pass 2: normalise
    return y
