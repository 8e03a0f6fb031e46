"""Fast mode's frontier: speed vs PSNR per approximation, against diffusers fp32, same process.

The default path (``load_synthesizer(model)``: auto -> compiled bf16 on a capable CPU) with each
fast-mode variant in ``--variants`` (``GUIDANCE_UNTIL:DEEP_CACHE``; ``1:1`` is exact, ``1:2`` is
``--fast``, ``0.5:2`` the former ``--fast``), each at every batch in ``--batch``, interleaved with diffusers'
``StableDiffusionPipeline`` fp32 (default settings) on the same weights, seeds and prompts;
best of ``--rounds``. Speed-ups are reported at the same batch and each at its own best batch.
PSNR is against the baseline's patches at the same batch. Prints JSON.

    .venv/bin/python benchmarks/fast_mode_frontier.py --batch 32,64 --rounds 3 \\
        > benchmarks/results/fast_mode_frontier.json

Label fidelity per variant: generate a file with it and evaluate it (``histoaug eval``), e.g.
    histoaug generate --n 2048 --out exact.h5 --steps 20 && histoaug eval exact.h5 --json exact_eval.json
    histoaug generate --n 2048 --out fast.h5 --steps 20 --fast && histoaug eval fast.h5 --json fast_eval.json
"""

from __future__ import annotations

import argparse
import json

from histoaug.benchmarking import DiffusersBaseline, psnr, resolved_label, run_histoaug
from histoaug.synthesis.model_source import open_model
from histoaug.synthesis.synthesizer import load_synthesizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--batch", default="32,64")
    parser.add_argument("--variants", default="1:1,0.5:1,0.3:1,1:2,1:3,0.5:2,0.5:3",
                        help="comma-separated GUIDANCE_UNTIL:DEEP_CACHE pairs")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--scheduler", default="dpmsolver++")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    batches = [int(b) for b in args.batch.split(",")]
    variants = [(float(item.split(":")[0]), int(item.split(":")[1])) for item in args.variants.split(",")]
    root = open_model(args.model).root
    synth = load_synthesizer(root)
    baseline = DiffusersBaseline(root, args.scheduler)
    common = {"steps": args.steps, "guidance": args.guidance, "scheduler": args.scheduler}
    rows = []
    for batch in batches:
        baseline.run(batch, 2, args.guidance)  # warm-ups, untimed: compiles and first-call costs
        for until, deep in variants:  # the first steps reach every graph shape the variant uses
            run_histoaug(synth, root, batch, min(args.steps, 4), args.guidance, args.scheduler,
                         guidance_until=until, deep_cache=deep)
        best = {"diffusers": float("inf")} | {variant: float("inf") for variant in variants}
        images = {}
        for _ in range(args.rounds):
            images["diffusers"], seconds = baseline.run(batch, args.steps, args.guidance)
            best["diffusers"] = min(best["diffusers"], seconds)
            for until, deep in variants:
                images[(until, deep)], seconds = run_histoaug(synth, root, batch, guidance_until=until,
                                                              deep_cache=deep, **common)
                best[(until, deep)] = min(best[(until, deep)], seconds)
        for name, seconds in best.items():
            rows.append({"runtime": "diffusers fp32" if name == "diffusers" else resolved_label(synth),
                         "guidance_until": None if name == "diffusers" else name[0],
                         "deep_cache": None if name == "diffusers" else name[1], "batch": batch,
                         "patches_per_second": batch / seconds,
                         "speedup_same_batch": best["diffusers"] / seconds,
                         "psnr_vs_diffusers_db": None if name == "diffusers" else psnr(images[name],
                                                                                       images["diffusers"])})
    baseline_best = max(r["patches_per_second"] for r in rows if r["guidance_until"] is None)
    for row in rows:
        row["speedup_vs_diffusers_best_batch"] = row["patches_per_second"] / baseline_best
    print(json.dumps({"model": str(root), "runtime": synth.runtime, "choice": synth.choice.reason, **common,
                      "rows": rows}, indent=2, default=str))


if __name__ == "__main__":
    main()
