"""``histoaug prompts build``: baseline or morphology-enriched prompts for a PCam-format split."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("prompts", help="build training prompts (label or label x morphology type)")
    actions = parser.add_subparsers(dest="prompts_action", metavar="ACTION", parser_class=type(parser))
    build = actions.add_parser(
        "build",
        help="embed patches, cluster them into morphology types and write prompts.json + prompt ids",
        description="Embed every patch of a split with a frozen vision model, group the embeddings with "
        "K-means and write prompts.json, prompt_ids.h5 (per-image ids aligned with the PCam indices), "
        "clusters.safetensors and report.json to --out.",
    )
    build.add_argument("data", help="PCam root (files under DATA/pcam/ or DATA), or 'sample' for the bundled sample")
    build.add_argument("--out", required=True, help="prompts dir to write")
    build.add_argument("--kind", choices=("morphology", "baseline"), default="morphology",
                       help="morphology: label x K-means type (paper); baseline: label only (default: %(default)s)")
    build.add_argument("--embedder", default="facebook/dino-vits16",
                       help="transformers vision model (hub id or local dir), or 'stain-texture' for handcrafted "
                       "stain/texture features that need no pretrained model (default: %(default)s; offline, "
                       "pass a local dir or stain-texture)")
    build.add_argument("--clusters", type=int, default=33, help="number of morphology types K (default: %(default)s)")
    build.add_argument("--split", default="train", help="split to fit on (default: %(default)s)")
    build.add_argument("--batch-size", type=int, default=256, help="embedding batch size (default: %(default)s)")
    build.add_argument("--num-workers", type=int, default=0,
                       help="DataLoader workers reading and preprocessing patches (default: %(default)s)")
    build.add_argument("--device", default="cpu", help="torch device of the embedder, e.g. cuda (default: %(default)s)")
    build.add_argument("--centers-from", default=None, metavar="DIR",
                       help="assign to the K-means centres of this (training) prompts dir instead of fitting; "
                       "for valid/test splits (same --embedder required)")
    build.add_argument("--seed", type=int, default=0, help="K-means seed (default: %(default)s)")
    build.add_argument("--cache-dir", default=None,
                       help="embedding cache dir (default: $HISTOAUG_CACHE/embeddings or ~/.cache/histoaug/embeddings)")
    build.add_argument("--no-cache", action="store_true", help="neither read nor write cached embeddings")
    build.add_argument("--no-normalize", action="store_true", help="cluster raw embeddings instead of L2-normalised")
    build.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.set_defaults(handler=_dispatch, prompts_parser=parser)


def _dispatch(args: argparse.Namespace) -> int:
    if args.prompts_action == "build":
        return run_build(args)
    args.prompts_parser.print_help(sys.stderr)
    return 2


def run_build(args: argparse.Namespace) -> int:
    from histoaug.training.prompt_building import PromptBuildConfig, build_prompts

    result = build_prompts(
        PromptBuildConfig(
            data=args.data, out=args.out, kind=args.kind, split=args.split, embedder=args.embedder,
            clusters=args.clusters, seed=args.seed, batch_size=args.batch_size, num_workers=args.num_workers,
            device=args.device,
            normalize=not args.no_normalize, cache_dir=args.cache_dir, use_cache=not args.no_cache,
            centers_from=args.centers_from,
            overwrite=args.overwrite,
        )
    )
    report = result.report
    print(f"{len(result.bank)} {args.kind} prompts for {report['n']} {args.split} patches -> {result.out}")
    if args.kind == "morphology":
        sizes = report["cluster_sizes"]
        print(f"K={report['clusters']} ({report['algorithm']}): silhouette {report['silhouette']:.4f}, "
              f"cluster sizes min {min(sizes)} / max {max(sizes)}"
              + (" (embeddings from cache)" if report["embeddings_from_cache"] else ""))
    if report["unused_prompts"]:
        unused = report["unused_prompts"]
        print(f"{unused} prompt{'s have' if unused > 1 else ' has'} no training patch (never picked by default)")
    return 0
