"""``histoaug pcam``: work with PCam-format data (unpack the release, summarise a dataset)."""

from __future__ import annotations

import argparse
from pathlib import Path

from histoaug.data.summary import summarise_root
from histoaug.data.unpack import unpack_root
from histoaug.sample import resolve_data_root, sample_root


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("pcam", help="unpack or summarise PCam-format data")
    actions = parser.add_subparsers(dest="pcam_action", metavar="ACTION", required=True)

    unpack = actions.add_parser(
        "unpack", help="decompress the release's .h5.gz files in place (streaming)"
    )
    unpack.add_argument("root", type=Path, help="directory with camelyonpatch_*.h5.gz (or its pcam/)")
    unpack.add_argument("--overwrite", action="store_true", help="unpack again over existing .h5 files")
    unpack.add_argument("--quiet", action="store_true", help="no progress bars")
    unpack.set_defaults(handler=run_unpack)

    summary = actions.add_parser("summary", help="items, label balance and colour statistics per split")
    summary.add_argument(
        "root", type=Path, nargs="?", default=None,
        help="PCam root, a single HDF5 file, or 'sample' (default: the bundled sample)",
    )
    summary.set_defaults(handler=run_summary)


def run_unpack(args: argparse.Namespace) -> int:
    written = unpack_root(args.root, overwrite=args.overwrite, progress=not args.quiet)
    for path in written:
        print(path)
    if not written:
        print("already unpacked: nothing to do (use --overwrite to unpack the .h5.gz files again)")
    return 0


def run_summary(args: argparse.Namespace) -> int:
    root = resolve_data_root(args.root) if args.root is not None else sample_root()
    summaries = summarise_root(root)  # errors before any output
    print(f"PCam-format data at {root}")
    print(f"{'split':<6} {'items':>7} {'label 0':>8} {'label 1':>8}   mean RGB            std RGB")
    for s in summaries:
        mean = " ".join(f"{v:5.1f}" for v in s.mean_rgb)
        std = " ".join(f"{v:5.1f}" for v in s.std_rgb)
        print(f"{s.split:<6} {s.items:>7} {s.label_counts[0]:>8} {s.label_counts[1]:>8}   {mean}   {std}")
    return 0
