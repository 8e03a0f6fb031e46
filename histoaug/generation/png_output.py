"""Generate a synthetic dataset as an ImageFolder-style PNG tree (``0/``, ``1/``, ``index.csv``).

The tree is filled in ``OUT.partial/`` (each PNG written atomically, so a file either exists
whole or not at all) and moved to ``OUT`` when complete. ``OUT.partial`` is a resume protocol,
not an atomic write (see :mod:`histoaug.atomic_files`): a resumed run finds it there and skips
blocks whose PNGs all exist; ``plan.json`` guards against resuming other settings.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from histoaug.atomic_files import atomic_path, publish, write_text
from histoaug.errors import InvalidArgumentError, OutputExistsError, OutputWriteError
from histoaug.generation.pcam_output import PatchSource, RunSummary, assigner_for, generate_block
from histoaug.generation.settings import GenerationSettings

logger = logging.getLogger(__name__)
PLAN_FILE = "plan.json"
INDEX_FILE = "index.csv"


def png_name(index: int, label: int) -> str:
    return f"{label}/{index:08d}.png"


def _write_png_atomically(path: Path, image: np.ndarray) -> None:
    with atomic_path(path) as staging:
        Image.fromarray(image).save(staging, format="PNG")


def _prepare_work_dir(work: Path, plan: str, resume: bool, overwrite: bool) -> None:
    plan_file = work / PLAN_FILE
    if work.exists():
        if resume:
            recorded = json.loads(plan_file.read_text()).get("plan") if plan_file.exists() else None
            if recorded != plan:
                raise InvalidArgumentError(
                    f"{work} was written with other settings or another runtime (backend, dtype, compile, "
                    "device); it cannot be resumed with these (discard it with --overwrite)"
                )
            return
        if not overwrite:
            raise OutputExistsError(
                f"{work} holds an interrupted run; resume it (--resume) or discard it (--overwrite)"
            )
        shutil.rmtree(work)
    for label in (0, 1):
        (work / str(label)).mkdir(parents=True, exist_ok=True)
    write_text(plan_file, json.dumps({"plan": plan}) + "\n")


def write_png_tree(
    source: PatchSource,
    settings: GenerationSettings,
    out: Path,
    *,
    model_id: str,
    provenance: dict[str, Any] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> RunSummary:
    """Generate ``settings.n`` patches into ``out/{label}/{index}.png`` plus ``index.csv``."""
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} exists; pass --overwrite to replace it")
    work = out.with_name(out.name + ".partial")
    try:
        _prepare_work_dir(work, settings.fingerprint(model_id, source.runtime_id), resume, overwrite)
    except OSError as exc:
        raise OutputWriteError(f"cannot create {work}: {exc.strerror or exc}") from exc
    assigner = assigner_for(source, settings)
    everything = assigner.assign(np.arange(settings.n))
    generated = 0
    start_time = time.perf_counter()
    with tqdm(total=settings.n, unit="patch", desc=out.name, disable=not progress) as bar:
        for start, stop in settings.blocks():
            names = [png_name(i, int(everything.labels[i])) for i in range(start, stop)]
            if all((work / name).exists() for name in names):
                bar.update(stop - start)
                continue
            assignment = assigner.assign(np.arange(start, stop))
            images = generate_block(source, settings, assignment)
            try:
                for name, image in zip(names, images, strict=True):
                    _write_png_atomically(work / name, image)
            except OSError as exc:
                raise OutputWriteError(f"cannot write into {work}: {exc.strerror or exc}") from exc
            generated += stop - start
            bar.update(stop - start)
    seconds = time.perf_counter() - start_time
    with open(work / INDEX_FILE, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "path", "label", "prompt_id", "seed"])
        for i in range(settings.n):
            label, prompt_id, seed = (int(everything.labels[i]), int(everything.prompt_ids[i]),
                                      int(everything.seeds[i]))
            writer.writerow([i, png_name(i, label), label, prompt_id, seed])
    (work / "provenance.json").write_text(json.dumps(provenance or {}, indent=2, sort_keys=True) + "\n")
    (work / PLAN_FILE).unlink()
    publish(work, out, replace=True)
    return RunSummary(
        items=settings.n,
        generated=generated,
        seconds=seconds,
        label_counts=dict(sorted(Counter(everything.labels.tolist()).items())),
        prompt_counts=dict(sorted(Counter(everything.prompt_ids.tolist()).items())),
    )
