"""GPU generation benchmark: histoaug's GPU runtimes against diffusers fp16 + SDPA (eager and compiled).

Two workloads, 20 DPM-Solver++ steps, guidance 2 (both CFG halves run), per-sample seeds:

(a) the embedded model (``histoaug.load_synthesizer("default")``, 96x96) at batch 256 and 1024:
    images/s, speed-up over each baseline, PSNR of histoaug's patches against diffusers fp16's;
(b) a UNet + VAE with Stable Diffusion 1.5's published architecture (UNet 320/640/1280/1280,
    2 layers per block, 8 heads, cross-attention 768; VAE 128/256/512/512), random weights built
    from that config in code (speed does not depend on weights) at 512x512 and 256x256, batch 1
    and a throughput batch: images/s, speed-ups, and the per-call UNet output agreement of each
    histoaug runtime with diffusers' UNet on the same inputs (whole-trajectory PSNR is
    meaningless with random weights).

For every row: UNet TFLOP/s (FLOPs counted by torch's FlopCounterMode per UNet evaluation, x batch
x 2 for CFG x steps, over the run's seconds) and the fraction of the GPU's measured bf16 matmul
peak (an 8192^3 product timed here). The JSON (``--out``, default benchmarks/results/gpu_<device>.json)
records device name, driver, torch/diffusers/triton versions and the command line.

    python benchmarks/gpu_bench.py --device cuda                      # everything (> 10 min with compiles)
    python benchmarks/gpu_bench.py --device cuda --budget-s 420       # stops starting cases after 7 min
    python benchmarks/gpu_bench.py --device cpu --smoke --out /tmp/g.json   # wiring check (CI)

Timing: CUDA events around each run after an untimed warm-up of the same shape (compiles, graph
captures, ``Synthesizer.prepare``), best of ``--repeats``. Baselines and histoaug runtimes run in
the same process on the same weights, workload and seeds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from histoaug.image_metrics import psnr

logger = logging.getLogger("histoaug.benchmarks.gpu")

STEPS, GUIDANCE, SCHEDULER = 20, 2.0, "dpmsolver++"
RESULTS_DIR = Path(__file__).resolve().parent / "results"


# --- measurement helpers ----------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> tuple[Any, float]:
    """(last result, best seconds of ``repeats``), device work included (events on CUDA)."""
    best, result = float("inf"), None
    for _ in range(repeats):
        synchronize(device)
        if device.type == "cuda":
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            result = fn()
            stop.record()
            stop.synchronize()
            seconds = start.elapsed_time(stop) / 1e3
        else:
            begin = time.perf_counter()
            result = fn()
            seconds = time.perf_counter() - begin
        best = min(best, seconds)
    return result, best


def matmul_peak_tflops(device: torch.device, size: int, repeats: int = 10) -> float:
    """Measured bf16 matmul TFLOP/s on random data (median of ``repeats`` after warm-up)."""
    a = torch.randn(size, size, device=device).to(torch.bfloat16)
    b = torch.randn(size, size, device=device).to(torch.bfloat16)
    for _ in range(3):
        torch.mm(a, b)
    times = [timed(lambda: torch.mm(a, b), device, 1)[1] for _ in range(repeats)]
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


def environment(device: torch.device) -> dict[str, Any]:
    import diffusers

    info: dict[str, Any] = {"device": str(device), "torch": torch.__version__, "diffusers": diffusers.__version__,
                            "python": platform.python_version(), "command": shlex.join([sys.executable, *sys.argv])}
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(device_name=props.name, capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda,
                    multiprocessors=props.multi_processor_count)
        try:
            info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                            capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            info["driver"] = None
    else:
        info.update(device_name=platform.processor() or platform.machine(), driver=None)
    return info


# --- workloads --------------------------------------------------------------------------------


def workload(prompts, batch: int) -> tuple[list[int], list[int], list[int]]:
    """Balanced labels, distinct seeds, histoaug's prompt choice (the CPU benchmark's workload)."""
    from histoaug.synthesis.requests import build_request

    labels = [i % 2 for i in range(batch)]
    seeds = list(range(batch))
    return labels, seeds, build_request(prompts, labels, seeds).prompt_ids.tolist()


class DiffusersRun:
    """StableDiffusionPipeline on the model dir, ``dtype`` + SDPA (diffusers' default processor), optionally
    with ``torch.compile`` of its UNet (the strongest stock configuration)."""

    def __init__(self, model_dir: Path, device: torch.device, dtype: torch.dtype, compile_unet: bool) -> None:
        from diffusers import StableDiffusionPipeline

        from histoaug.synthesis.schedulers import make_scheduler

        self.pipe = StableDiffusionPipeline.from_pretrained(model_dir, torch_dtype=dtype, safety_checker=None,
                                                            requires_safety_checker=False).to(device)
        self.pipe.scheduler = make_scheduler(SCHEDULER, self.pipe.scheduler.config)
        self.pipe.set_progress_bar_config(disable=True)
        if compile_unet:
            self.pipe.unet = torch.compile(self.pipe.unet)
        self.size = self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor

    def __call__(self, prompt_embeds: torch.Tensor, negative: torch.Tensor, seeds: list[int], steps: int,
                 size: int | None = None) -> np.ndarray:
        """uint8 (N, H, W, 3) images; prompt embeddings given, so no tokenizer or text encoder runs."""
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        dtype = self.pipe.unet.dtype
        images = self.pipe(prompt_embeds=prompt_embeds.to(self.pipe.device, dtype),
                           negative_prompt_embeds=negative.to(self.pipe.device, dtype), height=size or self.size,
                           width=size or self.size, num_inference_steps=steps, guidance_scale=GUIDANCE,
                           generator=generators, output_type="pt").images
        return (images.float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


@dataclass
class Case:
    """One benchmark row."""

    workload: str
    runtime: str
    batch: int
    image_size: int
    seconds: float | None = None
    images_per_second: float | None = None
    speedup_vs_diffusers: float | None = None
    speedup_vs_diffusers_compiled: float | None = None
    psnr_vs_diffusers_db: float | None = None
    unet_relative_error_vs_diffusers: float | None = None
    unet_tflops: float | None = None
    fraction_of_bf16_peak: float | None = None
    runtime_id: Any = None
    skipped: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Settings:
    device: torch.device
    smoke: bool
    repeats: int
    steps: int
    budget_s: float
    histoaug_runtimes: tuple[str, ...]
    compile_baseline: bool
    workdir: Path
    started: float = field(default_factory=time.monotonic)

    def over_budget(self) -> bool:
        return time.monotonic() - self.started > self.budget_s


def parse_runtime(text: str) -> dict[str, Any]:
    """``BACKEND[:DTYPE[:compile]]`` -> load_synthesizer keyword arguments."""
    parts = text.split(":")
    spec: dict[str, Any] = {"backend": parts[0]}
    if len(parts) > 1 and parts[1]:
        spec["dtype"] = parts[1]
    if len(parts) > 2:
        if parts[2] != "compile":
            raise SystemExit(f"runtime spec must be BACKEND[:DTYPE[:compile]], got {text!r}")
        spec["compile"] = True
    return spec


def load_runtime(source: Path | str, text: str, device: torch.device):
    import histoaug

    return histoaug.load_synthesizer(source, device=device, **parse_runtime(text))


def prepare(synth, unet_batch: int) -> None:
    """The backend seam's prepare (graph capture, engine build) outside the timing, where it exists."""
    if hasattr(synth, "prepare"):
        synth.prepare([unet_batch])


def baseline_call(run: DiffusersRun, cond: torch.Tensor, uncond: torch.Tensor, seeds: list[int],
                  steps: int) -> Callable[[], np.ndarray]:
    return lambda: run(cond, uncond, seeds, steps)


def generation(synth, labels: list[int], seeds: list[int], prompt_ids: list[int],
               batch: int) -> Callable[[int], np.ndarray]:
    """steps -> the runtime's patches for this workload, in batches of ``batch``."""
    def run(steps: int) -> np.ndarray:
        return synth.generate(labels, seeds, prompt_ids, steps=steps, guidance=GUIDANCE, scheduler=SCHEDULER,
                              batch_size=batch)
    return run


def runtime_id(synth) -> Any:
    value = getattr(synth, "runtime_id", None)
    try:
        return json.loads(value) if isinstance(value, str) and value.startswith("{") else value
    except ValueError:
        return value


def fill_rates(case: Case, flops_per_eval: float, steps: int, peak_tflops: float) -> None:
    case.images_per_second = case.batch / case.seconds
    case.unet_tflops = flops_per_eval * case.batch * 2 * steps / case.seconds / 1e12
    case.fraction_of_bf16_peak = case.unet_tflops / peak_tflops


# --- (a) the embedded model -------------------------------------------------------------------


def bench_embedded(settings: Settings, batches: tuple[int, ...], peak: float) -> list[Case]:
    from histoaug.synthesis.model_source import open_model

    device, steps = settings.device, settings.steps
    model = open_model("default")
    baseline_dtype = torch.float16 if device.type == "cuda" else torch.float32
    cases: list[Case] = []
    baselines = {"diffusers fp16 sdpa" if device.type == "cuda" else "diffusers fp32":
                 DiffusersRun(model.root, device, baseline_dtype, compile_unet=False)}
    if settings.compile_baseline:
        baselines["diffusers fp16 sdpa + torch.compile(unet)"] = DiffusersRun(model.root, device, baseline_dtype, True)
    flops = unet_flops(next(iter(baselines.values())).pipe.unet, (model.latent_channels, model.latent_size,
                                                                  model.latent_size),
                       tuple(model.embeddings.cond.shape[1:]))
    synths = {text: load_runtime("default", text, device) for text in settings.histoaug_runtimes}
    for batch in batches:
        labels, seeds, prompt_ids = workload(model.prompts, batch)
        cond = model.embeddings.cond[torch.tensor(prompt_ids)]
        uncond = model.embeddings.uncond.expand(batch, -1, -1)
        results: dict[str, tuple[np.ndarray, float]] = {}
        for name, run in baselines.items():
            if settings.over_budget():
                cases.append(Case("embedded", name, batch, 96, skipped="time budget"))
                continue
            run(cond, uncond, seeds, 2)  # warm-up / compile at this shape
            results[name] = timed(baseline_call(run, cond, uncond, seeds, steps), device, settings.repeats)
            case = Case("embedded", name, batch, model.image_size, seconds=results[name][1])
            fill_rates(case, flops, steps, peak)
            cases.append(case)
        for text, synth in synths.items():
            name = f"histoaug {text}"
            if settings.over_budget():
                cases.append(Case("embedded", name, batch, 96, skipped="time budget"))
                continue
            prepare(synth, 2 * batch)
            generate = generation(synth, labels, seeds, prompt_ids, batch)
            generate(2)  # warm-up at this shape
            images, seconds = timed(lambda generate=generate: generate(steps), device, settings.repeats)
            case = Case("embedded", name, batch, 96, seconds=seconds, runtime_id=runtime_id(synth))
            fill_rates(case, flops, steps, peak)
            base_name = next(iter(baselines))
            if base_name in results:
                case.speedup_vs_diffusers = results[base_name][1] / seconds
                case.psnr_vs_diffusers_db = psnr(images, _to_96(results[base_name][0]))
            compiled = "diffusers fp16 sdpa + torch.compile(unet)"
            if compiled in results:
                case.speedup_vs_diffusers_compiled = results[compiled][1] / seconds
            cases.append(case)
        for case in cases:
            if case.batch == batch and case.runtime.startswith("diffusers") and case.seconds:
                first = next(iter(results))
                case.speedup_vs_diffusers = results[first][1] / case.seconds
    return cases


def _to_96(images: np.ndarray) -> np.ndarray:
    if images.shape[1] == 96:
        return images
    from histoaug.synthesis.postprocess import to_uint8_patches

    return to_uint8_patches(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1)


# --- (b) Stable Diffusion 1.5's architecture, random weights ----------------------------------


def sd15_preset(image_size: int, smoke: bool):
    """SD 1.5's UNet + VAE architecture (a one-layer text encoder: it only feeds the stored embeddings)."""
    from histoaug.models import presets

    if smoke:  # the tiny preset: same block structure, CPU-sized
        return dataclasses.replace(presets.get_preset("tiny"), name=f"sd15-smoke-{image_size}")
    return presets.PipelinePreset(
        name=f"sd15-arch-{image_size}", image_size=image_size,
        vae={"block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "norm_num_groups": 32},
        unet={"block_out_channels": [320, 640, 1280, 1280],
              "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                   "DownBlock2D"],
              "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
              "layers_per_block": 2, "attention_head_dim": 8, "norm_num_groups": 32},
        text_encoder={"hidden_size": 768, "num_hidden_layers": 1, "num_attention_heads": 12,
                      "intermediate_size": 3072},
        description="Stable Diffusion 1.5's UNet and VAE architecture, a one-layer text encoder")


def build_sd15_dir(settings: Settings, image_size: int) -> Path:
    """A pipeline dir with SD 1.5's architecture and seeded random weights (built once per work dir)."""
    from histoaug.models import build_pipeline, presets, save_pipeline
    from histoaug.prompts import PromptBank

    preset = sd15_preset(image_size, settings.smoke)
    root = settings.workdir / preset.name
    if not (root / "model_index.json").exists():
        presets.PRESETS[preset.name] = preset
        try:
            save_pipeline(build_pipeline(preset.name, seed=0), root, overwrite=True)
        finally:
            presets.PRESETS.pop(preset.name, None)
        PromptBank.baseline().save(root, overwrite=True)
    return root


def unet_agreement(synth, reference_unet: torch.nn.Module, latent: tuple[int, int, int], text: tuple[int, int],
                   device: torch.device) -> float:
    """||histoaug UNet - diffusers UNet|| / ||diffusers UNet|| on one call with the same random inputs."""
    generator = torch.Generator().manual_seed(7)
    sample = torch.randn(2, *latent, generator=generator).to(device)
    timesteps = torch.tensor([801.0, 801.0], device=device)
    embeds = torch.randn(2, *text, generator=generator).to(device)
    backend = synth._backend  # the runtime's own UNet call, as the sampling loop makes it
    with torch.no_grad():
        ours = backend.predict_noise(sample, timesteps, embeds).double()
        dtype = reference_unet.dtype
        ref = reference_unet(sample.to(dtype), timesteps, embeds.to(dtype)).sample.double()
    return float((ours - ref).norm() / ref.norm())


def bench_sd15(settings: Settings, sizes: dict[int, tuple[int, ...]], peak: float) -> list[Case]:
    from histoaug.synthesis.model_source import open_model

    device, steps = settings.device, settings.steps
    baseline_dtype = torch.float16 if device.type == "cuda" else torch.float32
    cases: list[Case] = []
    for image_size, batches in sizes.items():
        if settings.over_budget():
            cases += [Case(f"sd15-arch-{image_size}", "all", b, image_size, skipped="time budget") for b in batches]
            continue
        root = build_sd15_dir(settings, image_size)
        model = open_model(root)
        latent = (model.latent_channels, model.latent_size, model.latent_size)
        text = tuple(model.embeddings.cond.shape[1:])
        baselines = {"diffusers fp16 sdpa" if device.type == "cuda" else "diffusers fp32":
                     DiffusersRun(root, device, baseline_dtype, compile_unet=False)}
        if settings.compile_baseline:
            baselines["diffusers fp16 sdpa + torch.compile(unet)"] = DiffusersRun(root, device, baseline_dtype, True)
        eager_unet = next(iter(baselines.values())).pipe.unet
        flops = unet_flops(eager_unet, latent, text)
        synths = {text_: load_runtime(root, text_, device) for text_ in settings.histoaug_runtimes}
        for batch in batches:
            labels, seeds, prompt_ids = workload(model.prompts, batch)
            cond = model.embeddings.cond[torch.tensor(prompt_ids)]
            uncond = model.embeddings.uncond.expand(batch, -1, -1)
            times: dict[str, float] = {}
            for name, run in baselines.items():
                if settings.over_budget():
                    cases.append(Case(f"sd15-arch-{image_size}", name, batch, image_size, skipped="time budget"))
                    continue
                run(cond, uncond, seeds, 2)
                _, times[name] = timed(baseline_call(run, cond, uncond, seeds, steps), device, settings.repeats)
                case = Case(f"sd15-arch-{image_size}", name, batch, image_size, seconds=times[name])
                fill_rates(case, flops, steps, peak)
                cases.append(case)
            for text_, synth in synths.items():
                name = f"histoaug {text_}"
                if settings.over_budget():
                    cases.append(Case(f"sd15-arch-{image_size}", name, batch, image_size, skipped="time budget"))
                    continue
                prepare(synth, 2 * batch)
                generate = generation(synth, labels, seeds, prompt_ids, batch)
                generate(2)
                _, seconds = timed(lambda generate=generate: generate(steps), device, settings.repeats)
                case = Case(f"sd15-arch-{image_size}", name, batch, image_size, seconds=seconds,
                            runtime_id=runtime_id(synth))
                fill_rates(case, flops, steps, peak)
                first = next(iter(baselines))
                if first in times:
                    case.speedup_vs_diffusers = times[first] / seconds
                if "diffusers fp16 sdpa + torch.compile(unet)" in times:
                    case.speedup_vs_diffusers_compiled = times["diffusers fp16 sdpa + torch.compile(unet)"] / seconds
                case.unet_relative_error_vs_diffusers = unet_agreement(synth, eager_unet, latent, text, device)
                cases.append(case)
        del baselines, synths
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return cases


# --- command line -----------------------------------------------------------------------------


def default_runtimes(device: torch.device) -> tuple[str, ...]:
    if device.type == "cpu":
        return ("torch:fp32",)
    bf16 = torch.cuda.is_bf16_supported()
    reduced = "bf16" if bf16 else "fp16"
    return (f"torch:{reduced}", f"torch:{reduced}:compile")


def format_table(cases: list[Case]) -> str:
    lines = [f"{'workload':<16} {'runtime':<44} {'batch':>5} {'img/s':>9} {'x diff':>7} {'x comp':>7} "
             f"{'PSNR':>6} {'UNet err':>9} {'TFLOP/s':>8} {'peak':>5}"]

    def fmt(value, spec):
        return "-" if value is None else format(value, spec)

    for c in cases:
        peak = None if c.fraction_of_bf16_peak is None else 100 * c.fraction_of_bf16_peak
        if c.skipped:
            lines.append(f"{c.workload:<16} {c.runtime:<44} {c.batch:>5}  skipped: {c.skipped}")
            continue
        lines.append(f"{c.workload:<16} {c.runtime:<44} {c.batch:>5} {fmt(c.images_per_second, '9.1f')} "
                     f"{fmt(c.speedup_vs_diffusers, '7.2f')} {fmt(c.speedup_vs_diffusers_compiled, '7.2f')} "
                     f"{fmt(c.psnr_vs_diffusers_db, '6.1f')} {fmt(c.unet_relative_error_vs_diffusers, '9.2e')} "
                     f"{fmt(c.unet_tflops, '8.1f')} {fmt(peak, '4.0f')}%")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--smoke", action="store_true", help="tiny models, 2 steps, small batches (wiring check)")
    parser.add_argument("--parts", default="embedded,sd15", help="comma list of embedded, sd15")
    parser.add_argument("--runtimes", default=None,
                        help="histoaug runtimes, comma list of BACKEND[:DTYPE[:compile]] "
                             "(default: bf16 eager + compiled)")
    parser.add_argument("--no-compile-baseline", action="store_true", help="skip diffusers + torch.compile")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--budget-s", type=float, default=float("inf"),
                        help="start no new case after this many seconds (cases left are recorded as skipped)")
    parser.add_argument("--workdir", type=Path, default=Path(".histoaug-bench"))
    parser.add_argument("--out", type=Path, default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but no CUDA device is visible")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    smoke = args.smoke
    runtimes = tuple(args.runtimes.split(",")) if args.runtimes else default_runtimes(device)
    settings = Settings(device=device, smoke=smoke, repeats=1 if smoke else args.repeats, steps=2 if smoke else STEPS,
                        budget_s=args.budget_s, histoaug_runtimes=runtimes,
                        compile_baseline=not args.no_compile_baseline and not smoke, workdir=args.workdir)
    settings.workdir.mkdir(parents=True, exist_ok=True)
    peak = matmul_peak_tflops(device, 256 if smoke else 8192)
    report: dict[str, Any] = {**environment(device), "steps": settings.steps, "guidance": GUIDANCE,
                              "scheduler": SCHEDULER, "smoke": smoke, "bf16_matmul_peak_tflops": peak,
                              "histoaug_runtimes": list(settings.histoaug_runtimes), "cases": []}
    parts = set(args.parts.split(","))
    cases: list[Case] = []
    if "embedded" in parts:
        cases += bench_embedded(settings, (2,) if smoke else (256, 1024), peak)
    if "sd15" in parts:
        sizes = {32: (2,)} if smoke else {512: (1, 8), 256: (1, 32)}
        cases += bench_sd15(settings, sizes, peak)
    report["cases"] = [dataclasses.asdict(c) for c in cases]
    report["seconds_total"] = time.monotonic() - settings.started
    name = "gpu_smoke.json" if smoke else f"gpu_{(report.get('device_name') or 'device').replace(' ', '_')}.json"
    out = args.out or RESULTS_DIR / name
    from histoaug.atomic_files import write_text

    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, json.dumps(report, indent=2, default=str) + "\n")
    print(format_table(cases))
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
