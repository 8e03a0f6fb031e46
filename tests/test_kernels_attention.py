"""histoaug.kernels.attention against its references: torch SDPA and diffusers' AttnProcessor2_0."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from histoaug.kernels.attention import (
    MAX_SHORT_SCORES,
    ShortSequenceAttnProcessor,
    short_sequence_attention,
    use_short_sequence_attention,
)


def _qkv(dtype: torch.dtype, lq: int = 36, lk: int = 77, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    shapes = [(4, 2, lq, 32), (4, 2, lk, 32), (4, 2, lk, 32)]
    return [torch.randn(shape, generator=generator).to(dtype) for shape in shapes]


@pytest.mark.parametrize("lq,lk", [(36, 36), (36, 77), (144, 144)])
def test_matches_sdpa_in_fp32(lq, lk) -> None:
    q, k, v = _qkv(torch.float32, lq, lk)
    torch.testing.assert_close(short_sequence_attention(q, k, v), F.scaled_dot_product_attention(q, k, v),
                               rtol=1e-5, atol=1e-5)


def test_bf16_error_no_larger_than_the_fused_kernel() -> None:
    q, k, v = _qkv(torch.bfloat16)
    exact = F.scaled_dot_product_attention(q.double(), k.double(), v.double())
    ours = (short_sequence_attention(q, k, v).double() - exact).abs().max().item()
    fused = (F.scaled_dot_product_attention(q, k, v).double() - exact).abs().max().item()
    assert ours <= fused * 1.01


def _attention_modules() -> dict[str, Attention]:
    torch.manual_seed(0)
    return {
        # UNet transformer self-attention and cross-attention (3D hidden states)
        "self": Attention(query_dim=64, heads=2, dim_head=32),
        "cross": Attention(query_dim=64, cross_attention_dim=48, heads=2, dim_head=32),
        # VAE mid-block attention: 4D input, group norm, residual, rescale
        "vae": Attention(query_dim=32, heads=1, dim_head=32, norm_num_groups=8, residual_connection=True,
                         rescale_output_factor=2.0, bias=True, upcast_softmax=True, _from_deprecated_attn_block=True),
    }


@pytest.mark.parametrize("kind", ["self", "cross", "vae"])
def test_processor_matches_diffusers_processor(kind) -> None:
    module = _attention_modules()[kind].eval()
    generator = torch.Generator().manual_seed(1)
    if kind == "vae":
        hidden, context = torch.randn(3, 32, 12, 12, generator=generator), None
    else:
        hidden = torch.randn(3, 36, 64, generator=generator)
        context = torch.randn(3, 77, 48, generator=generator) if kind == "cross" else None
    with torch.no_grad():
        module.set_processor(AttnProcessor2_0())
        expected = module(hidden, encoder_hidden_states=context)
        assert ShortSequenceAttnProcessor.supports(module)
        module.set_processor(ShortSequenceAttnProcessor())
        actual = module(hidden, encoder_hidden_states=context)
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_masked_attention_keeps_the_fused_kernel() -> None:
    module = _attention_modules()["cross"].eval()
    hidden, context = torch.randn(2, 36, 64), torch.randn(2, 77, 48)
    mask = torch.ones(2, 77)
    mask[:, 40:] = 0
    mask = (1 - mask) * -10000.0
    with torch.no_grad():
        module.set_processor(AttnProcessor2_0())
        expected = module(hidden, encoder_hidden_states=context, attention_mask=mask)
        module.set_processor(ShortSequenceAttnProcessor())
        actual = module(hidden, encoder_hidden_states=context, attention_mask=mask)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_long_sequences_keep_the_fused_kernel(monkeypatch) -> None:
    calls = []
    original = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or original(*a, **k))
    module = _attention_modules()["self"].eval()
    module.set_processor(ShortSequenceAttnProcessor())
    side = int(MAX_SHORT_SCORES**0.5) + 1
    with torch.no_grad():
        module(torch.randn(1, 36, 64))
        assert calls == []
        module(torch.randn(1, side, 64))
    assert calls == [1]


@pytest.mark.parametrize("kind", ["scale_qk_false", "added_kv", "custom_processor"])
def test_modules_it_does_not_match_keep_their_processor(kind) -> None:
    from diffusers.models.attention_processor import AttnAddedKVProcessor2_0, AttnProcessor

    torch.manual_seed(0)
    if kind == "scale_qk_false":  # diffusers gives it AttnProcessor with scale 1.0
        module = Attention(query_dim=64, heads=2, dim_head=32, scale_qk=False)
    elif kind == "added_kv":  # SimpleCrossAttn blocks: extra K/V projections of the context
        module = Attention(query_dim=64, cross_attention_dim=48, heads=2, dim_head=32, added_kv_proj_dim=48,
                           norm_num_groups=8, processor=AttnAddedKVProcessor2_0())
    else:
        module = Attention(query_dim=64, heads=2, dim_head=32, processor=AttnProcessor())
    before = module.processor
    assert not ShortSequenceAttnProcessor.supports(module)
    assert use_short_sequence_attention(module) == 0 and module.processor is before


def test_installs_on_every_supported_module_of_a_unet_and_vae() -> None:
    from histoaug.models import build_pipeline

    pipe = build_pipeline("tiny", seed=0)
    attention_modules = [m for m in pipe.unet.modules() if isinstance(m, Attention)]
    assert use_short_sequence_attention(pipe.unet) == len(attention_modules) > 0
    assert all(isinstance(m.processor, ShortSequenceAttnProcessor) for m in attention_modules)
    assert use_short_sequence_attention(pipe.vae) == sum(isinstance(m, Attention) for m in pipe.vae.modules())
