"""The small real H&E sample dataset bundled with the package, in PCam layout.

The package ships the patches compressed (lossless WebP mosaics + ``index.json``, see
:mod:`histoaug.sample_archive`); the first call of :func:`sample_root` unpacks them, offline, into
PCam-format HDF5 files in a cache folder named after the index's hash, written atomically (a
crash or a concurrent first call never leaves a half-built folder). Later calls only check that
the folder is there.

See ``histoaug/sample_data/DATA_CARD.md`` for sources, licences and how it was cut, and
``scripts/build_sample.py`` for the script that rebuilds it.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
from importlib import resources
from pathlib import Path

import numpy as np

from histoaug.atomic_files import atomic_directory
from histoaug.data.pcam_files import SPLITS, split_file_name
from histoaug.data.pcam_writer import write_pcam_split
from histoaug.errors import PCamFilesNotFoundError
from histoaug.sample_archive import INDEX_NAME, read_index, read_split

logger = logging.getLogger(__name__)

CARD_NAME = "DATA_CARD.md"


def packaged_sample_dir() -> Path:
    """The package folder holding the shipped (compressed) sample and its data card."""
    return Path(str(resources.files("histoaug") / "sample_data"))


def sample_cache_dir() -> Path:
    """``$HISTOAUG_CACHE/sample`` or ``~/.cache/histoaug/sample``."""
    base = os.environ.get("HISTOAUG_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "histoaug")
    return Path(base) / "sample"


def _complete(root: Path) -> bool:
    return all((root / split_file_name(split, part)).is_file() for split in SPLITS for part in ("x", "y"))


def unpack_sample(source: Path, target: Path) -> None:
    """Write the PCam-format files of every split of the shipped sample in ``source`` into ``target``."""
    index = read_index(source)
    names = [entry["key"] for entry in index["sources"]]
    for split in SPLITS:
        data = read_split(source, index, split)
        attrs = {
            "histoaug_sample": "unpacked from histoaug/sample_data by histoaug.sample; see DATA_CARD.md",
            "tile_origins_source_top_left": data.origins,
            "sources": np.asarray(names, dtype=object).astype("S"),
            "um_per_px": float(index["target_um_per_px"]),
        }
        write_pcam_split(target, split, data.images, data.labels, attrs=attrs)
    shutil.copyfile(source / CARD_NAME, target / CARD_NAME)


def sample_root() -> Path:
    """Directory holding the bundled sample's train/valid/test files (pass it to ``PCam``).

    Unpacked on first use into ``sample_cache_dir()/<hash of index and card>`` (about 40 MB, a few seconds);
    needs no network.
    """
    source = packaged_sample_dir()
    index_path = source / INDEX_NAME
    read_index(source)  # clear error if the package is incomplete
    try:
        digest = hashlib.sha256(index_path.read_bytes() + (source / CARD_NAME).read_bytes()).hexdigest()[:16]
    except OSError as exc:
        raise PCamFilesNotFoundError(f"the bundled sample is incomplete ({exc}); reinstall histoaug") from exc
    root = sample_cache_dir() / digest
    if _complete(root):
        return root
    logger.info("unpacking the bundled sample into %s (once)", root)
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        with atomic_directory(root, replace=root.exists()) as staging:
            unpack_sample(source, staging)
    except FileExistsError:
        pass  # another process finished first; its folder is as good as ours
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):  # else: another process's folder landed first
            raise PCamFilesNotFoundError(
                f"cannot unpack the bundled sample into {root.parent} ({exc.strerror}); "
                "set HISTOAUG_CACHE to a writable directory"
            ) from exc
    if not _complete(root):
        raise PCamFilesNotFoundError(f"could not unpack the bundled sample into {root}")
    return root


SAMPLE_ALIAS = "sample"


def resolve_data_root(data: str | Path) -> Path:
    """``"sample"`` -> the bundled sample dir (unless a ``./sample`` path exists); else the path."""
    if str(data) == SAMPLE_ALIAS and not Path(SAMPLE_ALIAS).exists():
        return sample_root()
    return Path(data).expanduser()
