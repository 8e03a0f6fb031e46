"""histoaug.evaluation: does a synthetic set look like, and teach like, the real data?

* :mod:`~histoaug.evaluation.classifier` — the small CNN every measure trains (plain torch,
  seeded, dihedral augmentation).
* :mod:`~histoaug.evaluation.measures` — label fidelity (a classifier trained on real patches
  labels the synthetic ones), train-on-synthetic / test-on-real ROC AUC, and a classifier
  two-sample test (real vs synthetic; AUC 0.5 = indistinguishable). ``histoaug eval`` runs them.

FID needs Inception-v3 weights, which cannot be downloaded here; it is not computed.
Needs scikit-learn (the ``training`` extra) for the ROC AUC.
"""

from __future__ import annotations

from histoaug.evaluation.classifier import ClassifierConfig, fit_classifier, predict_scores
from histoaug.evaluation.measures import EvaluationReport, evaluate_synthetic

__all__ = ["ClassifierConfig", "EvaluationReport", "evaluate_synthetic", "fit_classifier", "predict_scores"]
