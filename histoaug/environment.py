"""What this machine offers histoaug: package versions, devices and runnable backends.

Optional packages are probed with ``importlib.util.find_spec`` first, so a missing GPU-only
package (tensorrt, onnxruntime-gpu, xformers) is reported as absent, never as an error.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.resources
import importlib.util
import os
import platform
from dataclasses import asdict, dataclass, field
from typing import Any

from histoaug._version import __version__

_REPORTED_PACKAGES = (
    "torch", "numpy", "h5py", "diffusers", "transformers", "onnx", "onnxruntime",
    "onnxruntime-gpu", "albumentations", "safetensors", "tensorrt", "xformers", "triton",
)


@dataclass
class EnvironmentReport:
    histoaug: str
    python: str
    platform: str
    cpu_count: int
    packages: dict[str, str | None]
    cuda_devices: list[str] = field(default_factory=list)
    onnxruntime_providers: list[str] = field(default_factory=list)
    backends: dict[str, str] = field(default_factory=dict)
    gpus: list[dict[str, Any]] = field(default_factory=list)
    gpu_runtimes: dict[str, str | None] = field(default_factory=dict)
    gpu_verified: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def package_version(distribution: str) -> str | None:
    """Installed version of a distribution, or None when it is not installed."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def cuda_devices() -> list[str]:
    import torch

    if not torch.cuda.is_available():
        return []
    return [
        f"cuda:{index} {torch.cuda.get_device_name(index)}"
        for index in range(torch.cuda.device_count())
    ]


def gpu_details() -> list[dict[str, Any]]:
    """Each visible GPU: index, name, compute capability, bf16 support, memory."""
    import torch

    if not torch.cuda.is_available():
        return []
    details = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        with torch.cuda.device(index):
            bf16 = bool(torch.cuda.is_bf16_supported(including_emulation=False))
        details.append({"index": index, "name": props.name, "compute_capability": f"{props.major}.{props.minor}",
                        "bf16": bf16, "memory_gib": round(props.total_memory / 2**30, 1),
                        "multiprocessors": props.multi_processor_count})
    return details


def gpu_runtimes(providers: list[str]) -> dict[str, str | None]:
    """GPU runtimes installed here (version, or None when absent), whether or not a GPU is visible."""
    import torch

    return {
        "torch-cuda": f"torch {torch.__version__}, CUDA {torch.version.cuda}" if torch.version.cuda else None,
        "triton": package_version("triton"),
        "onnxruntime-cuda": (f"onnxruntime-gpu {package_version('onnxruntime-gpu') or package_version('onnxruntime')}"
                             if "CUDAExecutionProvider" in providers else None),
        "tensorrt": package_version("tensorrt") or package_version("tensorrt-cu12") or package_version("tensorrt-cu13"),
        "xformers": package_version("xformers"),
    }


def verified_gpu_runtimes() -> dict[str, Any]:
    """The runtimes this project's GPU tests have passed on a real GPU (histoaug/gpu_verified.json)."""
    from histoaug.synthesis.backends.gpu_verified import read_verified

    return read_verified()


def onnxruntime_providers() -> list[str]:
    if importlib.util.find_spec("onnxruntime") is None:
        return []
    import onnxruntime

    return list(onnxruntime.get_available_providers())


def backend_availability(devices: list[str], providers: list[str]) -> dict[str, str]:
    """Each synthesis backend -> 'available (...)' or 'unavailable: reason'."""
    import torch

    from histoaug.synthesis.backends.torch_backend import compile_unavailable_reason

    torch_devices = "cpu" + (", cuda" if devices else "")
    reason = compile_unavailable_reason(torch.device("cpu"))
    compile_state = "compile on cpu: yes" if reason is None else f"compile on cpu: no, {reason}"
    report = {"torch": f"available ({torch_devices}; {compile_state})"}
    if providers:
        report["onnxruntime"] = f"available ({', '.join(providers)})"
    else:
        report["onnxruntime"] = "unavailable: onnxruntime is not installed"
    if importlib.util.find_spec("tensorrt") is None:
        report["tensorrt"] = "unavailable: tensorrt is not installed (pip install 'histoaug[tensorrt]')"
    elif not devices:
        report["tensorrt"] = "unavailable: no CUDA device"
    else:
        report["tensorrt"] = "available"
    return report


def probe_environment() -> EnvironmentReport:
    devices = cuda_devices()
    providers = onnxruntime_providers()
    return EnvironmentReport(
        histoaug=__version__,
        python=platform.python_version(),
        platform=platform.platform(),
        cpu_count=os.cpu_count() or 1,
        packages={name: package_version(name) for name in _REPORTED_PACKAGES},
        cuda_devices=devices,
        onnxruntime_providers=providers,
        backends=backend_availability(devices, providers),
        gpus=gpu_details(),
        gpu_runtimes=gpu_runtimes(providers),
        gpu_verified=verified_gpu_runtimes(),
    )
