"""scripts/gpu_check.sh --dry-run: the device check end to end on the CPU (install into a target folder,
import preflight under ``python -P``, ``pytest -m gpu`` with per-test limits, the benchmark's JSON after
every case, the candidate record and the table), so that a GPU window spends its minutes on CUDA only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = {"gpu_check.log", "environment.json", "pytest_gpu.log", "pytest_gpu.xml", "gpu_bench.json", "gpu_bench.log",
         "gpu_verified.candidate.json"}


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check-out")
    site = tmp_path_factory.mktemp("gpu-check-site") / "site"
    env = {**os.environ, "OUT": str(out), "SITE": str(site), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    run = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=400)
    return run, out, site


@pytest.mark.slow  # ~60 s on 2 cores: a wheel build, the GPU suite's collection, tiny benchmark cases
def test_dry_run_is_green_and_brings_back_every_file(dry_run) -> None:
    run, out, _ = dry_run
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert {p.name for p in out.iterdir()} >= FILES
    assert len(list(out.iterdir())) <= 8  # the device tool brings back at most 8 files
    log = (out / "gpu_check.log").read_text()
    assert "no .whl folder here (CI)" in log or "carried wheel(s)" in log  # says what it installed from
    assert "tests rc=0" in log and "benchmark rc=0" in log
    assert run.stdout.rstrip().splitlines()[-1].startswith("gpu_check [")  # the table and summary come last


@pytest.mark.slow
def test_dry_run_runs_the_installed_copy(dry_run) -> None:
    """python -P: histoaug (with its mapped kernels/export) is imported from the target folder, not the checkout."""
    _, out, site = dry_run
    env = json.loads((out / "environment.json").read_text())
    assert env["histoaug"].startswith(str(site.resolve())) and not env["sys_path_has_checkout"]
    assert (site / "histoaug" / "kernels" / "dispatch.py").exists()
    bench = json.loads((out / "gpu_bench.json").read_text())
    assert bench["histoaug_path"].startswith(str(site.resolve()))
    assert f"histoaug: {site.resolve() / 'histoaug'}" in (out / "pytest_gpu.log").read_text()  # the tests too


@pytest.mark.slow
def test_dry_run_json_has_every_case_and_field(dry_run) -> None:
    _, out, _ = dry_run
    bench = json.loads((out / "gpu_bench.json").read_text())
    for key in ("device_name", "driver", "torch", "diffusers", "command", "bf16_matmul_peak_tflops", "repeats",
                "case_fields", "seconds_total"):
        assert key in bench
    cases = {(c["workload"], c["runtime"], c["batch"]): c for c in bench["cases"]}
    expected = {("embedded", "diffusers fp32 sdpa", 2), ("embedded", "histoaug torch:fp32", 2),
                ("embedded", "histoaug torch:fp32:graphs", 2),
                ("embedded", "diffusers fp32 sdpa + torch.compile(reduce-overhead)", 2),
                ("embedded", "histoaug torch:fp32:fused-norms", 2),
                ("kernels", "group_norm+silu 1x16x4x4", 1), ("kernels", "decode_postprocess 1x3x16x16->96", 1),
                ("student", "histoaug torch:fp32 teacher (its defaults)", 2)}
    expected |= {("student", f"histoaug torch:fp32 student {n} step{'s' if n > 1 else ''}", 2) for n in (1, 2, 4, 8)}
    for batch in (1, 2):
        expected |= {("sd15-unet-32", f"{r}", batch)
                     for r in ("diffusers fp32 sdpa", "histoaug torch:fp32", "histoaug torch:fp32:graphs")}
    assert set(cases) == expected
    for case in bench["cases"]:
        assert list(case) == bench["case_fields"]  # every field in every case
        assert case["status"] in ("ok", "skipped")
    ours = cases[("embedded", "histoaug torch:fp32", 2)]
    assert ours["status"] == "ok" and ours["repeats"] >= 5
    assert ours["seconds_min"] <= ours["seconds_median"] <= ours["seconds_max"]
    assert ours["patches_per_second"] > 0 and ours["speedup_vs_diffusers_eager"] > 0
    assert ours["psnr_vs_diffusers_db"] > 40  # same fp32 weights, seeds and scheduler
    assert ours["unet_tflops"] > 0 and ours["runtime_id"]["backend"] == "torch"
    graphs = cases[("embedded", "histoaug torch:fp32:graphs", 2)]
    assert graphs["status"] == "skipped" and "CUDA graphs need a CUDA device" in graphs["reason"]
    for kernel in ("group_norm+silu 1x16x4x4", "decode_postprocess 1x3x16x16->96"):  # Triton's CPU interpreter
        case = cases[("kernels", kernel, 1)]
        assert case["status"] == "ok" and case["extra"]["max_abs_diff"] <= 1e-3 + (kernel.startswith("decode"))
    fused = cases[("embedded", "histoaug torch:fp32:fused-norms", 2)]  # the torch reference on the CPU: identical
    assert fused["status"] == "ok" and fused["extra"]["psnr_vs_unfused_db"] == float("inf")
    assert fused["extra"]["swapped"]["resnet_blocks"] > 0 and fused["runtime_id"]["norms"].startswith("fused")
    student = cases[("student", "histoaug torch:fp32 student 4 steps", 2)]  # the shipped student, default-fast
    assert student["status"] == "ok" and student["extra"]["scheduler"] == "lcm" and student["extra"]["steps"] == 4
    assert student["extra"]["speedup_vs_teacher"] > 0 and student["extra"]["model"] == "default-fast"
    sd = cases[("sd15-unet-32", "histoaug torch:fp32", 2)]
    assert sd["status"] == "ok" and sd["latents_relative_error_vs_diffusers"] < 1e-4


@pytest.mark.slow
def test_dry_run_candidate_record_lists_what_ran(dry_run) -> None:
    _, out, _ = dry_run
    record = json.loads((out / "gpu_verified.candidate.json").read_text())
    assert record["runtimes"] == {}  # nothing passed on a GPU: every GPU test skips on the CPU
    assert record["runtime_status"]["torch:fp16:graphs"] == "skipped"
    assert all(outcome == "SKIPPED" for outcome in record["tests"].values()) and record["tests"]


def _load_report():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check_report", ROOT / "scripts" / "gpu_check_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_cut_run_still_yields_the_candidates_it_earned(tmp_path) -> None:
    """The verbose log of a run killed mid-test (no JUnit XML): finished tests count, a failure excludes its
    runtime, the benchmark's figure travels with the entry."""
    report = _load_report()
    (tmp_path / "pytest_gpu.log").write_text(
        "tests/test_gpu_runtime.py::test_every_gpu_runtime_generates[torch:fp16] PASSED [  1%]\n"
        "tests/test_gpu_runtime.py::test_every_gpu_runtime_generates[torch:fp16:graphs] PASSED [  2%]\n"
        "tests/test_gpu_runtime.py::test_every_gpu_runtime_generates[torch:bf16] PASSED [  3%]\n"
        "tests/test_gpu_runtime.py::test_every_gpu_runtime_generates[onnxruntime] SKIPPED (no ort) [  4%]\n"
        "tests/test_gpu_runtime.py::test_same_batch_layout_is_bit_identical_and_other_sizes_are_close[torch:bf16] "
        "FAILED [  5%]\n"
        "tests/test_gpu_runtime.py::test_cuda_graphs_are_bit_identical_to_eager[torch:fp16:graphs] PASSED [  6%]\n"
        "tests/test_gpu_runtime.py::test_prepared_state_is_reused_with_new_seeds_and_labels[torch:fp16] \n")
    bench = {"steps": 20, "device_name": "NVIDIA H200", "cases": [
        {"workload": "embedded", "runtime": "histoaug torch:fp16:graphs", "status": "ok", "batch": 256,
         "patches_per_second": 10000.0},
        {"workload": "embedded", "runtime": "histoaug torch:fp16:graphs", "status": "ok", "batch": 1024,
         "patches_per_second": 25000.0}]}
    (tmp_path / "gpu_bench.json").write_text(json.dumps(bench))
    outcomes = report.parse_log(tmp_path / "pytest_gpu.log")
    status = report.runtime_status(outcomes)
    assert status == {"torch:fp16": "passed", "torch:fp16:graphs": "passed", "torch:bf16": "failed",
                      "onnxruntime": "skipped"}
    record = report.candidates(status, bench, "NVIDIA H200", "2.11.0")
    entry = record["runtimes"]["torch:fp16:graphs (NVIDIA H200)"]
    assert entry["patches_per_second"] == 25000.0 and entry["graphs"] and entry["dtype"] == "fp16"
    assert set(record["runtimes"]) == {"torch:fp16 (NVIDIA H200)", "torch:fp16:graphs (NVIDIA H200)"}

    from histoaug.synthesis.backends.gpu_verified import verified_runtimes

    listed = verified_runtimes(record["runtimes"])  # what auto would read once the entries are copied
    assert [(r.backend, r.dtype, r.graphs) for r in listed] == [("torch", "fp16", True), ("torch", "fp16", False)]
