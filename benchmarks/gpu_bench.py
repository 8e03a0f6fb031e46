"""GPU generation benchmark: histoaug's torch runtimes against diffusers in the same precision.

Workloads (20 DPM-Solver++ steps, guidance 2, no guidance rescale, on both sides: both CFG halves run in one UNet
call, per-sample seeds):

``embedded``  the embedded model (96x96, ``histoaug.load_synthesizer("default")``) at batch 256 and 1024,
              fp16 and bf16: diffusers ``StableDiffusionPipeline`` eager (SDPA) vs histoaug torch eager and
              CUDA-graphed, same precision, same weights, seeds and scheduler; patches/s, PSNR of histoaug's
              patches against diffusers', whether graphed patches are bit-identical to eager ones.
``sd15``      a UNet with Stable Diffusion 1.5's published architecture (random fp16 weights built on the
              device from its config, no file, no hub) at 512x512 batch 1 and 96x96 batch 1 and 64: the
              denoising loop (no VAE: it would dominate at 512 and is not what the UNet runtimes change),
              diffusers' pipeline to latents (``output_type="latent"``) vs histoaug's loop, eager and graphed.
``kernels``   histoaug's Triton kernels (fused GroupNorm+SiLU, decode post-processing) against their torch
              references at SD shapes: timed for the first time, with their largest difference; and the
              embedded model's fastest uncompiled runtime with its norms swapped for the kernel
              (``TorchBackend.use_fused_norms``) against the same runtime without.
``student``   a distilled few-step student (default: the embedded model's, ``default-fast``; ``--student DIR``:
              any ``histoaug distill`` output) at 1, 2, 4 and 8 LCM steps,
              guidance 1, against its teacher, the embedded model, at the teacher's own defaults (its
              ``sampler_defaults.json``: 10 DPM-Solver++ steps, guidance 6); same runtime (torch fp16, CUDA-graphed),
              batch, labels and seeds; patches/s and the speed-up over the teacher.
``compile``   (last; long: one compile per shape) diffusers with ``torch.compile(unet, mode="reduce-overhead")``
              (CUDA graphs through Inductor: the strongest stock configuration for a launch-bound UNet) and,
              with ``--aot``, histoaug's AOTInductor-compiled UNet.

Method (docs/gpu.md): CUDA events around each run, after untimed warm-up runs of the same shape (which do the
compiles and graph captures); the median of ``--repeats`` (>= 5) runs with min and max; peak device memory per
case; the UNet's own rate is timed separately (one UNet call at the CFG batch, median of 20) and divided into
its FLOPs (counted by torch's FlopCounterMode), as a fraction of the bf16 matmul rate measured here.

A cut run keeps its figures: the JSON is rewritten (atomically) after every case, each case runs under its own
time limit (``--case-timeout-s``: a SIGALRM in the main thread, recorded as ``status: "timeout"``), cases that
cannot start inside ``--budget-s`` are recorded as skipped, and a short table is printed last.

    python -P benchmarks/gpu_bench.py --device cuda --out OUT.json --budget-s 150
    python -P benchmarks/gpu_bench.py --dry-run --out /tmp/g.json        # CPU, tiny sizes (CI)
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import logging
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger("histoaug.benchmarks.gpu")

STEPS, GUIDANCE, SCHEDULER = 20, 2.0, "dpmsolver++"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
# Stable Diffusion 1.5's UNet (runwayml/stable-diffusion-v1-5 unet/config.json), written out: no hub here
SD15_UNET = {"sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
             "block_out_channels": [320, 640, 1280, 1280], "attention_head_dim": 8, "cross_attention_dim": 768,
             "norm_num_groups": 32,
             "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                  "DownBlock2D"],
             "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]}
# its scheduler's noise schedule
SD15_SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                  "beta_schedule": "scaled_linear", "prediction_type": "epsilon", "steps_offset": 1,
                  "set_alpha_to_one": False, "clip_sample": False}
# the dry run's stand-in: the same block types, CPU-sized
TINY_UNET = {**SD15_UNET, "block_out_channels": [32, 32, 64, 64], "attention_head_dim": 2, "cross_attention_dim": 32,
             "layers_per_block": 1, "norm_num_groups": 8}


# --- the JSON record ----------------------------------------------------------------------------


@dataclass
class Case:
    """One benchmark row. Every field is present in every case (None where it does not apply)."""

    workload: str
    runtime: str
    precision: str
    batch: int
    image_size: int
    status: str = "pending"  # ok | skipped | failed | timeout
    reason: str | None = None
    repeats: int = 0
    seconds_median: float | None = None
    seconds_min: float | None = None
    seconds_max: float | None = None
    patches_per_second: float | None = None
    speedup_vs_diffusers_eager: float | None = None
    speedup_vs_diffusers_compiled: float | None = None
    psnr_vs_diffusers_db: float | None = None
    latents_relative_error_vs_diffusers: float | None = None
    identical_to_eager: bool | None = None
    unet_seconds_per_call: float | None = None
    unet_tflops: float | None = None
    fraction_of_bf16_peak: float | None = None
    peak_memory_gib: float | None = None
    setup_seconds: float | None = None
    runtime_id: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


CASE_FIELDS = tuple(f.name for f in dataclasses.fields(Case))


class CaseTimeout(Exception):
    """A case ran past ``--case-timeout-s``."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise CaseTimeout in the main thread after ``seconds`` (SIGALRM; interrupts Python code, and
    Inductor's compile waits, which are Python)."""
    if seconds <= 0 or not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum, frame):
        raise CaseTimeout(f"case ran past its {seconds:.0f} s limit")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class Settings:
    device: torch.device
    dry_run: bool
    repeats: int
    steps: int
    budget_s: float
    case_timeout_s: float
    out: Path
    report: dict[str, Any]
    started: float = field(default_factory=time.monotonic)
    cases: list[Case] = field(default_factory=list)

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - self.started)

    def save(self) -> None:
        """The whole report, rewritten atomically (a cut run keeps every finished case)."""
        from histoaug.atomic_files import write_text

        self.report["cases"] = [dataclasses.asdict(c) for c in self.cases]
        self.report["seconds_total"] = round(time.monotonic() - self.started, 2)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        write_text(self.out, json.dumps(self.report, indent=2, default=str) + "\n")

    def run_case(self, case: Case, body: Callable[[Case], None], *, min_left_s: float = 5.0) -> Case:
        """Run ``body(case)`` under the case's time limit and the budget; record and save whatever happens."""
        self.cases.append(case)
        if case.status == "skipped":
            self.save()
            return case
        left = self.left()
        if left < min_left_s:
            case.status, case.reason = "skipped", f"time budget ({left:.0f} s left, needs {min_left_s:.0f} s)"
            self.save()
            return case
        reset_peak(self.device)
        began = time.monotonic()
        try:
            with time_limit(min(self.case_timeout_s, left)):
                body(case)
            case.status = "ok"
        except CaseTimeout as exc:
            case.status, case.reason = "timeout", str(exc)
        except Exception as exc:  # a benchmark records a failure and goes on to the next case
            case.status, case.reason = "failed", f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}" \
                if str(exc).strip() else type(exc).__name__
            logger.exception("case %s / %s / batch %d failed", case.workload, case.runtime, case.batch)
        case.peak_memory_gib = peak_gib(self.device)
        case.extra["wall_seconds"] = round(time.monotonic() - began, 2)
        logger.info("case %s %s %s batch %d: %s %s", case.workload, case.runtime, case.precision, case.batch,
                    case.status, case.reason or (f"{case.patches_per_second:.1f} patches/s"
                                                 if case.patches_per_second else ""))
        self.save()
        return case


