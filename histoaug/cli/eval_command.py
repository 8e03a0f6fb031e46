"""``histoaug eval``: the paper's measurements of one or more synthetic sets, as a report directory."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from histoaug.errors import InvalidArgumentError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="measure synthetic sets against real data (FID, PRDC, coverage map, downstream AUC, C2ST) as a report",
        description="Measure one or more synthetic PCam files (from `histoaug generate`) against the real data, one "
        "column each: FID (Inception-v3) or a Frechet distance in other feature spaces, precision/recall/density/"
        "coverage, a UMAP coverage map, the downstream table (probe ROC AUC on the real test split for real, "
        "synthetic, mixed and small-real training sets, mean and t-interval over seeds), label fidelity and a "
        "classifier two-sample test. --out DIR writes report.md, metrics.json and PNG figures. Needs the eval "
        "extra (pip install 'histoaug[eval]').",
    )
    add_synthetic_set_arguments(parser, "one report column each")
    parser.add_argument("--real", default="sample", help="real PCam root, or 'sample' (default: %(default)s)")
    parser.add_argument("--train-split", default="train", help="real split the probes train on and distances "
                        "compare with (default: %(default)s)")
    parser.add_argument("--test-split", default="test", help="held-out real split (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="report directory to write (report.md, metrics.json, figures/)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out directory")
    parser.add_argument("--json", type=Path, help="also write the metrics as one JSON file (atomically)")
    group = parser.add_argument_group("feature spaces")
    group.add_argument("--features",
                       help="comma-separated: 'inception' (FID), 'stain-texture', or transformers vision models "
                       "(local dir or hub id, e.g. facebook/dinov2-small, owkin/phikon) (default: inception; "
                       "--quick: stain-texture)")
    group.add_argument("--inception-weights", type=Path, metavar="PATH",
                       help="the TorchScript FID Inception-v3 (inception-2015-12-05.pt); default: torch hub's cache, "
                       "downloaded there when online")
    group.add_argument("--cache-dir", type=Path, help="feature cache (default: $HISTOAUG_CACHE/embeddings or "
                       "~/.cache/histoaug/embeddings)")
    group.add_argument("--no-cache", action="store_true", help="neither read nor write cached features")
    group.add_argument("--prdc-k", type=int, default=5, help="nearest neighbours of the PRDC balls "
                       "(default: %(default)s)")
    group.add_argument("--projection", choices=("auto", "umap", "pca"),
                       help="coverage map method (default: auto, UMAP when installed; --quick: pca)")
    group.add_argument("--device", default="cpu", help="device of the feature extractors (default: %(default)s)")
    group = parser.add_argument_group("probes")
    group.add_argument("--epochs", type=int, help="probe epochs (default: 15; --quick: 1)")
    group.add_argument("--min-steps", type=int,
                       help="at least this many probe steps, for small sets (default: 300; --quick: 40)")
    group.add_argument("--batch-size", type=int, help="probe batch size (default: 32)")
    group.add_argument("--fidelity-blur-sigma", type=float, default=1.5,
                       help="focus-blur augmentation (max sigma, px) of the headline fidelity probe; a plain probe "
                       "is reported too (default: %(default)s)")
    group.add_argument("--folds", type=int, help="two-sample-test folds (default: 4; --quick: 2)")
    group.add_argument("--seed", type=int, default=0, help="first probe seed (default: %(default)s)")
    group.add_argument("--seeds", type=int, help="downstream probes per arm, seeds SEED.. "
                       "(default: 3; --quick: 1)")
    group.add_argument("--ratios", default="0.5", help="comma-separated real + synthetic mixing ratios "
                       "(SyntheticPCam ratio; default: %(default)s)")
    group.add_argument("--real-fractions", default="", help="comma-separated small-real regimes, e.g. 0.01,0.1: "
                       "that fraction of the real train split, alone and topped up with synthetic (default: none)")
    parser.add_argument("--quick", action="store_true",
                        help="a first look in minutes, not tens of minutes: stain-texture features, PCA map, short "
                        "probes (1 epoch, >= 40 steps, batch 32), 2 folds, 1 downstream seed; options given "
                        "explicitly win; the report says which settings ran")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(handler=run)


# the settings of a full report and of --quick; an option given on the command line overrides both
FULL = {"features": "inception", "projection": "auto", "epochs": 15, "min_steps": 300, "batch_size": 32,
        "folds": 4, "seeds": 3}
QUICK = {"features": "stain-texture", "projection": "pca", "epochs": 1, "min_steps": 40, "batch_size": 32,
         "folds": 2, "seeds": 1}


def apply_preset(args: argparse.Namespace) -> str:
    """Fill the options left unset from the full or the --quick settings; returns the preset's name."""
    preset = QUICK if args.quick else FULL
    for name, value in preset.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return "quick" if args.quick else "full"


