"""Label fidelity, train-on-synthetic/test-on-real AUC and a classifier two-sample test.

All three train the probe CNN of :mod:`histoaug.evaluation.classifier` (seeded, so a report
reproduces) and score on the real *test* split, which neither the generative model nor the
probes trained on:

* **label fidelity** — a probe trained on the real train split labels the synthetic patches;
  the fraction labelled as the label they were generated for. The same probe's accuracy and
  ROC AUC on the real test split are reported too: fidelity means little if that is poor.
  Two probes are trained: one with focus-blur augmentation (``fidelity_blur_sigma``, the
  headline number, so the label is judged on tissue, not on sharpness) and a plain one (flips
  and rotations only). Where the real classes differ in sharpness (the bundled sample's two
  sources are at different magnifications), the plain probe is mostly a sharpness detector and
  calls any slightly soft patch the sharper class's opposite; both numbers are reported.
* **TSTR** — a probe trained only on synthetic patches; its ROC AUC on the real test split
  (the paper's synthetic-only setting).
* **C2ST** — real test patches vs as many synthetic patches (same label mix), k-fold: a probe
  learns to tell them apart; the ROC AUC of its out-of-fold scores. 0.5 = indistinguishable,
  1.0 = always told apart.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from histoaug.data.pcam import PCam
from histoaug.errors import InvalidArgumentError
from histoaug.evaluation.classifier import ClassifierConfig, fit_classifier, predict_scores

logger = logging.getLogger(__name__)


@dataclass
class EvaluationReport:
    synthetic_items: int
    real_train_items: int
    real_test_items: int
    label_fidelity: float
    label_fidelity_per_label: dict[str, float]
    real_probe_test_accuracy: float
    real_probe_test_auc: float
    plain_probe_label_fidelity: float
    plain_probe_label_fidelity_per_label: dict[str, float]
    plain_probe_test_accuracy: float
    fidelity_blur_sigma: float
    tstr_auc: float
    tstr_accuracy: float
    c2st_auc: float
    c2st_items_per_side: int
    c2st_folds: int
    probe: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    from histoaug.training.requirements import require

    metrics = require("sklearn.metrics", purpose="histoaug eval")
    return float(metrics.roc_auc_score(labels, scores))


def accuracy(labels: np.ndarray, scores: np.ndarray) -> float:
    """Fraction of ``scores`` on the right side of 0.5."""
    return float(((np.asarray(scores) >= 0.5).astype(np.int64) == np.asarray(labels)).mean())


def _balanced_subset(labels: np.ndarray, wanted: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices into ``labels`` whose label counts equal those of ``wanted``."""
    picked = []
    for label in (0, 1):
        need = int((wanted == label).sum())
        pool = np.flatnonzero(labels == label)
        if pool.size < need:
            raise InvalidArgumentError(f"the synthetic set has {pool.size} patches of label {label}; "
                                       f"the two-sample test needs {need}")
        picked.append(rng.choice(pool, size=need, replace=False))
    return np.sort(np.concatenate(picked))


def check_patches(images: np.ndarray, labels: np.ndarray, what: str = "synthetic") -> np.ndarray:
    """Validate uint8 (N, 96, 96, 3) patches and their labels; returns the labels as int64."""
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if images.ndim != 4 or images.shape[1:] != (96, 96, 3) or images.dtype != np.uint8:
        raise InvalidArgumentError(f"{what} patches must be uint8 (N, 96, 96, 3), got {images.dtype} "
                                   f"{tuple(images.shape)}")
    if len(images) != len(labels):
        raise InvalidArgumentError(f"{len(images)} {what} patches but {len(labels)} labels")
    return labels


@dataclass(frozen=True)
class LabelAgreement:
    """How often a probe calls patches the label they carry."""

    overall: float
    per_label: dict[str, float]


def label_agreement(probe: Any, images: np.ndarray, labels: np.ndarray) -> LabelAgreement:
    """Fraction of ``images`` that ``probe`` labels as ``labels`` (overall and per label)."""
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    agrees = (predict_scores(probe, images) >= 0.5).astype(np.int64) == labels
    per_label = {str(label): float(agrees[labels == label].mean()) for label in (0, 1) if (labels == label).any()}
    return LabelAgreement(float(agrees.mean()), per_label)


