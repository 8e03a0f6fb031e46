"""Training the VAE (``AutoencoderKL``) of a pipeline on PCam patches: the stage before the UNet.

Fine-tuning Stable Diffusion (the paper) reuses SD's pretrained VAE. A model trained from a
preset has no pretrained VAE (nothing can be downloaded here), so this stage trains one first::

    histoaug train-vae DATA --base histo96 --out runs/vae        # pipeline dir, trained VAE
    histoaug train DATA --prompts P --base runs/vae --out runs/ldm

Loss: L1 reconstruction + L1 of the image gradients (keeps edges and nuclei sharper than
L1 alone) + a small KL term (SD's ``kl_weight`` regime: the latent stays close to a Gaussian
posterior without blurring). No LPIPS term: it needs pretrained VGG weights, which cannot be
downloaded here.

Pixel losses leave fine texture soft. ``adversarial_weight > 0`` adds a PatchGAN
discriminator (hinge loss, trained from scratch alongside, as in taming-transformers / SD's
VAE), and ``decoder_only`` freezes the encoder: the way SD's improved decoders were made
(fine-tune the decoder of a trained VAE; the latent space is unchanged, so a UNet trained on
the old latents keeps working with the new decoder). ``--base`` may be a trained model dir: its
UNet and ``prompts.json`` are carried over, so the output is that model with the new decoder::

    histoaug train-vae DATA --base runs/ldm --decoder-only --adversarial-weight 0.1 --out runs/ldm-gan

After training, ``scaling_factor`` is set so the train split's scaled latents have unit
standard deviation (SD's recipe), and ``autoencoder_report.json`` records the reconstruction
PSNR of every split that exists. Batches, augmentations and posterior noise are functions of
(seed, step) and checkpoints hold weights, optimizer, LR scheduler and RNG, so ``--resume``
continues exactly (same code path as :mod:`histoaug.training.finetune`). One process, CPU or
one GPU (fp32): the VAE is small; multi-GPU is for the UNet stage.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from histoaug.atomic_files import atomic_path, write_text
from histoaug.data.pcam_files import PATCH_SHAPE
from histoaug.errors import ArtifactError, HistoaugError, OutputWriteError
from histoaug.image_metrics import psnr_from_mse
from histoaug.prompts import PROMPTS_FILE
from histoaug.sample import resolve_data_root
from histoaug.training.base_model import load_base_pipeline
from histoaug.training.batches import NOISE_STREAM, BatchPlan, StepBatches, sample_generator
from histoaug.training.checkpoints import TrainingState, load_checkpoint, save_checkpoint
from histoaug.training.data_source import open_split
from histoaug.training.hashing import dataset_hash
from histoaug.training.run_config import AutoencoderTrainConfig
from histoaug.training.run_dir import LOG_FILE, prepare_out, save_pipeline_into, write_run_record

logger = logging.getLogger(__name__)

REPORT_FILE = "autoencoder_report.json"
PREVIEW_FILE = "reconstructions.png"


@dataclass
class AutoencoderTrainResult:
    out: Path
    steps: int
    losses: list[float] = field(default_factory=list)
    finished: bool = False
    seconds: float = 0.0
    report: dict[str, Any] = field(default_factory=dict)


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [-1, 1]."""
    return images.permute(0, 3, 1, 2).float() / 127.5 - 1.0


def patch_discriminator(channels: int = 32) -> torch.nn.Module:
    """A small PatchGAN (pix2pix / taming-transformers layout): one logit per ~22x22 px patch."""
    from torch import nn

    def block(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 4, stride, 1), nn.GroupNorm(8, c_out), nn.LeakyReLU(0.2)]

    return nn.Sequential(nn.Conv2d(3, channels, 4, 2, 1), nn.LeakyReLU(0.2), *block(channels, 2 * channels, 2),
                         *block(2 * channels, 4 * channels, 1), nn.Conv2d(4 * channels, 1, 4, 1, 1))