# --- measurement helpers ----------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 3) if device.type == "cuda" else None


def time_runs(fn: Callable[[], Any], device: torch.device, repeats: int) -> tuple[Any, list[float]]:
    """(last result, seconds of each of ``repeats`` runs); CUDA events around each run on CUDA."""
    result, times = None, []
    for _ in range(repeats):
        synchronize(device)
        if device.type == "cuda":
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            result = fn()
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop) / 1e3)
        else:
            begin = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - begin)
    return result, times


def record_times(case: Case, times: list[float], patches: int) -> None:
    case.repeats = len(times)
    case.seconds_median = float(np.median(times))
    case.seconds_min, case.seconds_max = float(min(times)), float(max(times))
    case.patches_per_second = patches / case.seconds_median


def matmul_peak_tflops(device: torch.device, size: int, repeats: int = 10) -> float:
    """Measured bf16 matmul TFLOP/s on random data (median of ``repeats`` after warm-up)."""
    a = torch.randn(size, size, device=device).to(torch.bfloat16)
    b = torch.randn(size, size, device=device).to(torch.bfloat16)
    for _ in range(3):
        torch.mm(a, b)
    _, times = time_runs(lambda: torch.mm(a, b), device, repeats)
    return 2 * size**3 / float(np.median(times)) / 1e12


def unet_flops(unet: torch.nn.Module, latent: tuple[int, int, int], text: tuple[int, int]) -> float:
    """FLOPs of one UNet evaluation of one latent (matmuls, convolutions, attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    param = next(unet.parameters())
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        unet(torch.randn(1, *latent, device=param.device, dtype=param.dtype),
             torch.tensor([500.0], device=param.device), torch.randn(1, *text, device=param.device, dtype=param.dtype))
    return float(counter.get_total_flops())


def unet_rate(case: Case, call: Callable[[], Any], device: torch.device, flops_per_sample: float, unet_batch: int,
              peak: float, calls: int = 20) -> None:
    """The UNet's own rate: one call at the CFG batch (median of ``calls``), its FLOPs over that time."""
    for _ in range(2):
        call()
    _, times = time_runs(call, device, calls)
    case.unet_seconds_per_call = float(np.median(times))
    case.unet_tflops = flops_per_sample * unet_batch / case.unet_seconds_per_call / 1e12
    case.fraction_of_bf16_peak = case.unet_tflops / peak if peak else None


def psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    from histoaug.image_metrics import psnr

    return float(psnr(a, b))


def relative_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    ours, ref = ours.double().cpu(), ref.double().cpu()
    return float((ours - ref).norm() / ref.norm().clamp_min(1e-30))


def environment(device: torch.device) -> dict[str, Any]:
    import diffusers

    import histoaug

    info: dict[str, Any] = {"device": str(device), "torch": torch.__version__, "diffusers": diffusers.__version__,
                            "histoaug": getattr(histoaug, "__version__", None), "histoaug_path": histoaug.__file__,
                            "python": platform.python_version(), "command": shlex.join([sys.executable, *sys.argv])}
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(device_name=props.name, capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda,
                    multiprocessors=props.multi_processor_count,
                    memory_gib=round(props.total_memory / 2**30, 1))
        try:
            info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                            capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            info["driver"] = None
    else:
        info.update(device_name=platform.processor() or platform.machine(), driver=None)
    return info


