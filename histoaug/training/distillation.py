"""Latent consistency distillation (LCM, Luo et al. 2023): a few-step student from a model's own UNet.

The teacher is a trained histoaug model dir (``histoaug train`` output, or ``default``); the
student starts as a copy of its UNet and learns, on the model's training patches, to map any
point of the teacher's guided probability-flow ODE trajectory to its end in one UNet call.
What one step does (diffusers' ``examples/consistency_distillation/train_lcm_distill_sd_wds.py``
is the reference):

* a cached latent ``z`` of a training patch (VAE mean/std, encoded once per run; dihedral
  augmentation applied to the latent), a skip-step index ``n`` on the grid
  ``t_n = (n + 1) * k - 1`` (``k = T / solver_steps``; LCM's 50-step grid by default), noise;
* ``x_t = add_noise(z, noise, t_n)``; the student's prediction ``f(x_t, t_n)`` with LCM's
  boundary-condition scalings (``c_skip * x_t + c_out * x0``, ``LCMScheduler``'s own scalings);
* the frozen teacher's classifier-free-guided prediction at the fixed scale ``guidance`` (cond
  and uncond in one call; with the teacher's ``guidance_rescale``, as its sampler applies it) and
  one DDIM step (diffusers' ``DDIMScheduler``, eta 0) to ``t_n - k``;
* the target network (an EMA of the student, not trained) predicts ``f(x_{t-k}, t_n - k)``;
  the loss is the Huber (or L2) distance between the two.

**Guidance is folded in** at a fixed scale: the student has no w-embedding and samples with one
UNet call per step at guidance 1, which is what makes it fast (no uncond pass). The price: one
student per guidance scale. The output is an ordinary histoaug model dir whose scheduler config
is ``LCMScheduler`` and whose ``sampler_defaults.json`` says ``lcm``, ``student_steps`` (4),
guidance 1, so ``load_synthesizer``, ``histoaug generate``, ``SyntheticPCam`` and ``histoaug
export`` run it without flags. Its UNet holds the target (EMA) weights, as ``histoaug train``'s
holds its EMA weights.

Runs, checkpoints, resume and multi-GPU are those of :mod:`histoaug.training.finetune` (same
config base, run dir, run record, step log; accelerate): every draw is a function of (seed,
global sample position), so ``--stop-at`` + ``--resume`` equals an uninterrupted run.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from histoaug.atomic_files import atomic_path
from histoaug.data.pcam import PCam
from histoaug.errors import ArtifactError, InvalidArgumentError, OutputWriteError
from histoaug.prompts import PROMPTS_FILE, PromptBank
from histoaug.synthesis.artifact_format import model_id_of, read_sampler_defaults, write_sampler_defaults
from histoaug.synthesis.defaults import (
    STUDENT_GUIDANCE,
    STUDENT_SCHEDULER,
    ModelSamplerDefaults,
    check_guidance_rescale,
)
from histoaug.synthesis.model_source import resolve_source
from histoaug.synthesis.sampling import guided_noise
from histoaug.training.base_model import BaseModelError, load_base_pipeline
from histoaug.training.batches import DISTILL_STREAM, PROMPT_STREAM, BatchPlan, augment, sample_generator
from histoaug.training.checkpoints import TrainingState, load_checkpoint, save_checkpoint
from histoaug.training.data_source import open_split
from histoaug.training.finetune import (
    PREVIEW_FILE,
    _check_alignment,
    _mixed_precision,
    _preview,
    _release_ddp_wrapper,
    _save_final,
    encode_prompts,
)
from histoaug.training.hashing import dataset_hash, module_hash
from histoaug.training.prompt_building import load_prompts_dir
from histoaug.training.requirements import require
from histoaug.training.run_config import DistillConfig
from histoaug.training.run_dir import prepare_out, write_run_record
from histoaug.training.step_record import RunResult, StepRecorder

logger = logging.getLogger(__name__)

LATENT_CACHE_DIR = "latent_cache"
_ENCODE_BATCH = 64


DistillResult = RunResult  # what ``distill`` returns


# --- inputs --------------------------------------------------------------------------------------
def teacher_dir(base: str) -> Path:
    """The teacher's model dir: ``default`` (the embedded model) or a trained pipeline dir."""
    root = resolve_source(base).expanduser()
    if not root.is_dir():
        raise BaseModelError(f"teacher model {base!r} is not a directory; pass a model dir from `histoaug train` "
                             "or 'default'")
    if not (root / PROMPTS_FILE).is_file():
        raise BaseModelError(f"teacher model dir {root} has no {PROMPTS_FILE}; distillation needs its prompts")
    return root


