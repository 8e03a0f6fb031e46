"""``histoaug train-vae``: train a pipeline's VAE on PCam patches (before ``histoaug train``)."""

from __future__ import annotations

import argparse

from histoaug.cli import run_control_args as flags
from histoaug.training.run_config import AutoencoderTrainConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train-vae",
        help="train the VAE of a pipeline (a preset from scratch, or a pipeline dir) on PCam patches",
        description="Train the AutoencoderKL of a Stable Diffusion pipeline on PCam patches (L1 + image-gradient "
        "L1 + KL) and write the pipeline dir with it, its latent scaling factor set and its reconstruction PSNR "
        "reported; pass that dir to `histoaug train --base` to train the UNet on its latents.",
    )
    flags.add_training_arguments(
        parser, AutoencoderTrainConfig,
        base_help="preset to build from configs (tiny, small, histo96) or a diffusers SD pipeline dir",
        out_help="output dir (pipeline, report, log, checkpoints)",
        batch_help="patches per step",
        devices=("auto", "cpu", "cuda"), device_help="auto: CUDA when available",
    )
    flags.add_config_flags(parser, AutoencoderTrainConfig, (
        flags.ConfigFlag("--kl-weight", "weight of the KL term", float),
        flags.ConfigFlag("--gradient-weight", "weight of the image-gradient L1 term", float),
        flags.ConfigFlag("--adversarial-weight", "weight of a PatchGAN hinge loss (sharper texture), 0 = off", float),
        flags.ConfigFlag("--decoder-only", "freeze the encoder: fine-tune the decoder of --base, keeping its "
                         "latent space (a UNet trained on it stays valid)"),
    ))
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from histoaug.training.autoencoder import train_autoencoder

    config = flags.training_config_from_args(AutoencoderTrainConfig, args)
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
