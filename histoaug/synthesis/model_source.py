"""Resolve a ``source`` (default, diffusers pipeline dir, exported artifact dir) into model files.

A diffusers pipeline dir (what ``training.finetune`` writes) must hold ``prompts.json`` at its
root; its prompt embeddings are computed once here with its text encoder. An artifact dir
(``histoaug export``) holds them precomputed and is verified against its manifest first. The
file layout of both is :mod:`histoaug.synthesis.artifact_format`'s alone.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from histoaug.errors import ArtifactError
from histoaug.prompts import PromptBank
from histoaug.synthesis.artifact_format import (
    MANIFEST_FILE,
    MODEL_INDEX_FILE,
    ONNX_DIR,
    PROMPTS_FILE,
    SCHEDULER_CONFIG,
    Geometry,
    is_artifact,
    is_pipeline_dir,
    missing_pipeline_parts,
    model_id_of,
    read_artifact,
    read_geometry,
    read_json,
    read_sampler_defaults,
)
from histoaug.synthesis.defaults import ModelSamplerDefaults
from histoaug.synthesis.prompt_embeddings import PromptEmbeddings, encode_prompts

logger = logging.getLogger(__name__)

DEFAULT_SOURCE = "default"
# The embedded default model: an exported artifact shipped inside the package (see its MODEL_CARD.md).
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "default_model"
# Its few-step student (``histoaug distill`` of it, exported; see its MODEL_CARD.md): the fast path
# (``histoaug generate --fast`` on the default model).
DEFAULT_FAST_SOURCE = "default-fast"
DEFAULT_STUDENT_DIR = Path(__file__).resolve().parents[1] / "default_student"


def _embedded(root: Path, what: str) -> Path:
    if not is_artifact(root):
        raise ArtifactError(
            f"the embedded {what} is missing from this installation ({root} has no "
            f"{MANIFEST_FILE}); reinstall histoaug, or pass a model or artifact dir"
        )
    return root


def default_model_dir() -> Path:
    """Where the embedded default model lives (an artifact dir, verified on load like any other)."""
    return _embedded(DEFAULT_MODEL_DIR, "default model")


def default_student_dir() -> Path:
    """Where the embedded model's distilled few-step student lives (``"default-fast"``)."""
    return _embedded(DEFAULT_STUDENT_DIR, "fast model (the default model's few-step student)")


def resolve_source(source: str | Path) -> Path:
    """``"default"`` -> the embedded model's dir, ``"default-fast"`` -> its student's; else ``Path(source)``."""
    if str(source) == DEFAULT_SOURCE:
        return default_model_dir()
    if str(source) == DEFAULT_FAST_SOURCE:
        return default_student_dir()
    return Path(source)


@dataclass(frozen=True, kw_only=True)
class ModelFiles(Geometry):
    """Everything the runtime needs besides the networks themselves (and the model's geometry)."""

    kind: str  # "diffusers" | "artifact"
    root: Path
    model_id: str
    prompts: PromptBank
    embeddings: PromptEmbeddings
    scheduler_config: dict[str, Any]
    manifest: dict[str, Any] = field(default_factory=dict)
    sampler: ModelSamplerDefaults = field(default_factory=ModelSamplerDefaults)  # used when the user gives none

    @property
    def onnx_dir(self) -> Path:
        return self.root / ONNX_DIR

    @property
    def export_dtype(self) -> str | None:
        """The compute dtype of an artifact's ONNX graphs (None for a pipeline dir)."""
        return str(self.manifest.get("onnx", {}).get("dtype", "fp32")) if self.kind == "artifact" else None


def sampler_defaults_of(source: str | Path) -> ModelSamplerDefaults:
    """The sampler defaults ``source`` asks for, read without loading it (the CLI resolves its flags first)."""
    root = resolve_source(source)
    if not root.is_dir():
        raise ArtifactError(f"{root}: model directory not found")
    return read_sampler_defaults(root)


def open_model(source: str | Path) -> ModelFiles:
    """Validate ``source`` and load its prompts, embeddings, scheduler config and geometry."""
    root = resolve_source(source)
    if not root.is_dir():
        raise ArtifactError(f"{root}: model directory not found")
    if is_artifact(root):
        return _open_artifact(root)
    if is_pipeline_dir(root):
        return _open_diffusers(root)
    raise ArtifactError(f"{root}: neither a histoaug artifact ({MANIFEST_FILE}) nor a diffusers "
                        f"pipeline dir ({MODEL_INDEX_FILE})")


def _open_artifact(root: Path) -> ModelFiles:
    contents = read_artifact(root)
    return ModelFiles(kind="artifact", root=root, model_id=str(contents.manifest.get("model_id", "")),
                      prompts=contents.prompts, embeddings=contents.embeddings,
                      scheduler_config=contents.scheduler_config, manifest=contents.manifest,
                      sampler=read_sampler_defaults(root), **asdict(contents.geometry))


def _open_diffusers(root: Path) -> ModelFiles:
    from transformers import CLIPTextModel, CLIPTokenizer
    from transformers.utils import logging as hf_logging

    if not (root / PROMPTS_FILE).exists():
        raise ArtifactError(f"{root}: diffusers pipeline dir without {PROMPTS_FILE}; write one with "
                            f"histoaug.prompts.PromptBank(...).save('{root}')")
    prompts = PromptBank.load(root / PROMPTS_FILE)
    if missing := missing_pipeline_parts(root):
        raise ArtifactError(f"{root}: diffusers pipeline dir lacks its {missing[0]} folder")
    model_id = model_id_of(root)
    bars_were_disabled = hf_logging.is_progress_bar_enabled() is False
    hf_logging.disable_progress_bar()  # a per-load progress bar is noise for a tiny component
    try:
        tokenizer = CLIPTokenizer.from_pretrained(root, subfolder="tokenizer")
        text_encoder = CLIPTextModel.from_pretrained(root, subfolder="text_encoder", use_safetensors=True)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{root}: cannot load the text encoder or tokenizer ({exc})") from exc
    finally:
        if not bars_were_disabled:
            hf_logging.enable_progress_bar()
    embeddings = encode_prompts(text_encoder.eval(), tokenizer, prompts)
    del text_encoder
    logger.info("computed embeddings of %d prompts for %s", len(prompts), root)
    return ModelFiles(kind="diffusers", root=root, model_id=model_id, prompts=prompts, embeddings=embeddings,
                      scheduler_config=read_json(root / SCHEDULER_CONFIG), sampler=read_sampler_defaults(root),
                      **asdict(read_geometry(root)))