def patch_prompt_ids(bank: PromptBank, labels: np.ndarray, seed: int) -> np.ndarray:
    """Without a prompts dir: each patch gets one of its label's trained prompts, drawn once from
    (seed, patch index) in proportion to the prompts' training patch counts (uniform if unknown)."""
    rng = np.random.default_rng([seed, PROMPT_STREAM])
    draws = rng.random(len(labels))
    ids = np.empty(len(labels), dtype=np.int64)
    for label in (0, 1):
        mask = labels == label
        if not mask.any():
            continue
        choices = bank.ids_for_label(label)
        weights = np.array([max(bank[i].patches or 0, 0) for i in choices], dtype=np.float64)
        weights = weights if weights.sum() > 0 else np.ones(len(choices))
        cdf = np.cumsum(weights / weights.sum())
        ids[mask] = np.asarray(choices)[np.minimum(np.searchsorted(cdf, draws[mask], side="right"), len(choices) - 1)]
    return ids


def _prompt_assignment(config: DistillConfig, bank: PromptBank, dataset: PCam) -> tuple[np.ndarray, str]:
    labels = dataset.labels.astype(np.uint8)
    if config.prompts is None:
        return patch_prompt_ids(bank, labels, config.seed), "label"
    prompts_bank, assignment = load_prompts_dir(config.prompts)
    _check_alignment(dataset, assignment, config.prompts)
    if prompts_bank.texts != bank.texts:
        raise ArtifactError(f"prompts dir {config.prompts} has other prompts than the teacher model; pass the "
                            "prompts dir the model was trained with, or none (a prompt of each patch's label)")
    return assignment.prompt_ids, str(assignment.attrs.get("data_hash", ""))


# --- latents -------------------------------------------------------------------------------------
@torch.no_grad()
def cached_latents(vae, dataset: PCam, resolution: int, out: Path, data_hash: str, device: torch.device,
                   *, progress: bool = True) -> dict[str, torch.Tensor]:
    """The VAE posterior (``mean``, ``std``; float32, CPU) of every patch, encoded once per run.

    Kept in ``out/latent_cache/<key>.safetensors``, keyed by the VAE's weights, the resolution and
    the data, so a resume reads them back instead of re-encoding."""
    key = hashlib.sha256(json.dumps({"vae": module_hash(vae), "resolution": resolution, "data": data_hash,
                                     "n": len(dataset)}).encode()).hexdigest()[:24]
    path = out / LATENT_CACHE_DIR / f"latents-{key}.safetensors"
    if path.is_file():
        try:
            return load_file(path)
        except (OSError, ValueError):
            logger.warning("latent cache %s is unreadable; encoding again", path)
    means, stds = [], []
    vae = vae.to(device).eval()
    for start in tqdm(range(0, len(dataset), _ENCODE_BATCH), desc="encoding latents", unit="batch",
                      disable=not progress):
        indices = np.arange(start, min(start + _ENCODE_BATCH, len(dataset)))
        images = torch.from_numpy(dataset.read_images(indices)).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        if images.shape[-1] != resolution:
            images = F.interpolate(images, size=(resolution, resolution), mode="bicubic", antialias=True,
                                   align_corners=False).clamp(-1.0, 1.0)
        dist = vae.encode(images.to(next(vae.parameters()).dtype)).latent_dist
        means.append(dist.mean.float().cpu())
        stds.append(dist.std.float().cpu())
    latents = {"mean": torch.cat(means).contiguous(), "std": torch.cat(stds).contiguous()}
    try:
        with atomic_path(path, durable=True) as staging:
            save_file(latents, staging)
    except OSError as exc:
        raise OutputWriteError(f"cannot write the latent cache {path}: {exc}") from exc
    return latents


