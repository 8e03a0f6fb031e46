"""Image embeddings for morphology clustering: a frozen vision model, batched, cached on disk.

The paper embeds every patch with a frozen DINO ViT-S/16 and clusters the embeddings. Any
transformers vision model works here (a hub id such as ``facebook/dino-vits16`` or a local
dir), with the preprocessing that model ships (its ``AutoImageProcessor``; otherwise the
``image_mean``/``image_std``/``image_size`` of its config). The embedding of a patch is the
model's CLS token (ViT-style models: ``last_hidden_state[:, 0]``) or its pooled output
(convolutional models).

``stain-texture`` selects the handcrafted stain/texture features of
:mod:`histoaug.training.stain_embedding` instead, for machines where no pretrained model can be
loaded (it is only used when named).

Embeddings are cached as safetensors under ``cache_dir`` keyed by the SHA-256 of the data and
of the model (weights + preprocessing), so a second ``histoaug prompts build`` with another K
reuses them, and a changed model or data set never reads a stale cache.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from histoaug.atomic_files import atomic_path
from histoaug.data.pcam import PCam
from histoaug.errors import ArtifactError, InvalidArgumentError
from histoaug.training.hashing import dataset_hash, module_hash

logger = logging.getLogger(__name__)

DEFAULT_EMBEDDER = "facebook/dino-vits16"
CACHE_ENV = "HISTOAUG_CACHE"


class EmbedderLoadError(ArtifactError):
    """The image embedder cannot be loaded, or is not a vision model."""


class ImageEmbedder(Protocol):
    """Maps a batch of uint8 RGB patches ``(B, H, W, 3)`` to float32 embeddings ``(B, D)``.

    ``preprocessor`` turns patches into model input on the CPU; it must be picklable, because
    :func:`embed_dataset` runs it in DataLoader workers while ``encode`` runs the model.
    """

    @property
    def fingerprint(self) -> str:
        """Hash of everything that determines the embeddings (weights, preprocessing)."""
        ...

    preprocessor: Callable[[np.ndarray], torch.Tensor]

    def encode(self, pixels: torch.Tensor) -> torch.Tensor: ...

    def embed(self, images: np.ndarray) -> torch.Tensor: ...


def default_cache_dir() -> Path:
    """``$HISTOAUG_CACHE/embeddings`` or ``~/.cache/histoaug/embeddings``."""
    base = os.environ.get(CACHE_ENV)
    return (Path(base) if base else Path.home() / ".cache" / "histoaug") / "embeddings"


class ProcessorPreprocessing:
    """The model's own ``AutoImageProcessor`` applied to a uint8 batch (picklable)."""

    def __init__(self, processor: object) -> None:
        self.processor = processor

    def __call__(self, images: np.ndarray) -> torch.Tensor:
        return self.processor(images=list(images), return_tensors="pt")["pixel_values"]


