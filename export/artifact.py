"""``histoaug export``: a diffusers pipeline dir -> a verified histoaug artifact (or a plain pipeline dir).

Artifact layout::

    manifest.json                    format, source model hash, shapes, dtypes, opset, checks,
                                     sha256 + size of every other file (verified on load)
    prompts.json                     the model's PromptBank
    prompt_embeddings.safetensors    cond (P, L, D) and uncond (1, L, D), float32
    scheduler/scheduler_config.json  the model's noise schedule
    unet/, vae/                      diffusers weights (safetensors) for the torch backend
    onnx/unet.onnx                   opset 23, fused Attention, dynamic batch
    onnx/vae_decoder.onnx

Everything is written into a temporary sibling directory and renamed into place at the end,
so OUT is either the complete, verified artifact or untouched.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from histoaug.errors import ArtifactError, InvalidArgumentError, OutputExistsError, OutputWriteError
from histoaug.prompts import PROMPTS_FILE
from histoaug.synthesis.manifest import write_manifest
from histoaug.synthesis.model_source import SCHEDULER_CONFIG, model_digest, open_model
from histoaug.synthesis.prompt_embeddings import EMBEDDINGS_FILE

logger = logging.getLogger(__name__)

FORMATS = ("onnx", "diffusers")


@dataclass(frozen=True)
class ExportSettings:
    format: str = "onnx"
    dtype: str = "fp32"
    batch: int = 2
    overwrite: bool = False
    verify: bool = True
    # also copy text_encoder/, tokenizer/ and model_index.json, so the artifact is a complete
    # diffusers pipeline dir too (StableDiffusionPipeline.from_pretrained, --format diffusers)
    with_text_encoder: bool = False

    def __post_init__(self) -> None:
        from histoaug.export.onnx_graphs import DTYPES

        if self.format not in FORMATS:
            raise InvalidArgumentError(f"--format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if self.dtype not in DTYPES:
            raise InvalidArgumentError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.batch <= 0:
            raise InvalidArgumentError(f"--batch must be positive, got {self.batch}")
        if self.format == "diffusers" and self.dtype != "fp32":
            raise InvalidArgumentError("--format diffusers writes the fp32 weights; --dtype applies to onnx")


@contextmanager
def atomic_directory(out: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a temp dir next to ``out``; on success it replaces ``out``, on failure it is removed."""
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} exists; pass --overwrite to replace it")
    parent = out.resolve().parent
    if not parent.is_dir():
        raise OutputWriteError(f"cannot write {out}: directory {parent} does not exist")
    try:
        work = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=parent))
    except OSError as exc:
        raise OutputWriteError(f"cannot write {out}: {exc}") from exc
    try:
        yield work
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=parent))
            os.replace(out, old / out.name)
            os.replace(work, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _load_components(src: Path):
    from diffusers import AutoencoderKL, UNet2DConditionModel

    try:
        unet = UNet2DConditionModel.from_pretrained(src, subfolder="unet", use_safetensors=True).eval()
        vae = AutoencoderKL.from_pretrained(src, subfolder="vae", use_safetensors=True).eval()
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{src}: cannot load unet/vae weights ({exc})") from exc
    return unet.requires_grad_(False), vae.requires_grad_(False)


def export_model(src: str | Path, out: str | Path, settings: ExportSettings) -> Path:
    """Export ``src`` (a diffusers pipeline dir with prompts.json) to ``out``; returns ``out``."""
    src, out = Path(src), Path(out)
    if out.exists() and not settings.overwrite:  # before the (slow) model load
        raise OutputExistsError(f"{out} exists; pass --overwrite to replace it")
    model = open_model(src)  # validates the source, computes prompt embeddings
    if model.kind != "diffusers":
        raise InvalidArgumentError(f"{src}: export needs a diffusers pipeline dir, this is a {model.kind}")
    if out.resolve() == src.resolve():
        raise InvalidArgumentError("OUT must differ from SRC")
    if settings.format == "onnx" and settings.verify:
        from histoaug.synthesis.backends.onnxruntime_backend import verification_device

        verification_device(settings.dtype)  # refuses a dtype that cannot be verified here, before any work
    with atomic_directory(out, settings.overwrite) as work:
        if settings.format == "diffusers":
            _write_diffusers(src, work)
        else:
            _write_artifact(src, work, model, settings)
    logger.info("wrote %s", out)
    return out


def _write_diffusers(src: Path, work: Path) -> None:
    from diffusers import StableDiffusionPipeline

    try:
        pipe = StableDiffusionPipeline.from_pretrained(src, safety_checker=None, requires_safety_checker=False)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{src}: cannot load the pipeline ({exc})") from exc
    pipe.save_pretrained(work, safe_serialization=True)
    shutil.copy2(src / PROMPTS_FILE, work / PROMPTS_FILE)


def _write_artifact(src: Path, work: Path, model, settings: ExportSettings) -> None:
    from histoaug.export.graph_checks import attention_blocks, check_fused_attention, opset_of
    from histoaug.export.onnx_graphs import OPSET, export_unet, export_vae_decoder
    from histoaug.export.verify import verify_export
    from histoaug.synthesis.backends.onnxruntime_backend import UNET_FILE, VAE_DECODER_FILE

    unet, vae = _load_components(src)
    latent_shape = (model.latent_channels, model.latent_size, model.latent_size)
    text_shape = tuple(model.embeddings.cond.shape[1:])
    unet.save_pretrained(work / "unet", safe_serialization=True)
    vae.save_pretrained(work / "vae", safe_serialization=True)
    (work / "scheduler").mkdir()
    shutil.copy2(src / SCHEDULER_CONFIG, work / SCHEDULER_CONFIG)
    shutil.copy2(src / PROMPTS_FILE, work / PROMPTS_FILE)
    model.embeddings.save(work / EMBEDDINGS_FILE)
    onnx_dir = work / "onnx"
    onnx_dir.mkdir()
    export_unet(_copy(unet), onnx_dir / UNET_FILE, dtype=settings.dtype, batch=settings.batch,
                latent_shape=latent_shape, text_shape=text_shape)
    export_vae_decoder(_copy(vae), onnx_dir / VAE_DECODER_FILE, dtype=settings.dtype, batch=settings.batch,
                       latent_shape=latent_shape)
    structure = {
        "unet": check_fused_attention(onnx_dir / UNET_FILE, attention_blocks(unet)),
        "vae_decoder": check_fused_attention(onnx_dir / VAE_DECODER_FILE, attention_blocks(vae.decoder)),
    }
    checks: dict[str, Any] = {}
    if settings.verify:
        for check in verify_export(onnx_dir, unet, vae, dtype=settings.dtype, batch=settings.batch,
                                   latent_shape=latent_shape, text_shape=text_shape):
            checks[check.graph] = {"max_abs_error": check.max_abs_error, "relative_error": check.relative_error,
                                   "tolerance": check.tolerance, "provider": check.provider}
    if settings.with_text_encoder:
        for part in ("text_encoder", "tokenizer"):
            shutil.copytree(src / part, work / part)
        shutil.copy2(src / "model_index.json", work / "model_index.json")
    source_digest = model_digest(src)
    write_manifest(work, {
        "model_id": source_digest[:16],
        "source_model_sha256": source_digest,
        "source": str(src.resolve()),
        "image_size": model.image_size,
        "latent_shape": list(latent_shape),
        "text_embedding_shape": list(text_shape),
        "prompts": len(model.prompts),
        "onnx": {
            "opset": opset_of(onnx_dir / UNET_FILE),
            "target_opset": OPSET,
            "dtype": settings.dtype,
            "io_dtype": "float32",
            "batch": "dynamic",
            "export_batch": settings.batch,
            "inputs": {"unet": {"sample": ["batch", *latent_shape], "timestep": ["batch"],
                                "encoder_hidden_states": ["batch", *text_shape]},
                       "vae_decoder": {"latent": ["batch", *latent_shape]}},
            "structure": structure,
            "verification": checks,
        },
        "torch_version": torch.__version__,
    })


def _copy(module: torch.nn.Module) -> torch.nn.Module:
    """A deep copy, so casting for a reduced-precision export leaves the fp32 reference intact."""
    import copy

    return copy.deepcopy(module)