# --- (a) the embedded model -------------------------------------------------------------------


def workload(prompts, batch: int) -> tuple[list[int], list[int], list[int]]:
    """Balanced labels, distinct seeds, histoaug's prompt choice (the CPU benchmark's workload)."""
    from histoaug.synthesis.requests import build_request

    labels = [i % 2 for i in range(batch)]
    seeds = list(range(batch))
    return labels, seeds, build_request(prompts, labels, seeds).prompt_ids.tolist()


class DiffusersRun:
    """``StableDiffusionPipeline`` on the model dir in ``dtype`` with SDPA (diffusers' default processor);
    ``compile()`` swaps its UNet for ``torch.compile(unet, mode="reduce-overhead")``."""

    def __init__(self, model_dir: Path, device: torch.device, dtype: torch.dtype) -> None:
        from diffusers import StableDiffusionPipeline

        from histoaug.synthesis.schedulers import make_scheduler

        self.pipe = StableDiffusionPipeline.from_pretrained(model_dir, torch_dtype=dtype, safety_checker=None,
                                                            requires_safety_checker=False).to(device)
        self.pipe.scheduler = make_scheduler(SCHEDULER, self.pipe.scheduler.config)
        self.pipe.set_progress_bar_config(disable=True)
        self.size = self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor
        self.eager_unet = self.pipe.unet
        # StableDiffusionPipeline decodes in the VAE's dtype; a force_upcast VAE overflows fp16 there, so the
        # baseline decodes in fp32 as diffusers' SDXL pipelines do (needs_upcasting), like histoaug's fp16 runtime
        self.vae_upcast = dtype == torch.float16 and bool(getattr(self.pipe.vae.config, "force_upcast", False))
        if self.vae_upcast:
            self.pipe.vae.to(dtype=torch.float32)

    def compile(self) -> None:
        self.pipe.unet = torch.compile(self.eager_unet, mode="reduce-overhead")

    def __call__(self, cond: torch.Tensor, uncond: torch.Tensor, seeds: list[int], steps: int) -> np.ndarray:
        """uint8 (N, H, W, 3) images; prompt embeddings given, so no tokenizer or text encoder runs."""
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        dtype = self.pipe.unet.dtype
        images = self.pipe(prompt_embeds=cond.to(self.pipe.device, dtype),
                           negative_prompt_embeds=uncond.to(self.pipe.device, dtype), height=self.size,
                           width=self.size, num_inference_steps=steps, guidance_scale=GUIDANCE,
                           generator=generators, output_type="latent" if self.vae_upcast else "pt").images
        if self.vae_upcast:  # the pipeline's own decode and post-processing, with the VAE in fp32
            vae = self.pipe.vae
            images = vae.decode(images.float() / vae.config.scaling_factor, return_dict=False)[0]
            images = (images / 2 + 0.5).clamp(0, 1)
        return (images.float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}[dtype]


