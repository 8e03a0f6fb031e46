"""``histoaug generate``: batch export of a synthetic dataset (PCam HDF5 or PNG tree)."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
from pathlib import Path

from histoaug._version import __version__
from histoaug.errors import InvalidArgumentError, OutputExistsError, OutputWriteError
from histoaug.synthesis import defaults

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate", help="generate a synthetic dataset (PCam-format HDF5 or PNG folders)",
        description="Generate N synthetic patches. Sample i depends only on (model, settings, --seed, i), "
        "so resumed, sharded and Ray runs give the same data as one uninterrupted run.",
    )
    parser.add_argument("--n", type=int, required=True, help="number of patches")
    parser.add_argument("--out", type=Path, required=True, help="output .h5 file (pcam) or folder (png)")
    parser.add_argument("--model", default="default",
                        help="'default' (the embedded model), 'default-fast' (its few-step student), a diffusers "
                        "pipeline dir or an artifact dir")
    parser.add_argument("--backend", default="auto", help="auto | torch | onnxruntime | tensorrt")
    parser.add_argument("--device", default=None, help="e.g. cpu, cuda, cuda:1 (default: best available)")
    parser.add_argument("--dtype", default=None, choices=("fp32", "bf16", "fp16"),
                        help="torch backend weights dtype (default: fp32 on CPU, fp16 on CUDA); "
                        "ONNX backends run the artifact's export dtype")
    compile_group = parser.add_mutually_exclusive_group()
    compile_group.add_argument("--compile", dest="compile", action="store_true", default=None,
                               help="torch backend: compile the UNet ahead of time (~40 s per batch shape the first "
                               "time on a machine, ~1 s from the compile cache later). Default: --backend auto "
                               "compiles (bf16) on the CPU when --n saves more than the compile costs (~2,400 "
                               "patches with a cold cache, ~60 with a warm one)")
    compile_group.add_argument("--no-compile", dest="compile", action="store_false",
                               help="never compile (auto then picks the fastest uncompiled runtime)")
    graphs_group = parser.add_mutually_exclusive_group()
    graphs_group.add_argument("--graphs", dest="graphs", action="store_true", default=None,
                              help="torch backend on CUDA: replay the UNet as CUDA graphs (one capture per batch "
                              "shape; bit-identical to eager on the same GPU). Default: auto uses them only where "
                              "histoaug/gpu_verified.json lists a graphed runtime")
    graphs_group.add_argument("--no-graphs", dest="graphs", action="store_false", help="never use CUDA graphs")
    parser.add_argument("--guidance-until", type=float, default=None,
                        help="fast mode, approximate: classifier-free guidance over this first fraction of the "
                        "steps only (default 1 = exact; speed and PSNR per value in benchmarks/RESULTS.md)")
    parser.add_argument("--deep-cache", type=int, default=None,
                        help="fast mode, approximate, torch backend: the whole UNet every N steps only, its deep "
                        "features reused in between (default 1 = off)")
    parser.add_argument("--fast", action="store_true",
                        help="fast mode. On the embedded model (--model default): its distilled few-step student "
                        "(= --model default-fast). On other models, or with --deep-cache / --guidance-until given: "
                        f"--deep-cache {defaults.FAST_DEEP_CACHE} --guidance-until {defaults.FAST_GUIDANCE_UNTIL} "
                        "unless given (an approximation; speed, PSNR and label fidelity in docs/synthesis.md)")
    parser.add_argument("--batch-size", type=int, default=32, help="patches per model call (fixes the batch layout)")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"sampler steps (default: the model's: {defaults.DEFAULT_STEPS}, "
                        f"{defaults.STUDENT_STEPS} for a distilled student)")
    parser.add_argument("--guidance", type=float, default=None,
                        help=f"classifier-free guidance scale, 1 = off (default: the model's own: 6 for the "
                        f"embedded model, {defaults.DEFAULT_GUIDANCE} for a model without sampler_defaults.json, 1 "
                        "for a distilled student)")
    parser.add_argument("--guidance-rescale", type=float, default=None,
                        help="in [0, 1]: after guidance, the noise prediction is pulled back to the cond "
                        "prediction's scale by this fraction (diffusers' guidance_rescale; 0 = plain guidance; "
                        "default: the model's own: 0.5 for the embedded model, 0 otherwise)")
    parser.add_argument("--scheduler", default=None,
                        help=f"{' | '.join(defaults.SCHEDULER_NAMES)} (default: the model's: "
                        f"{defaults.DEFAULT_SCHEDULER}, lcm for a distilled student)")
    parser.add_argument("--seed", type=int, default=0, help="run seed")
    parser.add_argument("--labels", default="balanced", help="balanced | 0 | 1 | fraction of label 1 (e.g. 0.3)")
    parser.add_argument("--prompts", default="all", help="'all' or comma-separated prompt ids (e.g. 0,5,7)")
    parser.add_argument("--format", choices=("pcam", "png"), default="pcam", help="output format")
    parser.add_argument("--preview", type=Path, help="also write a labelled grid PNG of the first patches")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run with the same settings")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--ray", action="store_true", help="spread index ranges over Ray workers (pcam format)")
    parser.add_argument("--ray-address", default=None, help="Ray cluster address (default: start a local one)")
    parser.add_argument("--ray-workers", type=int, default=2, help="number of Ray workers (one GPU each if any)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


def _prompt_ids(spec: str) -> tuple[int, ...] | None:
    if spec == "all":
        return None
    try:
        ids = tuple(int(part) for part in spec.split(",") if part.strip())
    except ValueError:
        raise InvalidArgumentError(f"--prompts must be 'all' or comma-separated integers, not {spec!r}") from None
    if not ids:
        raise InvalidArgumentError("--prompts lists no prompt id")
    return ids


def _fast_option(given, fast: bool, fast_value, exact_value):
    """A fast-mode option: as given, else the fast preset's value with --fast, else exact."""
    if given is not None:
        return given
    return fast_value if fast else exact_value


