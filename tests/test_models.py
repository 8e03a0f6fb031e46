"""histoaug.models: pipelines built from presets are real, offline, seeded and round-trip on disk."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

from histoaug.errors import InvalidArgumentError, OutputExistsError
from histoaug.models import build_pipeline, build_tokenizer, get_preset, save_pipeline

PROMPT = "a histopathology image of healthy lymph node tissue, morphology type 7"


def test_tokenizer_tokenizes_prompt_words_whole() -> None:
    tokenizer = build_tokenizer()
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(PROMPT).input_ids)
    assert tokens[0] == "<|startoftext|>" and tokens[-1] == "<|endoftext|>"
    assert "histopathology</w>" in tokens and "morphology</w>" in tokens and "7</w>" in tokens
    # unknown words fall back to byte symbols instead of failing
    assert len(tokenizer("zzqx").input_ids) > 2


def test_build_is_seeded_and_sized() -> None:
    a, b, c = build_pipeline("tiny", seed=0), build_pipeline("tiny", seed=0), build_pipeline("tiny", seed=1)
    wa = a.unet.conv_in.weight
    assert torch.equal(wa, b.unet.conv_in.weight)
    assert not torch.equal(wa, c.unet.conv_in.weight)
    preset = get_preset("tiny")
    assert a.unet.config.sample_size == preset.latent_size
    assert a.vae_scale_factor == preset.vae_scale_factor
    assert a.unet.config.cross_attention_dim == a.text_encoder.config.hidden_size


def test_unknown_preset() -> None:
    with pytest.raises(InvalidArgumentError, match="unknown model preset"):
        build_pipeline("huge")


def test_save_and_reload_generates_same_images(tmp_path) -> None:
    pipe = build_pipeline("tiny", seed=3)
    out = save_pipeline(pipe, tmp_path / "model")
    assert all(p.suffix != ".bin" for p in out.rglob("*"))  # safetensors only
    assert list(out.rglob("*.safetensors"))
    loaded = StableDiffusionPipeline.from_pretrained(out)
    loaded.set_progress_bar_config(disable=True)
    size = get_preset("tiny").image_size
    images = [
        p([PROMPT], num_inference_steps=3, guidance_scale=2.0, height=size, width=size, output_type="np",
          generator=torch.Generator().manual_seed(0)).images
        for p in (pipe, loaded)
    ]
    assert images[0].shape == (1, size, size, 3)
    np.testing.assert_array_equal(images[0], images[1])
    with pytest.raises(OutputExistsError):
        save_pipeline(pipe, out)


def test_presets_are_data_whose_keys_are_component_config_fields() -> None:
    import inspect

    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig

    from histoaug.models import PRESETS

    assert {"tiny", "small", "histo96"} <= set(PRESETS)
    accepted = {cls: set(inspect.signature(cls.__init__).parameters)
                for cls in (AutoencoderKL, UNet2DConditionModel, CLIPTextConfig)}
    for preset in PRESETS.values():
        assert set(preset.vae) <= accepted[AutoencoderKL], preset.name
        assert set(preset.unet) <= accepted[UNet2DConditionModel], preset.name
        assert set(preset.text_encoder) <= accepted[CLIPTextConfig], preset.name
        assert preset.description
    assert get_preset("histo96").latent_size == 12 and get_preset("small").latent_size == 24
