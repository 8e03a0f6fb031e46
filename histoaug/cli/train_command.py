"""``histoaug train``: fine-tune a Stable Diffusion UNet on (patch, prompt) pairs.

Multi-GPU: ``accelerate launch --multi_gpu --num_processes N -m histoaug.cli.main train ...``
(or ``torchrun --nproc_per_node N -m histoaug.cli.main train ...``); see
:mod:`histoaug.training.finetune`.
"""

from __future__ import annotations

import argparse

from histoaug.cli.run_control_args import add_run_control_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="fine-tune a Stable Diffusion pipeline on PCam patches and their prompts",
        description="Train the UNet of a diffusers Stable Diffusion pipeline on (patch, prompt) pairs and write "
        "a pipeline dir with prompts.json that load_synthesizer and `histoaug export` accept. Multi-GPU: "
        "accelerate launch --multi_gpu --num_processes N -m histoaug.cli.main train ...",
    )
    parser.add_argument("data", help="PCam root, or 'sample' for the bundled sample")
    parser.add_argument("--prompts", required=True, help="prompts dir from `histoaug prompts build`")
    parser.add_argument("--base", default="small",
                        help="diffusers SD pipeline dir or hub id to fine-tune, or a preset to train from scratch "
                        "(tiny, small, histo96) (default: %(default)s)")
    parser.add_argument("--out", required=True, help="output dir (pipeline, prompts.json, log, checkpoints)")
    parser.add_argument("--split", default="train", help="split to train on (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=10_000, help="optimizer steps (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32, help="patches per process per micro-batch "
                        "(default: %(default)s)")
    parser.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step "
                        "(default: %(default)s)")
    parser.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (default: %(default)s)")
    parser.add_argument("--lr-schedule", default="cosine", help="diffusers schedule name (default: %(default)s)")
    parser.add_argument("--warmup-steps", type=int, default=None,
                        help="linear warm-up steps (default: 5%% of --steps, at most 500)")
    parser.add_argument("--weight-decay", type=float, default=1e-2, help="AdamW weight decay (default: %(default)s)")
    parser.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping, 0 = off "
                        "(default: %(default)s)")
    parser.add_argument("--ema-decay", type=float, default=0.9999, help="EMA decay (default: %(default)s)")
    parser.add_argument("--no-ema", action="store_true", help="save the raw weights instead of the EMA weights")
    parser.add_argument("--cond-dropout", type=float, default=0.1,
                        help="probability of training on the empty prompt, for guidance (default: %(default)s)")
    parser.add_argument("--no-augment", action="store_true", help="no random flips / 90-degree rotations")
    parser.add_argument("--resolution", type=int, default=None,
                        help="training resolution (default: the model's native resolution)")
    parser.add_argument("--mixed-precision", choices=("auto", "no", "fp16", "bf16"), default="auto",
                        help="auto: bf16 (or fp16) on GPU, none on CPU (default: %(default)s)")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="trade compute for UNet memory")
    parser.add_argument("--device", choices=("auto", "cpu"), default="auto",
                        help="cpu forces the CPU; auto lets accelerate pick (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data order, noise and preset weights "
                        "(default: %(default)s)")
    parser.add_argument("--checkpoint-every", type=int, default=1000, help="steps between checkpoints "
                        "(default: %(default)s)")
    parser.add_argument("--keep-checkpoints", type=int, default=3, help="newest checkpoints kept "
                        "(default: %(default)s)")
    parser.add_argument("--preview-per-label", type=int, default=4, help="preview samples per label, 0 = none "
                        "(default: %(default)s)")
    parser.add_argument("--preview-steps", type=int, default=20, help="sampler steps of previews "
                        "(default: %(default)s)")
    add_run_control_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from histoaug.training.finetune import TrainConfig, train

    config = TrainConfig(
        data=args.data, prompts=args.prompts, out=args.out, base=args.base, split=args.split, steps=args.steps,
        batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr, lr_schedule=args.lr_schedule,
        warmup_steps=args.warmup_steps, weight_decay=args.weight_decay, max_grad_norm=args.max_grad_norm,
        ema=not args.no_ema, ema_decay=args.ema_decay, cond_dropout=args.cond_dropout, augment=not args.no_augment,
        resolution=args.resolution, mixed_precision=args.mixed_precision,
        gradient_checkpointing=args.gradient_checkpointing, device=args.device, seed=args.seed,
        checkpoint_every=args.checkpoint_every, checkpoints_total_limit=args.keep_checkpoints,
        preview_per_label=args.preview_per_label, preview_steps=args.preview_steps, num_workers=args.num_workers,
        stop_at=args.stop_at, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress,
    )
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
