"""Opening the PCam-format data a training command names (``sample`` = the bundled sample)."""

from __future__ import annotations

from pathlib import Path

from histoaug.data.pcam import PCam
from histoaug.sample import resolve_data_root


def open_split(data: str | Path, split: str = "train") -> PCam:
    """The split as a :class:`PCam` dataset; missing files raise ``PCamFilesNotFoundError``."""
    return PCam(resolve_data_root(data), split)
