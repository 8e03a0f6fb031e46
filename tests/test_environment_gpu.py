"""`histoaug info`'s GPU section: devices, GPU runtimes installed, and which this project has verified."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from histoaug.environment import probe_environment, verified_gpu_runtimes


def test_gpu_report_fields() -> None:
    report = probe_environment()
    assert set(report.gpu_runtimes) == {"torch-cuda", "triton", "onnxruntime-cuda", "tensorrt", "xformers"}
    assert isinstance(report.gpu_verified, dict)
    if torch.cuda.is_available():
        gpu = report.gpus[0]
        assert {"name", "compute_capability", "bf16", "memory_gib"} <= set(gpu)
    else:
        assert report.gpus == []


def test_verified_runtimes_ship_with_the_package() -> None:
    """The data file is packaged and parses; nothing has been verified on a GPU yet, and info says so."""
    assert verified_gpu_runtimes() == {}
    text = subprocess.run([sys.executable, "-m", "histoaug.cli.main", "info"], capture_output=True, text=True,
                          check=True).stdout
    assert "no GPU runtime has passed this project's GPU tests yet" in text
    assert "torch-cuda" in text and "not verified" in text
    data = json.loads(subprocess.run([sys.executable, "-m", "histoaug.cli.main", "info", "--json"],
                                     capture_output=True, text=True, check=True).stdout)
    assert data["gpu_verified"] == {} and "gpu_runtimes" in data
