"""benchmarks/gpu_bench.py on the CPU with tiny settings: the GPU benchmark's wiring, checked in CI."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

GPU_BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_bench.py"


def _load_gpu_bench():
    """The benchmark is a script (benchmarks/ is no package: it must not shadow one): load it by path."""
    spec = importlib.util.spec_from_file_location("gpu_bench", GPU_BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # loads the embedded model, a tiny SD-architecture model and diffusers twice
def test_gpu_bench_smoke_on_cpu(tmp_path) -> None:
    main = _load_gpu_bench().main

    out = tmp_path / "gpu_smoke.json"
    report = main(["--device", "cpu", "--smoke", "--out", str(out), "--workdir", str(tmp_path / "work")])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report, default=str))
    for key in ("device_name", "driver", "torch", "diffusers", "command", "bf16_matmul_peak_tflops"):
        assert key in report
    cases = {(c["workload"], c["runtime"]): c for c in report["cases"]}
    assert set(cases) == {("embedded", "diffusers fp32"), ("embedded", "histoaug torch:fp32"),
                          ("sd15-arch-32", "diffusers fp32"), ("sd15-arch-32", "histoaug torch:fp32")}
    embedded = cases[("embedded", "histoaug torch:fp32")]
    assert embedded["images_per_second"] > 0 and embedded["speedup_vs_diffusers"] > 0
    assert embedded["psnr_vs_diffusers_db"] > 40  # same fp32 weights, seeds and scheduler
    sd = cases[("sd15-arch-32", "histoaug torch:fp32")]
    assert sd["unet_relative_error_vs_diffusers"] < 1e-4 and sd["unet_tflops"] > 0
    assert sd["runtime_id"] is not None
