"""``histoaug train``: fine-tune a Stable Diffusion UNet on (patch, prompt) pairs.

Multi-GPU: ``accelerate launch --multi_gpu --num_processes N -m histoaug.cli.main train ...``
(or ``torchrun --nproc_per_node N -m histoaug.cli.main train ...``); see
:mod:`histoaug.training.finetune`.
"""

from __future__ import annotations

import argparse

from histoaug.cli import run_control_args as flags
from histoaug.training.run_config import MIXED_PRECISION, TrainConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="fine-tune a Stable Diffusion pipeline on PCam patches and their prompts",
        description="Train the UNet of a diffusers Stable Diffusion pipeline on (patch, prompt) pairs and write "
        "a pipeline dir with prompts.json that load_synthesizer and `histoaug export` accept. Multi-GPU: "
        "accelerate launch --multi_gpu --num_processes N -m histoaug.cli.main train ...",
    )
    flags.add_training_arguments(
        parser, TrainConfig,
        base_help="diffusers SD pipeline dir or hub id to fine-tune, or a preset to train from scratch "
        "(tiny, small, histo96)",
        out_help="output dir (pipeline, prompts.json, log, checkpoints)",
        batch_help="patches per process per micro-batch",
        devices=("auto", "cpu"), device_help="cpu forces the CPU; auto lets accelerate pick",
    )
    flags.add_config_flags(parser, TrainConfig, (
        flags.ConfigFlag("--prompts", "prompts dir from `histoaug prompts build`", str, required=True),
        flags.ConfigFlag("--grad-accum", "micro-batches per optimizer step", int),
        flags.ConfigFlag("--weight-decay", "AdamW weight decay", float),
        flags.ConfigFlag("--max-grad-norm", "gradient clipping, 0 = off", float),
        flags.ConfigFlag("--ema-decay", "EMA decay", float),
        flags.ConfigFlag("--no-ema", "save the raw weights instead of the EMA weights"),
        flags.ConfigFlag("--cond-dropout", "probability of training on the empty prompt, for guidance", float),
        flags.ConfigFlag("--train-text-encoder", "train the text encoder with the UNet (same lr and EMA), so "
                         "distinct prompts get distinct embeddings; the output holds the trained text encoder"),
        flags.ConfigFlag("--resolution", "training resolution (default: the model's native resolution)", int),
        flags.ConfigFlag("--mixed-precision", "auto: bf16 (or fp16) on GPU, none on CPU", str, choices=MIXED_PRECISION),
        flags.ConfigFlag("--gradient-checkpointing", "trade compute for UNet memory"),
        flags.ConfigFlag("--keep-checkpoints", "newest checkpoints kept", int, dest="checkpoints_total_limit",
                         metavar="N"),
        flags.ConfigFlag("--preview-per-label", "preview samples per label, 0 = none", int),
        flags.ConfigFlag("--preview-steps", "sampler steps of previews", int),
    ))
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from histoaug.training.finetune import train

    config = flags.training_config_from_args(TrainConfig, args)
    result = train(config)
    if not result.main_process:
        return 0
    if not result.losses:
        print(f"nothing to train: {result.out} is already at step {result.steps}")
    else:
        first, last = result.losses[0], result.losses[-1]
        print(f"trained steps {result.steps - len(result.losses) + 1}..{result.steps} in {result.seconds:.1f} s: "
              f"loss {first:.4f} -> {last:.4f}")
    if result.finished:
        print(f"model -> {result.out}")
    else:
        print(f"stopped at step {result.steps} of {config.steps}; continue with --resume")
    return 0
