"""Stable Diffusion 1.x-style pipelines built from configs in code (no download).

Tests, benchmarks and the training module use these to get real diffusers models of a known
size without network access: :func:`build_pipeline` and :func:`save_pipeline`.
"""

from __future__ import annotations

from histoaug.models.builder import build_pipeline, save_pipeline
from histoaug.models.presets import PRESETS, PipelinePreset, get_preset
from histoaug.models.tokenizer import build_tokenizer

__all__ = ["PRESETS", "PipelinePreset", "build_pipeline", "build_tokenizer", "get_preset", "save_pipeline"]
