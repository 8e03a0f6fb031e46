"""Downstream utility, the paper's main table: does the synthetic data teach a classifier?

The same probe CNN (:mod:`histoaug.evaluation.classifier`, same settings, several seeds) is
trained on each *arm* and scored by ROC AUC on the real test split:

* ``real`` -- the real train split;
* ``synthetic only`` -- :class:`~histoaug.SyntheticPCam` at ratio 1 with the synthetic file as
  synthesizer: as many synthetic items per epoch as the real split has, labels matched to it,
  a new part of the file every epoch (the paper's synthetic-only setting);
* ``real + synthetic (ratio r)`` -- :class:`~histoaug.SyntheticPCam` at ratio ``r``: each epoch a
  fraction ``r`` of the real items is replaced by synthetic ones (histoaug's on-the-fly mixing);
* ``f real`` and ``f real + synthetic`` (small-real regimes) -- a stratified fraction ``f`` of
  the real train split (a different subset per seed), alone and topped up to the full split's
  size with synthetic items (the first items of a ratio-1 :class:`~histoaug.SyntheticPCam`
  epoch), where augmentation is expected to matter most.

Each arm reports the per-seed AUCs, their mean and a Student-t confidence interval over seeds
(the variation of training the probe, and of the subset in small-real arms; not of the test set).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from histoaug.data.pcam import PCam
from histoaug.errors import InvalidArgumentError
from histoaug.evaluation.classifier import ClassifierConfig, EpochData, fit_classifier_per_epoch, predict_scores
from histoaug.evaluation.measures import roc_auc
from histoaug.mixing.synthetic_pcam import SyntheticPCam

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DownstreamConfig:
    ratios: tuple[float, ...] = (0.5,)  # real + synthetic mixing ratios (0 < r < 1)
    real_fractions: tuple[float, ...] = ()  # small-real regimes, e.g. (0.01, 0.1)
    seeds: tuple[int, ...] = (0, 1, 2)
    confidence: float = 0.95
    probe: ClassifierConfig = field(default_factory=ClassifierConfig)

    def __post_init__(self) -> None:
        if not self.seeds:
            raise InvalidArgumentError("the downstream experiment needs at least one seed")
        if any(not 0.0 < r < 1.0 for r in self.ratios):
            raise InvalidArgumentError(f"mixing ratios must lie strictly between 0 and 1, got {list(self.ratios)}")
        if any(not 0.0 < f < 1.0 for f in self.real_fractions):
            raise InvalidArgumentError(f"real fractions must lie strictly between 0 and 1, got "
                                       f"{list(self.real_fractions)}")
        if not 0.0 < self.confidence < 1.0:
            raise InvalidArgumentError(f"confidence must lie strictly between 0 and 1, got {self.confidence}")


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float  # NaN with a single seed
    high: float


def t_interval(values: Sequence[float], confidence: float = 0.95,
               limits: tuple[float, float] = (-np.inf, np.inf)) -> Interval:
    """Mean and Student-t confidence interval of ``values``, clipped to ``limits`` (NaN bounds for one value)."""
    from scipy import stats

    data = np.asarray(values, dtype=np.float64)
    mean = float(data.mean())
    if data.size < 2:
        return Interval(mean, float("nan"), float("nan"))
    half = float(stats.t.ppf((1 + confidence) / 2, data.size - 1) * data.std(ddof=1) / np.sqrt(data.size))
    return Interval(mean, max(limits[0], mean - half), min(limits[1], mean + half))


@dataclass
class ArmResult:
    arm: str
    synthetic_set: str | None  # None: the arm uses no synthetic data (same for every set)
    train_items: int
    seeds: list[int]
    aucs: list[float]
    interval: Interval
    test_scores: list[np.ndarray] = field(repr=False)  # per seed, for ROC curves

    def to_dict(self) -> dict:
        return {"arm": self.arm, "synthetic_set": self.synthetic_set, "train_items": self.train_items,
                "seeds": self.seeds, "aucs": self.aucs, "mean_auc": self.interval.mean,
                "ci_low": None if np.isnan(self.interval.low) else self.interval.low,
                "ci_high": None if np.isnan(self.interval.high) else self.interval.high}


def _epoch_arrays(dataset: SyntheticPCam | PCam, count: int) -> EpochData:
    """Epoch ``e``'s first ``count`` items of ``dataset`` (``set_epoch(e)`` first, for SyntheticPCam)."""
    indices = list(range(count))

    def data(epoch: int) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(dataset, SyntheticPCam):
            dataset.set_epoch(epoch)
        items = dataset.__getitems__(indices)
        return np.stack([image for image, _ in items]), np.asarray([label for _, label in items], dtype=np.int64)

    return data


