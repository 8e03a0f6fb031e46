"""The training runs' configs: what ``histoaug train`` (:class:`TrainConfig`) and ``histoaug
train-vae`` (:class:`AutoencoderTrainConfig`) take, as dataclasses whose fields the flags map 1:1.

Both derive from :class:`TrainingRunConfig`: the shared fields, their checks, and which fields
only control execution (and so may change on ``--resume``). Each stage sets its own defaults and
adds its own fields and checks. The CLI flags of the shared fields are defined once, with their
defaults read from here, in :mod:`histoaug.cli.run_control_args`. Light on purpose (no
diffusers at import): the CLI builds its ``--help`` from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch

from histoaug.errors import InvalidArgumentError

MIXED_PRECISION = ("auto", "no", "fp16", "bf16")


@dataclass(kw_only=True)
class TrainingRunConfig:
    """Fields shared by the training stages; ``histoaug train``/``train-vae`` flags map 1:1."""

    data: str
    out: str
    base: str
    split: str = "train"
    steps: int
    batch_size: int = 32
    lr: float
    lr_schedule: str = "cosine"
    warmup_steps: int | None = None  # None: 5% of the steps, at most 500
    weight_decay: float
    max_grad_norm: float = 1.0
    augment: bool = True
    device: str = "auto"
    seed: int = 0
    checkpoint_every: int
    checkpoints_total_limit: int
    num_workers: int = 0
    stop_at: int | None = None  # stop (with a checkpoint) after this step; continue with resume
    resume: bool = False
    overwrite: bool = False
    progress: bool = True

    # Fields that only control how a run is executed, not what it computes: they may differ on --resume.
    RUN_CONTROL_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"out", "resume", "overwrite", "stop_at", "progress", "num_workers", "checkpoint_every",
         "checkpoints_total_limit", "data"}
    )
    # Integer fields that must be >= 1.
    POSITIVE_FIELDS: ClassVar[tuple[str, ...]] = ("steps", "batch_size", "checkpoint_every")

    @property
    def effective_warmup_steps(self) -> int:
        """Warm-up length: as given, else 5% of the run capped at 500, so a short run still
        reaches the cosine decay instead of warming up until its last step."""
        return self.warmup_steps if self.warmup_steps is not None else min(500, self.steps // 20)

    def validate(self) -> None:
        """The shared checks; stages extend it with their own fields' checks."""
        for name in self.POSITIVE_FIELDS:
            if getattr(self, name) < 1:
                raise InvalidArgumentError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InvalidArgumentError(f"lr must be a positive number, got {self.lr}")
        if self.warmup_steps is not None and not 0 <= self.warmup_steps < self.steps:
            raise InvalidArgumentError(
                f"warmup-steps must be >= 0 and below --steps ({self.steps}), got {self.warmup_steps}"
            )
        if self.stop_at is not None and not 1 <= self.stop_at <= self.steps:
            raise InvalidArgumentError(f"stop-at must be in 1..{self.steps}, got {self.stop_at}")
        if self.resume and self.overwrite:
            raise InvalidArgumentError("--resume and --overwrite exclude each other")
        if self.num_workers < 0:
            raise InvalidArgumentError(f"num-workers must be >= 0, got {self.num_workers}")
        from diffusers.optimization import SchedulerType

        if self.lr_schedule not in {s.value for s in SchedulerType}:
            raise InvalidArgumentError(
                f"unknown lr-schedule {self.lr_schedule!r}; one of {', '.join(s.value for s in SchedulerType)}"
            )

    def defining(self) -> dict[str, Any]:
        """The fields that determine the result (must match when resuming)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in self.RUN_CONTROL_FIELDS}


@dataclass(kw_only=True)
class TrainConfig(TrainingRunConfig):
    """Everything that defines a fine-tuning run (``histoaug train`` flags map 1:1)."""

    prompts: str
    base: str = "small"
    steps: int = 10_000
    grad_accum: int = 1
    lr: float = 1e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    weight_decay: float = 1e-2
    adam_eps: float = 1e-8
    ema: bool = True
    ema_decay: float = 0.9999
    cond_dropout: float = 0.1
    train_text_encoder: bool = False  # train the CLIP text encoder with the UNet (see training.finetune)
    resolution: int | None = None  # default: the model's native resolution
    mixed_precision: str = "auto"  # auto: bf16 on a GPU that has it, else fp16 on GPU; "no" on CPU (bf16 allowed)
    gradient_checkpointing: bool = False
    device: str = "auto"  # "cpu" forces CPU; otherwise accelerate picks the process's device
    checkpoint_every: int = 1000
    checkpoints_total_limit: int = 3
    preview_per_label: int = 4
    preview_steps: int = 20
    preview_guidance: float = 3.0

    RUN_CONTROL_FIELDS: ClassVar[frozenset[str]] = TrainingRunConfig.RUN_CONTROL_FIELDS | {
        "preview_per_label", "preview_steps", "preview_guidance", "prompts"}
    POSITIVE_FIELDS: ClassVar[tuple[str, ...]] = (*TrainingRunConfig.POSITIVE_FIELDS, "grad_accum", "preview_steps")

    def validate(self) -> None:
        super().validate()
        if not 0.0 <= self.cond_dropout < 1.0:
            raise InvalidArgumentError(f"cond-dropout must be in [0, 1), got {self.cond_dropout}")
        if not 0.0 < self.ema_decay < 1.0:
            raise InvalidArgumentError(f"ema-decay must be in (0, 1), got {self.ema_decay}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise InvalidArgumentError(f"mixed-precision must be one of {', '.join(MIXED_PRECISION)}")
        if self.resolution is not None and self.resolution < 8:
            raise InvalidArgumentError(f"resolution must be >= 8, got {self.resolution}")


@dataclass(kw_only=True)
class AutoencoderTrainConfig(TrainingRunConfig):
    """Everything that defines a VAE training run (``histoaug train-vae`` flags map 1:1)."""

    base: str = "histo96"
    steps: int = 3000
    lr: float = 1e-3
    weight_decay: float = 0.0
    kl_weight: float = 1e-6
    gradient_weight: float = 1.0
    adversarial_weight: float = 0.0  # > 0: PatchGAN hinge loss on the reconstructions
    decoder_only: bool = False  # freeze the encoder (and quant conv): latents stay those of --base
    device: str = "auto"  # "cpu", "cuda", or auto (CUDA when available)
    checkpoint_every: int = 500
    checkpoints_total_limit: int = 2

    def validate(self) -> None:
        super().validate()
        for name in ("kl_weight", "gradient_weight", "adversarial_weight"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise InvalidArgumentError(f"{name.replace('_', '-')} must be a number >= 0, got {value}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise InvalidArgumentError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise InvalidArgumentError("device cuda requested but no CUDA device is available")


DISTILL_LOSSES = ("huber", "l2")


@dataclass(kw_only=True)
class DistillConfig(TrainingRunConfig):
    """Everything that defines a consistency-distillation run (``histoaug distill`` flags map 1:1).

    ``base`` is the teacher (a model dir, or ``default``); the student starts as its copy.
    Guidance is folded in at the fixed scale ``guidance`` and rescale ``guidance_rescale`` (None:
    the teacher's own defaults, from its ``sampler_defaults.json``): the teacher's
    classifier-free-guided prediction, as its sampler computes it, is the target, and the student
    (no w-embedding) samples at guidance 1.
    """

    base: str = "default"
    data: str = "sample"
    prompts: str | None = None  # prompts dir with per-patch ids; None: a prompt of each patch's label
    steps: int = 2000
    lr: float = 1e-4
    lr_schedule: str = "constant"
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    weight_decay: float = 1e-2
    adam_eps: float = 1e-8
    guidance: float | None = None  # the teacher's CFG scale folded in; None: the teacher's own default
    guidance_rescale: float | None = None  # the teacher's guidance rescale folded in; None: its own default
    solver_steps: int = 50  # DDIM skipping-step grid over the training timesteps (LCM's N)
    student_steps: int = 4  # sampler default recorded in the output
    ema_decay: float = 0.95  # the target network: EMA of the student
    loss: str = "huber"
    huber_c: float = 1e-3
    timestep_scaling: float = 10.0  # LCM boundary-condition scalings c_skip/c_out
    resolution: int | None = None
    mixed_precision: str = "auto"
    gradient_checkpointing: bool = False
    device: str = "auto"
    checkpoint_every: int = 500
    checkpoints_total_limit: int = 3
    preview_per_label: int = 4

    RUN_CONTROL_FIELDS: ClassVar[frozenset[str]] = TrainingRunConfig.RUN_CONTROL_FIELDS | {
        "preview_per_label", "prompts"}
    POSITIVE_FIELDS: ClassVar[tuple[str, ...]] = (*TrainingRunConfig.POSITIVE_FIELDS, "solver_steps",
                                                  "student_steps")

    @property
    def preview_steps(self) -> int:  # previews sample as users will: the student's steps, guidance 1
        return self.student_steps

    @property
    def preview_guidance(self) -> float:
        return 1.0

    def validate(self) -> None:
        super().validate()
        if self.guidance is not None and not (self.guidance >= 1.0 and math.isfinite(self.guidance)):
            raise InvalidArgumentError(f"guidance must be a finite number >= 1, got {self.guidance}")
        if self.student_steps > self.solver_steps:
            raise InvalidArgumentError(f"student-steps ({self.student_steps}) must not exceed solver-steps "
                                       f"({self.solver_steps})")
        if not 0.0 <= self.ema_decay < 1.0:
            raise InvalidArgumentError(f"ema-decay must be in [0, 1), got {self.ema_decay}")
        if self.loss not in DISTILL_LOSSES:
            raise InvalidArgumentError(f"loss must be one of {', '.join(DISTILL_LOSSES)}, got {self.loss!r}")
        if not (self.huber_c > 0 and math.isfinite(self.huber_c)):
            raise InvalidArgumentError(f"huber-c must be a positive number, got {self.huber_c}")
        if not (self.timestep_scaling > 0 and math.isfinite(self.timestep_scaling)):
            raise InvalidArgumentError(f"timestep-scaling must be a positive number, got {self.timestep_scaling}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise InvalidArgumentError(f"mixed-precision must be one of {', '.join(MIXED_PRECISION)}")
        if self.resolution is not None and self.resolution < 8:
            raise InvalidArgumentError(f"resolution must be >= 8, got {self.resolution}")
