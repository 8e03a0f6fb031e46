"""``histoaug export SRC OUT``: a diffusers pipeline dir (or ``default``) -> histoaug artifact or plain pipeline dir."""

from __future__ import annotations

import argparse
from pathlib import Path

from histoaug.dtypes import DTYPE_NAMES


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="export a diffusers pipeline dir to an ONNX artifact (or a plain diffusers dir)")
    parser.add_argument("src", help="diffusers pipeline dir with prompts.json at its root, 'default' (the embedded "
                        "model), or an artifact that is also a pipeline dir (exported --with-text-encoder)")
    parser.add_argument("out", type=Path, help="output directory (written atomically)")
    parser.add_argument("--format", choices=("onnx", "diffusers"), default="onnx")
    parser.add_argument("--dtype", choices=DTYPE_NAMES, default="fp32",
                        help="compute dtype inside the ONNX graphs (inputs/outputs stay float32)")
    parser.add_argument("--batch", type=int, default=2,
                        help="batch of the verification run (tracing uses at least 2; the graphs take any batch)")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip the torch-vs-onnxruntime check (e.g. fp16 graphs on a CPU-only machine)")
    parser.add_argument("--with-text-encoder", action="store_true",
                        help="also copy the text encoder, tokenizer and model_index.json (onnx format), so the "
                        "artifact is a complete diffusers pipeline dir too")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from histoaug.export.artifact import ExportSettings, export_model

    settings = ExportSettings(format=args.format, dtype=args.dtype, batch=args.batch,
                              overwrite=args.overwrite, verify=not args.no_verify,
                              with_text_encoder=args.with_text_encoder, progress=not args.no_progress)
    out = export_model(args.src, args.out, settings)
    print(f"wrote {out} ({args.format}, {args.dtype})")
    return 0
