"""Scoring a reader study: the paper's numbers from the key and the readers' answer files.

- per reader, **sensitivity** for spotting synthetic patches (synthetic patches called synthetic /
  synthetic patches answered) and **specificity** (real patches called real / real patches
  answered), and the median over readers (the paper: 0.55 / 0.55; 0.5 / 0.5 is chance);
- the **accuracy of the label decisions** (healthy / tumour against the patch's label) on real and
  on synthetic patches, per reader and pooled;
- **pairwise Cohen's kappa** of the label decisions (``sklearn.metrics.cohen_kappa_score``), on the
  real and on the synthetic patches separately, over the patches both readers answered; mean and
  sample standard deviation over reader pairs;
- **per-patch agreement**: the share of readers behind the majority label; the most agreed true
  and false positives (tumour calls) are the paper's figure.

An incomplete answer file is scored on what it answers, and the result says so.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from histoaug.errors import InvalidArgumentError, StudyError
from histoaug.study.answers import AnswerFile, reader_key
from histoaug.study.layout import LABELS, Study


@dataclass(frozen=True)
class ScoredPatch:
    patch: str
    source: str
    set_name: str
    label: int
    readers: int
    tumour_votes: int
    synthetic_votes: int

    @property
    def majority(self) -> int | None:
        """1 (tumour) or 0 (healthy) when more than half the readers said so; None on a tie or no answers."""
        if self.readers == 0 or 2 * self.tumour_votes == self.readers:
            return None
        return int(2 * self.tumour_votes > self.readers)

    @property
    def agreement(self) -> float | None:
        if self.readers == 0:
            return None
        share = self.tumour_votes / self.readers
        return max(share, 1 - share)

    @property
    def outcome(self) -> str | None:
        """TP / FP / TN / FN of the majority's tumour call against the patch's label."""
        if self.majority is None:
            return None
        return {(1, 1): "TP", (1, 0): "FP", (0, 0): "TN", (0, 1): "FN"}[(self.majority, self.label)]


def _ratio(hits: int, total: int) -> float | None:
    return hits / total if total else None


def check_readers(files: list[AnswerFile]) -> None:
    """Refuse two answer files of one reader (same name ignoring case): which one would count?"""
    seen: dict[str, AnswerFile] = {}
    for entry in files:
        key = reader_key(entry.reader)
        if key in seen:
            where = [str(item.path or "(unsaved)") for item in (seen[key], entry)]
            raise StudyError(f"duplicate reader {entry.reader!r}: answer files {where[0]} and {where[1]}; keep one")
        seen[key] = entry


def reader_scores(study: Study, entry: AnswerFile) -> dict[str, Any]:
    """One reader's sensitivity, specificity and label accuracies."""
    counts = {(kind, what): 0 for kind in ("real", "synthetic") for what in ("answered", "called_synthetic",
                                                                              "label_right")}
    per_set: dict[str, dict[str, int]] = {}
    for patch, answer in entry.answers.items():
        truth = study.key[patch]
        counts[(truth.source, "answered")] += 1
        counts[(truth.source, "called_synthetic")] += answer.source == "synthetic"
        counts[(truth.source, "label_right")] += answer.label == LABELS[truth.label]
        row = per_set.setdefault(truth.set_name, {"answered": 0, "called_synthetic": 0, "label_right": 0})
        row["answered"] += 1
        row["called_synthetic"] += answer.source == "synthetic"
        row["label_right"] += answer.label == LABELS[truth.label]
    real_n, synth_n = counts[("real", "answered")], counts[("synthetic", "answered")]
    confidences = [answer.confidence for answer in entry.answers.values() if answer.confidence is not None]
    return {
        "reader": entry.reader, "file": str(entry.path) if entry.path else None, "mode": entry.mode,
        "answered": len(entry.answers), "missing": len(study.key) - len(entry.answers),
        "complete": len(entry.answers) == len(study.key),
        "sensitivity": _ratio(counts[("synthetic", "called_synthetic")], synth_n),
        "specificity": _ratio(real_n - counts[("real", "called_synthetic")], real_n),
        "label_accuracy_real": _ratio(counts[("real", "label_right")], real_n),
        "label_accuracy_synthetic": _ratio(counts[("synthetic", "label_right")], synth_n),
        "synthetic_answered": synth_n, "real_answered": real_n,
        "mean_confidence": float(np.mean(confidences)) if confidences else None,
        "per_set": {name: {"answered": row["answered"],
                           "called_synthetic": _ratio(row["called_synthetic"], row["answered"]),
                           "label_accuracy": _ratio(row["label_right"], row["answered"])}
                    for name, row in sorted(per_set.items())},
    }


