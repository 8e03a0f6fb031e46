"""``Synthesizer``: label-conditioned synthetic patches from a model on one backend."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from histoaug.errors import ArtifactError, InvalidArgumentError
from histoaug.prompts import PromptBank
from histoaug.synthesis.backends.selection import (
    RuntimeChoice,
    choose_runtime,
    create_backend,
    cuda_auto_candidates,
    resolve_device,
)
from histoaug.synthesis.defaults import FAST_DEEP_CACHE, FAST_GUIDANCE_UNTIL
from histoaug.synthesis.model_source import ModelFiles, open_model
from histoaug.synthesis.noise import initial_noise, step_noise_generators
from histoaug.synthesis.postprocess import PATCH_SIZE
from histoaug.synthesis.requests import build_request
from histoaug.synthesis.sampling import Backend, SamplerSettings, sample_patches

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 32


class Synthesizer:
    """Generates (N, 96, 96, 3) uint8 patches; a sample is a function of (model, prompt, seed, settings).

    Same backend, device and batch layout -> bit-identical output whatever the order or position
    of a sample in its batch; another batch size -> equal within the tolerance stated in
    benchmarks/RESULTS.md (CPU kernels may round differently at other batch sizes).
    """

    def __init__(self, model: ModelFiles, backend: Backend, choice: RuntimeChoice | None = None, *,
                 batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        self.model = model
        self._backend = backend
        self.batch_size = _positive_batch(batch_size)
        self.choice = choice or RuntimeChoice(backend.name, backend.dtype, bool(getattr(backend, "compiled", False)),
                                              "given backend", graphs=bool(getattr(backend, "graphs", False)))

    @property
    def prompts(self) -> PromptBank:
        return self.model.prompts

    @property
    def backend(self) -> str:
        return self._backend.name

    @property
    def dtype(self) -> str:
        return self._backend.dtype

    @property
    def compiled(self) -> bool:
        """Whether the UNet runs through torch.compile (torch backend only)."""
        return bool(getattr(self._backend, "compiled", False))

    @property
    def graphs(self) -> bool:
        """Whether the UNet replays CUDA graphs (torch backend on CUDA only)."""
        return bool(getattr(self._backend, "graphs", False))

    @property
    def supports_deep_cache(self) -> bool:
        """Whether fast mode's ``deep_cache`` can run on this backend (torch only)."""
        return hasattr(self._backend, "predict_noise_shallow")

    @property
    def runtime(self) -> dict[str, str]:
        """What decides the rounding besides model, prompt, seed and sampler settings (the backend's
        ``runtime_id``: backend, device name, dtype, attention, compile mode, library versions)."""
        return dict(self._backend.runtime_id)

    @property
    def runtime_id(self) -> str:
        """``runtime`` as sorted JSON: the ``generate --resume`` fingerprint and the pool store key use it."""
        return json.dumps(self.runtime, sort_keys=True)

    def prepare(self, batch_sizes: Sequence[int], guidance: float | None = None, *,
                guidance_until: float = 1.0, steps: int | None = None) -> None:
        """Compile / build everything the runtime needs for these patch batch sizes now (outside any
        timing); guided steps double the UNet batch (cond and uncond in one call). ``None``: the
        model's default (``self.model.sampler``)."""
        self._prepare_for(batch_sizes, SamplerSettings(steps=self.model.sampler.steps if steps is None else steps,
                                                       guidance=self.default_guidance if guidance is None
                                                       else float(guidance), guidance_until=guidance_until,
                                                       scheduler=self.model.sampler.scheduler))

    @property
    def default_guidance(self) -> float:
        """The guidance this model samples with when none is given (1 for a distilled student)."""
        return float(self.model.sampler.guidance)

    def _prepare_for(self, batch_sizes: Sequence[int], settings: SamplerSettings) -> None:
        if settings.deep_cache > 1:
            return  # its full / shallow passes are built at their first use; the plain UNet call is not used
        self._backend.prepare(sorted({int(b) * f for b in batch_sizes for f in settings.unet_batch_factors()}))

    def close(self) -> None:
        """Release the runtime's sessions, engines and compiled code (idempotent)."""
        self._backend.close()

    def __enter__(self) -> Synthesizer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def device(self) -> torch.device:
        return self._backend.device

    @property
    def model_id(self) -> str:
        return self.model.model_id

    def __repr__(self) -> str:
        compiled = ", compiled=True" if self.compiled else ""
        return (f"Synthesizer(model={str(self.model.root)!r}, backend={self.backend!r}, "
                f"dtype={self.dtype!r}{compiled}, device='{self.device}', prompts={len(self.prompts)})")

    def generate(self, labels, seeds, prompt_ids=None, *, steps: int | None = None,
                 guidance: float | None = None, scheduler: str | None = None, batch_size: int | None = None,
                 progress: bool = False, guidance_until: float | None = None, deep_cache: int | None = None,
                 fast: bool = False, guidance_rescale: float | None = None) -> np.ndarray:
        """Patches for ``labels[i]`` from ``seeds[i]`` (and ``prompt_ids[i]``, else a prompt of the
        label chosen from the seed), in batches of ``batch_size`` (default: the Synthesizer's, 32
        unless given to ``load_synthesizer``) in input order.

        Compiled (``self.compiled``): every batch runs at exactly ``batch_size`` patches, a short one
        padded with repeats of its last sample that are dropped, so one compiled UNet shape serves
        calls of every size (a 3-patch call costs a 32-patch batch, not a ~40 s compile) and a
        sample's rounding does not depend on the call's size. Eager: batches of ``min(batch_size, n)``.

        Fast mode's approximations (see ``SamplerSettings``; speed and PSNR in benchmarks/RESULTS.md):
        ``guidance_until`` < 1: CFG over that first fraction of the steps only; ``deep_cache`` = k > 1:
        the whole UNet every k steps, its deep features reused in between (torch backend).
        ``fast=True`` sets those not given to the fast preset (``FAST_GUIDANCE_UNTIL`` = 1.0, i.e. guidance
        on every step, and ``FAST_DEEP_CACHE`` = 2); both default to exact.

        ``steps`` / ``guidance`` / ``scheduler`` / ``guidance_rescale`` left at None take the model's
        defaults (``self.model.sampler``: the product's, the model's own ``sampler_defaults.json``, or a
        distilled student's LCM at 4 steps, guidance 1). ``guidance_rescale`` in [0, 1]: the guided noise
        prediction pulled back to the cond prediction's scale by that fraction
        (``histoaug.synthesis.sampling.guided_noise``; diffusers' ``guidance_rescale``)."""
        request = build_request(self.prompts, labels, seeds, prompt_ids)
        defaults = self.model.sampler
        steps = defaults.steps if steps is None else steps
        guidance = defaults.guidance if guidance is None else guidance
        scheduler = defaults.scheduler if scheduler is None else scheduler
        guidance_rescale = defaults.guidance_rescale if guidance_rescale is None else guidance_rescale
        if guidance_until is None:
            guidance_until = FAST_GUIDANCE_UNTIL if fast else 1.0
        if deep_cache is None:
            deep_cache = FAST_DEEP_CACHE if fast else 1
        settings = SamplerSettings(steps=steps, guidance=float(guidance), scheduler=scheduler,
                                   guidance_until=guidance_until, deep_cache=deep_cache,
                                   guidance_rescale=guidance_rescale)
        n = len(request)
        batch_size = self.batch_size if batch_size is None else _positive_batch(batch_size)
        padded = self.compiled
        full = batch_size if padded else min(batch_size, n)
        self._prepare_for((full,) if padded else (full, n % full or full), settings)  # full blocks, the last one
        out = np.empty((n, PATCH_SIZE, PATCH_SIZE, 3), dtype=np.uint8)
        shape = (self.model.latent_channels, self.model.latent_size, self.model.latent_size)
        embeddings = self.model.embeddings
        device = self._backend.device
        uncond = embeddings.uncond.to(device)
        with tqdm(total=n, disable=not progress, unit="patch", desc=f"generate ({self.backend})") as bar:
            for start in range(0, n, batch_size):
                stop = min(start + batch_size, n)
                rows = np.arange(start, stop)
                if padded and rows.size < full:  # repeat the last sample up to the compiled shape
                    rows = np.concatenate([rows, np.full(full - rows.size, stop - 1)])
                noise = initial_noise(request.seeds[rows].tolist(), shape).to(device)
                cond = embeddings.cond[torch.from_numpy(request.prompt_ids[rows])].to(device)
                generators = step_noise_generators(request.seeds[rows].tolist()) if scheduler == "lcm" else None
                patches = sample_patches(self._backend, self.model.scheduler_config, noise, cond, uncond,
                                         settings, self.model.scaling_factor, step_generators=generators)
                out[start:stop] = patches[:stop - start]
                bar.update(stop - start)
        return out


