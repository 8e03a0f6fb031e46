"""``histoaug audit``: does a synthetic set copy its training patches? A report, and a release gate."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from histoaug.cli.eval_command import add_synthetic_set_arguments
from histoaug.errors import InvalidArgumentError

GATE_FAILED = 1


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "audit",
        help="memorization audit: are synthetic patches near-copies of training patches? (report, release gate)",
        description="For every synthetic patch, find its nearest training patches in a feature space (as `histoaug "
        "eval`: inception, a transformers vision model, stain-texture) and by pixel thumbnails under the 8 "
        "flips/rotations, and check them in full-resolution pixels (normalised correlation, best of the 8 "
        "alignments). Held-out real patches (--reference) get the same treatment and calibrate the copy threshold. "
        "--out DIR writes report.md, metrics.json, matches_*.csv and PNG figures. Exit code 1 when --fail-above is "
        "given and a set's copy rate exceeds it; 2 for bad input. Needs the audit extra "
        "(pip install 'histoaug[audit]').",
    )
    add_synthetic_set_arguments(parser, "audited one by one")
    parser.add_argument("--train", required=True, metavar="ROOT[:SPLIT]",
                        help="the generator's training patches: a PCam root ('sample' = the bundled sample) and "
                        "split (default split: train)")
    parser.add_argument("--reference", metavar="ROOT:SPLIT",
                        help="held-out real patches, the reference a non-copying generator matches (default: the "
                        "training root's valid split)")
    parser.add_argument("--out", type=Path, help="report directory to write (report.md, metrics.json, figures/)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out directory")
    parser.add_argument("--fail-above", type=float, metavar="RATE",
                        help="exit 1 when a set's near-copy rate exceeds RATE (e.g. 0 or 0.001): a release gate")
    group = parser.add_argument_group("search and thresholds")
    group.add_argument("--features", default="stain-texture",
                       help="feature space of the candidate search: 'stain-texture', 'inception' or a transformers "
                       "vision model (local dir or hub id) (default: %(default)s)")
    group.add_argument("--inception-weights", type=Path, metavar="PATH",
                       help="the TorchScript FID Inception-v3 (inception-2015-12-05.pt), for --features inception")
    group.add_argument("--cache-dir", type=Path, help="feature cache (default: eval's, $HISTOAUG_CACHE/embeddings "
                       "or ~/.cache/histoaug/embeddings)")
    group.add_argument("--no-cache", action="store_true", help="neither read nor write cached features")
    group.add_argument("--feature-neighbours", type=int, default=10,
                       help="candidates per patch from the feature search (default: %(default)s)")
    group.add_argument("--pixel-neighbours", type=int, default=10,
                       help="candidates per patch from the thumbnail search (default: %(default)s)")
    group.add_argument("--min-correlation", type=float, default=0.50,
                       help="near-duplicate floor of the aligned band-pass detail correlation r; the threshold is "
                       "the larger of this and the reference's tail (default: %(default)s)")
    group.add_argument("--reference-quantile", type=float, default=0.001,
                       help="tail of the reference the threshold must clear (default: %(default)s = 0.1%%)")
    group.add_argument("--neighbours", choices=("auto", "faiss", "torch"), default="auto",
                       help="exact nearest-neighbour engine: faiss (CPU) or torch block matmul (any device); same "
                       "neighbours (default: %(default)s: faiss on the CPU when installed)")
    group.add_argument("--device", default="cpu", help="device of the feature extractor and of the torch search "
                       "(default: %(default)s)")
    group.add_argument("--pairs", type=int, default=16, help="closest pairs drawn per set (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import shlex

    from histoaug.cli.eval_command import synthetic_sets
    from histoaug.evaluation.memorization import AuditConfig, default_reference, parse_split, write_audit_report

    if args.pairs < 1:
        raise InvalidArgumentError(f"--pairs must be >= 1, got {args.pairs}")
    train = parse_split(args.train, "train")
    reference = parse_split(args.reference, "valid") if args.reference else default_reference(train)
    sets = synthetic_sets(args)
    config = AuditConfig(
        train=train, reference=reference, features=args.features, inception_weights=args.inception_weights,
        cache_dir=args.cache_dir, use_cache=not args.no_cache, feature_neighbours=args.feature_neighbours,
        pixel_neighbours=args.pixel_neighbours, min_correlation=args.min_correlation,
        reference_quantile=args.reference_quantile, engine=args.neighbours, device=args.device, pairs_shown=args.pairs,
        fail_above=args.fail_above, command_line=shlex.join(args.command_line),
    )
    progress = not args.no_progress
    if args.out is not None:
        metrics = write_audit_report(config, sets, args.out, overwrite=args.overwrite, progress=progress)
    else:
        with tempfile.TemporaryDirectory(prefix="histoaug-audit-") as scratch:
            metrics = write_audit_report(config, sets, Path(scratch) / "report", progress=progress)
    threshold = metrics["thresholds"]["correlation"]
    for entry in metrics["sets"]:
        copies = entry["copies"]
        print(f"{entry['name']}: {copies['copies']} of {copies['items']} patches are near-copies of training patches "
              f"(aligned detail correlation > {threshold:.3f}): rate {copies['rate']:.4f} "
              f"[{copies['low']:.4f}, {copies['high']:.4f}]")
    ref = metrics["reference"]["copies_at_threshold"]
    print(f"reference {metrics['reference']['root']}: {ref['copies']} of {ref['items']} held-out real patches above "
          f"the threshold; search: {metrics['search']['engine']}")
    if args.out is not None:
        print(f"report: {args.out / 'report.md'}")
    if metrics["gate"]["failed"]:
        print(f"gate: copy rate above --fail-above {args.fail_above:g} for {', '.join(metrics['gate']['failed'])}")
        return GATE_FAILED
    return 0
