"""Tiny real models for the synthesis and export tests, built once per test session."""

from __future__ import annotations

from pathlib import Path

from histoaug.image_metrics import psnr  # noqa: F401  (the tests' PSNR is the library's)
from histoaug.prompts import Prompt, PromptBank

_CACHE: dict[str, Path] = {}


def tiny_prompts() -> PromptBank:
    """Two morphology types per label, like a (small) morphology-enriched prompt bank."""
    template = "a histopathology image of {c} lymph node tissue, morphology type {m}"
    prompts = [Prompt(i, label, m, template.format(c=("healthy", "cancerous")[label], m=m))
               for i, (label, m) in enumerate([(0, 0), (0, 1), (1, 2), (1, 3)])]
    return PromptBank(prompts, kind="morphology", template=template)


def tiny_model_dir(factory) -> Path:
    """A diffusers pipeline dir (tiny preset) with prompts.json, as the training module writes."""
    if "model" not in _CACHE:
        from histoaug.models import build_pipeline, save_pipeline

        root = factory.mktemp("tiny_model") / "model"
        save_pipeline(build_pipeline("tiny", seed=0), root)
        tiny_prompts().save(root)
        _CACHE["model"] = root
    return _CACHE["model"]


def tiny_artifact_dir(factory) -> Path:
    """The tiny model exported to an fp32 ONNX artifact (slow: ~15 s of tracing)."""
    if "artifact" not in _CACHE:
        from histoaug.export.artifact import ExportSettings, export_model

        out = factory.mktemp("tiny_artifact") / "artifact"
        export_model(tiny_model_dir(factory), out, ExportSettings(format="onnx", dtype="fp32", batch=2))
        _CACHE["artifact"] = out
    return _CACHE["artifact"]