def load_synthesizer(source: str | Path = "default", backend: str = "auto", device: str | torch.device | None = None,
                     *, dtype: str | None = None, compile: bool | None = None,
                     expected_patches: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                     guidance: float | None = None, graphs: bool | None = None) -> Synthesizer:
    """Open ``source`` ("default", "default-fast" (the embedded model's few-step student), a diffusers
    pipeline dir with prompts.json, or an artifact dir) on ``backend`` ("auto", "torch",
    "onnxruntime", "tensorrt").

    ``dtype`` (fp32/bf16/fp16) applies to the torch backend; ONNX backends run the artifact's
    export dtype. ``compile=True`` (torch backend) runs the UNet compiled ahead of time (one compile
    per batch shape and machine, ~40 s on a 2-core CPU, cached on disk, ~1 s to load later).
    ``compile=None`` lets ``auto`` decide from the job (``expected_patches``: its size, None if
    unknown; ``batch_size``: its block size, the default of ``generate``; ``guidance``: None for the
    default) and the compile cache: a job of unknown size compiles only when the cache already holds
    its shapes (``histoaug.synthesis.backends.selection.compile_pays``); the choice and its reason
    are in ``Synthesizer.choice``. An unavailable backend raises InvalidArgumentError with the reason.
    ``graphs=True`` (torch backend, CUDA) replays the UNet as CUDA graphs, one per batch shape; ``None``
    leaves it to ``auto`` (only a runtime listed in gpu_verified.json with graphs turns them on).

    ``auto`` on CUDA tries the runtimes of ``histoaug/gpu_verified.json`` in their measured order and
    falls through, logging why, when one cannot be built here.
    """
    resolved = resolve_device(device)
    model = open_model(source)
    batch_size = _positive_batch(batch_size)
    if backend == "auto" and resolved.type == "cuda" and not compile and graphs is None:
        choice, runtime = _build_cuda_auto(model, resolved, dtype)
    else:
        choice = choose_runtime(model, resolved, backend, dtype, compile, expected_patches, batch_size=batch_size,
                                guidance=model.sampler.guidance if guidance is None else guidance)
        if graphs is not None:
            choice = dataclasses.replace(choice, graphs=bool(graphs))
        runtime = create_backend(choice.backend, model, resolved, choice.dtype, compile=choice.compile,
                                 graphs=choice.graphs)
    synthesizer = Synthesizer(model, runtime, choice, batch_size=batch_size)
    logger.info("loaded %r", synthesizer)
    return synthesizer


