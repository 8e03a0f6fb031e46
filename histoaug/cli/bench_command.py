"""``histoaug bench``: patches/s per backend and dtype vs diffusers' StableDiffusionPipeline."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from histoaug.errors import InvalidArgumentError
from histoaug.synthesis.defaults import DEFAULT_GUIDANCE, DEFAULT_SCHEDULER, DEFAULT_STEPS, ModelSamplerDefaults


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise InvalidArgumentError(f"--batch must be comma-separated integers, got {text!r}") from None
    if any(v <= 0 for v in values):
        raise InvalidArgumentError(f"--batch values must be positive, got {text!r}")
    return values


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="synthesis throughput per backend vs diffusers")
    parser.add_argument("--model", default="default",
                        help="'default' (the embedded model), a diffusers pipeline dir, or an artifact dir that is "
                        "also a pipeline dir (export --with-text-encoder) (default: %(default)s)")
    parser.add_argument("--preset", default=None,
                        help="benchmark a model preset with random weights instead of --model (tiny, small, histo96)")
    parser.add_argument("--workdir", type=Path, default=None, help="where built models and exports are cached")
    parser.add_argument("--backends", default="auto,torch:fp32,torch:bf16,onnxruntime:fp32",
                        help="comma-separated specs: auto (what a long job gets with no speed flags, e.g. "
                        "histoaug generate --n 100000) or "
                        "NAME[:DTYPE[:compile]], e.g. torch:bf16:compile (compiles happen in the warm-up, outside "
                        "the timing)")
    parser.add_argument("--device", default="cpu", help="device to benchmark on: cpu, cuda, cuda:1 "
                        "(default: %(default)s)")
    parser.add_argument("--batch", default="32", help="comma-separated batch sizes")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"sampler steps (default: the model's; {DEFAULT_STEPS} unless it is a distilled student)")
    parser.add_argument("--guidance", type=float, default=None,
                        help=f"classifier-free guidance scale (default: the model's; {DEFAULT_GUIDANCE} unless it is "
                        "a distilled student)")
    parser.add_argument("--scheduler", default=None,
                        help=f"default: the model's; {DEFAULT_SCHEDULER} unless it is a distilled student (lcm)")
    parser.add_argument("--guidance-rescale", type=float, default=None,
                        help="guidance rescale in [0, 1], on both sides (diffusers' guidance_rescale) (default: the "
                        "model's; 0 unless its sampler_defaults.json says otherwise)")
    parser.add_argument("--repeats", type=int, default=1, help="timed repeats (best is kept)")
    parser.add_argument("--no-baseline", action="store_true", help="skip diffusers StableDiffusionPipeline")
    parser.add_argument("--determinism", action="store_true",
                        help="also measure reorder/batch-size agreement per backend (batch 8 vs 1 and 3)")
    parser.add_argument("--json", type=Path, help="also write the report as JSON (atomically)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from histoaug.benchmarking import BackendSpec, BenchConfig, format_report, run_benchmark
    from histoaug.synthesis.sampling import SamplerSettings

    if args.preset:
        model_defaults = ModelSamplerDefaults()
    else:
        from histoaug.synthesis.model_source import sampler_defaults_of

        model_defaults = sampler_defaults_of(args.model)  # a distilled student: lcm, its steps, guidance 1
    for name in ("steps", "guidance", "scheduler", "guidance_rescale"):
        if getattr(args, name) is None:
            setattr(args, name, getattr(model_defaults, name))
    SamplerSettings(steps=args.steps, guidance=args.guidance, scheduler=args.scheduler,
                    guidance_rescale=args.guidance_rescale)  # validate early
    if args.repeats <= 0:
        raise InvalidArgumentError("--repeats must be positive")
    from histoaug.synthesis.backends.selection import resolve_device

    device = str(resolve_device(args.device))
    backends = tuple(BackendSpec.parse(item, device) for item in args.backends.split(","))
    config = BenchConfig(model=None if args.preset else args.model, preset=args.preset or "small",
                         workdir=args.workdir, backends=backends,
                         batches=_ints(args.batch), steps=args.steps, guidance=args.guidance,
                         scheduler=args.scheduler, guidance_rescale=args.guidance_rescale,
                         baseline=not args.no_baseline, repeats=args.repeats,
                         device=device)
    report = run_benchmark(config)
    print(format_report(report))
    if args.determinism:
        report["determinism"] = _determinism(config)
        for row in report["determinism"]:
            others = ", ".join(f"batch {b}: max diff {v['max_abs_diff']}, {v['psnr_db']:.1f} dB"
                               for b, v in row["other_batch_sizes"].items())
            compiled = " compiled" if row.get("compiled") else ""
            print(f"determinism {row['backend']} {row['dtype']}{compiled}: reordered bit-identical="
                  f"{row['reordered_bit_identical']}; vs batch {row['n']}: {others}")
    if args.json:
        from histoaug.atomic_files import write_text

        write_text(args.json, json.dumps(report, indent=2, default=str) + "\n")
    return 0


def _determinism(config) -> list[dict]:
    from histoaug.benchmarking import batch_layout_tolerance, prepare_models

    model, artifact = prepare_models(config)
    rows = []
    for spec in config.backends:
        synth = spec.load(model, artifact, config.device)
        rows.append(batch_layout_tolerance(synth, model, steps=config.steps, guidance=config.guidance,
                                           scheduler=config.scheduler))
    return rows
