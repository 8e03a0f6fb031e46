"""``histoaug train``: fine-tune a Stable Diffusion UNet on (patch, prompt) pairs.

Multi-GPU: ``accelerate launch --multi_gpu --num_processes N -m histoaug.cli.main train ...``
(or ``torchrun --nproc_per_node N -m histoaug.cli.main train ...``); see
:mod:`histoaug.training.finetune`.
"""

from __future__ import annotations

import argparse

from histoaug.cli.run_control_args import add_training_arguments, training_config_from_args
from histoaug.training.run_config import MIXED_PRECISION, TrainConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="fine-tune a Stable Diffusion pipeline on PCam patches and their prompts",
        description="Train the UNet of a diffusers Stable Diffusion pipeline on (patch, prompt) pairs and write "
        "a pipeline dir with prompts.json that load_synthesizer and `histoaug export` accept. Multi-GPU: "
        "accelerate launch --multi_gpu --num_processes N -m histoaug.cli.main train ...",
    )
    add_training_arguments(
        parser, TrainConfig,
        base_help="diffusers SD pipeline dir or hub id to fine-tune, or a preset to train from scratch "
        "(tiny, small, histo96)",
        out_help="output dir (pipeline, prompts.json, log, checkpoints)",
        batch_help="patches per process per micro-batch",
        devices=("auto", "cpu"), device_help="cpu forces the CPU; auto lets accelerate pick",
    )
    parser.add_argument("--prompts", required=True, help="prompts dir from `histoaug prompts build`")
    parser.add_argument("--grad-accum", type=int, default=TrainConfig.grad_accum,
                        help="micro-batches per optimizer step (default: %(default)s)")
    parser.add_argument("--weight-decay", type=float, default=TrainConfig.weight_decay,
                        help="AdamW weight decay (default: %(default)s)")
    parser.add_argument("--max-grad-norm", type=float, default=TrainConfig.max_grad_norm,
                        help="gradient clipping, 0 = off (default: %(default)s)")
    parser.add_argument("--ema-decay", type=float, default=TrainConfig.ema_decay,
                        help="EMA decay (default: %(default)s)")
    parser.add_argument("--no-ema", action="store_true", help="save the raw weights instead of the EMA weights")
    parser.add_argument("--cond-dropout", type=float, default=TrainConfig.cond_dropout,
                        help="probability of training on the empty prompt, for guidance (default: %(default)s)")
    parser.add_argument("--resolution", type=int, default=None,
                        help="training resolution (default: the model's native resolution)")
    parser.add_argument("--mixed-precision", choices=MIXED_PRECISION, default=TrainConfig.mixed_precision,
                        help="auto: bf16 (or fp16) on GPU, none on CPU (default: %(default)s)")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="trade compute for UNet memory")
    parser.add_argument("--keep-checkpoints", dest="checkpoints_total_limit", metavar="N", type=int,
                        default=TrainConfig.checkpoints_total_limit,
                        help="newest checkpoints kept (default: %(default)s)")
    parser.add_argument("--preview-per-label", type=int, default=TrainConfig.preview_per_label,
                        help="preview samples per label, 0 = none (default: %(default)s)")
    parser.add_argument("--preview-steps", type=int, default=TrainConfig.preview_steps,
                        help="sampler steps of previews (default: %(default)s)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from histoaug.training.finetune import train

    config = training_config_from_args(TrainConfig, args)
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
