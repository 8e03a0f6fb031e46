"""``histoaug info``: versions, devices and available backends."""

from __future__ import annotations

import argparse
import json

from histoaug.environment import probe_environment


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("info", help="show versions, devices and available backends")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    report = probe_environment()
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
        return 0
    print(f"histoaug {report.histoaug}  python {report.python}  ({report.platform})")
    print(f"CPU cores: {report.cpu_count}")
    print("CUDA devices: " + (", ".join(report.cuda_devices) or "none"))
    for gpu in report.gpus:
        print(f"  cuda:{gpu['index']} {gpu['name']}: compute capability {gpu['compute_capability']}, "
              f"bf16 {'yes' if gpu['bf16'] else 'no'}, {gpu['memory_gib']} GiB, {gpu['multiprocessors']} SMs")
    print("GPU runtimes (installed / verified by histoaug's GPU tests on a real GPU):")
    from histoaug.synthesis.backends.gpu_verified import FAMILIES

    for name, version in report.gpu_runtimes.items():
        listed = [f"{key} ({entry.get('device', '?')}, {entry.get('date', '?')})"
                  for key, entry in report.gpu_verified.items()
                  if key == name or FAMILIES.get(str(entry.get("backend"))) == name]
        state = "verified: " + "; ".join(listed) if listed else "not verified"
        print(f"  {name:<17} {version or 'not installed':<40} {state}")
    if not report.gpu_verified:
        print("  (no GPU runtime has passed this project's GPU tests yet: auto on CUDA runs plain torch fp32, "
              "eager, and says so)")
    print("Backends:")
    for name, state in report.backends.items():
        print(f"  {name:<12} {state}")
    print("Packages:")
    for name, version in report.packages.items():
        print(f"  {name:<16} {version or 'not installed'}")
    return 0
