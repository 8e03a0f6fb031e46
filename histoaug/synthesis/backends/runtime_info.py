"""Facts about the machine and libraries that decide a backend's rounding, for ``runtime_id``.

Two runs with equal model, prompt, seed, sampler settings *and* equal runtime ids give bit-identical
patches (same batch layout); a resumed ``generate`` and the mixing pool's store rely on that.
"""

from __future__ import annotations

import functools
import importlib.metadata
import platform

import torch


@functools.cache
def _cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_description(device: torch.device) -> str:
    """'cpu <model> (<torch's CPU capability>)' or 'cuda:<i> <GPU name>': kernels differ per model."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} {torch.cuda.get_device_name(index)}"
    return f"cpu {_cpu_model_name()} ({torch.backends.cpu.get_cpu_capability()})"


def library_versions(*names: str) -> str:
    """'name==version' of each installed distribution, comma-separated (missing ones are skipped)."""
    found = []
    for name in names:
        try:
            found.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return ",".join(found)