def bench_embedded(settings: Settings, batches: tuple[int, ...], dtypes: tuple[torch.dtype, ...], peak: float,
                   graphs: bool, state: dict[str, Any]) -> None:
    """Diffusers eager vs histoaug eager and graphed, per dtype and batch; fills ``state`` (the baselines and
    their images) for the compile part."""
    import histoaug
    from histoaug.synthesis.model_source import open_model

    device, steps = settings.device, settings.steps
    if state.get("model") is None:
        state["model"] = open_model("default")
    model = state["model"]
    latent = (model.latent_channels, model.latent_size, model.latent_size)
    text = tuple(model.embeddings.cond.shape[1:])
    for dtype in dtypes:
        name = _dtype_name(dtype)
        holder: dict[str, Any] = {}

        def load(case: Case, dtype=dtype, holder=holder) -> None:
            began = time.monotonic()
            holder["run"] = DiffusersRun(model.root, device, dtype)
            holder["flops"] = unet_flops(holder["run"].eager_unet, latent, text)
            case.setup_seconds = time.monotonic() - began

        for batch in batches:
            labels, seeds, prompt_ids = workload(model.prompts, batch)
            cond = model.embeddings.cond[torch.tensor(prompt_ids)]
            uncond = model.embeddings.uncond.expand(batch, -1, -1)
            unet_inputs = (torch.randn(2 * batch, *latent, device=device, dtype=dtype),
                           torch.full((2 * batch,), 500.0, device=device),
                           torch.randn(2 * batch, *text, device=device, dtype=dtype))

            def baseline(case: Case, batch=batch, cond=cond, uncond=uncond, seeds=seeds, holder=holder,
                         unet_inputs=unet_inputs, name=name) -> None:
                if "run" not in holder:
                    load(case)
                run = holder["run"]
                run(cond, uncond, seeds, 2)  # warm-up at this shape
                images, times = time_runs(lambda: run(cond, uncond, seeds, steps), device, settings.repeats)
                record_times(case, times, batch)
                with torch.no_grad():
                    unet_rate(case, lambda: run.eager_unet(*unet_inputs, return_dict=False), device,
                              holder["flops"], 2 * batch, peak)
                state["reference"][(name, batch)] = (images, case.seconds_median)

            settings.run_case(Case("embedded", f"diffusers {name} sdpa", name, batch, 96), baseline)
            state["baselines"][name] = holder
            eager_images: dict[str, np.ndarray] = {}
            variants = [("torch", False), ("torch", True)] if graphs else [("torch", False)]
            for _, graphed in variants:
                spec = f"torch:{name}" + (":graphs" if graphed else "")
                if graphed and device.type != "cuda":
                    settings.run_case(Case("embedded", f"histoaug {spec}", name, batch, 96, status="skipped",
                                           reason=_graphs_refusal(device)), lambda case: None)
                    continue

                def ours(case: Case, batch=batch, labels=labels, seeds=seeds, prompt_ids=prompt_ids, graphed=graphed,
                         unet_inputs=unet_inputs, holder=holder, name=name, eager_images=eager_images,
                         spec=spec) -> None:
                    began = time.monotonic()
                    synth = histoaug.load_synthesizer("default", backend="torch", device=device, dtype=name,
                                                      graphs=graphed)
                    synth.prepare([batch], guidance=GUIDANCE)  # patch batch: prepare doubles it for CFG
                    case.setup_seconds = time.monotonic() - began
                    case.runtime_id = synth.runtime

                    def generate(n_steps: int) -> np.ndarray:
                        return synth.generate(labels, seeds, prompt_ids, steps=n_steps, guidance=GUIDANCE,
                                              scheduler=SCHEDULER, batch_size=batch, guidance_rescale=0.0)

                    generate(2)
                    images, times = time_runs(lambda: generate(steps), device, settings.repeats)
                    record_times(case, times, batch)
                    backend = synth._backend
                    f32 = tuple(t.float() for t in unet_inputs)
                    if "flops" not in holder:
                        holder["flops"] = unet_flops(backend.unet, latent, text)
                    unet_rate(case, lambda: backend.predict_noise(*f32), device, holder["flops"], 2 * batch, peak)
                    reference = state["reference"].get((name, batch))
                    if reference is not None:
                        case.psnr_vs_diffusers_db = psnr_db(images, reference[0])
                        case.speedup_vs_diffusers_eager = reference[1] / case.seconds_median
                    if graphed and "eager" in eager_images:
                        case.identical_to_eager = bool(np.array_equal(images, eager_images["eager"]))
                    elif not graphed:
                        eager_images["eager"] = images
                    state.setdefault("ours", {})[(spec, batch)] = (images, case.seconds_median)
                    synth.close()

                settings.run_case(Case("embedded", f"histoaug {spec}", name, batch, 96), ours)
            if device.type == "cuda":
                torch.cuda.empty_cache()


def _graphs_refusal(device: torch.device) -> str:
    from histoaug.synthesis.backends.torch_backend import graphs_unavailable_reason

    return f"refused: {graphs_unavailable_reason(device)}"


# --- (b) Stable Diffusion 1.5's UNet, random weights, no file -----------------------------------