def reconstruction_loss(vae, images: torch.Tensor, eps: torch.Tensor, config: AutoencoderTrainConfig,
                        discriminator: torch.nn.Module | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, float]]:
    """Autoencoder loss (L1 + gradient-L1 + KL [+ adversarial]) and the discriminator's hinge loss
    of one batch (``eps`` draws the posterior sample)."""
    with torch.no_grad() if config.decoder_only else contextlib.nullcontext():
        posterior = vae.encode(images).latent_dist
        latents = posterior.mean + posterior.std * eps
    recon = vae.decode(latents).sample
    l1 = (recon - images).abs().mean()
    grad = ((recon.diff(dim=-1) - images.diff(dim=-1)).abs().mean()
            + (recon.diff(dim=-2) - images.diff(dim=-2)).abs().mean())
    kl = posterior.kl().mean()  # summed over the latent's elements, averaged over the batch (as SD's VAE)
    loss = l1 + config.gradient_weight * grad + config.kl_weight * kl
    parts = {"l1": float(l1.detach()), "grad": float(grad.detach()), "kl": float(kl.detach())}
    d_loss = None
    if discriminator is not None:
        discriminator.requires_grad_(False)
        adversarial = -discriminator(recon).mean()
        discriminator.requires_grad_(True)
        loss = loss + config.adversarial_weight * adversarial
        d_loss = (F.relu(1.0 - discriminator(images)).mean() + F.relu(1.0 + discriminator(recon.detach())).mean())
        parts.update(adversarial=float(adversarial.detach()), discriminator=float(d_loss.detach()))
    return loss, d_loss, parts


