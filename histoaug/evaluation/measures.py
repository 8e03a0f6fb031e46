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


def evaluate_synthetic(real_root: str | Path, synthetic_images: np.ndarray, synthetic_labels: np.ndarray, *,
                       train_split: str = "train", test_split: str = "test", folds: int = 4,
                       config: ClassifierConfig | None = None, fidelity_blur_sigma: float = 1.5,
                       progress: bool = False) -> EvaluationReport:
    """Run the three measures for uint8 (N, 96, 96, 3) synthetic patches and their labels."""
    config = config or ClassifierConfig()
    synthetic_labels = np.asarray(synthetic_labels).reshape(-1).astype(np.int64)
    if synthetic_images.ndim != 4 or synthetic_images.shape[1:] != (96, 96, 3) or synthetic_images.dtype != np.uint8:
        raise InvalidArgumentError(f"synthetic patches must be uint8 (N, 96, 96, 3), got {synthetic_images.dtype} "
                                   f"{tuple(synthetic_images.shape)}")
    if len(synthetic_images) != len(synthetic_labels):
        raise InvalidArgumentError(f"{len(synthetic_images)} synthetic patches but {len(synthetic_labels)} labels")
    if folds < 2:
        raise InvalidArgumentError(f"folds must be >= 2, got {folds}")
    train, test = PCam(real_root, train_split), PCam(real_root, test_split)
    train_x, train_y = train.read_images(np.arange(len(train))), train.labels.astype(np.int64)
    test_x, test_y = test.read_images(np.arange(len(test))), test.labels.astype(np.int64)

    def fidelity(probe_config: ClassifierConfig, desc: str) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
        probe = fit_classifier(train_x, train_y, probe_config, progress=progress, desc=desc)
        agrees = (predict_scores(probe, synthetic_images) >= 0.5).astype(np.int64) == synthetic_labels
        per_label = {str(label): float(agrees[synthetic_labels == label].mean())
                     for label in (0, 1) if (synthetic_labels == label).any()}
        return predict_scores(probe, test_x), agrees, per_label

    robust = replace(config, blur_sigma_max=fidelity_blur_sigma)
    real_test_scores, agrees, per_label = fidelity(robust, "probe on real (focus-blur augmented)")
    plain_test_scores, plain_agrees, plain_per_label = fidelity(config, "probe on real (plain)")

    tstr_probe = fit_classifier(synthetic_images, synthetic_labels, config, progress=progress,
                                desc="probe on synthetic")
    tstr_scores = predict_scores(tstr_probe, test_x)

    rng = np.random.default_rng(config.seed)
    fake = _balanced_subset(synthetic_labels, test_y, rng)
    c2st_x = np.concatenate([test_x, synthetic_images[fake]])
    c2st_y = np.concatenate([np.zeros(len(test_x), np.int64), np.ones(len(fake), np.int64)])
    fold_of = np.empty(len(c2st_y), dtype=np.int64)
    for side in (0, 1):  # stratified folds
        members = rng.permutation(np.flatnonzero(c2st_y == side))
        fold_of[members] = np.arange(members.size) % folds
    c2st_scores = np.empty(len(c2st_y), dtype=np.float64)
    for k in range(folds):
        held = fold_of == k
        probe = fit_classifier(c2st_x[~held], c2st_y[~held], config, progress=progress, desc=f"C2ST fold {k + 1}")
        c2st_scores[held] = predict_scores(probe, c2st_x[held])

    return EvaluationReport(
        synthetic_items=len(synthetic_images), real_train_items=len(train), real_test_items=len(test),
        label_fidelity=float(agrees.mean()), label_fidelity_per_label=per_label,
        real_probe_test_accuracy=float(((real_test_scores >= 0.5).astype(np.int64) == test_y).mean()),
        real_probe_test_auc=roc_auc(test_y, real_test_scores),
        plain_probe_label_fidelity=float(plain_agrees.mean()), plain_probe_label_fidelity_per_label=plain_per_label,
        plain_probe_test_accuracy=float(((plain_test_scores >= 0.5).astype(np.int64) == test_y).mean()),
        fidelity_blur_sigma=fidelity_blur_sigma,
        tstr_auc=roc_auc(test_y, tstr_scores),
        tstr_accuracy=float(((tstr_scores >= 0.5).astype(np.int64) == test_y).mean()),
        c2st_auc=roc_auc(c2st_y, c2st_scores), c2st_items_per_side=len(test_x), c2st_folds=folds,
        probe=asdict(config),
    )
