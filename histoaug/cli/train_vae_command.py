"""``histoaug train-vae``: train a pipeline's VAE on PCam patches (before ``histoaug train``)."""

from __future__ import annotations

import argparse

from histoaug.cli.run_control_args import add_run_control_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train-vae",
        help="train the VAE of a pipeline (a preset from scratch, or a pipeline dir) on PCam patches",
        description="Train the AutoencoderKL of a Stable Diffusion pipeline on PCam patches (L1 + image-gradient "
        "L1 + KL) and write the pipeline dir with it, its latent scaling factor set and its reconstruction PSNR "
        "reported; pass that dir to `histoaug train --base` to train the UNet on its latents.",
    )
    parser.add_argument("data", help="PCam root, or 'sample' for the bundled sample")
    parser.add_argument("--base", default="histo96",
                        help="preset to build from configs (tiny, small, histo96) or a diffusers SD pipeline dir "
                        "(default: %(default)s)")
    parser.add_argument("--out", required=True, help="output dir (pipeline, report, log, checkpoints)")
    parser.add_argument("--split", default="train", help="split to train on (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=3000, help="optimizer steps (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32, help="patches per step (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default: %(default)s)")
    parser.add_argument("--lr-schedule", default="cosine", help="diffusers schedule name (default: %(default)s)")
    parser.add_argument("--warmup-steps", type=int, default=None,
                        help="linear warm-up steps (default: 5%% of --steps, at most 500)")
    parser.add_argument("--kl-weight", type=float, default=1e-6, help="weight of the KL term (default: %(default)s)")
    parser.add_argument("--gradient-weight", type=float, default=1.0,
                        help="weight of the image-gradient L1 term (default: %(default)s)")
    parser.add_argument("--adversarial-weight", type=float, default=0.0,
                        help="weight of a PatchGAN hinge loss (sharper texture), 0 = off (default: %(default)s)")
    parser.add_argument("--decoder-only", action="store_true",
                        help="freeze the encoder: fine-tune the decoder of --base, keeping its latent space (a UNet "
                        "trained on it stays valid)")
    parser.add_argument("--no-augment", action="store_true", help="no random flips / 90-degree rotations")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: CUDA when available (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data order, noise and preset weights "
                        "(default: %(default)s)")
    parser.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints "
                        "(default: %(default)s)")
    add_run_control_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from histoaug.training.autoencoder import AutoencoderTrainConfig, train_autoencoder

    config = AutoencoderTrainConfig(
        data=args.data, out=args.out, base=args.base, split=args.split, steps=args.steps,
        batch_size=args.batch_size, lr=args.lr, lr_schedule=args.lr_schedule, warmup_steps=args.warmup_steps,
        kl_weight=args.kl_weight, gradient_weight=args.gradient_weight, adversarial_weight=args.adversarial_weight,
        decoder_only=args.decoder_only, augment=not args.no_augment,
        device=args.device, seed=args.seed, checkpoint_every=args.checkpoint_every, num_workers=args.num_workers,
        stop_at=args.stop_at, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress,
    )
    result = train_autoencoder(config, command=args.command_line)
    if result.losses:
        print(f"trained steps {result.steps - len(result.losses) + 1}..{result.steps} in {result.seconds:.1f} s: "
              f"loss {result.losses[0]:.4f} -> {result.losses[-1]:.4f}")
    if not result.finished:
        print(f"stopped at step {result.steps} of {config.steps}; continue with --resume")
        return 0
    for split, quality in result.report["splits"].items():
        print(f"{split}: reconstruction PSNR {quality['psnr_db']:.2f} dB, MAE {quality['mae_uint8']:.2f} "
              f"({quality['items']} patches)")
    print(f"scaling factor {result.report['scaling_factor']:.4f}; pipeline with trained VAE -> {result.out}")
    return 0