def build_sd15_unet(device: torch.device, dtype: torch.dtype, tiny: bool) -> torch.nn.Module:
    """SD 1.5's UNet architecture with seeded random weights, built directly on ``device`` in ``dtype``."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(**(TINY_UNET if tiny else SD15_UNET))
    return unet.to(dtype=dtype).eval().requires_grad_(False)


def latent_pipeline(unet: torch.nn.Module, scheduler_config: dict[str, Any]):
    """diffusers' StableDiffusionPipeline around a UNet alone: prompt embeddings in, latents out (no VAE,
    tokenizer or text encoder are called on that path)."""
    from diffusers import StableDiffusionPipeline

    from histoaug.synthesis.schedulers import make_scheduler

    scheduler = make_scheduler(SCHEDULER, scheduler_config)
    pipe = StableDiffusionPipeline(vae=None, text_encoder=None, tokenizer=None, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def bench_sd15(settings: Settings, shapes: tuple[tuple[int, int], ...], peak: float, graphs: bool) -> None:
    from histoaug.synthesis.backends.torch_backend import TorchBackend
    from histoaug.synthesis.sampling import SamplerSettings, denoise

    device, steps = settings.device, settings.steps
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    name = _dtype_name(dtype)
    tiny = settings.dry_run
    holder: dict[str, Any] = {}

    def build(case: Case) -> None:
        began = time.monotonic()
        holder["unet"] = build_sd15_unet(device, dtype, tiny)
        holder["pipe"] = latent_pipeline(holder["unet"], SD15_SCHEDULER)
        holder["text"] = (77, holder["unet"].config.cross_attention_dim)
        case.setup_seconds = time.monotonic() - began
        case.extra["unet_parameters"] = sum(p.numel() for p in holder["unet"].parameters())

    for image_size, batch in shapes:
        side = image_size // 8
        workload_name = f"sd15-unet-{image_size}"
        generator = torch.Generator().manual_seed(1)
        inputs: dict[str, torch.Tensor] = {}

        def make_inputs(batch=batch, side=side, generator=generator, inputs=inputs) -> None:
            if not inputs:
                text = holder["text"]
                inputs["noise"] = torch.randn(batch, 4, side, side, generator=generator).to(device)
                inputs["cond"] = torch.randn(batch, *text, generator=generator).to(device)
                inputs["uncond"] = torch.randn(1, *text, generator=generator).to(device)

        def baseline(case: Case, batch=batch, side=side, inputs=inputs, make_inputs=make_inputs,
                     image_size=image_size) -> None:
            if "unet" not in holder:
                build(case)
            make_inputs()
            pipe, unet = holder["pipe"], holder["unet"]

            def run(n_steps: int) -> torch.Tensor:
                return pipe(prompt_embeds=inputs["cond"].to(dtype),
                            negative_prompt_embeds=inputs["uncond"].expand(batch, -1, -1).to(dtype),
                            latents=inputs["noise"].to(dtype), height=side * 8, width=side * 8,
                            num_inference_steps=n_steps, guidance_scale=GUIDANCE, output_type="latent").images

            run(2)
            latents, times = time_runs(lambda: run(steps), device, settings.repeats)
            record_times(case, times, batch)
            holder.setdefault("flops", {})[side] = unet_flops(unet, (4, side, side), holder["text"])
            call_inputs = (torch.randn(2 * batch, 4, side, side, device=device, dtype=dtype),
                           torch.full((2 * batch,), 500.0, device=device),
                           torch.randn(2 * batch, *holder["text"], device=device, dtype=dtype))
            inputs["unet_call"] = call_inputs
            with torch.no_grad():
                unet_rate(case, lambda: unet(*call_inputs, return_dict=False), device, holder["flops"][side],
                          2 * batch, peak)
            holder[("latents", image_size, batch)] = (latents.float(), case.seconds_median)

        settings.run_case(Case(workload_name, f"diffusers {name} sdpa", name, batch, image_size), baseline)
        eager: dict[str, torch.Tensor] = {}
        for graphed in (False, True) if graphs else (False,):
            spec = f"torch:{name}" + (":graphs" if graphed else "")
            if graphed and device.type != "cuda":
                settings.run_case(Case(workload_name, f"histoaug {spec}", name, batch, image_size,
                                       status="skipped", reason=_graphs_refusal(device)), lambda case: None)
                continue

            def ours(case: Case, batch=batch, side=side, graphed=graphed, spec=spec, inputs=inputs,
                     make_inputs=make_inputs, eager=eager, image_size=image_size) -> None:
                if "unet" not in holder:
                    build(case)
                make_inputs()
                began = time.monotonic()
                if "ours_unet" not in holder:  # a copy: the backend's layout/attention changes stay off the baseline
                    holder["ours_unet"] = copy.deepcopy(holder["unet"])
                backend = TorchBackend(None, device, name, graphs=graphed, modules=(holder["ours_unet"], None),
                                       model_id=f"sd15-arch-random-{'tiny' if tiny else 'full'}",
                                       latent_shape=(4, side, side), text_shape=holder["text"])
                backend.prepare([2 * batch])  # the UNet batch: CFG runs cond and uncond in one call
                case.setup_seconds = time.monotonic() - began
                case.runtime_id = backend.runtime_id
                sampler = SamplerSettings(steps=steps, guidance=GUIDANCE, scheduler=SCHEDULER)

                def run(n_steps: int) -> torch.Tensor:
                    return denoise(backend, SD15_SCHEDULER, inputs["noise"], inputs["cond"], inputs["uncond"],
                                   dataclasses.replace(sampler, steps=n_steps))

                run(2)
                latents, times = time_runs(lambda: run(steps), device, settings.repeats)
                record_times(case, times, batch)
                if "unet_call" in inputs:
                    f32 = tuple(t.float() for t in inputs["unet_call"])
                    unet_rate(case, lambda: backend.predict_noise(*f32), device, holder["flops"][side], 2 * batch,
                              peak)
                reference = holder.get(("latents", image_size, batch))
                if reference is not None:
                    case.latents_relative_error_vs_diffusers = relative_error(latents, reference[0])
                    case.speedup_vs_diffusers_eager = reference[1] / case.seconds_median
                if graphed and "eager" in eager:
                    case.identical_to_eager = bool(torch.equal(latents, eager["eager"]))
                elif not graphed:
                    eager["eager"] = latents
                backend.close()

            settings.run_case(Case(workload_name, f"histoaug {spec}", name, batch, image_size), ours)
        if device.type == "cuda":
            torch.cuda.empty_cache()


# --- (c) the Triton kernels against their references ------------------------------------------


def bench_kernels(settings: Settings) -> None:
    from histoaug.kernels import dispatch
    from histoaug.kernels.group_norm import group_norm_reference, group_norm_triton
    from histoaug.kernels.postprocess import to_uint8_nhwc_reference, to_uint8_nhwc_triton

    device = settings.device
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    probe = torch.empty(1, device=device)
    reason = dispatch.triton_unavailable_reason(probe)
    shapes = ((2, 320, 64, 64), (2, 1280, 8, 8), (1, 128, 512, 512)) if not settings.dry_run else ((1, 16, 4, 4),)
    calls = settings.repeats if settings.dry_run else 20  # the interpreter takes ~0.2 s a call
    for shape in shapes:
        label = "x".join(map(str, shape))

        def norm(case: Case, shape=shape) -> None:
            groups = 32 if shape[1] >= 32 else 8
            x = torch.randn(shape, device=device, dtype=dtype) * 3 + 1
            w = torch.randn(shape[1], device=device, dtype=dtype)
            b = torch.randn(shape[1], device=device, dtype=dtype)
            ref = group_norm_reference(x, groups, w, b, silu=True)
            out = group_norm_triton(x, groups, w, b, silu=True)
            case.extra["max_abs_diff"] = float((out.float() - ref.float()).abs().max())
            _, ref_times = time_runs(lambda: group_norm_reference(x, groups, w, b, silu=True), device, calls)
            _, times = time_runs(lambda: group_norm_triton(x, groups, w, b, silu=True), device, calls)
            record_times(case, times, shape[0])
            case.extra["reference_seconds_median"] = float(np.median(ref_times))
            case.speedup_vs_diffusers_eager = case.extra["reference_seconds_median"] / case.seconds_median

        case = Case("kernels", f"group_norm+silu {label}", _dtype_name(dtype), shape[0], shape[-1])
        if reason is not None:
            case.status, case.reason = "skipped", f"Triton kernel cannot run here: {reason}"
        settings.run_case(case, norm)
    for n, size in ((1024, 96), (1, 512)) if not settings.dry_run else ((1, 16),):

        def post(case: Case, n=n, size=size) -> None:
            images = torch.rand(n, 3, size, size, device=device, dtype=dtype) * 2.2 - 1.1
            ref = to_uint8_nhwc_reference(images, 96)
            out = to_uint8_nhwc_triton(images, 96)
            case.extra["max_abs_diff"] = int((out.int() - ref.int()).abs().max())
            _, ref_times = time_runs(lambda: to_uint8_nhwc_reference(images, 96), device, calls)
            _, times = time_runs(lambda: to_uint8_nhwc_triton(images, 96), device, calls)
            record_times(case, times, n)
            case.extra["reference_seconds_median"] = float(np.median(ref_times))
            case.speedup_vs_diffusers_eager = case.extra["reference_seconds_median"] / case.seconds_median

        case = Case("kernels", f"decode_postprocess {n}x3x{size}x{size}->96", _dtype_name(dtype), n, size)
        if reason is not None:
            case.status, case.reason = "skipped", f"Triton kernel cannot run here: {reason}"
        settings.run_case(case, post)


def bench_fused_norms(settings: Settings, state: dict[str, Any], batch: int, dtype: torch.dtype) -> None:
    """histoaug's fastest uncompiled runtime with its GroupNorm(+SiLU) swapped for the Triton kernel
    (``TorchBackend.use_fused_norms``), against the same runtime without: does the kernel earn its place?"""
    import histoaug

    device, steps = settings.device, settings.steps
    name = _dtype_name(dtype)
    graphed = device.type == "cuda"
    base = f"torch:{name}" + (":graphs" if graphed else "")
    model = state["model"]
    labels, seeds, prompt_ids = workload(model.prompts, batch)

    def fused(case: Case) -> None:
        began = time.monotonic()
        synth = histoaug.load_synthesizer("default", backend="torch", device=device, dtype=name, graphs=graphed)
        case.extra["swapped"] = synth._backend.use_fused_norms()
        synth.prepare([batch], guidance=GUIDANCE)
        case.setup_seconds = time.monotonic() - began
        case.runtime_id = synth.runtime

        def generate(n_steps: int) -> np.ndarray:
            return synth.generate(labels, seeds, prompt_ids, steps=n_steps, guidance=GUIDANCE, scheduler=SCHEDULER,
                                  batch_size=batch, guidance_rescale=0.0)

        generate(2)
        images, times = time_runs(lambda: generate(steps), device, settings.repeats)
        record_times(case, times, batch)
        reference = state["reference"].get((name, batch))
        if reference is not None:
            case.psnr_vs_diffusers_db = psnr_db(images, reference[0])
            case.speedup_vs_diffusers_eager = reference[1] / case.seconds_median
        unfused = state.get("ours", {}).get((base, batch))
        if unfused is not None:
            case.extra["speedup_vs_unfused"] = unfused[1] / case.seconds_median
            case.extra["psnr_vs_unfused_db"] = psnr_db(images, unfused[0])
        synth.close()

    interpreter = os.environ.get("TRITON_INTERPRET")
    if settings.dry_run:  # the reference on the CPU: the interpreter would take minutes over a whole model
        os.environ["TRITON_INTERPRET"] = "0"
    try:
        settings.run_case(Case("embedded", f"histoaug {base}:fused-norms", name, batch, 96), fused)
    finally:
        if settings.dry_run:
            if interpreter is None:
                os.environ.pop("TRITON_INTERPRET", None)
            else:
                os.environ["TRITON_INTERPRET"] = interpreter


# --- (c2) the distilled student against its teacher ----------------------------------------------

STUDENT_STEPS = (1, 2, 4, 8)


def bench_student(settings: Settings, student: str | Path, batch: int, dtype: torch.dtype) -> None:
    """The teacher (embedded model) at its own sampler defaults, then the student (default: the embedded
    model's shipped student, ``"default-fast"``) at each step count, on one runtime: what ``--fast`` gains
    on this device."""
    import histoaug

    device, name = settings.device, _dtype_name(dtype)
    graphed = device.type == "cuda"
    spec = f"torch:{name}" + (":graphs" if graphed else "")
    holder: dict[str, Any] = {}

    def run(case: Case, source: str | Path, steps: int | None, guidance: float | None,
            scheduler: str | None) -> None:
        began = time.monotonic()
        synth = histoaug.load_synthesizer(source, backend="torch", device=device, dtype=name, graphs=graphed)
        defaults = synth.model.sampler
        steps = defaults.steps if steps is None else steps
        guidance = defaults.guidance if guidance is None else guidance
        scheduler = defaults.scheduler if scheduler is None else scheduler
        labels, seeds, prompt_ids = workload(synth.prompts, batch)
        synth.prepare([batch], guidance=guidance, steps=steps)
        case.setup_seconds = time.monotonic() - began
        case.runtime_id = synth.runtime
        case.extra.update(steps=steps, guidance=guidance, scheduler=scheduler, model=str(source))

        def generate(n_steps: int) -> np.ndarray:
            return synth.generate(labels, seeds, prompt_ids, steps=n_steps, guidance=guidance, scheduler=scheduler,
                                  batch_size=batch)

        generate(min(steps, 2))
        _, times = time_runs(lambda: generate(steps), device, settings.repeats)
        record_times(case, times, batch)
        synth.close()

    def teacher(case: Case) -> None:
        run(case, "default", 2 if settings.dry_run else None, None, None)
        holder["teacher"] = case.seconds_median

    settings.run_case(Case("student", f"histoaug {spec} teacher (its defaults)", name, batch, 96), teacher)
    for steps in STUDENT_STEPS:
        def few_step(case: Case, steps=steps) -> None:
            run(case, student, steps, None, None)
            if holder.get("teacher"):
                case.extra["speedup_vs_teacher"] = holder["teacher"] / case.seconds_median

        settings.run_case(Case("student", f"histoaug {spec} student {steps} step{'s' if steps > 1 else ''}",
                               name, batch, 96), few_step)


# --- (d) compiled: diffusers torch.compile(reduce-overhead), histoaug AOTInductor -------------


def bench_compiled(settings: Settings, state: dict[str, Any], batches: tuple[int, ...], dtypes: tuple[torch.dtype, ...],
                   peak: float, aot: bool) -> None:
    import histoaug

    device, steps = settings.device, settings.steps
    model = state["model"]
    for dtype in dtypes:
        name = _dtype_name(dtype)
        holder = state["baselines"].get(name, {})
        for batch in batches:
            labels, seeds, prompt_ids = workload(model.prompts, batch)
            cond = model.embeddings.cond[torch.tensor(prompt_ids)]
            uncond = model.embeddings.uncond.expand(batch, -1, -1)
            runtime = f"diffusers {name} sdpa + torch.compile(reduce-overhead)"
            if settings.dry_run:
                settings.run_case(Case("embedded", runtime, name, batch, 96, status="skipped",
                                       reason="dry run: no compile on the CPU (minutes on 2 cores)"), lambda c: None)
            elif "run" not in holder:
                settings.run_case(Case("embedded", runtime, name, batch, 96, status="skipped",
                                       reason="its eager baseline did not load"), lambda c: None)
            else:

                def compiled(case: Case, batch=batch, cond=cond, uncond=uncond, seeds=seeds, holder=holder,
                             name=name) -> None:
                    run = holder["run"]
                    if run.pipe.unet is run.eager_unet:
                        run.compile()
                    began = time.monotonic()
                    for _ in range(3):  # reduce-overhead records its graphs over the first calls
                        run(cond, uncond, seeds, 2)
                    case.setup_seconds = time.monotonic() - began
                    images, times = time_runs(lambda: run(cond, uncond, seeds, steps), device, settings.repeats)
                    record_times(case, times, batch)
                    reference = state["reference"].get((name, batch))
                    if reference is not None:
                        case.psnr_vs_diffusers_db = psnr_db(images, reference[0])
                        case.speedup_vs_diffusers_eager = reference[1] / case.seconds_median

                settings.run_case(Case("embedded", runtime, name, batch, 96), compiled, min_left_s=30)
            if not aot:
                continue
            spec = f"torch:{name}:compile"

            def ours(case: Case, batch=batch, labels=labels, seeds=seeds, prompt_ids=prompt_ids, name=name) -> None:
                began = time.monotonic()
                synth = histoaug.load_synthesizer("default", backend="torch", device=device, dtype=name, compile=True)
                synth.prepare([batch], guidance=GUIDANCE)
                case.setup_seconds = time.monotonic() - began
                case.runtime_id = synth.runtime
                images, times = time_runs(lambda: synth.generate(labels, seeds, prompt_ids, steps=steps,
                                                                 guidance=GUIDANCE, scheduler=SCHEDULER,
                                                                 batch_size=batch, guidance_rescale=0.0),
                                          device, settings.repeats)
                record_times(case, times, batch)
                reference = state["reference"].get((name, batch))
                if reference is not None:
                    case.psnr_vs_diffusers_db = psnr_db(images, reference[0])
                    case.speedup_vs_diffusers_eager = reference[1] / case.seconds_median
                synth.close()

            if settings.dry_run:
                settings.run_case(Case("embedded", f"histoaug {spec}", name, batch, 96, status="skipped",
                                       reason="dry run: no compile on the CPU (minutes on 2 cores)"), lambda c: None)
                continue
            settings.run_case(Case("embedded", f"histoaug {spec}", name, batch, 96), ours, min_left_s=60)


def fill_compiled_ratios(cases: list[Case]) -> None:
    """speedup_vs_diffusers_compiled for every row whose compiled baseline (same workload, dtype, batch) ran."""
    compiled = {(c.workload, c.precision, c.batch): c.seconds_median for c in cases
                if "torch.compile" in c.runtime and c.status == "ok"}
    for c in cases:
        ref = compiled.get((c.workload, c.precision, c.batch))
        if ref and c.seconds_median and c.runtime.startswith("histoaug"):
            c.speedup_vs_diffusers_compiled = ref / c.seconds_median


# --- command line -----------------------------------------------------------------------------


def format_table(cases: list[Case]) -> str:
    lines = [f"{'workload':<15} {'runtime':<48} {'batch':>5} {'patch/s':>9} {'min-max s':>15} {'x eager':>7} "
             f"{'x comp':>6} {'PSNR':>5} {'=eager':>6} {'UNet TF/s':>9} {'GiB':>6}"]

    def fmt(value, spec):
        return "-" if value is None else format(value, spec)

    for c in cases:
        if c.status != "ok":
            lines.append(f"{c.workload:<15} {c.runtime:<48} {c.batch:>5}  {c.status}: {c.reason}")
            continue
        spread = f"{c.seconds_min:.3f}-{c.seconds_max:.3f}" if c.seconds_min is not None else "-"
        same = "-" if c.identical_to_eager is None else ("yes" if c.identical_to_eager else "NO")
        lines.append(f"{c.workload:<15} {c.runtime:<48} {c.batch:>5} {fmt(c.patches_per_second, '9.1f')} "
                     f"{spread:>15} {fmt(c.speedup_vs_diffusers_eager, '7.2f')} "
                     f"{fmt(c.speedup_vs_diffusers_compiled, '6.2f')} {fmt(c.psnr_vs_diffusers_db, '5.1f')} "
                     f"{same:>6} {fmt(c.unet_tflops, '9.2f')} {fmt(c.peak_memory_gib, '6.2f')}"
                     + (f"  {c.extra['speedup_vs_teacher']:.2f}x teacher" if "speedup_vs_teacher" in c.extra else ""))
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--dry-run", action="store_true",
                        help="CPU, tiny sizes, 2 steps: every code path but CUDA itself (CI runs it)")
    parser.add_argument("--parts", default="embedded,sd15,student,kernels,compile",
                        help="comma list of embedded, sd15, student, kernels, compile (in that order)")
    parser.add_argument("--student", default="default-fast",
                        help="the student part's model: a `histoaug distill` output dir (default: default-fast, "
                             "the embedded model's shipped student)")
    parser.add_argument("--aot", action="store_true", help="with compile: histoaug's AOTInductor UNet too (slow)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case (median, min, max); at least 5")
    parser.add_argument("--budget-s", type=float, default=float("inf"),
                        help="start no case after this many seconds (cases left are recorded as skipped)")
    parser.add_argument("--case-timeout-s", type=float, default=90.0, help="time limit of one case")
    parser.add_argument("--out", type=Path, default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.dry_run and "triton" not in sys.modules:  # the kernels part runs under Triton's CPU interpreter
        os.environ.setdefault("TRITON_INTERPRET", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    device = torch.device("cpu" if args.dry_run else args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but no CUDA device is visible")
    if args.repeats < 5:
        raise SystemExit("--repeats must be at least 5 (median with min and max)")
    dry = args.dry_run
    name = "gpu_dry_run.json" if dry else "gpu_device.json"
    report: dict[str, Any] = {**environment(device), "dry_run": dry, "steps": 2 if dry else STEPS,
                              "guidance": GUIDANCE, "scheduler": SCHEDULER, "repeats": args.repeats,
                              "case_fields": list(CASE_FIELDS), "cases": []}
    settings = Settings(device=device, dry_run=dry, repeats=args.repeats, steps=2 if dry else STEPS,
                        budget_s=args.budget_s, case_timeout_s=args.case_timeout_s,
                        out=args.out or RESULTS_DIR / name, report=report)
    peak = matmul_peak_tflops(device, 256 if dry else 8192)
    report["bf16_matmul_peak_tflops"] = peak
    settings.save()
    parts = [p for p in args.parts.split(",") if p]
    unknown = set(parts) - {"embedded", "sd15", "student", "kernels", "compile"}
    if unknown:
        raise SystemExit(f"unknown parts: {', '.join(sorted(unknown))}")
    dtypes = (torch.float32,) if dry else (torch.float16, torch.bfloat16)
    batches = (2,) if dry else (256, 1024)
    state: dict[str, Any] = {"model": None, "baselines": {}, "reference": {}}
    # order: what the acceptance figures need first (fp16 embedded, then SD), so a cut run still has them
    if "embedded" in parts:
        bench_embedded(settings, batches, dtypes[:1], peak, graphs=True, state=state)
    if "sd15" in parts:
        bench_sd15(settings, ((32, 1), (32, 2)) if dry else ((512, 1), (96, 1), (96, 64)), peak, graphs=True)
    if "student" in parts:
        bench_student(settings, args.student, batches[0], dtypes[0])
    if "embedded" in parts:
        bench_embedded(settings, batches, dtypes[1:], peak, graphs=True, state=state)
    if "kernels" in parts:
        bench_kernels(settings)
        if state.get("model") is not None:
            bench_fused_norms(settings, state, batches[-1], dtypes[0])
    if "compile" in parts:
        if state["model"] is None:
            from histoaug.synthesis.model_source import open_model

            state["model"] = open_model("default")
        bench_compiled(settings, state, batches, dtypes, peak, aot=args.aot)
    fill_compiled_ratios(settings.cases)
    settings.save()
    print(format_table(settings.cases))
    print(f"wrote {settings.out}")
    return settings.report


if __name__ == "__main__":
    main()
