"""Feature spaces for distribution distances: Inception-v3 (FID), any transformers vision model, stain-texture.

A :class:`FeatureSpace` is an image embedder with the name its distance is reported under:

* ``inception`` -- the standard FID network: the TorchScript Inception-v3 of the reference
  TensorFlow FID graph (``inception-2015-12-05.pt``, the file NVIDIA's StyleGAN2-ADA / EDM
  metrics and clean-fid load), called as they call it: uint8-range RGB in, its own resize to
  299 x 299, the 2048-d pool features out. Loaded with ``torch.jit.load`` from
  ``inception_weights`` or from torch hub's cache, downloaded there on first use when online.
  (torchmetrics' and torch-fidelity's Inception need torchvision, which histoaug avoids.)
* a transformers vision model (local dir or hub id, e.g. ``facebook/dinov2-small`` or a
  pathology ViT such as ``owkin/phikon``): its CLS token, with its own preprocessing
  (:class:`histoaug.training.embedding.TransformersEmbedder`). The distance is a Frechet distance
  in that model's features ("FD_DINOv2" in the literature), not a FID.
* ``stain-texture`` -- histoaug's handcrafted stain/texture statistics, for machines where no
  pretrained network can be loaded. Not a learned feature space: its distances are not FIDs
  and are comparable only with each other.

Features of a PCam-format split or file are cached as safetensors (atomic writes), keyed by the
SHA-256 of the data and of the extractor (:func:`histoaug.training.embedding.embed_dataset`).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from histoaug.data.pcam import PCam
from histoaug.errors import ArtifactError, InvalidArgumentError
from histoaug.training.embedding import ImageEmbedder, embed_dataset

logger = logging.getLogger(__name__)

INCEPTION = "inception"
INCEPTION_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
INCEPTION_FILE = "inception-2015-12-05.pt"
INCEPTION_OPTION = "--inception-weights"


class InceptionUnavailableError(InvalidArgumentError):
    """The FID network is not on this machine and cannot be downloaded."""


class UInt8Pixels:
    """uint8 (B, H, W, 3) -> float32 (B, 3, H, W) in [0, 255] (picklable, for DataLoader workers)."""

    def __call__(self, images: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_inception_path() -> Path:
    """Where the FID network is cached: torch hub's checkpoint folder (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def locate_inception(weights: str | Path | None = None, *, download: bool = True) -> Path:
    """The FID network file: ``weights`` if given, else torch hub's cache (downloaded there if missing)."""
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise InceptionUnavailableError(f"{INCEPTION_OPTION} {path}: no such file")
        return path
    path = default_inception_path()
    if path.is_file():
        return path
    hint = (f"FID needs the Inception-v3 network ({INCEPTION_FILE}, the reference FID graph): pass "
            f"{INCEPTION_OPTION} PATH, or measure other feature spaces with --features (e.g. a local DINOv2 dir, "
            "or stain-texture)")
    if not download:
        raise InceptionUnavailableError(f"{hint}; it is not in {path.parent}")
    from urllib.parse import urlparse

    from histoaug.network import offline_reason

    if (offline := offline_reason(urlparse(INCEPTION_URL).hostname)) is not None:
        raise InceptionUnavailableError(f"{hint}; it is not in {path.parent} and cannot be downloaded: {offline}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        logger.info("downloading %s to %s", INCEPTION_URL, path)
        torch.hub.download_url_to_file(INCEPTION_URL, str(path), progress=False)  # writes a temp file, then renames
    except OSError as exc:  # URLError is an OSError: offline, DNS, refused, HTTP error
        reason = str(getattr(exc, "reason", exc)).splitlines()[0]
        raise InceptionUnavailableError(f"{hint}; downloading it failed ({reason})") from exc
    return path


class TorchScriptInception:
    """The :class:`~histoaug.training.embedding.ImageEmbedder` over the TorchScript FID Inception-v3."""

    def __init__(self, path: str | Path, *, device: str | torch.device = "cpu") -> None:
        self.path = Path(path)
        self.device = torch.device(device)
        try:
            self.model = torch.jit.load(str(self.path), map_location=self.device).eval()
        except (RuntimeError, ValueError, OSError) as exc:
            raise ArtifactError(f"{self.path} is not a TorchScript Inception-v3 ({str(exc).splitlines()[0]}); "
                                f"{INCEPTION_OPTION} takes the file {INCEPTION_FILE} of the reference FID") from exc
        self.preprocessor = UInt8Pixels()
        self._fingerprint = hashlib.sha256(f"torchscript-inception/1:{_file_sha256(self.path)}".encode()).hexdigest()

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @torch.inference_mode()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        features = self.model(pixels.to(self.device), return_features=True)
        if features.dim() != 2 or features.shape[0] != pixels.shape[0]:
            raise ArtifactError(f"{self.path} returned features of shape {tuple(features.shape)}, "
                                f"expected ({pixels.shape[0]}, D)")
        return features.float().cpu()

    def embed(self, images: np.ndarray) -> torch.Tensor:
        return self.encode(self.preprocessor(images))


@dataclass(frozen=True)
class FeatureSpace:
    """An embedder and the names its measurements are reported under."""

    name: str  # as given to --features
    distance_name: str  # "FID", "FD (facebook/dinov2-small)", ...
    description: str  # what the features are, said plainly in the report
    embedder: ImageEmbedder

    @property
    def fingerprint(self) -> str:
        return self.embedder.fingerprint


def load_feature_space(spec: str, *, inception_weights: str | Path | None = None,
                       device: str | torch.device = "cpu") -> FeatureSpace:
    """``inception``, ``stain-texture`` or a transformers vision model (local dir or hub id)."""
    from histoaug.training.stain_embedding import STAIN_TEXTURE, StainTextureEmbedder

    if spec == INCEPTION:
        path = locate_inception(inception_weights)
        return FeatureSpace(INCEPTION, "FID", f"Inception-v3 pool features (2048-d), TorchScript reference FID network "
                            f"{path.name}", TorchScriptInception(path, device=device))
    if spec == STAIN_TEXTURE and not Path(spec).exists():
        return FeatureSpace(STAIN_TEXTURE, "Frechet stain-texture distance (not a FID)",
                            "histoaug's handcrafted stain/texture statistics (34-d: optical density, texture "
                            "energy); no pretrained network, so not comparable with any published FID",
                            StainTextureEmbedder())
    from histoaug.training.embedding import EmbedderLoadError, TransformersEmbedder

    try:
        embedder = TransformersEmbedder(spec, device=device)
    except EmbedderLoadError as exc:  # its advice names prompts build's option; here it is --features
        raise EmbedderLoadError(str(exc).replace("--embedder", "--features")) from exc
    kind = type(embedder.model).__name__
    return FeatureSpace(spec, f"FD ({spec})", f"{kind} CLS-token features of {spec} (Frechet distance in this "
                        "model's feature space; not a FID)", embedder)


def split_features(dataset: PCam, space: FeatureSpace, *, cache_dir: str | Path | None = None,
                   use_cache: bool = True, progress: bool = False) -> np.ndarray:
    """(N, D) float64 features of every patch of ``dataset``, from the cache when it has them."""
    result = embed_dataset(dataset, space.embedder, batch_size=64, cache_dir=cache_dir, use_cache=use_cache,
                           progress=progress)
    if result.from_cache:
        logger.info("%s features of %s from cache", space.name, dataset.files.images)
    return result.embeddings.double().numpy()
