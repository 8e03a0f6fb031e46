"""Throughput measurements: histoaug backends vs diffusers' StableDiffusionPipeline, FLOPs, ceilings.

Used by ``histoaug bench`` and ``benchmarks/test_bench_synthesis.py``. The baseline runs in the
same process on the same weights, scheduler, steps, guidance, batch and per-sample seeds, so
its outputs are comparable patch for patch (PSNR against the baseline is reported too).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from histoaug.synthesis.model_source import open_model
from histoaug.synthesis.schedulers import make_scheduler

logger = logging.getLogger(__name__)


@dataclass
class BenchResult:
    name: str
    batch: int
    seconds: float
    patches_per_second: float
    max_abs_diff_vs_baseline: int | None = None
    psnr_vs_baseline_db: float | None = None
    unet_gflops_per_second: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two uint8 image arrays (inf when identical)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def matmul_ceiling(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """Measured GFLOP/s of a large square matmul through torch on this machine (best of ``repeats``)."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def unet_flops_per_sample(model_dir: Path) -> float:
    """FLOPs of one UNet evaluation of one latent (torch's FlopCounterMode: matmuls and convs)."""
    from diffusers import UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    model = open_model(model_dir)
    unet = UNet2DConditionModel.from_pretrained(model.root, subfolder="unet", use_safetensors=True).eval()
    shape = (1, model.latent_channels, model.latent_size, model.latent_size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        unet(torch.zeros(shape), torch.tensor([500.0]), model.embeddings.cond[:1])
    return float(counter.get_total_flops())


def workload(model_dir: Path, batch: int, seed: int = 0) -> tuple[list[int], list[int], list[int]]:
    """Balanced labels, distinct seeds and the prompt ids histoaug would pick, for one batch."""
    from histoaug.synthesis.requests import build_request

    model = open_model(model_dir)
    labels = [i % 2 for i in range(batch)]
    seeds = [seed * 100_003 + i for i in range(batch)]
    request = build_request(model.prompts, labels, seeds)
    return labels, seeds, request.prompt_ids.tolist()


def run_diffusers(model_dir: Path, batch: int, steps: int, guidance: float, scheduler: str,
                  repeats: int = 1) -> tuple[np.ndarray, float]:
    """diffusers StableDiffusionPipeline (fp32, default settings) on the same workload; (patches, seconds)."""
    from diffusers import StableDiffusionPipeline

    model = open_model(model_dir)
    pipe = StableDiffusionPipeline.from_pretrained(model_dir, safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = make_scheduler(scheduler, pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    _, seeds, prompt_ids = workload(model_dir, batch)
    texts = [model.prompts[i].text for i in prompt_ids]
    size = model.image_size
    best, images = float("inf"), None
    for _ in range(repeats):
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        start = time.perf_counter()
        out = pipe(texts, height=size, width=size, num_inference_steps=steps, guidance_scale=guidance,
                   generator=generators, output_type="np").images
        best = min(best, time.perf_counter() - start)
        images = out
    if size != 96:
        from histoaug.synthesis.postprocess import to_uint8_patches

        return to_uint8_patches(torch.from_numpy(images).permute(0, 3, 1, 2) * 2 - 1), best
    return (images * 255).round().astype(np.uint8), best


def run_histoaug(synthesizer, model_dir: Path, batch: int, steps: int, guidance: float, scheduler: str,
                 repeats: int = 1) -> tuple[np.ndarray, float]:
    labels, seeds, prompt_ids = workload(model_dir, batch)
    best, images = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        images = synthesizer.generate(labels, seeds, prompt_ids, steps=steps, guidance=guidance,
                                      scheduler=scheduler, batch_size=batch)
        best = min(best, time.perf_counter() - start)
    return images, best
