"""Generate a synthetic dataset into a PCam-format HDF5 file, block by block, resumably."""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import h5py
import numpy as np
from tqdm.auto import tqdm

from histoaug.data.pcam_writer import PCamWriter
from histoaug.generation.settings import GenerationSettings
from histoaug.prompts import PromptBank
from histoaug.seeding import Assignment, SampleAssigner

logger = logging.getLogger(__name__)

EXTRA_DATASETS = {"prompt_id": np.int32, "seed": np.int64}


class PatchSource(Protocol):
    """What generation needs from a ``Synthesizer``."""

    prompts: PromptBank
    runtime_id: str  # sorted JSON of the backend's runtime_id: part of the resume fingerprint

    def generate(self, labels: Any, seeds: Any, prompt_ids: Any = None, **settings: Any) -> np.ndarray: ...


@dataclass
class RunSummary:
    """What a run produced, for the end-of-run report."""

    items: int
    generated: int
    seconds: float
    label_counts: dict[int, int] = field(default_factory=dict)
    prompt_counts: dict[int, int] = field(default_factory=dict)

    @property
    def patches_per_second(self) -> float:
        return self.generated / self.seconds if self.seconds > 0 else float("nan")


def assigner_for(source: PatchSource, settings: GenerationSettings) -> SampleAssigner:
    return SampleAssigner(
        source.prompts,
        run_seed=settings.seed,
        fraction_tumour=settings.fraction_tumour,
        prompt_ids=settings.prompt_ids,
    )


def generate_block(source: PatchSource, settings: GenerationSettings, assignment: Assignment) -> np.ndarray:
    """One index block through the model, as one batch (the run's fixed batch layout; a compiled
    runtime pads a short last block to the run's batch size, so one UNet shape serves the run)."""
    return source.generate(
        assignment.labels,
        assignment.seeds,
        assignment.prompt_ids,
        steps=settings.steps,
        guidance=settings.guidance,
        scheduler=settings.scheduler,
        batch_size=settings.batch_size,
        guidance_until=settings.guidance_until,
        deep_cache=settings.deep_cache,
        guidance_rescale=settings.guidance_rescale,
    )


def write_pcam(
    source: PatchSource,
    settings: GenerationSettings,
    out: Path,
    *,
    model_id: str,
    attrs: dict[str, Any] | None = None,
    blocks: list[tuple[int, int]] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> RunSummary:
    """Generate ``settings.n`` patches (or only ``blocks``, for a shard) into ``out``.

    Rows are committed block by block; a resumed run generates only the blocks that are not
    yet in the work file, with the same batch layout, so the result equals an uninterrupted run.
    """
    all_blocks = settings.blocks() if blocks is None else blocks
    first, last = all_blocks[0][0], all_blocks[-1][1]
    assigner = assigner_for(source, settings)
    run_attrs = {
        "histoaug_block_start": first,
        "histoaug_batch_size": settings.batch_size,
        **(attrs or {}),
    }
    writer = PCamWriter(
        out, last - first, extra=EXTRA_DATASETS, attrs=run_attrs,
        plan=settings.fingerprint(model_id, source.runtime_id) + f":{first}-{last}",
        resume=resume, overwrite=overwrite,
    )
    done = writer.rows_written
    todo = [(start, stop) for start, stop in all_blocks if not done[start - first : stop - first].all()]
    generated = 0
    start_time = time.perf_counter()
    with writer, tqdm(
        total=last - first, initial=int(done.sum()), unit="patch", desc=out.name,
        disable=not progress, smoothing=0.1,
    ) as bar:
        for start, stop in todo:
            assignment = assigner.assign(np.arange(start, stop))
            images = generate_block(source, settings, assignment)
            writer.write(
                start - first, x=images, y=assignment.labels,
                prompt_id=assignment.prompt_ids.astype(np.int32), seed=assignment.seeds,
            )
            generated += stop - start
            bar.update(stop - start)
    seconds = time.perf_counter() - start_time
    label_counts, prompt_counts = file_counts(out)
    return RunSummary(
        items=last - first, generated=generated, seconds=seconds,
        label_counts=label_counts, prompt_counts=prompt_counts,
    )


def file_counts(path: Path) -> tuple[dict[int, int], dict[int, int]]:
    """Items per label and per prompt id in a generated file."""
    with h5py.File(path, "r") as handle:
        labels = handle["y"][...].reshape(-1).tolist()
        prompt_ids = handle["prompt_id"][...].tolist()
    return dict(sorted(Counter(labels).items())), dict(sorted(Counter(prompt_ids).items()))
