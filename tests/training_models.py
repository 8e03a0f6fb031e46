"""Tiny real models and prompt dirs for the training tests (built in tmp dirs, no download)."""

from __future__ import annotations

from pathlib import Path


def save_tiny_vit(directory: Path, seed: int = 0) -> Path:
    """A 2-layer ViT (hidden 32, 32x32 input, 8x8 patches) with its image processor, as a local dir;
    its random weights are a function of ``seed``."""
    import torch
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       image_size=32, patch_size=8)
    with torch.random.fork_rng():  # the same random weights whatever ran before (tests compare its features)
        torch.manual_seed(seed)
        model = ViTModel(config, add_pooling_layer=False)
    model.save_pretrained(directory)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(directory)
    return directory


def save_tiny_text_model(directory: Path) -> Path:
    """A tiny BERT (a text model, not a vision model) saved as a transformers dir."""
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(directory)
    return directory
