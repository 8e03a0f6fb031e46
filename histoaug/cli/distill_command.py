"""``histoaug distill``: a few-step LCM student from a trained model (latent consistency distillation).

Multi-GPU: ``accelerate launch --multi_gpu --num_processes N -m histoaug.cli.main distill ...``
(or ``torchrun``); see :mod:`histoaug.training.distillation`.
"""

from __future__ import annotations

import argparse

from histoaug.cli import run_control_args as flags
from histoaug.training.run_config import DISTILL_LOSSES, MIXED_PRECISION, DistillConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "distill",
        help="distil a trained model into a few-step (LCM) student that samples without guidance passes",
        description="Latent consistency distillation of a model's UNet from its own frozen teacher on its "
        "training patches, guidance folded in at a fixed scale. Writes an ordinary model dir whose scheduler is "
        "LCM and whose sampler defaults are the student's steps at guidance 1, so generate, SyntheticPCam and "
        "export run it without flags. Multi-GPU: accelerate launch --multi_gpu --num_processes N -m "
        "histoaug.cli.main distill ...",
    )
    parser.add_argument("base", metavar="MODEL", help="teacher: a model dir from `histoaug train`, or 'default'")
    flags.add_config_flags(parser, DistillConfig, (
        flags.ConfigFlag("--out", "output dir (student model, prompts.json, log, checkpoints, latent cache)", str,
                         required=True),
        flags.ConfigFlag("--data", "PCam root of the model's training patches, or 'sample'", str),
        flags.ConfigFlag("--prompts", "prompts dir the model was trained with (per-patch prompt ids); default: "
                         "each patch gets one of its label's prompts", str),
        flags.ConfigFlag("--split", "split to distil on", str),
        flags.ConfigFlag("--steps", "optimizer steps", int),
        flags.ConfigFlag("--batch-size", "patches per process per step", int),
        flags.ConfigFlag("--lr", "peak learning rate", float),
        flags.ConfigFlag("--lr-schedule", "diffusers schedule name", str),
        flags.ConfigFlag("--warmup-steps", "linear warm-up steps (default: 5%% of --steps, at most 500)", int),
        flags.ConfigFlag("--weight-decay", "AdamW weight decay", float),
        flags.ConfigFlag("--max-grad-norm", "gradient clipping, 0 = off", float),
        flags.ConfigFlag("--guidance", "the teacher's classifier-free guidance scale folded into the student "
                         "(default: the teacher's own default guidance, e.g. 6 for the embedded model)", float),
        flags.ConfigFlag("--guidance-rescale", "the teacher's guidance rescale in [0, 1] folded in with it (default: "
                         "the teacher's own, e.g. 0.5 for the embedded model)", float),
        flags.ConfigFlag("--solver-steps", "DDIM skipping-step grid of the teacher's solver (LCM's N)", int),
        flags.ConfigFlag("--student-steps", "sampler steps recorded as the student's default", int),
        flags.ConfigFlag("--ema-decay", "EMA decay of the target network", float),
        flags.ConfigFlag("--loss", "consistency loss", str, choices=DISTILL_LOSSES),
        flags.ConfigFlag("--huber-c", "Huber loss constant", float),
        flags.ConfigFlag("--no-augment", "no random flips / 90-degree rotations of the latents"),
        flags.ConfigFlag("--resolution", "training resolution (default: the model's native resolution)", int),
        flags.ConfigFlag("--mixed-precision", "auto: bf16 (or fp16) on GPU, none on CPU", str, choices=MIXED_PRECISION),
        flags.ConfigFlag("--gradient-checkpointing", "trade compute for UNet memory"),
        flags.ConfigFlag("--device", "cpu forces the CPU; auto lets accelerate pick", str, choices=("auto", "cpu")),
        flags.ConfigFlag("--seed", "seed of data order, noise and skip steps", int),
        flags.ConfigFlag("--checkpoint-every", "steps between checkpoints", int),
        flags.ConfigFlag("--keep-checkpoints", "newest checkpoints kept", int, dest="checkpoints_total_limit",
                         metavar="N"),
        flags.ConfigFlag("--preview-per-label", "preview samples per label, 0 = none", int),
    ))
    flags.add_run_control_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from histoaug.training.distillation import distill

    config = flags.training_config_from_args(DistillConfig, args)
    result = distill(config, command=getattr(args, "command_line", None))
    if not result.main_process:
        return 0
    if not result.losses:
        print(f"nothing to distil: {result.out} is already at step {result.steps}")
    else:
        print(f"distilled steps {result.steps - len(result.losses) + 1}..{result.steps} in {result.seconds:.1f} s: "
              f"loss {result.losses[0]:.4g} -> {result.losses[-1]:.4g}")
    if result.finished:
        print(f"student model -> {result.out} (lcm, {config.student_steps} steps, guidance 1)")
    else:
        print(f"stopped at step {result.steps} of {config.steps}; continue with --resume")
    return 0
