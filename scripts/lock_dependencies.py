"""Write scripts/constraints.txt from a venv's installed versions (run by scripts/lock_dependencies.sh).

The lock holds every distribution of the dev install except histoaug itself and torch with its
CUDA companions (setup.sh pins torch on its own, and a CUDA build brings its own nvidia-* wheels).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import platform
import re
import sys
from pathlib import Path

NOT_LOCKED = re.compile(r"^(histoaug|torch|nvidia-.*|cuda-.*|pip|setuptools|wheel)$")


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_versions() -> dict[str, str]:
    versions = {}
    for distribution in importlib.metadata.distributions():
        name = normalise(distribution.metadata["Name"])
        if not NOT_LOCKED.match(name):
            versions[name] = distribution.version
    return dict(sorted(versions.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    import torch

    header = [
        "# Known-good versions for CI and scripts/setup.sh (pip constraints: pins what gets installed,",
        "# installs nothing by itself). Written by scripts/lock_dependencies.sh after the whole suite passed",
        f"# on them: Python {platform.python_version()}, torch {torch.__version__} (pinned by setup.sh, not here),",
        f"# {platform.machine()}. Do not edit by hand.",
    ]
    lines = [f"{name}=={version}" for name, version in locked_versions().items()]
    args.out.write_text("\n".join(header + lines) + "\n")
    print(f"wrote {len(lines)} pins to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