def train_autoencoder(config: AutoencoderTrainConfig, *, command: list[str] | None = None
                      ) -> AutoencoderTrainResult:
    """Train the VAE of ``config.base`` and write the pipeline dir with it; see the module docstring."""
    from diffusers.optimization import get_scheduler

    config.validate()
    device = torch.device("cuda" if config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    torch.manual_seed(config.seed)
    out = Path(config.out).expanduser()
    dataset = open_split(config.data, config.split)
    pipe = load_base_pipeline(config.base, seed=config.seed)
    inputs = {"data_hash": dataset_hash(dataset)}  # every label and image byte: --resume on other data fails
    resume_from = prepare_out(config, True, inputs)

    vae = pipe.vae.to(device)
    vae.train()
    vae.requires_grad_(True)
    if config.decoder_only:
        for part in (vae.encoder, vae.quant_conv):
            if part is not None:
                part.requires_grad_(False)
    discriminator = None
    if config.adversarial_weight > 0:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            discriminator = patch_discriminator().to(device)
    # one module and one optimizer hold both networks, so a checkpoint resumes both exactly
    # (Adam's state is per parameter; each network's step only fills its own gradients)
    trained = torch.nn.ModuleDict({"vae": vae})
    if discriminator is not None:
        trained["discriminator"] = discriminator
    optimizer = torch.optim.AdamW([p for p in trained.parameters() if p.requires_grad], lr=config.lr,
                                  weight_decay=config.weight_decay)
    lr_scheduler = get_scheduler(config.lr_schedule, optimizer, num_warmup_steps=config.effective_warmup_steps,
                                 num_training_steps=config.steps)
    state = TrainingState(step=0, model=trained, optimizer=optimizer, lr_scheduler=lr_scheduler)
    start_step = load_checkpoint(resume_from, state) if resume_from is not None else 0
    write_run_record(out, config, command, start_step, inputs)

    latent_side = PATCH_SHAPE[0] // (2 ** (len(vae.config.block_out_channels) - 1))
    latent_shape = (int(vae.config.latent_channels), latent_side, latent_side)
    plan = BatchPlan(n=len(dataset), batch_size=config.batch_size, seed=config.seed)
    end_step = config.stop_at or config.steps
    loader = torch.utils.data.DataLoader(
        StepBatches(dataset, np.zeros(len(dataset), dtype=np.int64), plan, augment_images=config.augment),
        batch_size=None, sampler=range(start_step, end_step), num_workers=config.num_workers,
        generator=torch.Generator().manual_seed(config.seed),
    )
    result = AutoencoderTrainResult(out=out, steps=start_step)
    bar = tqdm(total=config.steps, initial=start_step, desc="training VAE", unit="step", disable=not config.progress)
    started = time.perf_counter()
    try:
        with (out / LOG_FILE).open("a") as log:
            for step, batch in zip(range(start_step, end_step), loader, strict=True):
                tick = time.perf_counter()
                images = to_model_range(batch["images"]).to(device)
                eps = torch.stack([torch.randn(latent_shape, generator=sample_generator(config.seed, NOISE_STREAM, p))
                                   for p in batch["positions"].tolist()]).to(device)
                loss, d_loss, parts = reconstruction_loss(vae, images, eps, config, discriminator)
                loss.backward()
                if d_loss is not None:
                    d_loss.backward()
                if config.max_grad_norm > 0:
                    for module in trained.values():
                        torch.nn.utils.clip_grad_norm_(
                            [p for p in module.parameters() if p.requires_grad], config.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise ArtifactError(f"VAE training diverged at step {step + 1} (loss {value}); lower --lr")
                done = step + 1
                rate = config.batch_size / max(time.perf_counter() - tick, 1e-9)
                log.write(json.dumps({"step": done, "loss": value, **parts, "lr": lr_scheduler.get_last_lr()[0],
                                      "samples_per_s": round(rate, 2)}) + "\n")
                log.flush()
                result.losses.append(value)
                result.steps = done
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4f}", l1=f"{parts['l1']:.4f}", samples_s=f"{rate:.1f}")
                if done % config.checkpoint_every == 0 or done == end_step:
                    state.step = done
                    save_checkpoint(out, state, keep=config.checkpoints_total_limit)
    except OSError as exc:
        raise OutputWriteError(f"cannot write to {out}: {exc}") from exc
    finally:
        bar.close()
    result.seconds = time.perf_counter() - started
    if result.steps < config.steps:
        logger.info("stopped at step %d of %d; continue with --resume", result.steps, config.steps)
        return result

    vae.eval()
    scaling = latent_scaling_factor(vae, dataset, device)
    vae.register_to_config(scaling_factor=scaling)
    report = {"scaling_factor": scaling, "steps": result.steps, "splits": {}}
    root = resolve_data_root(config.data)
    for split in ("train", "valid", "test"):
        try:
            split_data = open_split(root, split)
        except HistoaugError:  # a split that is missing or unreadable is left out of the report
            continue
        report["splits"][split] = reconstruction_quality(vae, split_data, device)
    write_text(out / REPORT_FILE, json.dumps(report, indent=2) + "\n")
    save_reconstruction_preview(vae, dataset, device, out / PREVIEW_FILE)
    pipe.vae = vae
    base_prompts = Path(config.base).expanduser() / PROMPTS_FILE
    if base_prompts.is_file():  # a trained model's decoder was fine-tuned: keep it a loadable model
        shutil.copy2(base_prompts, out / PROMPTS_FILE)
    save_pipeline_into(pipe, out)
    result.report = report
    result.finished = True
    return result


@torch.no_grad()
def latent_scaling_factor(vae, dataset, device: torch.device, batch_size: int = 64) -> float:
    """1 / std of the posterior means over the split (SD's recipe for unit-variance latents)."""
    total, total_sq, count = 0.0, 0.0, 0
    for start in range(0, len(dataset), batch_size):
        images = dataset.read_images(np.arange(start, min(start + batch_size, len(dataset))))
        means = vae.encode(to_model_range(torch.from_numpy(images)).to(device)).latent_dist.mean.double()
        total += float(means.sum())
        total_sq += float((means**2).sum())
        count += means.numel()
    variance = total_sq / count - (total / count) ** 2
    return float(1.0 / math.sqrt(max(variance, 1e-12)))


@torch.no_grad()
def reconstruction_quality(vae, dataset, device: torch.device, batch_size: int = 64) -> dict[str, float]:
    """PSNR (dB, uint8 scale) and mean absolute error of mean-latent reconstructions."""
    squared, absolute, count = 0.0, 0.0, 0
    for start in range(0, len(dataset), batch_size):
        images = dataset.read_images(np.arange(start, min(start + batch_size, len(dataset))))
        recon = reconstruct(vae, images, device).astype(np.float64)
        diff = recon - images.astype(np.float64)
        squared += float((diff**2).sum())
        absolute += float(np.abs(diff).sum())
        count += diff.size
    mse = squared / count
    return {"items": len(dataset), "psnr_db": round(psnr_from_mse(max(mse, 1e-12)), 2),
            "mae_uint8": round(absolute / count, 3)}


@torch.no_grad()
def reconstruct(vae, images: np.ndarray, device: torch.device) -> np.ndarray:
    """uint8 NHWC -> uint8 NHWC through the posterior mean."""
    x = to_model_range(torch.from_numpy(np.ascontiguousarray(images))).to(device)
    recon = vae.decode(vae.encode(x).latent_dist.mean).sample
    return ((recon.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def save_reconstruction_preview(vae, dataset, device: torch.device, path: Path, per_row: int = 8) -> None:
    """Originals (top row) over their reconstructions (bottom row)."""
    from PIL import Image

    n = min(per_row, len(dataset))
    originals = dataset.read_images(np.arange(n))
    recon = reconstruct(vae, originals, device)
    grid = np.concatenate([np.concatenate(list(originals), axis=1), np.concatenate(list(recon), axis=1)], axis=0)
    with atomic_path(path) as staging:
        Image.fromarray(grid).save(staging, format="PNG")