def two_sample_auc(first: np.ndarray, second: np.ndarray, *, folds: int = 4, config: ClassifierConfig | None = None,
                   progress: bool = False) -> float:
    """Classifier two-sample test: ROC AUC of out-of-fold scores of a probe telling ``second`` from ``first``.

    Stratified ``folds``-fold; 0.5 = the probe cannot tell the sets apart, 1.0 = always can.
    """
    config = config or ClassifierConfig()
    if folds < 2:
        raise InvalidArgumentError(f"folds must be >= 2, got {folds}")
    if min(len(first), len(second)) < folds:
        raise InvalidArgumentError(f"the two-sample test needs at least {folds} patches per side "
                                   f"(got {len(first)} and {len(second)})")
    rng = np.random.default_rng(config.seed)
    x = np.concatenate([first, second])
    y = np.concatenate([np.zeros(len(first), np.int64), np.ones(len(second), np.int64)])
    fold_of = np.empty(len(y), dtype=np.int64)
    for side in (0, 1):  # stratified folds
        members = rng.permutation(np.flatnonzero(y == side))
        fold_of[members] = np.arange(members.size) % folds
    scores = np.empty(len(y), dtype=np.float64)
    for k in range(folds):
        held = fold_of == k
        probe = fit_classifier(x[~held], y[~held], config, progress=progress, desc=f"two-sample fold {k + 1}")
        scores[held] = predict_scores(probe, x[held])
    return roc_auc(y, scores)


def matched_synthetic(synthetic_labels: np.ndarray, real_labels: np.ndarray, seed: int) -> np.ndarray:
    """Indices of synthetic patches with the same label counts as ``real_labels`` (seeded)."""
    return _balanced_subset(synthetic_labels, real_labels, np.random.default_rng(seed))


def evaluate_synthetic(real_root: str | Path, synthetic_images: np.ndarray, synthetic_labels: np.ndarray, *,
                       train_split: str = "train", test_split: str = "test", folds: int = 4,
                       config: ClassifierConfig | None = None, fidelity_blur_sigma: float = 1.5,
                       progress: bool = False) -> EvaluationReport:
    """Run the three measures for uint8 (N, 96, 96, 3) synthetic patches and their labels."""
    config = config or ClassifierConfig()
    synthetic_labels = check_patches(synthetic_images, synthetic_labels)
    if folds < 2:
        raise InvalidArgumentError(f"folds must be >= 2, got {folds}")
    train, test = PCam(real_root, train_split), PCam(real_root, test_split)
    train_x, train_y = train.read_images(np.arange(len(train))), train.labels.astype(np.int64)
    test_x, test_y = test.read_images(np.arange(len(test))), test.labels.astype(np.int64)

    robust_probe = fit_classifier(train_x, train_y, replace(config, blur_sigma_max=fidelity_blur_sigma),
                                  progress=progress, desc="probe on real (focus-blur augmented)")
    plain_probe = fit_classifier(train_x, train_y, config, progress=progress, desc="probe on real (plain)")
    robust = label_agreement(robust_probe, synthetic_images, synthetic_labels)
    plain = label_agreement(plain_probe, synthetic_images, synthetic_labels)
    real_test_scores = predict_scores(robust_probe, test_x)
    plain_test_scores = predict_scores(plain_probe, test_x)

    tstr_probe = fit_classifier(synthetic_images, synthetic_labels, config, progress=progress,
                                desc="probe on synthetic")
    tstr_scores = predict_scores(tstr_probe, test_x)

    fake = matched_synthetic(synthetic_labels, test_y, config.seed)
    c2st = two_sample_auc(test_x, synthetic_images[fake], folds=folds, config=config, progress=progress)

    return EvaluationReport(
        synthetic_items=len(synthetic_images), real_train_items=len(train), real_test_items=len(test),
        label_fidelity=robust.overall, label_fidelity_per_label=robust.per_label,
        real_probe_test_accuracy=accuracy(test_y, real_test_scores),
        real_probe_test_auc=roc_auc(test_y, real_test_scores),
        plain_probe_label_fidelity=plain.overall, plain_probe_label_fidelity_per_label=plain.per_label,
        plain_probe_test_accuracy=accuracy(test_y, plain_test_scores),
        fidelity_blur_sigma=fidelity_blur_sigma,
        tstr_auc=roc_auc(test_y, tstr_scores),
        tstr_accuracy=accuracy(test_y, tstr_scores),
        c2st_auc=c2st, c2st_items_per_side=len(test_x), c2st_folds=folds,
        probe=asdict(config),
    )
