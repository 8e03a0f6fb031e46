"""histoaug: synthetic histopathology patches from latent diffusion models, for PyTorch training.

Public API: :class:`PCam` (the real PCam reader), :class:`SyntheticPCam` and
:class:`PoolConfig` (on-the-fly mixing), :class:`SyntheticSwap` (albumentations transform),
:func:`load_synthesizer` / :class:`Synthesizer` (generation), :func:`sample_root` (bundled
sample data), :class:`PCamWriter` and the typed errors in :mod:`histoaug.errors`.
"""

from __future__ import annotations

import logging

from histoaug._version import __version__
from histoaug.data.pcam import PCam
from histoaug.data.pcam_writer import PCamWriter
from histoaug.errors import (
    ArtifactError,
    HistoaugError,
    InvalidArgumentError,
    OutputExistsError,
    OutputWriteError,
    PCamFilesNotFoundError,
    PCamFormatError,
)
from histoaug.library_noise import quiet_library_noise
from histoaug.mixing.pool import PoolConfig
from histoaug.mixing.synthetic_pcam import SyntheticPCam
from histoaug.sample import sample_root

logging.getLogger(__name__).addHandler(logging.NullHandler())
quiet_library_noise()

_LAZY = {
    # albumentations (and OpenCV) load only when the transform is used
    "SyntheticSwap": "histoaug.mixing.synthetic_swap",
    # the synthesis runtime (diffusers, onnxruntime) loads on first use
    "Synthesizer": "histoaug.synthesis.synthesizer",
    "load_synthesizer": "histoaug.synthesis.synthesizer",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'histoaug' has no attribute {name!r}")

__all__ = [
    "ArtifactError",
    "HistoaugError",
    "InvalidArgumentError",
    "OutputExistsError",
    "OutputWriteError",
    "PCam",
    "PCamFilesNotFoundError",
    "PCamFormatError",
    "PCamWriter",
    "PoolConfig",
    "Synthesizer",
    "SyntheticPCam",
    "SyntheticSwap",
    "__version__",
    "load_synthesizer",
    "sample_root",
]
