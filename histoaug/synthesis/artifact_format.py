"""The histoaug model directory formats: the one module that knows their file names, the
manifest, the hashing, and how an artifact is read and written.

``histoaug export`` (:mod:`histoaug.export.artifact`) writes artifacts through this module; the
runtime (:mod:`histoaug.synthesis.model_source` and the backends) reads them through it;
nothing else spells a file name of the format.

An exported **artifact** dir::

    manifest.json                    format, source model hash, shapes, dtypes, opset, checks,
                                     sha256 + size of every other file (verified on load)
    prompts.json                     the model's PromptBank
    prompt_embeddings.safetensors    cond (P, L, D) and uncond (1, L, D), float32
    scheduler/scheduler_config.json  the model's noise schedule (LCMScheduler for a distilled student)
    [sampler_defaults.json]          the model's own default steps / guidance / scheduler (a student's)
    unet/, vae/                      diffusers weights (safetensors) for the torch backend
    onnx/unet.onnx                   opset 23, fused Attention, dynamic batch (ONNX Runtime, TensorRT)
    onnx/vae_decoder.onnx
    [model_index.json, text_encoder/, tokenizer/]   with --with-text-encoder: the artifact is
                                     also a complete diffusers pipeline dir (the embedded model is)

A diffusers **pipeline dir** (what :mod:`histoaug.training.finetune` writes) holds
``model_index.json``, ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/`` and
``prompts.json``; its prompt embeddings are computed on load.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from histoaug.atomic_files import write_text
from histoaug.errors import ArtifactError
from histoaug.prompts import PROMPTS_FILE, PromptBank
from histoaug.synthesis.defaults import (
    SCHEDULER_NAMES,
    STUDENT_GUIDANCE,
    STUDENT_SCHEDULER,
    STUDENT_STEPS,
    ModelSamplerDefaults,
)
from histoaug.synthesis.prompt_embeddings import PromptEmbeddings

ARTIFACT_FORMAT = "histoaug.artifact/1"
MANIFEST_FILE = "manifest.json"
EMBEDDINGS_FILE = "prompt_embeddings.safetensors"
SCHEDULER_CONFIG = "scheduler/scheduler_config.json"
MODEL_INDEX_FILE = "model_index.json"
# The model's own sampler defaults (a distilled student's steps/guidance/scheduler); optional.
SAMPLER_DEFAULTS_FILE = "sampler_defaults.json"
SAMPLER_DEFAULTS_FORMAT = "histoaug.sampler_defaults/1"
ONNX_DIR = "onnx"
UNET_FILE = "unet.onnx"  # inside ONNX_DIR
VAE_DECODER_FILE = "vae_decoder.onnx"  # inside ONNX_DIR
WEIGHT_FOLDERS = ("unet", "vae")  # what the torch backend loads
TEXT_FOLDERS = ("text_encoder", "tokenizer")  # only needed to compute prompt embeddings
PIPELINE_FOLDERS = (*WEIGHT_FOLDERS, *TEXT_FOLDERS, "scheduler")
# What decides generated patches; training logs, checkpoints and previews in the same dir do not.
MODEL_PARTS = (MODEL_INDEX_FILE, *PIPELINE_FOLDERS, PROMPTS_FILE, SAMPLER_DEFAULTS_FILE)
_CHUNK = 1 << 20


# --- what a directory is -----------------------------------------------------------------------
def is_artifact(root: Path) -> bool:
    """An exported artifact (it has a manifest; it may be a pipeline dir as well)."""
    return (root / MANIFEST_FILE).exists()


def is_pipeline_dir(root: Path) -> bool:
    """A diffusers pipeline dir (it has ``model_index.json``; see :func:`missing_pipeline_parts`)."""
    return (root / MODEL_INDEX_FILE).exists()


def missing_pipeline_parts(root: Path) -> list[str]:
    """The parts a pipeline dir lacks to be loaded with its text encoder (empty when complete)."""
    missing = [f"{sub}/" for sub in PIPELINE_FOLDERS if not (root / sub).is_dir()]
    return missing + [name for name in (MODEL_INDEX_FILE, PROMPTS_FILE) if not (root / name).is_file()]


# --- hashing -----------------------------------------------------------------------------------
def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def list_files(root: Path) -> list[str]:
    """Relative POSIX paths of the regular files under ``root`` (sorted), the manifest excluded."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and p.name != MANIFEST_FILE)


