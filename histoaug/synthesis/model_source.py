"""Resolve a ``source`` (default, diffusers pipeline dir, exported artifact dir) into model files.

A diffusers pipeline dir (what ``training.finetune`` writes) must hold ``prompts.json`` at its
root; its prompt embeddings are computed once here with its text encoder. An artifact dir
(``histoaug export``) holds them precomputed and is verified against its manifest first.
Both kinds hold diffusers ``unet/`` and ``vae/`` subfolders (the torch backend's weights);
artifacts add ``onnx/`` (the ONNX Runtime and TensorRT backends' graphs).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from histoaug.errors import ArtifactError
from histoaug.prompts import PROMPTS_FILE, PromptBank
from histoaug.synthesis.manifest import MANIFEST_FILE, directory_digest, verify_manifest
from histoaug.synthesis.prompt_embeddings import EMBEDDINGS_FILE, PromptEmbeddings, encode_prompts

logger = logging.getLogger(__name__)

SCHEDULER_CONFIG = "scheduler/scheduler_config.json"
DEFAULT_SOURCE = "default"
# The embedded default model: an exported artifact shipped inside the package (see its MODEL_CARD.md).
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "default_model"


def default_model_dir() -> Path:
    """Where the embedded default model lives (an artifact dir, verified on load like any other)."""
    if not (DEFAULT_MODEL_DIR / MANIFEST_FILE).is_file():
        raise ArtifactError(
            f"the embedded default model is missing from this installation ({DEFAULT_MODEL_DIR} has no "
            f"{MANIFEST_FILE}); reinstall histoaug, or pass a model or artifact dir"
        )
    return DEFAULT_MODEL_DIR


def resolve_source(source: str | Path) -> Path:
    """``"default"`` -> the embedded model's dir; anything else -> ``Path(source)``."""
    return default_model_dir() if str(source) == DEFAULT_SOURCE else Path(source)


@dataclass
class ModelFiles:
    """Everything the runtime needs besides the networks themselves."""

    kind: str  # "diffusers" | "artifact"
    root: Path
    model_id: str
    prompts: PromptBank
    embeddings: PromptEmbeddings
    scheduler_config: dict[str, Any]
    scaling_factor: float
    latent_channels: int
    latent_size: int
    image_size: int
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def onnx_dir(self) -> Path:
        return self.root / "onnx"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ArtifactError(f"{path.parent.parent}: missing {path.parent.name}/{path.name}") from exc
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: unreadable ({exc})") from exc


def _geometry(root: Path) -> tuple[float, int, int, int]:
    vae = _read_json(root / "vae" / "config.json")
    unet = _read_json(root / "unet" / "config.json")
    try:
        scale = 2 ** (len(vae["block_out_channels"]) - 1)
        latent_size = int(unet["sample_size"])
        return float(vae.get("scaling_factor", 0.18215)), int(unet["in_channels"]), latent_size, latent_size * scale
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{root}: unet/vae config lacks {exc}") from exc


def open_model(source: str | Path) -> ModelFiles:
    """Validate ``source`` and load its prompts, embeddings, scheduler config and geometry."""
    root = resolve_source(source)
    if not root.is_dir():
        raise ArtifactError(f"{root}: model directory not found")
    if (root / MANIFEST_FILE).exists():
        return _open_artifact(root)
    if (root / "model_index.json").exists():
        return _open_diffusers(root)
    raise ArtifactError(f"{root}: neither a histoaug artifact ({MANIFEST_FILE}) nor a diffusers "
                        f"pipeline dir (model_index.json)")


def _open_artifact(root: Path) -> ModelFiles:
    manifest = verify_manifest(root)
    prompts = PromptBank.load(root / PROMPTS_FILE)
    embeddings = PromptEmbeddings.load(root / EMBEDDINGS_FILE)
    embeddings.check(prompts, source=str(root))
    scaling, channels, latent, image = _geometry(root)
    return ModelFiles(
        kind="artifact", root=root, model_id=str(manifest.get("model_id", "")), prompts=prompts,
        embeddings=embeddings, scheduler_config=_read_json(root / SCHEDULER_CONFIG), scaling_factor=scaling,
        latent_channels=channels, latent_size=latent, image_size=image, manifest=manifest,
    )


def _open_diffusers(root: Path) -> ModelFiles:
    from transformers import CLIPTextModel, CLIPTokenizer
    from transformers.utils import logging as hf_logging

    if not (root / PROMPTS_FILE).exists():
        raise ArtifactError(f"{root}: diffusers pipeline dir without {PROMPTS_FILE}; write one with "
                            f"histoaug.prompts.PromptBank(...).save('{root}')")
    prompts = PromptBank.load(root / PROMPTS_FILE)
    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        if not (root / sub).is_dir():
            raise ArtifactError(f"{root}: diffusers pipeline dir lacks its {sub}/ folder")
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
    scaling, channels, latent, image = _geometry(root)
    logger.info("computed embeddings of %d prompts for %s", len(prompts), root)
    return ModelFiles(
        kind="diffusers", root=root, model_id=model_id, prompts=prompts, embeddings=embeddings,
        scheduler_config=_read_json(root / SCHEDULER_CONFIG), scaling_factor=scaling,
        latent_channels=channels, latent_size=latent, image_size=image,
    )


# What decides generated patches; training logs, checkpoints and previews in the same dir do not.
MODEL_PARTS = ("model_index.json", "unet", "vae", "text_encoder", "tokenizer", "scheduler", PROMPTS_FILE)


def model_digest(root: Path) -> str:
    """sha256 over the pipeline's weights, configs, tokenizer and prompts."""
    return directory_digest(root, MODEL_PARTS)


def model_id_of(root: Path) -> str:
    """Short identity of a diffusers model dir (see :func:`model_digest`)."""
    return model_digest(root)[:16]
