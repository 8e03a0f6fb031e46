"""Streaming decompression of the ``.h5.gz`` files PCam is distributed as."""

from __future__ import annotations

import gzip
import logging
import zlib
from pathlib import Path

from tqdm.auto import tqdm

from histoaug.atomic_files import atomic_path
from histoaug.data.pcam_files import SPLITS, split_file_name
from histoaug.errors import OutputExistsError, OutputWriteError, PCamFilesNotFoundError, PCamFormatError

logger = logging.getLogger(__name__)
_BLOCK = 4 * 1024 * 1024


def find_gzipped(root: Path) -> list[Path]:
    """The standard PCam ``.h5.gz`` files under ``root/pcam`` or ``root``."""
    names = [f"{split_file_name(split, part)}.gz" for split in SPLITS for part in ("x", "y")]
    return [folder / name for folder in (root / "pcam", root) for name in names if (folder / name).is_file()]


def unpack_file(source: Path, *, overwrite: bool = False, progress: bool = True) -> Path:
    """Decompress ``X.h5.gz`` to ``X.h5`` beside it, in blocks, via an atomic rename."""
    target = source.with_suffix("")
    if target.exists() and not overwrite:
        raise OutputExistsError(f"{target} exists; pass --overwrite to unpack again")
    try:
        with atomic_path(target, durable=True) as work, gzip.open(source, "rb") as reader, \
                open(work, "wb") as writer, tqdm(total=source.stat().st_size, unit="B", unit_scale=True,
                                                 desc=source.name, disable=not progress) as bar:
            compressed = reader.fileobj  # position in the compressed stream drives the bar
            last = 0
            while block := reader.read(_BLOCK):
                writer.write(block)
                position = compressed.tell()
                bar.update(position - last)
                last = position
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise PCamFormatError(f"{source}: corrupt or truncated gzip file ({exc})") from exc
    except OSError as exc:
        raise OutputWriteError(f"cannot unpack {source} to {target}: {exc.strerror or exc}") from exc
    logger.info("unpacked %s -> %s", source, target)
    return target


def unpack_root(root: str | Path, *, overwrite: bool = False, progress: bool = True) -> list[Path]:
    """Unpack every gzipped PCam file under ``root``; already unpacked ones are skipped."""
    root = Path(root).expanduser()
    sources = find_gzipped(root)
    if not sources:
        unpacked = [folder / name for folder in (root / "pcam", root)
                    for name in (split_file_name(split, part) for split in SPLITS for part in ("x", "y"))
                    if (folder / name).is_file()]
        if unpacked:  # the .gz files were removed after unpacking: nothing to do, and nothing wrong
            logger.info("already unpacked: %d camelyonpatch_*.h5 files in %s", len(unpacked), unpacked[0].parent)
            return []
        raise PCamFilesNotFoundError(f"no camelyonpatch_*.h5.gz files (and no unpacked .h5 ones) in "
                                     f"{root / 'pcam'} or {root}")
    done = []
    for source in sources:
        if source.with_suffix("").exists() and not overwrite:
            logger.info("skipping %s: already unpacked", source.name)
            continue
        done.append(unpack_file(source, overwrite=overwrite, progress=progress))
    return done


__all__ = ["find_gzipped", "unpack_file", "unpack_root"]