class ConfigPreprocessing:
    """Resize to the config's ``image_size`` and normalise by its ``image_mean``/``image_std``."""

    def __init__(self, mean: list[float], std: list[float], side: int) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.side = side

    def __call__(self, images: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
        x = torch.nn.functional.interpolate(x, size=(self.side, self.side), mode="bicubic", antialias=True,
                                            align_corners=False)
        return (x - self.mean) / self.std


def _preprocessor(source: str, config: object, *,
                  local_files_only: bool = False) -> tuple[Callable[[np.ndarray], torch.Tensor], dict]:
    """The model's own image preprocessing, as a function of a uint8 batch, and its settings."""
    from transformers import AutoImageProcessor

    try:
        processor = AutoImageProcessor.from_pretrained(source, local_files_only=local_files_only)
    except (OSError, ValueError) as exc:
        processor = None
        logger.debug("no image processor for %s (%s); trying its config", source, exc)
    if processor is not None:
        return ProcessorPreprocessing(processor), {"processor": processor.to_dict()}

    mean = getattr(config, "image_mean", None)
    std = getattr(config, "image_std", None)
    size = getattr(config, "image_size", None)
    if mean is None or std is None or size is None:
        raise EmbedderLoadError(
            f"embedder {source!r} has no image processor (preprocessor_config.json) and its config gives no "
            "image_mean/image_std/image_size, so its expected preprocessing is unknown; save the model's "
            "AutoImageProcessor next to it"
        )
    side = int(size if isinstance(size, int) else size[0])
    return ConfigPreprocessing(list(mean), list(std), side), {"mean": list(mean), "std": list(std), "size": side}


class TransformersEmbedder:
    """A frozen transformers vision model (DINO ViT by default) used as an image embedder."""

    def __init__(self, source: str = DEFAULT_EMBEDDER, *, device: str | torch.device = "cpu") -> None:
        from transformers import AutoConfig, AutoModel

        self.source = str(source)
        self.device = torch.device(device)
        local = Path(self.source).expanduser()
        looks_local = local.exists() or self.source.startswith((".", "/", "~"))
        if looks_local and not (local / "config.json").is_file():
            raise EmbedderLoadError(
                f"embedder dir {str(local)!r} has no config.json; pass a transformers vision model dir "
                "(save_pretrained output) or hub id with --embedder"
            )
        from histoaug.network import offline_reason

        offline = None if looks_local else offline_reason()
        self._local_only = offline is not None  # offline: the local hub cache only, no retries
        try:
            config = AutoConfig.from_pretrained(str(local) if looks_local else self.source,
                                                local_files_only=self._local_only)
        except (OSError, ValueError) as exc:
            why = f"offline ({offline}) and not in the local Hugging Face cache" if offline else \
                str(exc).splitlines()[0]
            raise EmbedderLoadError(
                f"cannot load embedder {self.source!r} ({why}); without network access "
                "pass a local transformers vision model dir with --embedder DIR (e.g. a saved copy of "
                f"{DEFAULT_EMBEDDER}), or --embedder stain-texture for handcrafted features"
            ) from exc
        from transformers.utils import logging as hf_logging

        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # its load report is checked below, with a clearer message
        try:
            model, info = AutoModel.from_pretrained(str(local) if looks_local else self.source,
                                                    output_loading_info=True, local_files_only=self._local_only)
        except (OSError, ValueError) as exc:
            raise EmbedderLoadError(f"cannot load embedder weights from {self.source!r}: {exc}") from exc
        finally:
            hf_logging.set_verbosity(verbosity)
        # A pooler head is absent from DINO checkpoints and unused here (the CLS token is the
        # embedding); any other missing weight would make the embeddings random: refuse.
        missing = {key for key in info.get("missing_keys", ()) if key.split(".")[0] != "pooler"}
        if missing:
            raise EmbedderLoadError(
                f"embedder {self.source!r} lacks trained weights for {len(missing)} parameters "
                f"(e.g. {sorted(missing)[0]}); it would embed with random weights"
            )
        unused = {key for key in info.get("missing_keys", ()) if key.split(".")[0] == "pooler"}
        if getattr(model, "main_input_name", None) != "pixel_values":
            raise EmbedderLoadError(
                f"embedder {self.source!r} is a {type(model).__name__} (input {model.main_input_name!r}), "
                "not a vision model taking pixel_values; pass an image model such as a DINO ViT"
            )
        self.model = model.eval().requires_grad_(False).to(self.device)
        self.preprocessor, settings = _preprocessor(str(local) if looks_local else self.source, config,
                                                    local_files_only=self._local_only)
        self._fingerprint = module_hash(
            self.model, extra={"class": type(model).__name__, **settings}, exclude=unused
        )
        self._use_pooler = not unused

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def embed(self, images: np.ndarray) -> torch.Tensor:
        """CLS-token (or pooled) embeddings of a uint8 ``(B, H, W, 3)`` batch, float32 on CPU."""
        return self.encode(self.preprocessor(images))

    @torch.inference_mode()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Embeddings of preprocessed model input (what ``preprocessor`` returns)."""
        pixels = pixels.to(self.device, dtype=next(self.model.parameters()).dtype)
        outputs = self.model(pixel_values=pixels)
        hidden = getattr(outputs, "last_hidden_state", None)
        if hidden is not None and hidden.dim() == 3:
            features = hidden[:, 0]
        elif self._use_pooler and getattr(outputs, "pooler_output", None) is not None:
            features = outputs.pooler_output.flatten(1)
        else:
            raise EmbedderLoadError(f"embedder {self.source!r} returns neither a token sequence nor a pooled output")
        return features.float().cpu()


class _PreprocessedBlocks(Dataset):
    """Item ``b``: model input for patches ``b * size .. (b + 1) * size`` (read + preprocess in a worker)."""

    def __init__(self, dataset: PCam, preprocessor: Callable[[np.ndarray], torch.Tensor], size: int) -> None:
        self.dataset, self.preprocessor, self.size = dataset, preprocessor, size

    def __len__(self) -> int:
        return -(-len(self.dataset) // self.size)

    def __getitem__(self, block: int) -> torch.Tensor:
        start = block * self.size
        return self.preprocessor(self.dataset.read_images(np.arange(start, min(start + self.size, len(self.dataset)))))


@dataclass(frozen=True)
class EmbeddingResult:
    embeddings: torch.Tensor  # (N, D) float32, row i = PCam index i
    data_hash: str
    model_hash: str
    cache_path: Path | None
    from_cache: bool


def embed_dataset(
    dataset: PCam,
    embedder: ImageEmbedder,
    *,
    batch_size: int = 256,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    data_hash: str | None = None,
    num_workers: int = 0,
    progress: bool = True,
) -> EmbeddingResult:
    """Embed every patch of ``dataset`` in index order, reading and writing the disk cache.

    ``cache_dir=None`` uses :func:`default_cache_dir`; ``use_cache=False`` neither reads nor
    writes the cache. The cache file is written atomically. ``num_workers`` DataLoader workers
    read and preprocess blocks of ``batch_size`` patches while the model embeds.
    """
    if batch_size < 1:
        raise InvalidArgumentError(f"batch size must be >= 1, got {batch_size}")
    data_hash = data_hash or dataset_hash(dataset)
    model_hash = embedder.fingerprint
    cache_path: Path | None = None
    if use_cache:
        folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        cache_path = folder / f"{data_hash[:32]}-{model_hash[:32]}.safetensors"
        if cache_path.is_file():
            try:
                stored = load_file(cache_path)["embeddings"]
            except Exception as exc:  # a corrupt cache is recomputed, and said so
                logger.warning("ignoring unreadable embedding cache %s (%s)", cache_path, exc)
            else:
                if stored.shape[0] == len(dataset):
                    logger.info("embeddings from cache %s", cache_path)
                    return EmbeddingResult(stored, data_hash, model_hash, cache_path, True)
                logger.warning("ignoring embedding cache %s with %d rows (data has %d)",
                               cache_path, stored.shape[0], len(dataset))
    chunks = []
    n = len(dataset)
    loader = DataLoader(
        _PreprocessedBlocks(dataset, embedder.preprocessor, batch_size), batch_size=None,
        num_workers=num_workers, pin_memory=torch.cuda.is_available(),
    )
    with tqdm(total=n, desc="embedding", unit="patch", disable=not progress) as bar:
        for pixels in loader:
            chunks.append(embedder.encode(pixels))
            bar.update(len(pixels))
    embeddings = torch.cat(chunks).contiguous()
    if not torch.isfinite(embeddings).all():
        raise ArtifactError("the embedder produced NaN or infinite embeddings; check the model weights")
    if cache_path is not None:
        with atomic_path(cache_path) as staging:
            save_file({"embeddings": embeddings}, staging, metadata={"data_hash": data_hash, "model_hash": model_hash})
        logger.info("cached embeddings in %s", cache_path)
    return EmbeddingResult(embeddings, data_hash, model_hash, cache_path, False)


def load_embedder(source: str = DEFAULT_EMBEDDER, *, device: str | torch.device = "cpu") -> ImageEmbedder:
    """``stain-texture`` (the handcrafted embedder, no network needed) or a transformers vision model."""
    from histoaug.training.stain_embedding import STAIN_TEXTURE, StainTextureEmbedder

    if source == STAIN_TEXTURE and not Path(source).exists():
        return StainTextureEmbedder()
    return TransformersEmbedder(source, device=device)
