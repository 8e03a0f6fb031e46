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

from histoaug.benchmarking import (
    BackendSpec,
    BenchConfig,
    DiffusersBaseline,
    prepare_models,
    psnr,
    run_histoaug,
)

BATCH = int(os.environ.get("HISTOAUG_BENCH_BATCH", "32"))
STEPS = int(os.environ.get("HISTOAUG_BENCH_STEPS", "20"))
GUIDANCE = 2.0
SCHEDULER = "dpmsolver++"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    model = os.environ.get("HISTOAUG_BENCH_MODEL")
    config = BenchConfig(model=Path(model) if model else None, preset="small",
                         workdir=tmp_path_factory.mktemp("bench"), backends=(BackendSpec("onnxruntime", "fp32"),))
    return prepare_models(config)


@pytest.fixture(scope="module")
def baseline(models):
    baseline = DiffusersBaseline(models[0], SCHEDULER)
    baseline.run(BATCH, 2, GUIDANCE)  # warm-up
    return baseline


@pytest.fixture(scope="module")
def reference(baseline):
    return baseline.run(BATCH, STEPS, GUIDANCE)[0]


def test_diffusers_pipeline_fp32(benchmark, baseline) -> None:
    benchmark.extra_info["patches_per_round"] = BATCH
    benchmark.pedantic(baseline.run, args=(BATCH, STEPS, GUIDANCE), rounds=1, iterations=1)


@pytest.mark.parametrize("spec", ["torch:fp32", "torch:bf16", "torch:bf16:compile", "onnxruntime:fp32"])
def test_histoaug_backend(benchmark, models, reference, spec) -> None:
    model, artifact = models
    synth = BackendSpec.parse(spec).load(model, artifact)
    run_histoaug(synth, model, BATCH, 2, GUIDANCE, SCHEDULER)  # warm-up (and compile) at the timed shape
    benchmark.extra_info["patches_per_round"] = BATCH
    images, _ = benchmark.pedantic(run_histoaug, args=(synth, model, BATCH, STEPS, GUIDANCE, SCHEDULER),
                                   rounds=1, iterations=1)
    benchmark.extra_info["psnr_vs_diffusers_db"] = psnr(images, reference)
    assert images.shape == (BATCH, 96, 96, 3)
