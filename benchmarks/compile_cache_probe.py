"""Load-to-first-batch of the default path in a fresh process, with a cold and then a warm compile cache.

Runs the same child process twice against one new, empty ``$HISTOAUG_CACHE``: the first compiles
(and caches) the UNet, the second should load the cached AOTInductor package. Each child reports
seconds from process start to imports done, synthesizer loaded, and first batch returned (the
default path: ``load_synthesizer(model)`` with no speed flags, one ``generate`` of ``--batch``
patches at ``--steps``), plus its compile-cache events. Prints JSON.

    .venv/bin/python benchmarks/compile_cache_probe.py --batch 32 --steps 20 \\
        > benchmarks/results/compile_cache_probe.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = """
import json, sys, time
start = time.perf_counter()
import histoaug
from histoaug.synthesis import compile_cache
from histoaug.benchmarking import workload
from histoaug.synthesis.model_source import open_model
imported = time.perf_counter()
model, batch, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
synth = histoaug.load_synthesizer(model)
loaded = time.perf_counter()
labels, seeds, prompt_ids = workload(open_model(model).root, batch)
synth.generate(labels, seeds, prompt_ids, steps=steps, batch_size=batch)
first = time.perf_counter()
print(json.dumps({"import_s": imported - start, "load_s": loaded - imported, "first_batch_s": first - loaded,
                  "load_to_first_batch_s": first - imported, "process_start_to_first_batch_s": first - start,
                  "cache_events": dict(compile_cache.CACHE_EVENTS), "runtime": synth.runtime,
                  "choice": synth.choice.reason}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    runs = {}
    with tempfile.TemporaryDirectory(prefix="histoaug-cache-probe-") as cache:
        env = {**os.environ, "HISTOAUG_CACHE": cache}
        for name in ("cold", "warm"):
            result = subprocess.run([sys.executable, "-c", CHILD, args.model, str(args.batch), str(args.steps)],
                                    env=env, capture_output=True, text=True, check=True)
            runs[name] = json.loads(result.stdout.strip().splitlines()[-1])
    print(json.dumps({"model": args.model, "batch": args.batch, "steps": args.steps, **runs}, indent=2))


if __name__ == "__main__":
    main()
