"""Ahead-of-time compiled UNets (AOTInductor packages), cached on disk across processes.

Why AOTInductor and not ``torch.compile`` with Inductor's own caches: measured on the 2-core CPU
(embedded model, bf16, UNet batch 64), a second process with a warm FX-graph cache still spent
~8 s re-tracing the UNet with Dynamo before its first batch, while loading the AOTInductor package
of the same graph took 0.8 s and its calls were no slower (benchmarks/RESULTS.md, "Compile cache").
A package is one ``.pt2`` file per (model, dtype, batch shape, torch/diffusers/histoaug version,
CPU or GPU): the same file serves the process that compiled it and every later one, so a sample
rounds the same whether the cache was cold or warm.

Location: ``$HISTOAUG_CACHE/compile`` (default ``~/.cache/histoaug/compile``); files are written
atomically (``histoaug.atomic_files``), so concurrent processes never load a half-written package.
Every hit and miss is counted in ``CACHE_EVENTS`` and logged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch

from histoaug.atomic_files import atomic_path
from histoaug.synthesis.backends.runtime_info import device_description, library_versions

logger = logging.getLogger(__name__)

# bump when the way histoaug builds the compiled graph changes (inputs, options, attention kernel)
FORMAT_VERSION = 1
CACHE_EVENTS: Counter[str] = Counter()  # "hit" / "miss" per package load in this process
INDUCTOR_OPTIONS = {"freezing": True}  # weights folded into the graph: Inductor prepacks them


def cache_root() -> Path:
    """``$HISTOAUG_CACHE`` or ``~/.cache/histoaug``: the root of everything histoaug caches."""
    base = os.environ.get("HISTOAUG_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "histoaug")
    return Path(base)


def package_key(model_id: str, dtype: str, shapes: dict[str, tuple[int, ...]], device: torch.device,
                extra: dict[str, str] | None = None) -> str:
    """A package depends on the weights, the precision, the input shapes, the libraries and the processor."""
    fields = {"format": FORMAT_VERSION, "model": model_id, "dtype": dtype, "shapes": sorted(shapes.items()),
              "device": device_description(device), "libraries": library_versions("torch", "diffusers", "histoaug"),
              "options": INDUCTOR_OPTIONS, **(extra or {})}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:32]


def package_path(key: str) -> Path:
    return cache_root() / "compile" / f"unet-{key}.pt2"


def load_or_compile(module: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...], key: str) -> Callable:
    """The compiled ``module`` for exactly these input shapes: from the cache, or compiled now and cached."""
    path = package_path(key)
    if path.is_file():
        try:
            runner = torch._inductor.aoti_load_package(str(path))
        except Exception as exc:  # a damaged or foreign package: rebuild it rather than fail the run
            logger.warning("compile cache: %s unreadable (%s); recompiling", path, str(exc).splitlines()[0][:200])
        else:
            CACHE_EVENTS["hit"] += 1
            logger.info("compile cache hit: %s", path)
            return runner
    CACHE_EVENTS["miss"] += 1
    start = time.perf_counter()
    # a warning, so that a script with no logging set up still says why it waits
    logger.warning("compiling the UNet for batch %d ahead of time: once per batch shape and machine, ~40 s on a "
                   "2-core CPU (cached in %s; later loads ~1 s)", example_inputs[0].shape[0], path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        exported = torch.export.export(module, example_inputs, strict=False)
        with atomic_path(path) as staging, open(staging, "wb") as handle:
            torch._inductor.aoti_compile_and_package(exported, package_path=handle,
                                                     inductor_configs=dict(INDUCTOR_OPTIONS))
    logger.info("compiled in %.1f s; cached at %s", time.perf_counter() - start, path)
    return torch._inductor.aoti_load_package(str(path))
