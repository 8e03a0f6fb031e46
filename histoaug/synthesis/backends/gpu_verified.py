"""The GPU runtimes this project's GPU tests passed on a real GPU: ``histoaug/gpu_verified.json``.

The one reader of that file. ``auto`` on CUDA picks only runtimes it lists, the measured-fastest
first (``patches_per_second``, from the same green ``scripts/gpu_check.sh`` run); ``histoaug info``
shows it. An entry is written only from a green device run's ``gpu_verified.candidate.json``
(reviewed by hand): ``{"backend": "torch", "dtype": "fp16", "compile": false, "graphs": true,
"device": "NVIDIA H200", "date": ..., "torch": ..., "command": ..., "patches_per_second": ...}``.
"""

from __future__ import annotations

import importlib.resources
import json
from dataclasses import dataclass
from typing import Any

# the runtime families ``histoaug info`` reports, by backend name
FAMILIES = {"torch": "torch-cuda", "onnxruntime": "onnxruntime-cuda", "tensorrt": "tensorrt"}


@dataclass(frozen=True)
class VerifiedRuntime:
    """One listed runtime: what to load, and how fast it measured."""

    name: str
    backend: str
    dtype: str | None
    compile: bool
    graphs: bool
    device: str | None
    patches_per_second: float | None


def read_verified() -> dict[str, dict[str, Any]]:
    """The file's ``runtimes`` table (name -> entry), as shipped in the package."""
    text = importlib.resources.files("histoaug").joinpath("gpu_verified.json").read_text(encoding="utf-8")
    return dict(json.loads(text).get("runtimes", {}))


def verified_runtimes(table: dict[str, dict[str, Any]] | None = None) -> list[VerifiedRuntime]:
    """The listed runtimes, measured-fastest first (entries without a figure last, in file order)."""
    table = read_verified() if table is None else table
    listed = [VerifiedRuntime(name, str(entry["backend"]), entry.get("dtype"), bool(entry.get("compile", False)),
                              bool(entry.get("graphs", False)), entry.get("device"), entry.get("patches_per_second"))
              for name, entry in table.items() if "backend" in entry]
    return sorted(listed, key=lambda r: -(r.patches_per_second or 0.0))