def _resolve_fast_model(args: argparse.Namespace) -> None:
    """``--fast`` on the embedded model is its distilled few-step student (``--model default-fast``),
    which measured faster than deep cache at equal label fidelity (benchmarks/RESULTS.md, issue 27);
    with --deep-cache / --guidance-until given, or on any other model, it stays the deep-cache preset."""
    from histoaug.synthesis.model_source import DEFAULT_FAST_SOURCE, DEFAULT_SOURCE

    explicit = args.deep_cache is not None or args.guidance_until is not None
    if args.fast and str(args.model) == DEFAULT_SOURCE and not explicit:
        args.model, args.fast = DEFAULT_FAST_SOURCE, False
        logger.warning("--fast on the embedded model: its few-step student (--model %s)", DEFAULT_FAST_SOURCE)
    elif args.fast and str(args.model) == DEFAULT_FAST_SOURCE and not explicit:
        args.fast = False  # the student is the fast path already; deep cache would only cost it quality
        logger.warning("--fast: --model %s is the fast path already; sampling it as it is", DEFAULT_FAST_SOURCE)


def _check_output(args: argparse.Namespace) -> None:
    """Refuse unusable outputs before any model is loaded or any byte is written."""
    out: Path = args.out
    if out.exists() and not args.overwrite:
        raise OutputExistsError(f"{out} exists; pass --overwrite to replace it")
    parent = out.resolve().parent
    if not parent.is_dir():
        raise OutputWriteError(f"cannot write {out}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputWriteError(f"cannot write {out}: directory {parent} is not writable")
    if args.ray and args.format != "pcam":
        raise InvalidArgumentError("--ray writes the pcam format only")
    if args.preview is not None and args.preview.exists() and not args.overwrite:
        raise OutputExistsError(f"{args.preview} exists; pass --overwrite to replace it")


def _recorded_runtime(args: argparse.Namespace, backend: str, dtype: str | None,
                      compile: bool | None) -> tuple[str, str | None, bool | None]:
    """The runtime a work file was started with, for ``--resume`` with no speed flags: ``auto`` also
    weighs the compile cache, which may have changed since, and a work file is continued only by the
    runtime that started it (its rounding)."""
    import json

    work = args.out.with_name(args.out.name + ".partial")
    recorded = None
    try:
        if args.format == "pcam" and work.is_file():
            import h5py

            with h5py.File(work, "r") as handle:
                recorded = {key: handle.attrs.get(key) for key in ("backend", "dtype", "compiled")}
        elif (work / "provenance.json").is_file():
            recorded = json.loads((work / "provenance.json").read_text())
    except (OSError, ValueError):
        return backend, dtype, compile  # an unreadable work file is refused by the writer with its reason
    if not recorded or recorded.get("backend") is None:
        return backend, dtype, compile
    name = str(recorded["backend"])
    return (name, str(recorded["dtype"]) if name == "torch" else None, bool(recorded.get("compiled")))


def run(args: argparse.Namespace) -> int:
    from histoaug.generation.pcam_output import write_pcam
    from histoaug.generation.png_output import write_png_tree
    from histoaug.generation.settings import GenerationSettings
    from histoaug.seeding import parse_label_spec
    from histoaug.synthesis.model_source import sampler_defaults_of
    from histoaug.synthesis.synthesizer import load_synthesizer

    _resolve_fast_model(args)
    model_defaults = sampler_defaults_of(args.model)  # a distilled student's LCM, 4 steps, guidance 1
    settings = GenerationSettings(
        n=args.n, seed=args.seed, batch_size=args.batch_size,
        steps=model_defaults.steps if args.steps is None else args.steps,
        guidance=model_defaults.guidance if args.guidance is None else args.guidance,
        scheduler=model_defaults.scheduler if args.scheduler is None else args.scheduler,
        fraction_tumour=parse_label_spec(args.labels), prompt_ids=_prompt_ids(args.prompts),
        guidance_until=_fast_option(args.guidance_until, args.fast, defaults.FAST_GUIDANCE_UNTIL, 1.0),
        deep_cache=_fast_option(args.deep_cache, args.fast, defaults.FAST_DEEP_CACHE, 1),
        guidance_rescale=model_defaults.guidance_rescale if args.guidance_rescale is None else args.guidance_rescale,
    )
    _check_output(args)
    backend, dtype, compile = args.backend, args.dtype, args.compile
    if args.resume and backend == "auto" and dtype is None and compile is None:
        backend, dtype, compile = _recorded_runtime(args, backend, dtype, compile)
    synthesizer = load_synthesizer(args.model, backend, args.device, dtype=dtype, compile=compile,
                                   expected_patches=settings.n, batch_size=settings.batch_size,
                                   guidance=settings.guidance, graphs=args.graphs)
    if settings.deep_cache > 1 and not synthesizer.supports_deep_cache:
        raise InvalidArgumentError(f"--deep-cache runs on the torch backend, not {synthesizer.backend!r} "
                                   "(pass --backend torch, or leave --deep-cache off)")
    # Ray workers load exactly the runtime resolved here, so every shard rounds the same
    runtime = {"backend": synthesizer.backend, "device": args.device, "dtype": synthesizer.dtype,
               "compile": synthesizer.compiled}
    if synthesizer.graphs and args.ray:
        raise InvalidArgumentError("CUDA graphs with --ray are not supported yet (the Ray workers would run "
                                   "another runtime id); pass --no-graphs")
    model_id = synthesizer.model_id
    provenance = {
        "histoaug_version": __version__,
        "model": str(args.model),
        "model_id": model_id,
        "backend": synthesizer.backend,
        "dtype": synthesizer.dtype,
        "compiled": synthesizer.compiled,
        "runtime_id": synthesizer.runtime_id,
        "runtime_choice": f"--backend {args.backend}: {synthesizer.choice.reason}",
        "sampler": settings.scheduler,
        "steps": settings.steps,
        "guidance": settings.guidance,
        "guidance_until": settings.guidance_until,
        "deep_cache": settings.deep_cache,
        "guidance_rescale": settings.guidance_rescale,
        "seed": settings.seed,
        "labels": args.labels,
        "prompts": args.prompts,
        "command_line": shlex.join(args.command_line),
    }
    from histoaug.seeding import SampleAssigner

    SampleAssigner(synthesizer.prompts, run_seed=settings.seed, fraction_tumour=settings.fraction_tumour,
                   prompt_ids=settings.prompt_ids)  # unknown prompt ids fail here, before any write
    if args.ray:
        from histoaug.generation.ray_runner import write_pcam_with_ray

        del synthesizer  # each Ray worker loads its own
        summary = write_pcam_with_ray(
            args.model, settings, args.out, model_id=model_id, **runtime, workers=args.ray_workers,
            address=args.ray_address, attrs=provenance, overwrite=args.overwrite,
        )
    elif args.format == "pcam":
        summary = write_pcam(
            synthesizer, settings, args.out, model_id=model_id, attrs=provenance,
            resume=args.resume, overwrite=args.overwrite, progress=not args.quiet,
        )
    else:
        summary = write_png_tree(
            synthesizer, settings, args.out, model_id=model_id, provenance=provenance,
            resume=args.resume, overwrite=args.overwrite, progress=not args.quiet,
        )
    print(f"wrote {args.out}: {summary.items} patches "
          f"({summary.generated} generated now in {summary.seconds:.1f} s, "
          f"{summary.patches_per_second:.1f} patches/s)")
    print("per label:  " + ", ".join(f"{label}: {count}" for label, count in summary.label_counts.items()))
    print("per prompt: " + ", ".join(f"{pid}: {count}" for pid, count in summary.prompt_counts.items()))
    if args.preview is not None:
        _write_preview(args)
    return 0


def _write_preview(args: argparse.Namespace) -> None:
    import numpy as np

    from histoaug.generation.preview import save_preview

    if args.format == "pcam":
        from histoaug.data.pcam import PCam

        dataset = PCam(args.out)
        count = min(len(dataset), 64)
        images, labels = dataset.read_images(np.arange(count)), dataset.labels[:count]
    else:
        from PIL import Image

        rows = (args.out / "index.csv").read_text().splitlines()[1:65]
        paths = [row.split(",")[1] for row in rows]
        images = np.stack([np.asarray(Image.open(args.out / path)) for path in paths])
        labels = np.asarray([int(row.split(",")[2]) for row in rows])
    print(f"preview: {save_preview(images, labels, args.preview)}")
