"""Opening the PCam-format data a training command names (``sample`` = the bundled sample)."""

from __future__ import annotations

from pathlib import Path

from histoaug.data.pcam import PCam
from histoaug.sample import sample_root

SAMPLE_ALIAS = "sample"


def resolve_data_root(data: str | Path) -> Path:
    """``"sample"`` -> the bundled sample dir (unless a ``./sample`` path exists); else the path."""
    if str(data) == SAMPLE_ALIAS and not Path(SAMPLE_ALIAS).exists():
        return sample_root()
    return Path(data).expanduser()


def open_split(data: str | Path, split: str = "train") -> PCam:
    """The split as a :class:`PCam` dataset; missing files raise ``PCamFilesNotFoundError``."""
    return PCam(resolve_data_root(data), split)
