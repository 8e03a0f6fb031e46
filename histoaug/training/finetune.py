"""Fine-tuning the UNet of a Stable Diffusion pipeline on (patch, prompt) pairs (paper, stage c).

The VAE stays frozen. The CLIP text encoder stays frozen too, and the prompts' text embeddings
are computed once, unless ``train_text_encoder`` (``--train-text-encoder``): then it trains with
the UNet (same optimizer, learning rate and EMA), and the prompt embeddings are recomputed from it
at every step. A tiny randomly initialised text encoder (the ``histo96`` preset's) gives nearly the
same embedding for every prompt (cosine >= 0.99), so a UNet trained on its frozen output barely
conditions on the prompt; training it makes the label and morphology words distinct.
Each step: a batch of patches (random flips / 90-degree rotations, resized to the model's
resolution) is encoded by the VAE, noised at random timesteps, and the UNet learns to predict
the scheduler's target (noise for ``epsilon``, velocity for ``v_prediction``, the clean latent
for ``sample``) given the patch's prompt (replaced by the empty prompt with probability
``cond_dropout``, so classifier-free guidance works at generation). AdamW, warm-up + cosine
learning rate (``diffusers.optimization.get_scheduler``), EMA weights
(``diffusers.training_utils.EMAModel``), gradient accumulation, gradient clipping, optional
gradient checkpointing, mixed precision on GPU.

Devices and processes come from accelerate. One process (CPU or one GPU)::

    histoaug train DATA --prompts PROMPTS --base small --out runs/model

Several GPUs (one process per GPU, DDP; the batch size is per process)::

    accelerate launch --multi_gpu --num_processes 4 -m histoaug.cli.main train DATA \\
        --prompts PROMPTS --base DIR --out runs/model
    # or: torchrun --standalone --nproc_per_node 4 -m histoaug.cli.main train ...

(Several CPU processes: ``torchrun --standalone --nproc_per_node 2 ... train ... --device cpu``;
``accelerate launch --cpu`` needs MPI for that.) Process ``r`` of ``W`` trains on slots
``r*B .. (r+1)*B`` of each global batch of ``W*B`` samples, so a run on W processes with batch
B sees the same samples and noise as one process with batch W*B (measured: losses equal, final
weights within 6e-8).

Reproducibility: the batches, augmentations and noise are functions of (seed, step) (see
:mod:`histoaug.training.batches`), and checkpoints hold weights, EMA, optimizer, LR scheduler and
RNG states, so ``--resume`` continues exactly: on CPU the resumed run's losses and final weights
are bit-identical to an uninterrupted run's.

Output dir::

    model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/   diffusers pipeline
                                                   (safetensors; the UNet holds the EMA weights)
    prompts.json            the prompts the model was trained on (runtime reads it)
    training_config.json    the full config, the process's argv (and those of resumes), versions
    train_log.jsonl         one JSON line per step: step, loss, lr, samples_per_s
    checkpoints/step-NNNNNNN/   resumable checkpoints, each with preview.png
    preview.png             samples of the final model

``model_index.json`` is written last: its presence marks a complete model.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import hashlib
import json
import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from histoaug.errors import ArtifactError, InvalidArgumentError, OutputWriteError
from histoaug.prompts import PROMPTS_FILE, PromptBank
from histoaug.training.base_model import load_base_pipeline
from histoaug.training.batches import BatchPlan, StepBatches, sample_generator, sample_noise
from histoaug.training.checkpoints import TrainingState, load_checkpoint, save_checkpoint
from histoaug.training.data_source import open_split
from histoaug.training.prompt_building import load_prompts_dir
from histoaug.training.requirements import require
from histoaug.training.run_config import TrainConfig
from histoaug.training.run_dir import prepare_out, save_pipeline_into, write_run_record
from histoaug.training.step_record import RunResult, StepRecorder

if TYPE_CHECKING:
    from diffusers import StableDiffusionPipeline

logger = logging.getLogger(__name__)

PREVIEW_FILE = "preview.png"
PREVIEW_STREAM = 4


TrainResult = RunResult  # what ``train`` returns


# --- setup ---------------------------------------------------------------------------------------
def training_inputs(bank: PromptBank, assignment) -> dict[str, str]:
    """Hashes of what the run trains on (data, per-image prompt ids, prompt texts): must match on resume."""
    return {
        "data_hash": str(assignment.attrs.get("data_hash", "")),
        "prompt_ids_sha256": hashlib.sha256(np.ascontiguousarray(assignment.prompt_ids, dtype=np.int64)).hexdigest(),
        "prompt_texts_sha256": hashlib.sha256(json.dumps(bank.texts).encode()).hexdigest(),
    }


def _mixed_precision(config: TrainConfig, on_gpu: bool) -> str:
    if config.mixed_precision != "auto":
        if config.mixed_precision == "fp16" and not on_gpu:
            raise InvalidArgumentError("mixed precision fp16 needs a GPU; use --mixed-precision no (or bf16)")
        return config.mixed_precision
    if not on_gpu:
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def _check_alignment(dataset, assignment, prompts_dir: str) -> None:
    if len(assignment.prompt_ids) != len(dataset):
        raise ArtifactError(
            f"prompts dir {prompts_dir} has ids for {len(assignment.prompt_ids)} patches but the {dataset.split} split "
            f"has {len(dataset)}; rebuild it for this data with `histoaug prompts build`"
        )
    if not np.array_equal(assignment.labels, dataset.labels.astype(np.uint8)):
        raise ArtifactError(
            f"prompts dir {prompts_dir} was built for other data (labels differ from the {dataset.split} split); "
            "rebuild it with `histoaug prompts build`"
        )


@torch.no_grad()
def encode_prompts(pipe: StableDiffusionPipeline, texts: list[str], device: torch.device) -> torch.Tensor:
    """Text-encoder hidden states of ``texts`` (padded to the tokenizer's max length), float32."""
    encoder = pipe.text_encoder.to(device)
    return encoder(_prompt_tokens(pipe, texts).to(device))[0].float()


def _vae_scale_factor(vae) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


class TextConditionedUNet(torch.nn.Module):
    """The UNet and the text encoder as one trained module (``train_text_encoder``).

    ``forward`` embeds the bank's prompt texts (``tokens``: every prompt, then the empty one) and
    runs the UNet on the embeddings of ``ids``, so DDP, the optimizer, EMA and checkpoints see one
    module; checkpoint keys are ``unet.*`` and ``text_encoder.*``.
    """

    def __init__(self, unet: torch.nn.Module, text_encoder: torch.nn.Module, tokens: torch.Tensor):
        super().__init__()
        self.unet = unet
        self.text_encoder = text_encoder
        self.register_buffer("tokens", tokens, persistent=False)

    def prompt_embeddings(self) -> torch.Tensor:
        return self.text_encoder(self.tokens)[0].float()

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, ids: torch.Tensor):
        return self.unet(noisy, timesteps, encoder_hidden_states=self.prompt_embeddings()[ids])


