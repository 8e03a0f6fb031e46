"""Attention for short sequences, as one scaled batched matmul, a softmax and a second matmul.

The attention blocks of a 96x96 histology LDM see at most a few hundred tokens (36 latent
positions against 77 text tokens in the embedded model, 144 in its VAE). For such shapes the
CPU's fused ``scaled_dot_product_attention`` kernel spends its time in tiling overhead: on the
2-core development CPU, (64 x 2 heads, 36 queries, 36-77 keys, head dim 32) took 490-800 us in
fp32 and 820-1,310 us in bf16 fused, vs 310-600 us for this math: 1.3-1.6x (fp32), ~1.7x (bf16).
Under ``torch.compile`` Inductor fuses the scale and softmax around the two matmuls.

Reference: ``torch.nn.functional.scaled_dot_product_attention`` without mask or dropout. The
math runs in float32 whatever the input dtype (at these sizes the casts cost less than the fused
kernel's overhead), so a bf16 result is the float32 result rounded once, as the fused kernel's
is; fp32 results agree within 1e-5 (tests/test_kernels_attention.py checks both).

``ShortSequenceAttnProcessor`` is a diffusers attention processor that uses it for every
attention without a mask whose score matrix is small, and the fused kernel otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from diffusers.models.attention_processor import Attention

# Up to this many scores per head (query length x key length) the plain math is used: it was
# measured faster up to 144 x 144 (the VAE's 12x12 attention); longer ones keep the fused kernel.
MAX_SHORT_SCORES = 144 * 144


def short_sequence_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                             scale: float | None = None) -> torch.Tensor:
    """softmax(q k^T * scale) v for (..., L, D) tensors; equals SDPA without mask/dropout."""
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    scores = torch.matmul(query.float(), key.float().transpose(-1, -2)) * scale
    return torch.matmul(torch.softmax(scores, dim=-1), value.float()).to(value.dtype)


class ShortSequenceAttnProcessor:
    """diffusers ``AttnProcessor2_0`` with :func:`short_sequence_attention` for short, unmasked inputs.

    It replaces ``AttnProcessor2_0`` only, on modules using the features SD 1.x/2.x UNets and
    VAEs use (group norm, cross-attention norm, residual connection, output rescale; the default
    ``1/sqrt(head_dim)`` scale, as ``AttnProcessor2_0`` itself applies). :func:`supports` refuses
    anything else (other processors such as LoRA/IP-adapter or ``AttnProcessor`` for
    ``scale_qk=False``, added K/V projections, spatial or q/k norms), which keeps its processor.
    """

    @staticmethod
    def supports(attn: Attention) -> bool:
        from diffusers.models.attention_processor import AttnProcessor2_0

        return (type(attn.processor) is AttnProcessor2_0 and getattr(attn, "added_kv_proj_dim", None) is None
                and getattr(attn, "to_out", None) is not None and getattr(attn, "spatial_norm", None) is None
                and getattr(attn, "norm_q", None) is None and getattr(attn, "norm_k", None) is None)

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 **_: object) -> torch.Tensor:
        residual = hidden_states
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = (hidden_states.shape if encoder_hidden_states is None
                                          else encoder_hidden_states.shape)
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)

        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attention_mask is None and query.shape[-2] * key.shape[-2] <= MAX_SHORT_SCORES:
            hidden_states = short_sequence_attention(query, key, value)
        else:
            hidden_states = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim).to(query.dtype)

        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def use_short_sequence_attention(model: torch.nn.Module) -> int:
    """Give every supported diffusers ``Attention`` module in ``model`` the short-sequence processor.

    Returns how many modules got it; the others keep the processor they had.
    """
    from diffusers.models.attention_processor import Attention

    processor = ShortSequenceAttnProcessor()
    count = 0
    for module in model.modules():
        if isinstance(module, Attention) and ShortSequenceAttnProcessor.supports(module):
            module.set_processor(processor)
            count += 1
    return count
