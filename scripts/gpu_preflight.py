"""Import preflight of scripts/gpu_check.sh: stop at once, with the error, before any test or benchmark runs.

Run as ``python -P scripts/gpu_preflight.py --site DIR --device cuda|cpu --out FILE`` (``-P``: the repository
root is not put on sys.path, so ``histoaug`` must come from the installed copy in DIR, which has
``histoaug.kernels`` and ``histoaug.export``; the source tree has neither). Checks, in order: histoaug
imports from DIR (not the checkout), its mapped subpackages import, the carried pins of scripts/gpu_wheels.txt
are the versions installed, diffusers, transformers, triton (CUDA) and pytest-timeout import, and on CUDA a
device is visible and runs a matmul. Writes the versions found to FILE (JSON) and exits 1 on the first failure.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def fail(message: str) -> None:
    print(f"gpu_preflight: FAILED: {message}", flush=True)
    sys.exit(1)


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            found[name.strip()] = version.strip()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", type=Path, required=True, help="the folder histoaug was installed into")
    parser.add_argument("--device", choices=("cuda", "cpu"), required=True)
    parser.add_argument("--wheels", type=Path, default=None, help="scripts/gpu_wheels.txt when wheels were carried")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    began = time.monotonic()
    report: dict[str, object] = {"python": platform.python_version(), "executable": sys.executable,
                                 "sys_path_has_checkout": str(ROOT) in sys.path or "" in sys.path}
    if report["sys_path_has_checkout"]:
        fail(f"the checkout {ROOT} is on sys.path (run with python -P from any folder)")
    try:
        import histoaug
        import histoaug.export.artifact
        import histoaug.kernels.dispatch
    except Exception as exc:
        fail(f"import histoaug: {type(exc).__name__}: {exc}")
    location = Path(histoaug.__file__).resolve()
    report["histoaug"] = str(location)
    if not location.is_relative_to(args.site.resolve()):
        fail(f"histoaug imports from {location}, not from the installed copy in {args.site}")
    if args.wheels is not None:
        for name, version in pins(args.wheels).items():
            try:
                installed = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                fail(f"{name} is not installed (scripts/gpu_wheels.txt pins {version})")
            if installed != version:
                fail(f"{name} {installed} is installed, scripts/gpu_wheels.txt pins {version}")
    modules = ["torch", "numpy", "diffusers", "transformers", "huggingface_hub", "safetensors", "h5py", "pytest",
               "pytest_timeout"]
    if args.device == "cuda":
        modules.append("triton")
    versions = {}
    for name in modules:
        try:
            module = importlib.import_module(name)
        except Exception as exc:
            fail(f"import {name}: {type(exc).__name__}: {exc}")
        try:
            versions[name] = importlib.metadata.version(name.replace("_", "-"))
        except importlib.metadata.PackageNotFoundError:
            versions[name] = getattr(module, "__version__", "?")
    report["versions"] = versions
    import torch

    if args.device == "cuda":
        if not torch.cuda.is_available():
            fail(f"torch {torch.__version__} sees no CUDA device")
        a = torch.randn(512, 512, device="cuda")
        if not torch.isfinite(a @ a).all():
            fail("a CUDA matmul returned non-finite values")
        props = torch.cuda.get_device_properties(0)
        report["gpu"] = {"name": props.name, "capability": f"{props.major}.{props.minor}",
                         "memory_gib": round(props.total_memory / 2**30, 1), "cuda": torch.version.cuda,
                         "bf16": torch.cuda.is_bf16_supported()}
    report["seconds"] = round(time.monotonic() - began, 2)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"gpu_preflight: ok: histoaug from {location.parent}, " + ", ".join(f"{k} {v}" for k, v in versions.items())
          + (f"; {report['gpu']['name']}" if "gpu" in report else ""), flush=True)


if __name__ == "__main__":
    main()