def directory_digest(root: Path, parts: tuple[str, ...] | None = None) -> str:
    """One sha256 over (path, file sha256) of the files under ``root`` (only those whose first
    path component is in ``parts``, when given): the identity of a model directory."""
    digest = hashlib.sha256()
    for rel in list_files(root):
        if parts is not None and rel.split("/", 1)[0] not in parts:
            continue
        digest.update(f"{rel}\0{sha256_file(root / rel)}\n".encode())
    return digest.hexdigest()


def model_digest(root: Path) -> str:
    """sha256 over a pipeline's weights, configs, tokenizer and prompts (:data:`MODEL_PARTS`)."""
    return directory_digest(root, MODEL_PARTS)


def model_id_of(root: Path) -> str:
    """Short identity of a diffusers model dir (see :func:`model_digest`)."""
    return model_digest(root)[:16]


# --- the manifest ------------------------------------------------------------------------------
def write_manifest(root: Path, fields: dict[str, Any]) -> dict[str, Any]:
    """Hash every file under ``root`` and write ``manifest.json`` with ``fields`` (last, atomically)."""
    files = {rel: {"bytes": (root / rel).stat().st_size, "sha256": sha256_file(root / rel)}
             for rel in list_files(root)}
    manifest = {"format": ARTIFACT_FORMAT, **fields, "files": files}
    write_text(root / MANIFEST_FILE, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ArtifactError(f"{root}: not a histoaug artifact (no {MANIFEST_FILE})") from exc
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: unreadable manifest ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != ARTIFACT_FORMAT:
        raise ArtifactError(f"{path}: not a {ARTIFACT_FORMAT} manifest")
    if not isinstance(manifest.get("files"), dict) or not manifest["files"]:
        raise ArtifactError(f"{path}: manifest lists no files")
    return manifest


def verify_manifest(root: Path) -> dict[str, Any]:
    """Read the manifest and check every listed file's size and sha256; return the manifest."""
    manifest = read_manifest(root)
    for rel, entry in manifest["files"].items():
        path = root / rel
        if not path.is_file():
            raise ArtifactError(f"{root}: file {rel} listed in the manifest is missing")
        try:
            size, expected = int(entry["bytes"]), str(entry["sha256"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{root}: malformed manifest entry for {rel}") from exc
        actual_size = path.stat().st_size
        if actual_size != size:
            raise ArtifactError(f"{root}: file {rel} is {actual_size} bytes, the manifest says {size} "
                                f"(truncated or replaced)")
        if sha256_file(path) != expected:
            raise ArtifactError(f"{root}: file {rel} does not match its sha256 in the manifest (modified)")
    return manifest


# --- reading -----------------------------------------------------------------------------------
def read_json(path: Path) -> dict[str, Any]:
    """A JSON config of a model dir; a missing or unreadable one is an ArtifactError."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ArtifactError(f"{path.parent.parent}: missing {path.parent.name}/{path.name}") from exc
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: unreadable ({exc})") from exc


@dataclass(frozen=True)
class Geometry:
    """Latent and image sizes of a model, from its ``unet/`` and ``vae/`` configs."""

    scaling_factor: float
    latent_channels: int
    latent_size: int
    image_size: int


def read_geometry(root: Path) -> Geometry:
    vae = read_json(root / "vae" / "config.json")
    unet = read_json(root / "unet" / "config.json")
    try:
        scale = 2 ** (len(vae["block_out_channels"]) - 1)
        latent_size = int(unet["sample_size"])
        return Geometry(float(vae.get("scaling_factor", 0.18215)), int(unet["in_channels"]), latent_size,
                        latent_size * scale)
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{root}: unet/vae config lacks {exc}") from exc


def read_sampler_defaults(root: Path) -> ModelSamplerDefaults:
    """The model's sampler defaults: ``sampler_defaults.json`` when present, else the student's (LCM,
    few steps, guidance 1) for an ``LCMScheduler`` scheduler config, else the product defaults."""
    path = root / SAMPLER_DEFAULTS_FILE
    if not path.exists():
        scheduler = read_json(root / SCHEDULER_CONFIG) if (root / SCHEDULER_CONFIG).exists() else {}
        if scheduler.get("_class_name") == "LCMScheduler":
            return ModelSamplerDefaults(STUDENT_STEPS, STUDENT_GUIDANCE, STUDENT_SCHEDULER)
        return ModelSamplerDefaults()
    data = read_json(path)
    try:
        if data.get("format") != SAMPLER_DEFAULTS_FORMAT:
            raise ValueError(f"format is not {SAMPLER_DEFAULTS_FORMAT}")
        steps, guidance, scheduler = data["steps"], float(data["guidance"]), str(data["scheduler"])
        rescale = float(data.get("guidance_rescale", 0.0))  # optional: files written before it existed
        if not isinstance(steps, int) or steps < 1 or not guidance >= 1.0 or scheduler not in SCHEDULER_NAMES:
            raise ValueError(f"steps {steps!r}, guidance {guidance!r}, scheduler {scheduler!r}")
        if not 0.0 <= rescale <= 1.0:
            raise ValueError(f"guidance_rescale {rescale!r} is not in [0, 1]")
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{path}: invalid sampler defaults ({exc})") from exc
    return ModelSamplerDefaults(steps, guidance, scheduler, rescale)


def write_sampler_defaults(root: Path, defaults: ModelSamplerDefaults) -> None:
    """Record the model's sampler defaults (atomically), read back by :func:`read_sampler_defaults`."""
    payload = {"format": SAMPLER_DEFAULTS_FORMAT, "steps": defaults.steps, "guidance": defaults.guidance,
               "scheduler": defaults.scheduler}
    if defaults.guidance_rescale:  # absent = 0: files stay as they were for models without it
        payload["guidance_rescale"] = defaults.guidance_rescale
    write_text(root / SAMPLER_DEFAULTS_FILE, json.dumps(payload, indent=2) + "\n")


@dataclass
class ArtifactContents:
    """What an artifact holds besides the networks: verified manifest, prompts and embeddings."""

    manifest: dict[str, Any]
    prompts: PromptBank
    embeddings: PromptEmbeddings
    scheduler_config: dict[str, Any]
    geometry: Geometry


def read_artifact(root: Path) -> ArtifactContents:
    """Verify ``root`` against its manifest (before anything is deserialised), then read it."""
    manifest = verify_manifest(root)
    prompts = PromptBank.load(root / PROMPTS_FILE)
    embeddings = PromptEmbeddings.load(root / EMBEDDINGS_FILE)
    embeddings.check(prompts, source=str(root))
    return ArtifactContents(manifest, prompts, embeddings, read_json(root / SCHEDULER_CONFIG), read_geometry(root))


# --- writing (inside export's staging directory) -------------------------------------------------
def copy_model_files(src: Path, work: Path, embeddings: PromptEmbeddings) -> None:
    """The non-network part of an artifact: prompts, their embeddings and the noise schedule."""
    (work / SCHEDULER_CONFIG).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src / SCHEDULER_CONFIG, work / SCHEDULER_CONFIG)
    shutil.copy2(src / PROMPTS_FILE, work / PROMPTS_FILE)
    if (src / SAMPLER_DEFAULTS_FILE).is_file():
        shutil.copy2(src / SAMPLER_DEFAULTS_FILE, work / SAMPLER_DEFAULTS_FILE)
    embeddings.save(work / EMBEDDINGS_FILE)


def copy_text_encoder(src: Path, work: Path) -> None:
    """Text encoder, tokenizer and ``model_index.json``: makes the artifact a pipeline dir too."""
    for part in TEXT_FOLDERS:
        shutil.copytree(src / part, work / part)
    shutil.copy2(src / MODEL_INDEX_FILE, work / MODEL_INDEX_FILE)