def _prompt_tokens(pipe: StableDiffusionPipeline, texts: list[str]) -> torch.Tensor:
    return pipe.tokenizer(texts, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                          truncation=True, return_tensors="pt").input_ids


# --- training ------------------------------------------------------------------------------------
def train(config: TrainConfig, *, command: list[str] | None = None) -> TrainResult:
    """Fine-tune (or train from a preset) and write the pipeline dir; see the module docstring.

    ``command`` is recorded in training_config.json (default: this process's ``sys.argv``)
    next to the full config, which alone determines the result.
    """
    accelerate = require("accelerate", purpose="histoaug train")
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    config.validate()
    # accelerate keeps its state in process-wide singletons; a previous train() in this process
    # (another mixed precision, say) must not leak into this one. The process group survives.
    for state_class in (accelerate.state.AcceleratorState, accelerate.state.GradientState):
        if hasattr(state_class, "_reset_state"):
            state_class._reset_state()
    accelerator = accelerate.Accelerator(
        cpu=config.device == "cpu",
        mixed_precision=_mixed_precision(config, on_gpu=config.device != "cpu" and torch.cuda.is_available()),
    )
    is_main = accelerator.is_main_process
    device = accelerator.device
    torch.manual_seed(config.seed)  # for anything drawing from the global RNG (e.g. dropout); saved in checkpoints
    out = Path(config.out).expanduser()

    # Validate inputs before touching the output dir.
    dataset = open_split(config.data, config.split)
    bank, assignment = load_prompts_dir(config.prompts)
    _check_alignment(dataset, assignment, config.prompts)
    pipe = load_base_pipeline(config.base, seed=config.seed)
    inputs = training_inputs(bank, assignment)
    resume_from = prepare_out(config, is_main, inputs)
    accelerator.wait_for_everyone()

    unet, vae = pipe.unet, pipe.vae
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    prediction_type = noise_scheduler.config.prediction_type
    if prediction_type not in ("epsilon", "v_prediction", "sample"):
        raise ArtifactError(f"base model scheduler has unsupported prediction_type {prediction_type!r}")
    resolution = config.resolution or int(unet.config.sample_size) * _vae_scale_factor(vae)
    # the UNet halves the latent per down block; diffusers' SD pipeline wants multiples of 8
    multiple = math.lcm(8, _vae_scale_factor(vae) * 2 ** (len(unet.config.block_out_channels) - 1))
    if resolution % multiple:
        raise InvalidArgumentError(f"resolution {resolution} must be a multiple of {multiple} for this model")
    latent_side = resolution // _vae_scale_factor(vae)
    latent_shape = (int(unet.config.in_channels), latent_side, latent_side)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)

    # Frozen parts: prompt embeddings once (float32, kept on device), VAE in the compute dtype.
    pipe.to(device)
    prompt_embeds = encode_prompts(pipe, [*bank.texts, ""], device)
    uncond_index = len(bank)
    pipe.text_encoder.requires_grad_(False)
    trained: torch.nn.Module = unet  # what the optimizer, EMA and checkpoints cover
    if config.train_text_encoder:
        pipe.text_encoder.requires_grad_(True)
        pipe.text_encoder.train()
        trained = TextConditionedUNet(unet, pipe.text_encoder, _prompt_tokens(pipe, [*bank.texts, ""]).to(device))
    vae.requires_grad_(False)
    # fp16 overflows a VAE whose config says force_upcast (SD's, histoaug's): encode in fp32 there, as
    # diffusers' pipelines decode; bf16 has fp32's range
    upcast = weight_dtype == torch.float16 and bool(getattr(vae.config, "force_upcast", False))
    train_vae = vae if weight_dtype == torch.float32 or upcast else copy.deepcopy(vae).to(dtype=weight_dtype)
    train_vae.eval()
    scaling = float(vae.config.scaling_factor)
    shift = getattr(vae.config, "shift_factor", None) or 0.0

    unet.train()
    unet.requires_grad_(True)
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    optimizer = torch.optim.AdamW(
        trained.parameters(), lr=config.lr, betas=(config.adam_beta1, config.adam_beta2),
        weight_decay=config.weight_decay, eps=config.adam_eps,
    )
    lr_scheduler = get_scheduler(
        config.lr_schedule, optimizer, num_warmup_steps=config.effective_warmup_steps,
        num_training_steps=config.steps,
    )
    ema = None
    if config.ema:
        ema = EMAModel(trained.parameters(), decay=config.ema_decay, use_ema_warmup=True,
                       model_cls=None if config.train_text_encoder else type(unet),
                       model_config=None if config.train_text_encoder else unet.config)
        ema.to(device)
    unet, optimizer = accelerator.prepare(trained, optimizer)  # `unet`: the prepared trained module
    raw_model = accelerator.unwrap_model(unet)
    raw_unet = raw_model.unet if config.train_text_encoder else raw_model
    state = TrainingState(step=0, model=raw_model, optimizer=optimizer.optimizer, lr_scheduler=lr_scheduler,
                          ema=ema, scaler=accelerator.scaler)
    start_step = 0
    if resume_from is not None:
        start_step = load_checkpoint(resume_from, state)
        logger.info("resumed from %s (step %d)", resume_from, start_step)

    if is_main:
        _write_run_files(out, config, bank, command, start_step, inputs)
    accelerator.wait_for_everyone()

    plan = BatchPlan(n=len(dataset), batch_size=config.batch_size, seed=config.seed,
                     world=accelerator.num_processes, rank=accelerator.process_index)
    end_step = config.stop_at or config.steps
    loader = torch.utils.data.DataLoader(
        StepBatches(dataset, assignment.prompt_ids, plan, augment_images=config.augment),
        batch_size=None, sampler=range(start_step * config.grad_accum, end_step * config.grad_accum),
        num_workers=config.num_workers, persistent_workers=False,
        generator=torch.Generator().manual_seed(config.seed),  # keep the global RNG untouched
    )
    batches = iter(loader)
    samples_per_step = config.batch_size * config.grad_accum * accelerator.num_processes
    result = TrainResult(out=out, steps=start_step, main_process=is_main)
    recorder = StepRecorder(accelerator, result, total=config.steps, desc="training", what="training",
                            progress=config.progress, samples_per_step=samples_per_step)
    started = time.perf_counter()
    try:
        for step in range(start_step, end_step):
            tick = time.perf_counter()
            step_loss = torch.zeros((), device=device)
            for micro in range(config.grad_accum):
                batch = next(batches)
                sync = micro == config.grad_accum - 1
                with contextlib.nullcontext() if sync else accelerator.no_sync(unet):
                    loss = _micro_step(
                        batch, unet=unet, vae=train_vae, noise_scheduler=noise_scheduler,
                        prompt_embeds=prompt_embeds, uncond_index=uncond_index, config=config,
                        resolution=resolution, latent_shape=latent_shape, scaling=scaling, shift=shift,
                        prediction_type=prediction_type, accelerator=accelerator, weight_dtype=weight_dtype,
                        with_text_encoder=config.train_text_encoder,
                    )
                    accelerator.backward(loss / config.grad_accum)
                step_loss += loss.detach() / config.grad_accum
            if config.max_grad_norm > 0:
                accelerator.clip_grad_norm_(unet.parameters(), config.max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.step(raw_model.parameters())
            done = step + 1
            recorder.record(step_loss, done, tick, lr_scheduler.get_last_lr()[0])
            if done % config.checkpoint_every == 0 or done == end_step:
                state.step = done
                accelerator.wait_for_everyone()
                if is_main:
                    folder = save_checkpoint(out, state, keep=config.checkpoints_total_limit)
                    _preview(pipe, raw_model, ema, prompt_embeds, bank, uncond_index, config, resolution, device,
                             folder / PREVIEW_FILE)
                accelerator.wait_for_everyone()
    finally:
        recorder.close()
        del unet  # the DDP wrapper is not needed past the loop, and must go first (see _release_ddp_wrapper)
        _release_ddp_wrapper(accelerator)
    result.seconds = time.perf_counter() - started
    if result.steps < config.steps:
        logger.info("stopped at step %d of %d; continue with --resume", result.steps, config.steps)
        accelerator.end_training()
        return result

    if is_main:
        if ema is not None:
            ema.copy_to(raw_model.parameters())
        _preview(pipe, raw_model, None, prompt_embeds, bank, uncond_index, config, resolution, device,
                 out / PREVIEW_FILE)
        if config.train_text_encoder:
            pipe.text_encoder = raw_model.text_encoder.eval()
        _save_final(pipe, raw_unet, out)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    result.finished = True
    return result


def _release_ddp_wrapper(accelerator) -> None:
    """Free the DDP wrapper before the process group is destroyed (the caller dropped its reference).

    DDP's gradient reducer holds a reference to the process group and is freed with the GIL held.
    Freed after ``destroy_process_group``, it drops the last reference and the gloo group's
    destructor joins its worker threads while one of them waits for the GIL: rank 1 of a torchrun
    run hung at exit that way (gdb: ``~Reducer -> ~ProcessGroupGloo -> thread::join``). Freed
    first, the group still lives in torch's registry, and ``destroy_process_group`` ends it from
    Python, which releases the GIL.
    """
    accelerator.free_memory()
    gc.collect()


def _micro_step(batch: dict[str, torch.Tensor], *, unet, vae, noise_scheduler, prompt_embeds: torch.Tensor,
                uncond_index: int, config: TrainConfig, resolution: int, latent_shape: tuple[int, ...],
                scaling: float, shift: float, prediction_type: str, accelerator, weight_dtype,
                with_text_encoder: bool = False) -> torch.Tensor:
    """Loss of one micro-batch (all randomness from the samples' positions)."""
    device = accelerator.device
    vae_eps, noise, timesteps, drops = sample_noise(
        batch["positions"], config.seed, latent_shape, noise_scheduler.config.num_train_timesteps
    )
    images = batch["images"].to(device).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    if images.shape[-1] != resolution:
        images = F.interpolate(images, size=(resolution, resolution), mode="bicubic", antialias=True,
                               align_corners=False).clamp(-1.0, 1.0)
    with torch.no_grad():
        dist = vae.encode(images.to(vae.dtype)).latent_dist
        latents = dist.mean + dist.std * vae_eps.to(device, dist.mean.dtype)
        latents = ((latents - shift) * scaling).float()
    noise = noise.to(device)
    timesteps = timesteps.to(device)
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    if prediction_type == "epsilon":
        target = noise
    elif prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = latents
    ids = batch["prompt_ids"].to(device)
    ids = torch.where(drops.to(device) < config.cond_dropout, torch.full_like(ids, uncond_index), ids)
    with accelerator.autocast():
        if with_text_encoder:  # `unet` is a (wrapped) TextConditionedUNet: it embeds the prompts itself
            pred = unet(noisy, timesteps, ids).sample
        else:
            pred = unet(noisy, timesteps, encoder_hidden_states=prompt_embeds[ids]).sample
    return F.mse_loss(pred.float(), target.float())


def _write_run_files(out: Path, config: TrainConfig, bank: PromptBank, command: list[str] | None,
                     start_step: int, inputs: dict[str, str]) -> None:
    """The run record and log (see :func:`write_run_record`) plus prompts.json."""
    write_run_record(out, config, command, start_step, inputs)
    try:
        bank.save(out / PROMPTS_FILE, overwrite=True)
    except OSError as exc:
        raise OutputWriteError(f"cannot write to {out}: {exc}") from exc


@torch.no_grad()
def _preview(pipe, model, ema, prompt_embeds: torch.Tensor, bank: PromptBank, uncond_index: int,
             config: TrainConfig, resolution: int, device: torch.device, path: Path) -> None:
    """A grid of ``preview_per_label`` samples per label, with the EMA weights when EMA is on.

    ``model``: the trained module, the UNet or a :class:`TextConditionedUNet` (whose current text
    encoder then gives the prompt embeddings)."""
    if config.preview_per_label < 1:
        return
    from PIL import Image

    from histoaug.generation.preview import save_preview

    ids, labels = [], []
    for label in (0, 1):
        choices = [p.id for p in bank if p.label == label]
        for k in range(config.preview_per_label):
            ids.append(choices[k * max(1, len(choices) // config.preview_per_label) % len(choices)])
            labels.append(label)
    conditioned = isinstance(model, TextConditionedUNet)
    unet = model.unet if conditioned else model
    was_training = model.training
    model.eval()
    if ema is not None:
        ema.store(model.parameters())
        ema.copy_to(model.parameters())
    try:
        if conditioned:
            prompt_embeds = model.prompt_embeddings()
        scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
        runner = type(pipe)(**{**pipe.components, "unet": unet, "scheduler": scheduler},
                            requires_safety_checker=False)
        runner.set_progress_bar_config(disable=True)
        index = torch.tensor(ids, device=prompt_embeds.device)
        images = runner(
            prompt_embeds=prompt_embeds[index],
            negative_prompt_embeds=prompt_embeds[torch.full_like(index, uncond_index)],
            num_inference_steps=config.preview_steps, guidance_scale=config.preview_guidance,
            height=resolution, width=resolution, output_type="np",
            generator=[sample_generator(config.seed, PREVIEW_STREAM, i) for i in range(len(ids))],
        ).images
    finally:
        if ema is not None:
            ema.restore(model.parameters())
        model.train(was_training)
    tiles = (np.clip(images, 0.0, 1.0) * 255).round().astype(np.uint8)
    tiles = np.stack([np.asarray(Image.fromarray(t).resize((96, 96), Image.BICUBIC)) for t in tiles])
    save_preview(tiles, np.array(labels), path, per_label=config.preview_per_label)


def _save_final(pipe: StableDiffusionPipeline, unet: torch.nn.Module, out: Path) -> None:
    pipe.unet = unet
    save_pipeline_into(pipe, out)
