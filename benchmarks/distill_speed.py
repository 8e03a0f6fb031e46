"""Patches/s of a distilled student (LCM, 1/2/4/8 steps, guidance 1) vs its teacher at the teacher's
own default settings (the embedded model: DPM-Solver++ 10 steps, guidance 6, rescale 0.5), same backend, process,
seeds and batch; interleaved, best of ``--rounds``. Prints JSON.

    .venv/bin/python benchmarks/distill_speed.py --student runs/student --student-onnx runs/student-onnx \\
        > benchmarks/results/distill_speed.json

``--student-onnx``: the student exported with ``histoaug export`` (adds the onnxruntime rows; the
teacher ``default`` is already an artifact). ``--compiled``: adds torch bf16 rows with the UNet
compiled (the CPU's fastest path for long jobs; compiles are warm-up, untimed).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from histoaug.synthesis.model_source import sampler_defaults_of
from histoaug.synthesis.synthesizer import load_synthesizer


def timed(synth, n: int, **settings) -> float:
    labels = np.arange(n) % 2
    started = time.perf_counter()
    synth.generate(labels, np.arange(n), **settings)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="default")
    parser.add_argument("--student", required=True)
    parser.add_argument("--student-onnx", default=None)
    parser.add_argument("--n", type=int, default=64, help="patches per timed call")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--student-steps", default="1,2,4,8")
    parser.add_argument("--compiled", action="store_true", help="also torch bf16 with the UNet compiled")
    args = parser.parse_args()
    setups = [("torch fp32", {"backend": "torch", "dtype": "fp32", "compile": False}, args.student)]
    if args.student_onnx:
        setups.append(("onnxruntime fp32", {"backend": "onnxruntime"}, args.student_onnx))
    if args.compiled:
        setups.append(("torch bf16 compiled", {"backend": "torch", "dtype": "bf16", "compile": True}, args.student))
    own = sampler_defaults_of(args.teacher)
    rescale = f", rescale {own.guidance_rescale:g}" if own.guidance_rescale else ""
    variants = [(f"teacher {own.scheduler} {own.steps} steps, guidance {own.guidance:g}{rescale}", None,
                 {"steps": own.steps, "guidance": own.guidance, "scheduler": own.scheduler,
                  "guidance_rescale": own.guidance_rescale})]
    variants += [(f"student lcm {s} steps, guidance 1", "student", {"steps": int(s), "guidance": 1.0,
                                                                     "scheduler": "lcm"})
                 for s in args.student_steps.split(",")]
    rows = []
    for label, options, student_source in setups:
        teacher = load_synthesizer(args.teacher, batch_size=args.batch, **options)
        student = load_synthesizer(student_source, batch_size=args.batch, **options)
        synths = {None: teacher, "student": student}
        for _, which, settings in variants:  # warm-up, untimed
            timed(synths[which], args.batch, **{**settings, "steps": 1})
        best = {name: float("inf") for name, _, _ in variants}
        for _ in range(args.rounds):
            for name, which, settings in variants:
                best[name] = min(best[name], timed(synths[which], args.n, **settings))
        base = best[variants[0][0]]
        for name, _, _ in variants:
            rows.append({"backend": label, "variant": name, "patches_per_s": round(args.n / best[name], 2),
                         "speedup_vs_teacher": round(base / best[name], 2)})
        teacher.close()
        student.close()
    print(json.dumps({"threads": torch.get_num_threads(), "n": args.n, "batch": args.batch,
                      "rounds": args.rounds, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
