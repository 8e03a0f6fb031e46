"""``histoaug export``: a diffusers pipeline dir -> a verified histoaug artifact (or a plain pipeline dir).

The artifact's layout, manifest and hashing are :mod:`histoaug.synthesis.artifact_format`'s;
this module builds what goes into it (ONNX graphs, their structural and numerical checks) and
writes it through that module. The source may be an artifact that is also a pipeline dir (the
embedded default model, or any export made ``--with-text-encoder``), so an artifact can be
re-exported in another dtype.

Everything is written into a uniquely named temporary sibling directory and renamed into place
at the end (:func:`histoaug.atomic_files.atomic_directory`), so OUT is either the complete,
verified artifact or untouched.
"""

from __future__ import annotations

import copy
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from histoaug.atomic_files import atomic_directory
from histoaug.dtypes import DTYPES
from histoaug.errors import ArtifactError, HistoaugError, InvalidArgumentError, OutputExistsError, OutputWriteError
from histoaug.synthesis import artifact_format as layout
from histoaug.synthesis.model_source import ModelFiles, open_model, resolve_source

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
    progress: bool = False  # a stage bar (an export takes ~20-60 s on a 2-core CPU)

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise InvalidArgumentError(f"--format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if self.dtype not in DTYPES:
            raise InvalidArgumentError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.batch <= 0:
            raise InvalidArgumentError(f"--batch must be positive, got {self.batch}")
        if self.format == "diffusers" and self.dtype != "fp32":
            raise InvalidArgumentError("--format diffusers writes the fp32 weights; --dtype applies to onnx")


def _load_components(src: Path):
    from diffusers import AutoencoderKL, UNet2DConditionModel

    try:
        unet = UNet2DConditionModel.from_pretrained(src, subfolder="unet", use_safetensors=True).eval()
        vae = AutoencoderKL.from_pretrained(src, subfolder="vae", use_safetensors=True).eval()
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{src}: cannot load unet/vae weights ({exc})") from exc
    return unet.requires_grad_(False), vae.requires_grad_(False)


def export_model(src: str | Path, out: str | Path, settings: ExportSettings) -> Path:
    """Export ``src`` (a diffusers pipeline dir with prompts.json, ``"default"``, or an artifact that
    is also a pipeline dir) to ``out``; returns ``out``."""
    src, out = resolve_source(src), Path(out)
    if out.exists() and not settings.overwrite:  # before the (slow) model load
        raise OutputExistsError(f"{out} exists; pass --overwrite to replace it")
    model = open_model(src)  # validates the source (verifies an artifact), computes prompt embeddings
    if model.kind == "artifact" and (missing := layout.missing_pipeline_parts(src)):
        raise InvalidArgumentError(f"{src}: export needs a diffusers pipeline dir; this artifact lacks "
                                   f"{', '.join(missing)} (export from the pipeline dir it came from, or from "
                                   "an artifact exported --with-text-encoder)")
    if out.resolve() == src.resolve():
        raise InvalidArgumentError("OUT must differ from SRC")
    if settings.format == "onnx" and settings.verify:
        from histoaug.synthesis.backends.onnxruntime_backend import verification_device

        verification_device(settings.dtype)  # refuses a dtype that cannot be verified here, before any work
    try:
        with atomic_directory(out, replace=settings.overwrite) as work:
            if settings.format == "diffusers":
                _write_diffusers(src, work)
            else:
                _write_artifact(src, work, model, settings)
    except HistoaugError:
        raise
    except FileExistsError as exc:  # OUT appeared while exporting
        raise OutputExistsError(f"{out} appeared while exporting; pass --overwrite to replace it") from exc
    except OSError as exc:  # permissions, disk full: the staging dir is gone, OUT untouched
        raise OutputWriteError(f"cannot write {out}: {exc.strerror or exc}") from exc
    logger.info("wrote %s", out)
    return out


def _write_diffusers(src: Path, work: Path) -> None:
    from diffusers import StableDiffusionPipeline

    try:
        pipe = StableDiffusionPipeline.from_pretrained(src, safety_checker=None, requires_safety_checker=False)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{src}: cannot load the pipeline ({exc})") from exc
    pipe.save_pretrained(work, safe_serialization=True)
    shutil.copy2(src / layout.PROMPTS_FILE, work / layout.PROMPTS_FILE)


def _write_artifact(src: Path, work: Path, model: ModelFiles, settings: ExportSettings) -> None:
    from tqdm.auto import tqdm

    from histoaug.export.graph_checks import attention_blocks, check_fused_attention, opset_of
    from histoaug.export.onnx_graphs import OPSET, export_unet, export_vae_decoder
    from histoaug.export.verify import verify_export

    bar = tqdm(total=4 if settings.verify else 3, desc="export", unit="stage", disable=not settings.progress)
    bar.set_postfix_str("loading weights")
    unet, vae = _load_components(src)
    latent_shape = (model.latent_channels, model.latent_size, model.latent_size)
    text_shape = tuple(model.embeddings.cond.shape[1:])
    unet.save_pretrained(work / "unet", safe_serialization=True)
    vae.save_pretrained(work / "vae", safe_serialization=True)
    layout.copy_model_files(src, work, model.embeddings)
    onnx_dir = work / layout.ONNX_DIR
    onnx_dir.mkdir()
    unet_graph, vae_graph = onnx_dir / layout.UNET_FILE, onnx_dir / layout.VAE_DECODER_FILE
    bar.update()
    bar.set_postfix_str("UNet -> ONNX")
    export_unet(copy.deepcopy(unet), unet_graph, dtype=settings.dtype, batch=settings.batch,
                latent_shape=latent_shape, text_shape=text_shape)
    bar.update()
    bar.set_postfix_str("VAE decoder -> ONNX")
    export_vae_decoder(copy.deepcopy(vae), vae_graph, dtype=settings.dtype, batch=settings.batch,
                       latent_shape=latent_shape)
    bar.update()
    structure = {
        "unet": check_fused_attention(unet_graph, attention_blocks(unet)),
        "vae_decoder": check_fused_attention(vae_graph, attention_blocks(vae.decoder)),
    }
    checks: dict[str, Any] = {}
    if settings.verify:
        bar.set_postfix_str("ONNX Runtime vs torch")
        for check in verify_export(onnx_dir, unet, vae, dtype=settings.dtype, batch=settings.batch,
                                   latent_shape=latent_shape, text_shape=text_shape):
            checks[check.graph] = {"max_abs_error": check.max_abs_error, "relative_error": check.relative_error,
                                   "tolerance": check.tolerance, "provider": check.provider}
        bar.update()
    bar.close()
    if settings.with_text_encoder:
        layout.copy_text_encoder(src, work)
    # a re-exported artifact keeps the identity of the model it was exported from (same weights)
    source_digest = str(model.manifest.get("source_model_sha256") or layout.model_digest(src))
    layout.write_manifest(work, {
        "model_id": source_digest[:16],
        "source_model_sha256": source_digest,
        "source": str(src.resolve()),
        "image_size": model.image_size,
        "latent_shape": list(latent_shape),
        "text_embedding_shape": list(text_shape),
        "prompts": len(model.prompts),
        "onnx": {
            "opset": opset_of(unet_graph),
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

