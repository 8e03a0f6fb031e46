"""histoaug.training: the paper's pipeline for making your own model from your own patches.

Stages, one module each:

* :mod:`~histoaug.training.embedding` — a frozen vision model (DINO ViT-S/16 by default)
  embeds every patch; embeddings are cached on disk by data and model hash.
* :mod:`~histoaug.training.clustering` — K-means into K morphology types (33 by default).
* :mod:`~histoaug.training.prompt_building` — baseline (label) or morphology (label x type)
  prompts: ``prompts.json`` plus per-image prompt ids (``histoaug prompts build``).
* :mod:`~histoaug.training.finetune` — fine-tunes the UNet of a diffusers Stable Diffusion
  pipeline on (patch, prompt) pairs with accelerate (``histoaug train``); checkpoints in
  :mod:`~histoaug.training.checkpoints`.
* :mod:`~histoaug.training.distillation` — latent consistency distillation of a trained model
  into a few-step LCM student (``histoaug distill``).

This package is a sibling of the runtime: nothing else in histoaug imports it. It needs the
``training`` extra (scikit-learn): ``pip install 'histoaug[training]'``.
"""

from __future__ import annotations

from histoaug.training.clustering import ClusterConfig, ClusteringResult, assign_clusters, fit_clusters
from histoaug.training.distillation import DistillResult, distill
from histoaug.training.embedding import ImageEmbedder, TransformersEmbedder, embed_dataset
from histoaug.training.finetune import TrainConfig, TrainResult, train
from histoaug.training.prompt_building import (
    PromptBuildConfig,
    build_prompts,
    load_prompts_dir,
    morphology_bank,
)
from histoaug.training.run_config import DistillConfig

__all__ = [
    "ClusterConfig",
    "ClusteringResult",
    "DistillConfig",
    "DistillResult",
    "ImageEmbedder",
    "PromptBuildConfig",
    "TrainConfig",
    "TrainResult",
    "TransformersEmbedder",
    "assign_clusters",
    "build_prompts",
    "distill",
    "embed_dataset",
    "fit_clusters",
    "load_prompts_dir",
    "morphology_bank",
    "train",
]
