"""The small real H&E sample dataset bundled with the package, in PCam layout.

See ``histoaug/sample_data/DATA_CARD.md`` for sources, licences and how it was cut, and
``scripts/build_sample.py`` for the script that rebuilds it.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from histoaug.data.pcam_files import SPLITS, split_file_name
from histoaug.errors import PCamFilesNotFoundError


def sample_root() -> Path:
    """Directory holding the bundled sample's train/valid/test files (pass it to ``PCam``)."""
    root = Path(str(resources.files("histoaug") / "sample_data"))
    missing = [
        split_file_name(split, part)
        for split in SPLITS
        for part in ("x", "y")
        if not (root / split_file_name(split, part)).is_file()
    ]
    if missing:
        raise PCamFilesNotFoundError(
            f"the bundled sample is incomplete in {root} (missing {', '.join(missing)}); "
            "reinstall histoaug or rebuild it with scripts/build_sample.py"
        )
    return root
