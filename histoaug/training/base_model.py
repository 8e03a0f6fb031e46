"""The pipeline to fine-tune: a preset built from configs (from scratch) or a diffusers SD dir/hub id."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from histoaug.errors import ArtifactError

if TYPE_CHECKING:  # diffusers is imported when a model is loaded, not with this module
    from diffusers import StableDiffusionPipeline

logger = logging.getLogger(__name__)


class BaseModelError(ArtifactError):
    """The base model is missing, is not a Stable Diffusion pipeline, or cannot be loaded."""


def load_base_pipeline(base: str, *, seed: int = 0) -> StableDiffusionPipeline:
    """``tiny``/``small`` (histoaug presets, random weights from ``seed``), a pipeline dir or a hub id."""
    from diffusers import StableDiffusionPipeline

    from histoaug.models import PRESETS, build_pipeline

    path = Path(base).expanduser()
    if base in PRESETS and not path.exists():
        logger.info("training from scratch: %s preset built from configs (seed %d)", base, seed)
        return build_pipeline(base, seed=seed)
    if path.exists() or base.startswith((".", "/", "~")):
        if not path.is_dir():
            raise BaseModelError(f"base model {str(path)!r} is not a directory (a diffusers pipeline dir is expected)")
        if not (path / "unet" / "config.json").is_file():
            raise BaseModelError(
                f"base model dir {str(path)!r} has no unet/config.json: not a diffusers Stable Diffusion pipeline "
                f"dir (expected model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/); "
                f"or pass a preset: {', '.join(sorted(PRESETS))}"
            )
        source = str(path)
    else:
        source = base
    try:
        pipe = StableDiffusionPipeline.from_pretrained(source, safety_checker=None, requires_safety_checker=False)
    except (OSError, ValueError, TypeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BaseModelError(
            f"cannot load base model {base!r} ({first}); pass a local diffusers pipeline dir or a preset "
            f"({', '.join(sorted(PRESETS))}) with --base"
        ) from exc
    pipe.set_progress_bar_config(disable=True)
    return pipe