def _fixed(dataset: PCam, indices: np.ndarray) -> EpochData:
    """The same items every epoch (read once)."""
    images, labels = dataset.read_images(indices), dataset.labels[indices].astype(np.int64)
    return lambda epoch: (images, labels)


def _concatenated(first: EpochData, second: EpochData) -> EpochData:
    def data(epoch: int) -> tuple[np.ndarray, np.ndarray]:
        (xa, ya), (xb, yb) = first(epoch), second(epoch)
        return np.concatenate([xa, xb]), np.concatenate([ya, yb])

    return data


def stratified_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of ``fraction`` of each label's items (at least one per label), seeded."""
    rng = np.random.default_rng(seed)
    picked = []
    for label in (0, 1):
        pool = np.flatnonzero(labels == label)
        if pool.size:
            picked.append(rng.choice(pool, size=max(1, round(fraction * pool.size)), replace=False))
    return np.sort(np.concatenate(picked))


@dataclass(frozen=True)
class _Arm:
    name: str
    synthetic: bool
    # (seed, synthetic file or None) -> (epoch data, items per epoch, datasets to close)
    build: Callable[[int, Path | None], tuple[EpochData, int, list[SyntheticPCam]]]


def _arms(real_root: Path, train_split: str, config: DownstreamConfig) -> list[_Arm]:
    real = PCam(real_root, train_split)
    size = len(real)

    def mixed(ratio: float) -> Callable[[int, Path | None], tuple[EpochData, int, list[SyntheticPCam]]]:
        def build(seed: int, path: Path | None) -> tuple[EpochData, int, list[SyntheticPCam]]:
            if ratio == 0:
                return _fixed(real, np.arange(size)), size, []
            dataset = SyntheticPCam(real_root, train_split, ratio=ratio, synthesizer=str(path), seed=seed)
            return _epoch_arrays(dataset, size), size, [dataset]
        return build

    def small(fraction: float, top_up: bool) -> Callable[[int, Path | None], tuple[EpochData, int, list]]:
        def build(seed: int, path: Path | None) -> tuple[EpochData, int, list[SyntheticPCam]]:
            subset = stratified_subset(real.labels, fraction, seed)
            data = _fixed(real, subset)
            if not top_up:
                return data, subset.size, []
            synthetic = SyntheticPCam(real_root, train_split, ratio=1.0, synthesizer=str(path), seed=seed)
            return _concatenated(data, _epoch_arrays(synthetic, size - subset.size)), size, [synthetic]
        return build

    arms = [_Arm("real", False, mixed(0.0)), _Arm("synthetic only", True, mixed(1.0))]
    arms += [_Arm(f"real + synthetic (ratio {r:g})", True, mixed(r)) for r in config.ratios]
    for fraction in config.real_fractions:
        arms += [_Arm(f"{fraction:.0%} real", False, small(fraction, False)),
                 _Arm(f"{fraction:.0%} real + synthetic", True, small(fraction, True))]
    return arms


def run_downstream(real_root: str | Path, synthetic_sets: dict[str, Path], config: DownstreamConfig | None = None,
                   *, train_split: str = "train", test_split: str = "test",
                   progress: bool = False) -> list[ArmResult]:
    """Train every arm for every seed (synthetic arms once per set) and score on the real test split."""
    config = config or DownstreamConfig()
    real_root = Path(real_root)
    test = PCam(real_root, test_split)
    test_x, test_y = test.read_images(np.arange(len(test))), test.labels.astype(np.int64)
    if len(np.unique(test_y)) < 2:
        raise InvalidArgumentError(f"the real {test_split} split needs both labels for a ROC AUC")
    jobs = [(arm, name, path) for arm in _arms(real_root, train_split, config)
            for name, path in (synthetic_sets.items() if arm.synthetic else [(None, None)])]
    results = []
    with tqdm(total=len(jobs) * len(config.seeds), desc="downstream probes", unit="probe",
              disable=not progress) as bar:
        for arm, name, path in jobs:
            aucs, scores, items = [], [], 0
            for seed in config.seeds:
                bar.set_postfix_str(f"{arm.name}{f' / {name}' if name else ''}, seed {seed}")
                data, items, datasets = arm.build(seed, path)
                try:
                    probe = fit_classifier_per_epoch(data, replace(config.probe, seed=seed))
                finally:
                    for dataset in datasets:
                        dataset.close()
                scores.append(predict_scores(probe, test_x))
                aucs.append(roc_auc(test_y, scores[-1]))
                bar.update()
            results.append(ArmResult(arm.name, name, items, list(config.seeds), aucs,
                                     t_interval(aucs, config.confidence, (0.0, 1.0)), scores))
            logger.info("%s%s: AUC %s", arm.name, f" ({name})" if name else "", aucs)
    return results