def _floats(text: str, option: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise InvalidArgumentError(f"{option} takes comma-separated numbers, not {text!r}") from None


def add_synthetic_set_arguments(parser: argparse.ArgumentParser, what_each_is: str) -> None:
    """Positional SYNTHETIC files and ``--synthetic [NAME=]PATH`` (read back by :func:`synthetic_sets`)."""
    parser.add_argument("synthetic_files", nargs="*", type=Path, metavar="SYNTHETIC",
                        help="synthetic PCam-format HDF5 file(s); same as --synthetic")
    parser.add_argument("--synthetic", action="append", default=[], metavar="[NAME=]PATH",
                        help=f"a synthetic set (repeatable; {what_each_is}; NAME defaults to the file stem)")


def synthetic_sets(args: argparse.Namespace) -> list:
    """``--synthetic [NAME=]PATH`` and positional files as named sets (names from file stems by default)."""
    from histoaug.evaluation.report import SyntheticSet

    entries = [(None, path) for path in args.synthetic_files]
    for spec in args.synthetic:
        name, sep, path = spec.partition("=")
        if sep and name and "/" not in name and not Path(spec).exists():
            entries.append((name, Path(path)))
        else:
            entries.append((None, Path(spec)))
    sets = []
    for name, path in entries:
        if not path.is_file():
            raise InvalidArgumentError(f"synthetic set {str(path)!r}: no such file")
        sets.append(SyntheticSet(name or path.stem, path))
    return sets


def run(args: argparse.Namespace) -> int:
    import shlex

    from histoaug.evaluation.classifier import ClassifierConfig
    from histoaug.evaluation.downstream import DownstreamConfig
    from histoaug.evaluation.report import ReportConfig, write_report
    from histoaug.sample import resolve_data_root

    preset = apply_preset(args)
    if args.epochs < 1:
        raise InvalidArgumentError(f"--epochs must be >= 1, got {args.epochs}")
    if args.min_steps < 0:
        raise InvalidArgumentError(f"--min-steps must be >= 0, got {args.min_steps}")
    if args.batch_size < 2:
        raise InvalidArgumentError(f"--batch-size must be >= 2, got {args.batch_size}")
    if args.seeds < 1:
        raise InvalidArgumentError(f"--seeds must be >= 1, got {args.seeds}")
    if args.json is not None and args.json.exists() and not args.overwrite:
        raise InvalidArgumentError(f"{args.json} exists; pass --overwrite to replace it")
    sets = synthetic_sets(args)
    probe = ClassifierConfig(epochs=args.epochs, seed=args.seed, min_steps=args.min_steps, batch_size=args.batch_size)
    config = ReportConfig(
        real_root=resolve_data_root(args.real), real_name=str(args.real), train_split=args.train_split,
        test_split=args.test_split,
        features=tuple(part.strip() for part in args.features.split(",") if part.strip()),
        inception_weights=args.inception_weights, cache_dir=args.cache_dir, use_cache=not args.no_cache,
        prdc_k=args.prdc_k, projection=args.projection, folds=args.folds,
        fidelity_blur_sigma=args.fidelity_blur_sigma, probe=probe,
        downstream=DownstreamConfig(ratios=_floats(args.ratios, "--ratios"),
                                    real_fractions=_floats(args.real_fractions, "--real-fractions"),
                                    seeds=tuple(range(args.seed, args.seed + args.seeds))),
        device=args.device, command_line=shlex.join(args.command_line), preset=preset,
    )
    progress = not args.no_progress
    if args.out is not None:
        metrics = write_report(config, sets, args.out, overwrite=args.overwrite, progress=progress)
    else:
        with tempfile.TemporaryDirectory(prefix="histoaug-eval-") as scratch:
            metrics = write_report(config, sets, Path(scratch) / "report", progress=progress)
    _print_summary(metrics)
    if args.out is not None:
        print(f"report: {args.out / 'report.md'}")
    if args.json is not None:
        from histoaug.atomic_files import write_text

        write_text(args.json, json.dumps(metrics, indent=2, default=str) + "\n")
    return 0


def _print_summary(metrics: dict) -> None:
    downstream = metrics["downstream"]
    for entry in metrics["synthetic_sets"]:
        name = entry["name"]
        parts = []
        for space in metrics["distances"]:
            column = space["columns"][name]
            parts.append(f"{space['distance_name']} {column['frechet']:.2f} (precision {column['precision']:.3f}, "
                         f"recall {column['recall']:.3f}, coverage {column['coverage']:.3f})")
        tstr = [row["mean_auc"] for row in downstream
                if row["arm"] == "synthetic only" and row["synthetic_set"] == name]
        fidelity = metrics["label_fidelity"]["sets"][name]["blur_probe"]["overall"]
        check = metrics["label_fidelity"].get("probe_check") or {"passed": True}
        fidelity_text = (f"label fidelity {fidelity:.3f}" if check["passed"] else
                         f"label fidelity withheld (probe accuracy on real "
                         f"{metrics['real']['test_split']} {metrics['label_fidelity']['real_probe_test_accuracy']:.3f}"
                         f" < {check['min_real_accuracy']})")
        parts.append(f"train-on-synthetic AUC {tstr[0]:.3f}, {fidelity_text}, "
                     f"two-sample AUC {metrics['two_sample_test'][name]['auc']:.3f}")
        print(f"{name}: " + "; ".join(parts))
    real = [row for row in downstream if row["arm"] == "real"]
    if real:
        print(f"real only: AUC {real[0]['mean_auc']:.3f}")
