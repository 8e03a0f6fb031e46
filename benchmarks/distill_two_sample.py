"""Teacher vs student, told apart by a probe: the classifier two-sample test of issue 27.

``histoaug eval`` compares each synthetic set with *real* patches; a student should instead be
judged against its own teacher on the same seeds. This runs the report's two-sample probe
(``histoaug.evaluation.measures.two_sample_auc``, same settings as the committed comparison report)
between the teacher's file and each student file, plus a reference: the teacher against itself on
another seed set (``--teacher-reference``), which is what "indistinguishable" measures as here.

    python benchmarks/distill_two_sample.py --teacher T.h5 --teacher-reference T_seed1.h5 \\
        --student "4 steps=S4.h5" ... > benchmarks/results/distill_two_sample.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from histoaug.evaluation.classifier import ClassifierConfig
from histoaug.evaluation.measures import two_sample_auc
from histoaug.evaluation.report import SyntheticSet, load_synthetic_set


def _named(spec: str) -> SyntheticSet:
    name, sep, path = spec.partition("=")
    return SyntheticSet(name, Path(path)) if sep else SyntheticSet(Path(spec).stem, Path(spec))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True, type=Path, help="the teacher's synthetic file")
    parser.add_argument("--teacher-reference", type=Path, help="the teacher on other seeds (reference row)")
    parser.add_argument("--student", action="append", default=[], metavar="[NAME=]PATH", help="repeatable")
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--min-steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    probe = ClassifierConfig(epochs=args.epochs, min_steps=args.min_steps, batch_size=args.batch_size)
    teacher = load_synthetic_set(SyntheticSet("teacher", args.teacher))
    others = [_named(spec) for spec in args.student]
    if args.teacher_reference is not None:
        others.insert(0, SyntheticSet("teacher, other seeds (reference)", args.teacher_reference))
    rows = []
    for entry in others:
        other = load_synthetic_set(entry)
        start = time.perf_counter()
        auc = two_sample_auc(teacher.images, other.images, folds=args.folds, config=probe)
        rows.append({"set": entry.name, "file": str(entry.path), "patches": len(other.images),
                     "two_sample_auc_vs_teacher": round(float(auc), 4),
                     "seconds": round(time.perf_counter() - start, 1)})
        print(f"{entry.name}: two-sample AUC vs teacher {auc:.3f}", file=sys.stderr)
    json.dump({"teacher": str(args.teacher), "teacher_patches": len(teacher.images),
               "teacher_label_mean": float(np.mean(teacher.labels)),
               "probe": {"epochs": args.epochs, "min_steps": args.min_steps, "batch_size": args.batch_size,
                         "folds": args.folds},
               "rows": rows}, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
