"""Scale-out generation on Ray Data: index ranges to workers, shard files, one merged file.

Each worker (a Ray actor, one GPU each when the cluster has GPUs) loads the model once and
writes a contiguous range of the run's index blocks to its own resumable shard file. The
shards are then copied into one PCam-format file. Because sample ``i`` depends only on
(model, settings, seed, i) and the batch layout is the run's, the merged file holds the same
``x``, ``y``, ``prompt_id`` and ``seed`` as a single-process run.

Local: ``histoaug generate --n 100000 --out s.h5 --ray --ray-workers 8`` starts a local Ray
instance using this machine's GPUs (or CPUs). Cluster: start Ray on the nodes (``ray start
--head`` / ``ray start --address HEAD:6379``) and pass ``--ray-address HEAD:6379``; the output
path must be on storage that every node can write (shared filesystem).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from histoaug.data.pcam_writer import PCamWriter
from histoaug.errors import InvalidArgumentError
from histoaug.generation.pcam_output import EXTRA_DATASETS, RunSummary, file_counts, write_pcam
from histoaug.generation.settings import GenerationSettings

logger = logging.getLogger(__name__)


def shard_ranges(settings: GenerationSettings, workers: int) -> list[list[tuple[int, int]]]:
    """Split the run's blocks into ``workers`` contiguous, nearly equal groups."""
    blocks = settings.blocks()
    groups = np.array_split(np.arange(len(blocks)), min(workers, len(blocks)))
    return [[blocks[i] for i in group] for group in groups if group.size]


def shard_path(out: Path, index: int, count: int) -> Path:
    return out.with_name(out.name + ".shards") / f"shard-{index:04d}-of-{count:04d}.h5"


class _ShardWorker:
    """Ray Data actor: loads the synthesizer once, writes the shards it is handed."""

    def __init__(self, model: str, runtime: dict[str, Any], threads: int) -> None:
        import torch

        from histoaug.synthesis.synthesizer import load_synthesizer

        torch.set_num_threads(max(1, threads))
        self.synthesizer = load_synthesizer(model, **runtime)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        generated = []
        for spec in batch["spec"]:
            job = json.loads(spec)
            settings = GenerationSettings(**{**job["settings"], "prompt_ids": job["prompt_ids"]})
            summary = write_pcam(
                self.synthesizer, settings, Path(job["path"]), model_id=job["model_id"],
                blocks=[tuple(block) for block in job["blocks"]], resume=True, progress=False,
            )
            generated.append(summary.generated)
        return {"spec": batch["spec"], "generated": np.asarray(generated)}


def write_pcam_with_ray(
    model: str,
    settings: GenerationSettings,
    out: Path,
    *,
    model_id: str,
    backend: str = "auto",
    device: str | None = None,
    dtype: str | None = None,
    compile: bool = False,
    workers: int = 2,
    address: str | None = None,
    attrs: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> RunSummary:
    """Generate with ``workers`` Ray actors, then merge their shards into ``out``.

    ``backend``, ``device``, ``dtype``, ``compile``: as for ``load_synthesizer``; each actor
    loads its own synthesizer with them.
    """
    try:
        import ray
    except ImportError:
        raise InvalidArgumentError("--ray needs Ray: pip install 'histoaug[distributed]'") from None
    if workers <= 0:
        raise InvalidArgumentError(f"--ray-workers must be positive, got {workers}")
    groups = shard_ranges(settings, workers)
    jobs = []
    for index, blocks in enumerate(groups):
        path = shard_path(out, index, len(groups))
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            payload = {k: v for k, v in asdict(settings).items() if k != "prompt_ids"}
            jobs.append(json.dumps({
                "settings": payload,
                "prompt_ids": list(settings.prompt_ids) if settings.prompt_ids else None,
                "blocks": blocks, "path": str(path), "model_id": model_id,
            }))
    start_time = time.perf_counter()
    generated = 0
    if jobs:
        started_here = not ray.is_initialized()
        if started_here:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        try:
            gpus = int(ray.cluster_resources().get("GPU", 0))
            cpus = int(ray.cluster_resources().get("CPU", 1))
            per_worker_cpus = max(1, cpus // len(jobs))
            import torch

            # CPU kernels may round differently with another thread count; use the driver's, so
            # the shards equal what this process would generate (Ray would set 1 per CPU).
            threads = torch.get_num_threads()
            import ray.data

            dataset = ray.data.from_items([{"spec": job} for job in jobs], override_num_blocks=len(jobs))
            results = dataset.map_batches(
                _ShardWorker,
                fn_constructor_kwargs={
                    "model": model, "threads": threads,
                    "runtime": {"backend": backend, "device": device, "dtype": dtype, "compile": compile},
                },
                batch_size=1,
                concurrency=len(jobs),
                num_gpus=1 if gpus else 0,
                num_cpus=per_worker_cpus,
            ).take_all()
            generated = int(sum(int(row["generated"]) for row in results))
        finally:
            if started_here:
                ray.shutdown()
    seconds = time.perf_counter() - start_time
    _merge_shards(settings, out, [shard_path(out, i, len(groups)) for i in range(len(groups))],
                  groups, model_id=model_id, attrs=attrs, overwrite=overwrite)
    shutil.rmtree(shard_path(out, 0, 1).parent)
    label_counts, prompt_counts = file_counts(out)
    return RunSummary(
        items=settings.n, generated=generated, seconds=seconds,
        label_counts=label_counts, prompt_counts=prompt_counts,
    )


def _merge_shards(
    settings: GenerationSettings,
    out: Path,
    shards: list[Path],
    groups: list[list[tuple[int, int]]],
    *,
    model_id: str,
    attrs: dict[str, Any] | None,
    overwrite: bool,
) -> None:
    import h5py

    run_attrs = {"histoaug_block_start": 0, "histoaug_batch_size": settings.batch_size, **(attrs or {})}
    with PCamWriter(
        out, settings.n, extra=EXTRA_DATASETS, attrs=run_attrs,
        plan=settings.fingerprint(model_id) + f":0-{settings.n}", overwrite=overwrite,
    ) as writer:
        for path, blocks in zip(shards, groups, strict=True):
            offset = blocks[0][0]
            with h5py.File(path, "r") as shard:
                writer.write(offset, **{name: shard[name][...] for name in ("x", "y", *EXTRA_DATASETS)})