def _build_cuda_auto(model: ModelFiles, device: torch.device, dtype: str | None) -> tuple[RuntimeChoice, Backend]:
    """``auto`` on CUDA: the first verified runtime that builds here (a failure is logged, then the next)."""
    failures: list[str] = []
    candidates = cuda_auto_candidates(model, device, dtype)
    for index, choice in enumerate(candidates):
        last = index == len(candidates) - 1
        try:
            runtime = create_backend(choice.backend, model, device, choice.dtype, compile=choice.compile,
                                     graphs=choice.graphs)
        except (InvalidArgumentError, ArtifactError) as exc:
            if last:
                raise
            failures.append(f"{choice.backend}: {exc}")
            logger.warning("backend auto: %s %s cannot be built here (%s); trying the next verified runtime",
                           choice.backend, choice.dtype or "", exc)
            continue
        if failures:
            choice = dataclasses.replace(choice, reason=f"{choice.reason}; skipped: {'; '.join(failures)}")
        logger.info("backend auto -> %s%s%s on %s (%s)", choice.backend, f" {choice.dtype}" if choice.dtype else "",
                    " graphs" if choice.graphs else "", device, choice.reason)
        return choice, runtime
    raise AssertionError("unreachable: the last candidate raises")


def _positive_batch(batch_size: object) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size <= 0:
        raise InvalidArgumentError(f"batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)