def distill_draws(positions: np.ndarray, seed: int, latent_shape: tuple[int, ...],
                  solver_steps: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample VAE-sampling noise, diffusion noise and skip-step index (CPU), from (seed, position)."""
    vae_eps, noise, index = [], [], []
    for position in positions.tolist():
        generator = sample_generator(seed, DISTILL_STREAM, position)
        vae_eps.append(torch.randn(latent_shape, generator=generator))
        noise.append(torch.randn(latent_shape, generator=generator))
        index.append(torch.randint(0, solver_steps, (1,), generator=generator))
    return torch.stack(vae_eps), torch.stack(noise), torch.cat(index)


def _augment_latents(latents: np.ndarray, seed: int, positions: np.ndarray) -> np.ndarray:
    """The training stage's flip / 90-degree rotation of each sample, applied to its (C, h, w) latent."""
    turned = [augment(np.transpose(z, (1, 2, 0)), seed, int(p)) for z, p in zip(latents, positions, strict=True)]
    return np.ascontiguousarray(np.stack(turned).transpose(0, 3, 1, 2))


def predicted_original(model_output: torch.Tensor, timesteps: torch.Tensor, sample: torch.Tensor,
                       alphas_cumprod: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """x0 from a UNet output at per-sample timesteps (the parametrisation LCMScheduler.step inverts)."""
    alpha = alphas_cumprod[timesteps].to(sample.device, torch.float32).view(-1, 1, 1, 1)
    if prediction_type == "epsilon":
        return (sample - (1 - alpha).sqrt() * model_output) / alpha.sqrt()
    if prediction_type == "v_prediction":
        return alpha.sqrt() * sample - (1 - alpha).sqrt() * model_output
    return model_output


def _scheduler_like(cls, config, **overrides):
    """A ``cls`` scheduler over the teacher's noise schedule: only the config keys ``cls`` takes are
    passed, so the student's saved scheduler config is a clean LCM one (no DPM-Solver leftovers)."""
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    return cls(**{**{k: v for k, v in dict(config).items() if k in accepted}, **overrides})


# --- the run -------------------------------------------------------------------------------------
def distill(config: DistillConfig, *, command: list[str] | None = None) -> DistillResult:
    """Distil the teacher into a few-step LCM student and write its model dir; see the module docstring."""
    accelerate = require("accelerate", purpose="histoaug distill")
    from diffusers import DDIMScheduler, DDPMScheduler, LCMScheduler
    from diffusers.optimization import get_scheduler

    config.validate()
    for state_class in (accelerate.state.AcceleratorState, accelerate.state.GradientState):
        if hasattr(state_class, "_reset_state"):
            state_class._reset_state()
    accelerator = accelerate.Accelerator(
        cpu=config.device == "cpu",
        mixed_precision=_mixed_precision(config, on_gpu=config.device != "cpu" and torch.cuda.is_available()),
    )
    is_main = accelerator.is_main_process
    device = accelerator.device
    torch.manual_seed(config.seed)
    out = Path(config.out).expanduser()

    root = teacher_dir(config.base)
    teacher_defaults = read_sampler_defaults(root)
    if config.guidance is None:  # fold in the guidance the teacher samples at by default
        config = replace(config, guidance=teacher_defaults.guidance)
        logger.info("folding in the teacher's default guidance %g", config.guidance)
    if config.guidance_rescale is None:
        config = replace(config, guidance_rescale=teacher_defaults.guidance_rescale)
    check_guidance_rescale(config.guidance_rescale, "--guidance-rescale")
    bank = PromptBank.load(root / PROMPTS_FILE)
    dataset = open_split(config.data, config.split)
    prompt_ids, prompts_hash = _prompt_assignment(config, bank, dataset)
    pipe = load_base_pipeline(str(root), seed=config.seed)
    data_hash = dataset_hash(dataset)
    inputs = {
        "data_hash": data_hash,
        "prompts_data_hash": prompts_hash,
        "prompt_ids_sha256": hashlib.sha256(np.ascontiguousarray(prompt_ids, dtype=np.int64)).hexdigest(),
        "prompt_texts_sha256": hashlib.sha256(json.dumps(bank.texts).encode()).hexdigest(),
        "teacher_model_id": model_id_of(root),
    }
    resume_from = prepare_out(config, is_main, inputs)
    accelerator.wait_for_everyone()

    teacher, vae = pipe.unet, pipe.vae
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    prediction_type = noise_scheduler.config.prediction_type
    if prediction_type not in ("epsilon", "v_prediction", "sample"):
        raise ArtifactError(f"teacher scheduler has unsupported prediction_type {prediction_type!r}")
    num_timesteps = int(noise_scheduler.config.num_train_timesteps)
    if num_timesteps % config.solver_steps:
        raise InvalidArgumentError(f"solver-steps ({config.solver_steps}) must divide the teacher's "
                                   f"{num_timesteps} training timesteps")
    skip = num_timesteps // config.solver_steps
    solver = _scheduler_like(DDIMScheduler, pipe.scheduler.config, clip_sample=False, thresholding=False,
                             set_alpha_to_one=False)
    solver.set_timesteps(config.solver_steps)  # its step() then goes from t to t - skip
    lcm = _scheduler_like(LCMScheduler, pipe.scheduler.config, original_inference_steps=config.solver_steps,
                          timestep_scaling=config.timestep_scaling, clip_sample=False)
    alphas_cumprod = noise_scheduler.alphas_cumprod.to(torch.float32)

    vae_factor = 2 ** (len(vae.config.block_out_channels) - 1)
    resolution = config.resolution or int(teacher.config.sample_size) * vae_factor
    if resolution % (vae_factor * 2 ** (len(teacher.config.block_out_channels) - 1)):
        raise InvalidArgumentError(f"resolution {resolution} does not fit this model's VAE and UNet")
    latent_shape = (int(teacher.config.in_channels), resolution // vae_factor, resolution // vae_factor)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)

    pipe.to(device)
    prompt_embeds = encode_prompts(pipe, [*bank.texts, ""], device)
    uncond_index = len(bank)
    pipe.text_encoder.requires_grad_(False)
    vae.requires_grad_(False)
    scaling = float(vae.config.scaling_factor)
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    if is_main:
        cached_latents(vae, dataset, resolution, out, data_hash, device, progress=config.progress)
    accelerator.wait_for_everyone()
    posterior = cached_latents(vae, dataset, resolution, out, data_hash, device, progress=False)

    teacher.requires_grad_(False)
    teacher.eval()
    student = copy.deepcopy(teacher).to(torch.float32)
    target = copy.deepcopy(student)
    target.requires_grad_(False)
    target.eval()
    teacher.to(weight_dtype)
    student.train()
    student.requires_grad_(True)
    if config.gradient_checkpointing:
        student.enable_gradient_checkpointing()
    optimizer = torch.optim.AdamW(student.parameters(), lr=config.lr, betas=(config.adam_beta1, config.adam_beta2),
                                  weight_decay=config.weight_decay, eps=config.adam_eps)
    lr_scheduler = get_scheduler(config.lr_schedule, optimizer, num_warmup_steps=config.effective_warmup_steps,
                                 num_training_steps=config.steps)
    student, optimizer = accelerator.prepare(student, optimizer)
    raw_student = accelerator.unwrap_model(student)
    state = TrainingState(step=0, model=raw_student, optimizer=optimizer.optimizer, lr_scheduler=lr_scheduler,
                          scaler=accelerator.scaler, modules={"target": target})
    start_step = 0
    if resume_from is not None:
        start_step = load_checkpoint(resume_from, state)
        logger.info("resumed from %s (step %d)", resume_from, start_step)

    pipe.scheduler = lcm  # previews (and the saved model) sample as a student: LCM, few steps, guidance 1
    if is_main:
        write_run_record(out, config, command, start_step, inputs)
        try:
            bank.save(out / PROMPTS_FILE, overwrite=True)
            write_sampler_defaults(out, ModelSamplerDefaults(config.student_steps, STUDENT_GUIDANCE,
                                                             STUDENT_SCHEDULER))
        except OSError as exc:
            raise OutputWriteError(f"cannot write to {out}: {exc}") from exc
    accelerator.wait_for_everyone()

    plan = BatchPlan(n=len(dataset), batch_size=config.batch_size, seed=config.seed,
                     world=accelerator.num_processes, rank=accelerator.process_index)
    end_step = config.stop_at or config.steps
    samples_per_step = config.batch_size * accelerator.num_processes
    result = DistillResult(out=out, steps=start_step, main_process=is_main)
    recorder = StepRecorder(accelerator, result, total=config.steps, desc="distilling", what="distillation",
                            progress=config.progress, samples_per_step=samples_per_step)
    context = _StepContext(teacher=teacher, target=target, solver=solver, lcm=lcm, alphas_cumprod=alphas_cumprod,
                           noise_scheduler=noise_scheduler, prediction_type=prediction_type, skip=skip,
                           prompt_embeds=prompt_embeds, uncond_index=uncond_index, scaling=scaling, shift=shift,
                           latent_shape=latent_shape, weight_dtype=weight_dtype)
    started = time.perf_counter()
    try:
        for step in range(start_step, end_step):
            tick = time.perf_counter()
            positions = plan.positions(step)
            indices = plan.indices(positions)
            loss = _distill_loss(student, posterior, prompt_ids, positions, indices, config, context, accelerator)
            accelerator.backward(loss)
            if config.max_grad_norm > 0:
                accelerator.clip_grad_norm_(student.parameters(), config.max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():  # the target network follows the student (LCM's EMA update)
                for target_param, param in zip(target.parameters(), raw_student.parameters(), strict=True):
                    target_param.mul_(config.ema_decay).add_(param.detach(), alpha=1 - config.ema_decay)
            done = step + 1
            recorder.record(loss, done, tick, lr_scheduler.get_last_lr()[0])
            if done % config.checkpoint_every == 0 or done == end_step:
                state.step = done
                accelerator.wait_for_everyone()
                if is_main:
                    folder = save_checkpoint(out, state, keep=config.checkpoints_total_limit)
                    _preview(pipe, target, None, prompt_embeds, bank, uncond_index, config, resolution, device,
                             folder / PREVIEW_FILE)
                accelerator.wait_for_everyone()
    finally:
        recorder.close()
        del student
        _release_ddp_wrapper(accelerator)
    result.seconds = time.perf_counter() - started
    if result.steps < config.steps:
        logger.info("stopped at step %d of %d; continue with --resume", result.steps, config.steps)
        accelerator.end_training()
        return result

    if is_main:
        _preview(pipe, target, None, prompt_embeds, bank, uncond_index, config, resolution, device,
                 out / PREVIEW_FILE)
        _save_final(pipe, target, out)  # model_index.json last: the dir is complete
    accelerator.wait_for_everyone()
    accelerator.end_training()
    result.finished = True
    return result


@dataclass
class _StepContext:
    """The frozen parts one distillation step uses."""

    teacher: torch.nn.Module
    target: torch.nn.Module
    solver: object  # DDIMScheduler, set to the skip grid
    lcm: object  # LCMScheduler: boundary-condition scalings
    alphas_cumprod: torch.Tensor
    noise_scheduler: object
    prediction_type: str
    skip: int
    prompt_embeds: torch.Tensor
    uncond_index: int
    scaling: float
    shift: float
    latent_shape: tuple[int, ...]
    weight_dtype: torch.dtype


def _distill_loss(student, posterior: dict[str, torch.Tensor], prompt_ids: np.ndarray, positions: np.ndarray,
                  indices: np.ndarray, config: DistillConfig, ctx: _StepContext, accelerator) -> torch.Tensor:
    """The consistency loss of one batch (all randomness from the samples' positions)."""
    device = accelerator.device
    vae_eps, noise, skip_index = distill_draws(positions, config.seed, ctx.latent_shape, config.solver_steps)
    mean, std = posterior["mean"][indices], posterior["std"][indices]
    if config.augment:
        mean = torch.from_numpy(_augment_latents(mean.numpy(), config.seed, positions))
        std = torch.from_numpy(_augment_latents(std.numpy(), config.seed, positions))
    latents = ((mean + std * vae_eps - ctx.shift) * ctx.scaling).to(device)
    noise = noise.to(device)
    start = (skip_index + 1) * ctx.skip - 1  # LCM's grid: t_n = (n + 1) k - 1
    prev = (start - ctx.skip).clamp(min=0)
    noisy = ctx.noise_scheduler.add_noise(latents, noise, start)
    start_d, prev_d = start.to(device), prev.to(device)
    c_skip_start, c_out_start = (c.view(-1, 1, 1, 1).to(device, torch.float32)
                                 for c in ctx.lcm.get_scalings_for_boundary_condition_discrete(start.float()))
    c_skip, c_out = (c.view(-1, 1, 1, 1).to(device, torch.float32)
                     for c in ctx.lcm.get_scalings_for_boundary_condition_discrete(prev.float()))
    ids = torch.from_numpy(prompt_ids[indices]).to(device)
    cond = ctx.prompt_embeds[ids]

    with accelerator.autocast():
        output = student(noisy, start_d, encoder_hidden_states=cond).sample.float()
    x0 = predicted_original(output, start, noisy, ctx.alphas_cumprod, ctx.prediction_type)
    prediction = c_skip_start * noisy + c_out_start * x0

    with torch.no_grad():
        uncond = ctx.prompt_embeds[torch.full_like(ids, ctx.uncond_index)]
        with accelerator.autocast():
            guided = ctx.teacher(torch.cat([noisy, noisy]).to(ctx.weight_dtype), torch.cat([start_d, start_d]),
                                 encoder_hidden_states=torch.cat([uncond, cond]).to(ctx.weight_dtype)).sample.float()
        out_uncond, out_cond = guided.chunk(2)
        teacher_output = guided_noise(out_uncond, out_cond, config.guidance, config.guidance_rescale)
        solved = torch.cat([ctx.solver.step(teacher_output[i:i + 1], int(start[i]), noisy[i:i + 1]).prev_sample
                            for i in range(noisy.shape[0])])
        with accelerator.autocast():
            target_output = ctx.target(solved, prev_d, encoder_hidden_states=cond).sample.float()
        target_x0 = predicted_original(target_output, prev, solved, ctx.alphas_cumprod, ctx.prediction_type)
        target = c_skip * solved + c_out * target_x0

    if config.loss == "l2":
        return F.mse_loss(prediction, target)
    return torch.mean(torch.sqrt((prediction - target) ** 2 + config.huber_c**2) - config.huber_c)