def pairwise_kappa(study: Study, files: list[AnswerFile], source: str) -> dict[str, Any]:
    """Cohen's kappa of the label decisions of every reader pair, on the patches of ``source`` both answered."""
    from sklearn.metrics import cohen_kappa_score

    patches = [patch for patch in study.order if study.key[patch].source == source]
    size = len(files)
    matrix: list[list[float | None]] = [[1.0 if i == j else None for j in range(size)] for i in range(size)]
    common: list[list[int]] = [[0] * size for _ in range(size)]
    values = []
    for i in range(size):
        for j in range(i + 1, size):
            shared = [p for p in patches if p in files[i].answers and p in files[j].answers]
            common[i][j] = common[j][i] = len(shared)
            kappa = None
            if len(shared) >= 2:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # 0/0 when both readers give one label only: undefined
                    value = cohen_kappa_score([files[i].answers[p].label for p in shared],
                                              [files[j].answers[p].label for p in shared], labels=list(LABELS))
                kappa = None if math.isnan(value) else float(value)
            matrix[i][j] = matrix[j][i] = kappa
            if kappa is not None:
                values.append(kappa)
    return {"source": source, "readers": [entry.reader for entry in files], "matrix": matrix,
            "common_patches": common, "pairs": size * (size - 1) // 2, "defined_pairs": len(values),
            "mean": float(np.mean(values)) if values else None,
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else None}


def patch_agreement(study: Study, files: list[AnswerFile]) -> list[ScoredPatch]:
    scored = []
    for patch in study.order:
        truth = study.key[patch]
        votes = [entry.answers[patch] for entry in files if patch in entry.answers]
        scored.append(ScoredPatch(patch, truth.source, truth.set_name, truth.label, len(votes),
                                  sum(answer.label == "tumour" for answer in votes),
                                  sum(answer.source == "synthetic" for answer in votes)))
    return scored


def most_agreed(scored: list[ScoredPatch], source: str, outcome: str, count: int) -> list[ScoredPatch]:
    """The ``count`` patches of ``source`` with the given majority ``outcome`` and the highest agreement."""
    matches = [item for item in scored if item.source == source and item.outcome == outcome]
    return sorted(matches, key=lambda item: (-(item.agreement or 0), -item.readers, item.patch))[:count]


def _median(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return float(np.median(present)) if present else None


def score_study(study: Study, files: list[AnswerFile]) -> dict[str, Any]:
    """Every number of the study's report (JSON-ready)."""
    if not files:
        raise InvalidArgumentError(f"no answers to score: {study.answers_dir} is empty and no answer file was given")
    check_readers(files)
    readers = [reader_scores(study, entry) for entry in files]
    scored = patch_agreement(study, files)

    def pooled(source: str) -> float | None:
        votes = [(entry.answers[p].label == LABELS[study.key[p].label]) for entry in files for p in entry.answers
                 if study.key[p].source == source]
        return float(np.mean(votes)) if votes else None

    sets = sorted({entry.set_name for entry in study.key.values()}, key=lambda name: (name != "real", name))
    per_set = {}
    for name in sets:
        votes = [(entry.answers[p], study.key[p]) for entry in files for p in entry.answers
                 if study.key[p].set_name == name]
        per_set[name] = {"patches": sum(1 for item in study.key.values() if item.set_name == name),
                         "answers": len(votes),
                         "called_synthetic": _ratio(sum(a.source == "synthetic" for a, _ in votes), len(votes)),
                         "label_accuracy": _ratio(sum(a.label == LABELS[t.label] for a, t in votes), len(votes))}
    return {
        "study_id": study.study_id,
        "patches": len(study.key),
        "patches_by_source": {source: sum(1 for item in study.key.values() if item.source == source)
                              for source in ("real", "synthetic")},
        "readers": readers,
        "incomplete_readers": [row["reader"] for row in readers if not row["complete"]],
        "median_sensitivity": _median([row["sensitivity"] for row in readers]),
        "median_specificity": _median([row["specificity"] for row in readers]),
        "label_accuracy": {"real": pooled("real"), "synthetic": pooled("synthetic"),
                           "median_real": _median([row["label_accuracy_real"] for row in readers]),
                           "median_synthetic": _median([row["label_accuracy_synthetic"] for row in readers])},
        "per_set": per_set,
        "kappa": {"real": pairwise_kappa(study, files, "real"),
                  "synthetic": pairwise_kappa(study, files, "synthetic")},
        "per_patch": [{"patch": item.patch, "source": item.source, "set": item.set_name,
                       "label": LABELS[item.label], "readers": item.readers, "tumour_votes": item.tumour_votes,
                       "synthetic_votes": item.synthetic_votes, "majority": None if item.majority is None
                       else LABELS[item.majority], "agreement": item.agreement, "outcome": item.outcome}
                      for item in scored],
    }
