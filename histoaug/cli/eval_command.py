"""``histoaug eval``: label fidelity, TSTR AUC and a two-sample test of a synthetic PCam file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="measure a synthetic set against real data (label fidelity, TSTR AUC, C2ST)",
        description="Train small probe CNNs to measure a synthetic PCam file (from `histoaug generate`) against "
        "the real data: label fidelity (a probe trained on the real train split labels the synthetic patches), "
        "train-on-synthetic/test-on-real ROC AUC, and a classifier two-sample test (real test vs synthetic; "
        "AUC 0.5 = indistinguishable). Needs scikit-learn (pip install 'histoaug[training]').",
    )
    parser.add_argument("synthetic", type=Path, help="synthetic PCam-format HDF5 file (x and y datasets)")
    parser.add_argument("--real", default="sample", help="real PCam root, or 'sample' (default: %(default)s)")
    parser.add_argument("--train-split", default="train", help="real split the fidelity probe trains on "
                        "(default: %(default)s)")
    parser.add_argument("--test-split", default="test", help="held-out real split (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=15, help="probe epochs (default: %(default)s)")
    parser.add_argument("--min-steps", type=int, default=300,
                        help="at least this many probe steps, for small sets (default: %(default)s)")
    parser.add_argument("--fidelity-blur-sigma", type=float, default=1.5,
                        help="focus-blur augmentation (max sigma, px) of the headline fidelity probe; a plain probe "
                        "is reported too (default: %(default)s)")
    parser.add_argument("--folds", type=int, default=4, help="two-sample-test folds (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="probe seed (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="also write the report as JSON (atomically)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from histoaug.data.pcam import PCam
    from histoaug.errors import InvalidArgumentError
    from histoaug.evaluation import ClassifierConfig, evaluate_synthetic
    from histoaug.training.data_source import resolve_data_root

    if args.epochs < 1:
        raise InvalidArgumentError(f"--epochs must be >= 1, got {args.epochs}")
    if args.min_steps < 0:
        raise InvalidArgumentError(f"--min-steps must be >= 0, got {args.min_steps}")
    synthetic = PCam(args.synthetic)
    images = synthetic.read_images(np.arange(len(synthetic)))
    report = evaluate_synthetic(
        resolve_data_root(args.real), images, synthetic.labels, train_split=args.train_split,
        test_split=args.test_split, folds=args.folds, fidelity_blur_sigma=args.fidelity_blur_sigma,
        config=ClassifierConfig(epochs=args.epochs, seed=args.seed, min_steps=args.min_steps),
        progress=not args.no_progress,
    )
    print(f"label fidelity: {report.label_fidelity:.4f} of {report.synthetic_items} synthetic patches "
          f"(label 0: {report.label_fidelity_per_label.get('0', float('nan')):.4f}, "
          f"label 1: {report.label_fidelity_per_label.get('1', float('nan')):.4f}); the probe's real "
          f"{args.test_split} accuracy {report.real_probe_test_accuracy:.4f}, AUC {report.real_probe_test_auc:.4f} "
          f"(probe with focus-blur augmentation, sigma <= {report.fidelity_blur_sigma})")
    print(f"label fidelity, plain probe: {report.plain_probe_label_fidelity:.4f} "
          f"(label 0: {report.plain_probe_label_fidelity_per_label.get('0', float('nan')):.4f}, "
          f"label 1: {report.plain_probe_label_fidelity_per_label.get('1', float('nan')):.4f}); its real "
          f"{args.test_split} accuracy {report.plain_probe_test_accuracy:.4f}")
    print(f"train on synthetic, test on real {args.test_split}: ROC AUC {report.tstr_auc:.4f} "
          f"(accuracy {report.tstr_accuracy:.4f})")
    print(f"two-sample test, real {args.test_split} vs synthetic ({report.c2st_items_per_side} each, "
          f"{report.c2st_folds} folds): ROC AUC {report.c2st_auc:.4f} (0.5 = indistinguishable)")
    if args.json:
        from histoaug.atomic_files import write_text

        write_text(args.json, json.dumps({"synthetic": str(args.synthetic), "real": str(args.real),
                                          **report.to_dict()}, indent=2) + "\n")
    return 0
