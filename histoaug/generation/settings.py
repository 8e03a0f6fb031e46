"""Settings of one synthetic-dataset run, and the fingerprint that makes a resume safe."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from histoaug.errors import InvalidArgumentError
from histoaug.synthesis.defaults import (
    DEFAULT_GUIDANCE,
    DEFAULT_GUIDANCE_RESCALE,
    DEFAULT_SCHEDULER,
    DEFAULT_STEPS,
    SCHEDULER_NAMES,
    check_guidance_rescale,
)


@dataclass(frozen=True)
class GenerationSettings:
    """Everything that decides the content of a generated dataset (besides the model).

    ``batch_size`` is part of it: the batch layout (index blocks ``[k*B, (k+1)*B)``) is fixed
    per run, because floating-point kernels may round differently at other batch sizes (see
    the determinism contract in docs/architecture.md). Resume and shards reuse the stored layout.
    """

    n: int
    seed: int = 0
    batch_size: int = 32
    steps: int = DEFAULT_STEPS
    guidance: float = DEFAULT_GUIDANCE
    scheduler: str = DEFAULT_SCHEDULER
    fraction_tumour: float = 0.5
    prompt_ids: tuple[int, ...] | None = None
    guidance_until: float = 1.0  # fast mode: CFG over this first fraction of the steps only
    deep_cache: int = 1  # fast mode: the whole UNet every deep_cache steps, deep features reused between
    guidance_rescale: float = DEFAULT_GUIDANCE_RESCALE  # the guided prediction pulled back to the cond's scale

    def __post_init__(self) -> None:
        if self.n <= 0:
            raise InvalidArgumentError(f"--n must be positive, got {self.n}")
        if self.batch_size <= 0:
            raise InvalidArgumentError(f"--batch-size must be positive, got {self.batch_size}")
        if self.steps <= 0:
            raise InvalidArgumentError(f"--steps must be positive, got {self.steps}")
        if not self.guidance >= 1.0:
            raise InvalidArgumentError(f"--guidance must be >= 1, got {self.guidance}")
        if not 0.0 < self.guidance_until <= 1.0:
            raise InvalidArgumentError(f"--guidance-until must be in (0, 1], got {self.guidance_until}")
        check_guidance_rescale(self.guidance_rescale, "--guidance-rescale")
        if self.deep_cache < 1:
            raise InvalidArgumentError(f"--deep-cache must be >= 1 (1 = off), got {self.deep_cache}")
        if self.seed < 0:
            raise InvalidArgumentError(f"--seed must be >= 0, got {self.seed}")
        if self.scheduler not in SCHEDULER_NAMES:  # before any output file is created
            raise InvalidArgumentError(
                f"unknown scheduler {self.scheduler!r}; choose one of {', '.join(SCHEDULER_NAMES)}"
            )

    def blocks(self) -> list[tuple[int, int]]:
        """The run's batch layout: ``(start, stop)`` of every index block."""
        return [(start, min(start + self.batch_size, self.n)) for start in range(0, self.n, self.batch_size)]

    def fingerprint(self, model_id: str, runtime: str = "") -> str:
        """Hash of the settings, the model and the runtime (``Synthesizer.runtime_id``): a work file
        resumes only under the same one, since another backend, dtype, compile setting or device
        rounds differently and the file would no longer equal an uninterrupted run."""
        fields = asdict(self)
        for name, exact in (("guidance_until", 1.0), ("deep_cache", 1), ("guidance_rescale", 0.0)):
            if fields[name] == exact:  # the same fingerprint as runs written before these settings existed
                del fields[name]
        payload = json.dumps({"model": model_id, "runtime": runtime, **fields}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()
