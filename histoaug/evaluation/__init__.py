"""histoaug.evaluation: does a synthetic set look like, and teach like, the real data?

* :mod:`~histoaug.evaluation.classifier` -- the small CNN every probe trains (plain torch,
  seeded, dihedral augmentation), on fixed data or on data that changes every epoch.
* :mod:`~histoaug.evaluation.measures` -- label fidelity, a classifier two-sample test, and
  :func:`evaluate_synthetic` (the three original measures of one set).
* :mod:`~histoaug.evaluation.features` -- feature spaces: Inception-v3 (FID), transformers
  vision models, stain-texture; cached features of PCam-format data.
* :mod:`~histoaug.evaluation.frechet` -- the Frechet distance (FID's formula).
* :mod:`~histoaug.evaluation.prdc` -- precision / recall / density / coverage.
* :mod:`~histoaug.evaluation.projection` -- UMAP (or PCA) coverage maps.
* :mod:`~histoaug.evaluation.downstream` -- the downstream AUC table over seeds.
* :mod:`~histoaug.evaluation.report` -- all of it as one report directory (``histoaug eval``).
* :mod:`~histoaug.evaluation.memorization` -- the memorization audit (``histoaug audit``): are
  synthetic patches near-copies of training patches? Built on
  :mod:`~histoaug.evaluation.nearest_neighbours` (exact search, faiss or torch) and
  :mod:`~histoaug.evaluation.pixel_similarity` (dihedral-aligned band-pass pixel correlation).

Needs scikit-learn and scipy (``training`` extra) for AUCs and intervals; matplotlib and
umap-learn (``eval`` extra) for the figures; faiss-cpu (``audit`` extra) for the audit's search.
"""

from __future__ import annotations

from histoaug.evaluation.classifier import ClassifierConfig, fit_classifier, fit_classifier_per_epoch, predict_scores
from histoaug.evaluation.measures import EvaluationReport, evaluate_synthetic, two_sample_auc

__all__ = [
    "ClassifierConfig",
    "EvaluationReport",
    "evaluate_synthetic",
    "fit_classifier",
    "fit_classifier_per_epoch",
    "predict_scores",
    "two_sample_auc",
]
