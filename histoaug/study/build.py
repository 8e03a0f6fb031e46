"""``histoaug study build``: a seeded, balanced, shuffled, blinded set of real and synthetic patches.

Half the patches are real (from one split of a PCam root), half synthetic (spread evenly over the
synthetic files), and within each half half are healthy and half tumour. Everything random comes
from ``seed`` (the same inputs and seed give the same folder, byte for byte). Patch files get
random 16-hex-digit names drawn from the seed, written in display order, with no metadata, so
neither name, order nor file tells source or label; only ``key.json`` does, and it lives outside
the ``reader/`` folder that readers get. See :mod:`histoaug.study.layout` for the folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from histoaug._version import __version__
from histoaug.atomic_files import atomic_directory
from histoaug.data.pcam import PCam
from histoaug.errors import InvalidArgumentError, OutputExistsError, StudyError
from histoaug.evaluation.measures import check_patches
from histoaug.study import layout

logger = logging.getLogger(__name__)

REAL = "real"
MIN_DISPLAY, MAX_DISPLAY = 96, 1024


@dataclass(frozen=True)
class StudySource:
    """A synthetic set of the study: a PCam-format file from ``histoaug generate``."""

    name: str
    path: Path


@dataclass(frozen=True)
class BuildConfig:
    real_root: Path
    real_split: str = "test"
    real_name: str = ""  # how the manifest names the real data (e.g. "sample")
    n: int = 100
    seed: int = 0
    display_size: int = 384
    title: str = "Real or synthetic?"
    command_line: str = ""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _split_evenly(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if k < total % parts else 0) for k in range(parts)]


def _pick(labels: np.ndarray, per_label: int, rng: np.random.Generator, what: str) -> np.ndarray:
    picked = []
    for label in (0, 1):
        pool = np.flatnonzero(labels == label)
        if len(pool) < per_label:
            name = layout.LABELS[label]
            raise InvalidArgumentError(f"{what} has {len(pool)} {name} patches (label {label}); the study needs "
                                       f"{per_label}: lower --n or add patches")
        picked.append(rng.choice(pool, size=per_label, replace=False))
    return np.concatenate(picked)


def _check(config: BuildConfig, sources: list[StudySource], out: Path, overwrite: bool) -> None:
    if not sources:
        raise InvalidArgumentError("name at least one synthetic set (--synthetic FILE.h5)")
    names = [source.name for source in sources]
    if len(set(names)) != len(names) or REAL in names:
        raise InvalidArgumentError(f"synthetic set names must differ and not be {REAL!r}: {names}")
    if config.n < 4 or config.n % 4:
        raise InvalidArgumentError(f"--n must be a positive multiple of 4 (half real, half synthetic, each half "
                                   f"half healthy, half tumour), got {config.n}")
    if config.n // 4 < len(sources):
        raise InvalidArgumentError(f"--n {config.n} leaves fewer than one patch per label for each of the "
                                   f"{len(sources)} synthetic sets")
    if not MIN_DISPLAY <= config.display_size <= MAX_DISPLAY:
        raise InvalidArgumentError(f"--display-size must be in [{MIN_DISPLAY}, {MAX_DISPLAY}] px, got "
                                   f"{config.display_size}")
    if out.exists():
        if not overwrite:
            raise OutputExistsError(f"{out} exists; pass --overwrite to replace it")
        answers = out / layout.ANSWERS_DIR
        if answers.is_dir() and any(answers.iterdir()):
            raise StudyError(f"{out} holds readers' answers ({answers}); move them away before replacing the study")


def _provenance(dataset: PCam) -> dict[str, Any]:
    import h5py

    with h5py.File(dataset.files.images, "r") as handle:
        keep = ("model", "prompts", "steps", "guidance", "seed", "backend", "histoaug_version")
        return {key: (handle.attrs[key].item() if isinstance(handle.attrs[key], np.generic) else str(handle.attrs[key]))
                for key in keep if key in handle.attrs}


def build_study(config: BuildConfig, sources: list[StudySource], out: str | Path, *,
                overwrite: bool = False) -> dict[str, Any]:
    """Write the study folder ``out`` atomically and return its manifest."""
    out = Path(out)
    _check(config, sources, out, overwrite)
    rng = np.random.default_rng(config.seed)
    per_label = config.n // 4
    real = PCam(config.real_root, config.real_split)
    chosen: list[tuple[str, str, PCam, np.ndarray]] = [
        (REAL, REAL, real, _pick(real.labels, per_label, rng, f"real split {config.real_split!r}"))]
    for source, count in zip(sources, _split_evenly(per_label, len(sources)), strict=True):
        dataset = PCam(source.path)
        chosen.append(("synthetic", source.name, dataset, _pick(dataset.labels, count, rng, f"{source.path}")))
    rows: list[dict[str, Any]] = []
    images = []
    for kind, name, dataset, indices in chosen:
        patches = dataset.read_images(indices)
        labels = check_patches(patches, dataset.labels[indices], what=name)
        images.append(patches)
        rows += [{"source": kind, "set_name": name, "file": str(dataset.files.images), "row": int(row),
                  "label": int(label)} for row, label in zip(indices, labels, strict=True)]
    pixels = np.concatenate(images)
    order = rng.permutation(len(rows))
    ids: list[str] = []
    taken: set[str] = set()
    while len(ids) < len(rows):  # 63-bit random names; a repeat (never seen) is drawn again
        candidate = f"{int(rng.integers(0, 2**63)):016x}"
        if candidate not in taken:
            ids.append(candidate)
            taken.add(candidate)
    key = [{"patch": ids[position], **rows[index]} for position, index in enumerate(order)]
    hashes = {str(real.files.images): file_sha256(real.files.images), str(real.files.labels):
              file_sha256(real.files.labels), **{str(source.path): file_sha256(source.path) for source in sources}}
    # the id is a function of the inputs' content, the seed and the display size, not of where the files lie
    blinded = [{**entry, "file": hashes[entry["file"]]} for entry in key]
    key_text = json.dumps({"patches": blinded, "display_size": config.display_size}, sort_keys=True)
    study_id = hashlib.sha256(f"{layout.STUDY_FORMAT}:{config.seed}:{key_text}".encode()).hexdigest()[:16]
    public = {"format": layout.STUDY_FORMAT, "study_id": study_id, "title": config.title, "patches": ids,
              "display_size": config.display_size, "patch_px": 96, "labels": list(layout.LABELS),
              "sources": list(layout.SOURCES)}
    manifest: dict[str, Any] = {
        "format": layout.STUDY_FORMAT, "study_id": study_id, "histoaug_version": __version__,
        "command_line": config.command_line, "n": config.n, "seed": config.seed,
        "display_size": config.display_size, "upscaling": "nearest neighbour",
        "real": {"root": config.real_name or str(config.real_root), "split": config.real_split,
                 "items": len(real), "files": {str(real.files.images): hashes[str(real.files.images)],
                                               str(real.files.labels): hashes[str(real.files.labels)]}},
        "synthetic": [{"name": source.name, "path": str(source.path), "sha256": hashes[str(source.path)],
                       "items": len(dataset), "provenance": _provenance(dataset)}
                      for source, (_, _, dataset, _) in zip(sources, chosen[1:], strict=True)],
        "counts": {name: {layout.LABELS[label]: int(sum(1 for row in rows if row["set_name"] == name
                                                       and row["label"] == label)) for label in (0, 1)}
                   for _, name, _, _ in chosen},
    }
    with atomic_directory(out, replace=overwrite) as staging:
        reader = staging / layout.READER_DIR
        (reader / layout.PATCHES_DIR).mkdir(parents=True)
        (staging / layout.ANSWERS_DIR).mkdir()
        for position, index in enumerate(order):
            image = Image.fromarray(pixels[index]).resize((config.display_size,) * 2, Image.Resampling.NEAREST)
            image.save(reader / layout.PATCHES_DIR / f"{ids[position]}.png", format="PNG", compress_level=6)
        for name in layout.PAGE_FILES:
            shutil.copyfile(layout.static_dir() / name, reader / name)
        (reader / layout.STUDY_JS).write_text(layout.render_public_study(public), encoding="utf-8")
        manifest["reader_files"] = {str(path.relative_to(reader)): file_sha256(path)
                                    for path in sorted(reader.rglob("*")) if path.is_file()}
        (staging / layout.KEY).write_text(json.dumps({"format": layout.STUDY_FORMAT, "study_id": study_id,
                                                      "patches": key}, indent=1) + "\n", encoding="utf-8")
        (staging / layout.MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    logger.info("study %s: %d patches in %s", study_id, len(rows), out)
    return manifest
