"""Prompt embeddings computed once with the model's text encoder and stored as safetensors.

Generation looks rows up by prompt id and never runs the text encoder. ``uncond`` is the
embedding of the empty prompt (classifier-free guidance's unconditional branch).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from histoaug.errors import ArtifactError
from histoaug.prompts import PromptBank

EMBEDDINGS_FILE = "prompt_embeddings.safetensors"


@dataclass
class PromptEmbeddings:
    cond: torch.Tensor  # (num_prompts, tokens, dim), float32
    uncond: torch.Tensor  # (1, tokens, dim), float32

    def check(self, bank: PromptBank, *, source: str) -> None:
        """Shapes agree with each other and with the prompt bank; values are finite."""
        if self.cond.ndim != 3 or self.uncond.shape != (1, *self.cond.shape[1:]):
            raise ArtifactError(f"{source}: prompt embeddings have inconsistent shapes "
                                f"{tuple(self.cond.shape)} and {tuple(self.uncond.shape)}")
        if self.cond.shape[0] != len(bank):
            raise ArtifactError(f"{source}: {self.cond.shape[0]} prompt embeddings for {len(bank)} prompts")
        if not (torch.isfinite(self.cond).all() and torch.isfinite(self.uncond).all()):
            raise ArtifactError(f"{source}: prompt embeddings contain NaN or Inf")

    def save(self, path: Path) -> None:
        save_file({"cond": self.cond.contiguous(), "uncond": self.uncond.contiguous()}, str(path))

    @classmethod
    def load(cls, path: Path) -> PromptEmbeddings:
        try:
            tensors = load_file(str(path))
            return cls(cond=tensors["cond"].float(), uncond=tensors["uncond"].float())
        except (OSError, SafetensorError, KeyError) as exc:
            raise ArtifactError(f"{path}: cannot read prompt embeddings ({exc})") from exc


@torch.no_grad()
def encode_prompts(text_encoder: torch.nn.Module, tokenizer, bank: PromptBank) -> PromptEmbeddings:
    """Run the text encoder over every prompt and the empty prompt (as diffusers' pipeline does)."""
    device = next(text_encoder.parameters()).device

    def encode(texts: list[str]) -> torch.Tensor:
        ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt").input_ids
        return text_encoder(ids.to(device))[0].float().cpu()

    return PromptEmbeddings(cond=encode(bank.texts), uncond=encode([""]))
