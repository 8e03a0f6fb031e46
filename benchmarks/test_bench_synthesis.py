"""pytest-benchmark suite for synthesis: histoaug backends vs diffusers StableDiffusionPipeline.

Same weights (the "small" preset unless HISTOAUG_BENCH_MODEL points at a pipeline dir), same
DPM-Solver++ scheduler, steps, guidance, batch and per-sample seeds, in the same process.
Figures and commands are recorded in benchmarks/RESULTS.md ("Synthesis (issue 3)").

    .venv/bin/python -m pytest benchmarks/test_bench_synthesis.py --benchmark-only -q
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from histoaug.synthesis.benchmarking import BenchConfig, prepare_models, psnr, run_diffusers, run_histoaug

BATCH = int(os.environ.get("HISTOAUG_BENCH_BATCH", "32"))
STEPS = int(os.environ.get("HISTOAUG_BENCH_STEPS", "20"))
GUIDANCE = 2.0
SCHEDULER = "dpmsolver++"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    model = os.environ.get("HISTOAUG_BENCH_MODEL")
    config = BenchConfig(model=Path(model) if model else None, preset="small",
                         workdir=tmp_path_factory.mktemp("bench"), backends=(("onnxruntime", "fp32"),))
    return prepare_models(config)


@pytest.fixture(scope="module")
def reference(models):
    images, _ = run_diffusers(models[0], BATCH, STEPS, GUIDANCE, SCHEDULER)
    return images


def test_diffusers_pipeline_fp32(benchmark, models) -> None:
    benchmark.extra_info["patches_per_round"] = BATCH
    benchmark.pedantic(run_diffusers, args=(models[0], BATCH, STEPS, GUIDANCE, SCHEDULER), rounds=1, iterations=1)


@pytest.mark.parametrize(("backend", "dtype"), [("torch", "fp32"), ("torch", "bf16"), ("onnxruntime", "fp32")])
def test_histoaug_backend(benchmark, models, reference, backend, dtype) -> None:
    from histoaug.synthesis.synthesizer import load_synthesizer

    model, artifact = models
    synth = load_synthesizer(model if backend == "torch" else artifact, backend=backend, device="cpu", dtype=dtype)
    run_histoaug(synth, model, 2, 2, GUIDANCE, SCHEDULER)  # warm-up
    benchmark.extra_info["patches_per_round"] = BATCH
    images, _ = benchmark.pedantic(run_histoaug, args=(synth, model, BATCH, STEPS, GUIDANCE, SCHEDULER),
                                   rounds=1, iterations=1)
    benchmark.extra_info["psnr_vs_diffusers_db"] = psnr(images, reference)
    assert images.shape == (BATCH, 96, 96, 3)
