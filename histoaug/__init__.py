"""histoaug: synthetic histopathology patches from latent diffusion models, for PyTorch training.

Public API (see DESIGN.md): :class:`PCam`, :func:`sample_root`, :class:`PCamWriter` and the
typed errors in :mod:`histoaug.errors`.
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
from histoaug.mixing.synthetic_pcam import SyntheticPCam
from histoaug.mixing.synthetic_swap import SyntheticSwap
from histoaug.sample import sample_root

logging.getLogger(__name__).addHandler(logging.NullHandler())

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
    "SyntheticPCam",
    "SyntheticSwap",
    "__version__",
    "sample_root",
]
