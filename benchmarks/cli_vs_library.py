"""`histoaug generate --n N` against the library on the same job, each in a fresh process, warm cache.

The first-hour issue: the CLI skipped the compiled path for jobs under 2000 patches even with a warm
compile cache and ran +74% slower than the library. Both sides now follow one compile rule; this
measures them interleaved, from process start to the last patch (imports, model load, compile-cache
load, generation; the CLI also writes its HDF5 file):

    python benchmarks/cli_vs_library.py --n 1024 --rounds 3 > benchmarks/results/cli_vs_library.json

A warm-up round first fills the compile cache (``$HISTOAUG_CACHE``, default ~/.cache/histoaug) for the
default batch shape, as a user's first long run would.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LIBRARY = """
import sys, histoaug
n = int(sys.argv[1])
synth = histoaug.load_synthesizer(expected_patches=n, compile=True if "--compile" in sys.argv else None)
labels = [i % 2 for i in range(n)]
synth.generate(labels, list(range(n)))
print(synth.choice.as_dict())
"""


def run(command: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    histoaug_cli = str(Path(sys.executable).with_name("histoaug"))
    work = Path(tempfile.mkdtemp(prefix="histoaug-cli-vs-lib-"))
    cli = [histoaug_cli, "generate", "--n", str(args.n), "--out", str(work / "s.h5"), "--overwrite", "--quiet"]
    library = [sys.executable, "-c", LIBRARY, str(args.n)]
    try:
        # warm-up: fills the compile cache for the default batch shape (compile forced: with a cold
        # cache a 1024-patch job does not compile, which is the rule this benchmark is about)
        run([*library, "--compile"])
        times: dict[str, list[float]] = {"cli": [], "library": []}
        notes = {}
        for _ in range(args.rounds):
            for name, command in (("cli", cli), ("library", library)):
                seconds, last = run(command)
                times[name].append(round(seconds, 2))
                notes[name] = last
    finally:
        shutil.rmtree(work, ignore_errors=True)
    median = {name: statistics.median(values) for name, values in times.items()}
    print(json.dumps({
        "command": " ".join(["python", "benchmarks/cli_vs_library.py", "--n", str(args.n), "--rounds",
                             str(args.rounds)]),
        "machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores",
        "seconds": times, "median_seconds": median,
        "cli_over_library": round(median["cli"] / median["library"], 3),
        "patches_per_second_median": {name: round(args.n / value, 1) for name, value in median.items()},
        "last_output": notes,
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
