"""Content hashes that key cached embeddings and tie prompt files to the data they describe."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import torch

from histoaug.data.pcam import PCam

_HASH_BLOCK = 4096  # images per read while hashing (~113 MB of PCam patches)


def dataset_hash(dataset: PCam, *, block: int = _HASH_BLOCK) -> str:
    """SHA-256 of a split's labels and every image byte (reads the split once, in blocks)."""
    digest = hashlib.sha256()
    labels = np.ascontiguousarray(dataset.labels)
    digest.update(f"pcam:{len(labels)}:".encode())
    digest.update(labels.tobytes())
    for start in range(0, len(labels), block):
        images = dataset.read_images(np.arange(start, min(start + block, len(labels))))
        digest.update(np.ascontiguousarray(images).tobytes())
    return digest.hexdigest()


def module_hash(
    module: torch.nn.Module, *, extra: dict | None = None, exclude: set[str] | frozenset[str] = frozenset()
) -> str:
    """SHA-256 of a model's parameters and buffers (sorted by name, minus ``exclude``) plus ``extra``."""
    digest = hashlib.sha256()
    if extra:
        digest.update(json.dumps(extra, sort_keys=True, default=str).encode())
    for name, tensor in sorted(module.state_dict().items()):
        if name in exclude:
            continue
        value = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}:".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()
