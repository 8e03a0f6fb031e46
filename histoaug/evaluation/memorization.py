"""``histoaug audit``: does a synthetic set copy its generator's training patches?

Diffusion models can memorise and regurgitate training images (Carlini et al. 2023; Somepalli et
al. 2023; Akbar et al. 2023 for medical images). Before a synthetic set is shared, every synthetic
patch is matched against the training split, and the same is done for held-out real patches (the
*reference*: what a generator that copies nothing should look like):

1. **feature search** -- the exact nearest training patches in a feature space of ``histoaug
   eval`` (:mod:`histoaug.evaluation.features`: Inception, a transformers vision model, or
   stain-texture; cached like eval's real-split features), standardised with the training split's
   per-dimension mean and std; nearest and second-nearest distances;
2. **thumbnail search** -- the nearest training patches by 8 x 8 x 3 block-mean thumbnails under
   all 8 flips/rotations of the query (:mod:`histoaug.evaluation.pixel_similarity`): finds the
   candidates of flipped, rotated, noisy or compressed copies that feature spaces miss;
3. **pixel check** -- the normalised correlation of the full-resolution band-pass pixel detail
   (grey, difference of Gaussians of sigma 1 and 4 px: :func:`~histoaug.evaluation.pixel_similarity.detail`)
   of the query and every candidate of 1 and 2, best of the 8 dihedral alignments: the match
   (training patch and transform), its correlation r, the second-best distinct training patch's,
   and the ratio of their distances (1 - r): a copy is far closer to one patch than to any other.

A synthetic patch is a **near-copy** when r exceeds ``max(min_correlation, reference quantile)``:
a fixed definition of a near-duplicate (0.5 by default; measured on the bundled sample, planted
copies score >= 0.98 after JPEG quality 50-75 or noise sigma 8 and >= 0.94 at sigma 15, held-out
patches of the very slides trained on <= 0.25, docs/audit.md), raised to the reference's
``1 - q`` quantile (q = 0.001) when held-out real patches get that close. The floor is what keeps
same-slide look-alikes unflagged whatever split serves as the reference; the quantile keeps the
audit from calling "copy" what held-out real data does too. The copy rate comes with a
Clopper-Pearson interval, overall and per label and prompt; the feature-space rule (closer in
features than the reference's q quantile) is reported beside it, as the look-alike rate a
feature-only audit would have flagged.

Search is exact and blocked (:mod:`histoaug.evaluation.nearest_neighbours`, faiss or torch).
:func:`write_audit_report` writes ``report.md``, ``metrics.json``, per-set ``matches_*.csv`` and
PNG figures (histograms, closest pairs) into one directory, atomically.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from histoaug._version import __version__
from histoaug.data.pcam import PCam
from histoaug.data.pcam_files import SPLITS
from histoaug.errors import InvalidArgumentError, OutputExistsError
from histoaug.evaluation.features import FeatureSpace, load_feature_space, split_features
from histoaug.evaluation.nearest_neighbours import nearest_neighbours, resolve_engine
from histoaug.evaluation.pixel_similarity import (
    DIHEDRAL_NAMES,
    ThumbnailEmbedder,
    aligned_correlation_indexed,
    aligned_scores,
    detail_units,
    dihedral_thumbnail_vectors,
)
from histoaug.evaluation.report import SyntheticSet, load_synthetic_set, slug, write_report_directory
from histoaug.training.embedding import embed_dataset

logger = logging.getLogger(__name__)

REFERENCE = "reference"
PIXEL_BLOCK = 256  # queries per pixel-check block: 256 x 20 candidates x 2,304 floats = 47 MB
# a training split whose detail vectors (2,304 floats each) fit in this many bytes is filtered once, up front
# (up to 116k patches; the bundled sample's 1,200: 11 MB); larger ones are filtered per block, candidates only
PRECOMPUTE_DETAIL_BYTES = 1 << 30
CSV_COLUMNS = ("index", "label", "prompt_id", "train_index", "correlation", "transform", "second_correlation",
               "pixel_ratio", "feature_train_index", "feature_distance", "feature_ratio", "copy")


@dataclass(frozen=True)
class DataSplit:
    """A split of a PCam-format root, and how the report names it (``sample:train``)."""

    root: Path
    split: str
    name: str


def parse_split(spec: str, default_split: str) -> DataSplit:
    """``ROOT[:split]`` -> :class:`DataSplit` (``sample`` is the bundled sample, as in ``histoaug eval``)."""
    from histoaug.sample import resolve_data_root

    root, sep, split = str(spec).rpartition(":")
    if not sep or split not in SPLITS or not root:
        root, split = str(spec), default_split
    if not root:
        raise InvalidArgumentError(f"{spec!r}: name a PCam root, e.g. sample:train or /data/pcam:train")
    return DataSplit(resolve_data_root(root), split, f"{root}:{split}")


def default_reference(train: DataSplit) -> DataSplit:
    """The training root's valid split: held-out patches of the training distribution."""
    return DataSplit(train.root, "valid", f"{train.name.rpartition(':')[0]}:valid")


@dataclass(frozen=True)
class AuditConfig:
    train: DataSplit
    reference: DataSplit
    features: str = "stain-texture"
    inception_weights: Path | None = None
    cache_dir: Path | None = None  # None: eval's default feature cache
    use_cache: bool = True
    feature_neighbours: int = 10
    pixel_neighbours: int = 10
    min_correlation: float = 0.50
    reference_quantile: float = 0.001
    confidence: float = 0.95
    engine: str = "auto"
    device: str = "cpu"
    pairs_shown: int = 16
    fail_above: float | None = None
    command_line: str = ""


@dataclass
class Matches:
    """Per query patch: its closest training patches in feature space and in aligned pixels."""

    feature_index: np.ndarray  # (Q,) nearest training patch in feature space
    feature_distance: np.ndarray  # (Q,) its standardised Euclidean distance
    feature_second: np.ndarray  # (Q,) the second-nearest's distance
    train_index: np.ndarray  # (Q,) the training patch with the highest aligned detail correlation
    correlation: np.ndarray  # (Q,) that correlation
    transform: np.ndarray  # (Q,) dihedral transform of the query that aligns it (pixel_similarity.DIHEDRAL_NAMES)
    second_correlation: np.ndarray  # (Q,) best correlation with any other training patch (NaN: none)

    @property
    def pixel_ratio(self) -> np.ndarray:
        """(1 - best) / (1 - second best) correlation: near 0 for a copy of one patch, near 1 for a look-alike."""
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = (1.0 - self.correlation) / (1.0 - self.second_correlation)
        return np.where(self.correlation >= self.second_correlation, np.clip(ratio, 0.0, 1.0), 1.0)

    @property
    def feature_ratio(self) -> np.ndarray:
        """Nearest / second-nearest feature distance (1 where both are 0)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = self.feature_distance / self.feature_second
        return np.where(self.feature_second > 0, ratio, 1.0)


@dataclass
class TrainingIndex:
    """The training split, searchable: standardised features and thumbnail vectors (both float32)."""

    dataset: PCam
    features: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    thumbnails: np.ndarray
    details: torch.Tensor | None = None  # (N, P) detail unit vectors, when they fit PRECOMPUTE_DETAIL_BYTES

    def standardise(self, features: np.ndarray) -> np.ndarray:
        return ((features - self.mean) / self.scale).astype(np.float32)


def _check_inputs(config: AuditConfig, sets: list[SyntheticSet], out: Path | None, overwrite: bool) -> None:
    if not sets:
        raise InvalidArgumentError("name at least one synthetic set (--synthetic PATH)")
    names = [entry.name for entry in sets]
    if len({slug(name) for name in names}) != len(names) or REFERENCE in names:
        raise InvalidArgumentError(f"synthetic set names must differ (also in their letters and digits) and not be "
                                   f"{REFERENCE!r}: {names}")
    if out is not None and out.exists() and not overwrite:
        raise OutputExistsError(f"{out} exists; pass --overwrite to replace it")
    if config.feature_neighbours < 2 or config.pixel_neighbours < 1:
        raise InvalidArgumentError("--feature-neighbours must be >= 2 and --pixel-neighbours >= 1, got "
                                   f"{config.feature_neighbours} and {config.pixel_neighbours}")
    if not 0.0 < config.min_correlation < 1.0:
        raise InvalidArgumentError(f"--min-correlation must be in (0, 1), got {config.min_correlation}")
    if not 0.0 < config.reference_quantile < 0.5:
        raise InvalidArgumentError(f"--reference-quantile must be in (0, 0.5), got {config.reference_quantile}")
    if not 0.5 <= config.confidence < 1.0:
        raise InvalidArgumentError(f"confidence must be in [0.5, 1), got {config.confidence}")
    if config.fail_above is not None and not 0.0 <= config.fail_above <= 1.0:
        raise InvalidArgumentError(f"--fail-above is a rate in [0, 1], got {config.fail_above}")
    resolve_engine(config.engine, config.device)


def _same_split(a: PCam, b: PCam) -> bool:
    return a.files.images.resolve() == b.files.images.resolve()


def build_training_index(train: PCam, space: FeatureSpace, config: AuditConfig, progress: bool) -> TrainingIndex:
    """Features (eval's cache) and thumbnails (cached the same way) of every training patch."""
    raw = split_features(train, space, cache_dir=config.cache_dir, use_cache=config.use_cache, progress=progress)
    mean = raw.mean(axis=0)
    scale = raw.std(axis=0)
    scale = np.where(scale > 1e-12 * max(1.0, float(np.abs(raw).max())), scale, 1.0)
    thumbs = embed_dataset(train, ThumbnailEmbedder(), batch_size=1024, cache_dir=config.cache_dir,
                           use_cache=config.use_cache, progress=progress).embeddings.numpy()
    index = TrainingIndex(train, np.empty(0, np.float32), mean, scale, np.ascontiguousarray(thumbs, np.float32))
    index.features = index.standardise(raw)
    if len(train) * 48 * 48 * 4 <= PRECOMPUTE_DETAIL_BYTES:
        index.details = torch.cat([detail_units(train.read_images(np.arange(start, min(start + 256, len(train)))),
                                                config.device) for start in range(0, len(train), 256)])
    return index


def _unique_best(indices: np.ndarray, distances: np.ndarray, keep: int) -> np.ndarray:
    """Per row, the ``keep`` distinct indices with the smallest distances (ties: lower index)."""
    order = np.lexsort((distances, indices), axis=1)  # by index, then distance
    idx = np.take_along_axis(indices, order, axis=1)
    dist = np.take_along_axis(distances, order, axis=1).copy()
    dist[:, 1:][idx[:, 1:] == idx[:, :-1]] = np.inf  # a repeat of an index: keep its best distance only
    best = np.lexsort((idx, dist), axis=1)[:, :keep]
    return np.take_along_axis(idx, best, axis=1)


def match_patches(name: str, dataset: PCam, images: np.ndarray, index: TrainingIndex, space: FeatureSpace,
                  config: AuditConfig, *, progress: bool = False) -> tuple[Matches, str]:
    """Feature search, thumbnail search and the aligned pixel check for every patch of ``dataset``.

    Returns the matches and the nearest-neighbour engine that ran.
    """
    raw = split_features(dataset, space, cache_dir=config.cache_dir, use_cache=config.use_cache, progress=progress)
    by_features = nearest_neighbours(index.standardise(raw), index.features, config.feature_neighbours,
                                     engine=config.engine, device=config.device, progress=progress,
                                     desc=f"{name}: feature search")
    thumbs = embed_dataset(dataset, ThumbnailEmbedder(), batch_size=1024, cache_dir=config.cache_dir,
                           use_cache=config.use_cache, progress=progress).embeddings.numpy()
    queries = len(thumbs)
    turned = dihedral_thumbnail_vectors(thumbs).reshape(8 * queries, -1)
    by_thumbs = nearest_neighbours(turned, index.thumbnails, config.pixel_neighbours, engine=config.engine,
                                   device=config.device, progress=progress, desc=f"{name}: thumbnail search")
    k = by_thumbs.indices.shape[1]
    thumb_idx = by_thumbs.indices.reshape(8, queries, k).transpose(1, 0, 2).reshape(queries, 8 * k)
    thumb_dist = by_thumbs.distances.reshape(8, queries, k).transpose(1, 0, 2).reshape(queries, 8 * k)
    candidates = np.concatenate([by_features.indices, _unique_best(thumb_idx, thumb_dist, k)], axis=1)

    best_index = np.empty(queries, np.int64)
    best_corr = np.empty(queries, np.float64)
    best_transform = np.empty(queries, np.int64)
    second = np.empty(queries, np.float64)
    for start in tqdm(range(0, queries, PIXEL_BLOCK), desc=f"{name}: pixel check", unit="block",
                      disable=not progress):
        cand = candidates[start:start + PIXEL_BLOCK]
        if index.details is not None:
            corr, which = aligned_scores(images[start:start + PIXEL_BLOCK],
                                         index.details[torch.from_numpy(cand).to(index.details.device)])
        else:
            unique, position = np.unique(cand, return_inverse=True)
            corr, which = aligned_correlation_indexed(images[start:start + PIXEL_BLOCK],
                                                      index.dataset.read_images(unique), position.reshape(cand.shape),
                                                      config.device)
        top = corr.argmax(axis=1)
        rows = np.arange(len(cand))
        best_index[start:start + len(cand)] = cand[rows, top]
        best_corr[start:start + len(cand)] = corr[rows, top]
        best_transform[start:start + len(cand)] = which[rows, top]
        others = np.where(cand != cand[rows, top][:, None], corr, -np.inf).max(axis=1)
        second[start:start + len(cand)] = np.where(np.isfinite(others), others, np.nan)
    matches = Matches(by_features.indices[:, 0], by_features.distances[:, 0], by_features.distances[:, 1],
                      best_index, best_corr, best_transform, second)
    return matches, by_features.engine


def clopper_pearson(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact binomial interval of a rate (the copy rate of ``trials`` patches)."""
    from scipy import stats

    if trials == 0:
        return float("nan"), float("nan")
    alpha = 1.0 - confidence
    low = 0.0 if successes == 0 else float(stats.beta.ppf(alpha / 2, successes, trials - successes + 1))
    high = 1.0 if successes == trials else float(stats.beta.ppf(1 - alpha / 2, successes + 1, trials - successes))
    return low, high


def _rate(flags: np.ndarray, confidence: float) -> dict[str, Any]:
    count, total = int(flags.sum()), int(flags.size)
    low, high = clopper_pearson(count, total, confidence)
    return {"items": total, "copies": count, "rate": count / total if total else float("nan"),
            "low": low, "high": high}


def _summary(values: np.ndarray) -> dict[str, float]:
    finite = values[np.isfinite(values)]
    if not finite.size:
        return {"min": float("nan"), "median": float("nan"), "p99": float("nan"), "max": float("nan")}
    return {"min": float(finite.min()), "median": float(np.median(finite)), "p99": float(np.quantile(finite, 0.99)),
            "max": float(finite.max())}


@dataclass(frozen=True)
class Thresholds:
    """The copy rule, calibrated on the reference."""

    correlation: float  # a patch is a near-copy when its aligned correlation exceeds this
    floor: float  # the fixed near-duplicate definition (min_correlation)
    reference_quantile_value: float  # the reference's (1 - q) quantile of aligned correlation
    binding: str  # "floor" or "reference"
    feature_distance: float  # the reference's q quantile of nearest feature distance (feature-only rule)
    quantile: float


def calibrate(reference: Matches, config: AuditConfig) -> Thresholds:
    """The stricter of the near-duplicate floor and the reference's tail (see the module docstring)."""
    q = config.reference_quantile
    tail = float(np.quantile(reference.correlation, 1.0 - q))
    binding = "reference" if tail > config.min_correlation else "floor"
    return Thresholds(max(config.min_correlation, tail), config.min_correlation, tail, binding,
                      float(np.quantile(reference.feature_distance, q)), q)


def _pair_rows(order: np.ndarray, matches: Matches, images: np.ndarray, train: PCam, prefix: str,
               flags: np.ndarray) -> list[tuple[str, np.ndarray, np.ndarray]]:
    rows = []
    for i in order:
        caption = (f"{prefix}#{i} -> train #{matches.train_index[i]}\nr = {matches.correlation[i]:.3f}, "
                   f"{DIHEDRAL_NAMES[matches.transform[i]]}" + (", COPY" if flags[i] else ""))
        rows.append((caption, images[i], train.read_images([int(matches.train_index[i])])[0]))
    return rows


def _matches_csv(matches: Matches, labels: np.ndarray, prompt_ids: np.ndarray | None, flags: np.ndarray) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    pixel_ratio, feature_ratio = matches.pixel_ratio, matches.feature_ratio
    for i in range(len(labels)):
        writer.writerow([i, int(labels[i]), "" if prompt_ids is None else int(prompt_ids[i]),
                         int(matches.train_index[i]), f"{matches.correlation[i]:.5f}",
                         DIHEDRAL_NAMES[matches.transform[i]], f"{matches.second_correlation[i]:.5f}",
                         f"{pixel_ratio[i]:.5f}", int(matches.feature_index[i]), f"{matches.feature_distance[i]:.5f}",
                         f"{feature_ratio[i]:.5f}", int(flags[i])])
    return buffer.getvalue()


def _distributions(matches: Matches) -> dict[str, Any]:
    return {"correlation": _summary(matches.correlation), "second_correlation": _summary(matches.second_correlation),
            "pixel_ratio": _summary(matches.pixel_ratio), "feature_distance": _summary(matches.feature_distance),
            "feature_ratio": _summary(matches.feature_ratio)}


def _breakdown(flags: np.ndarray, groups: np.ndarray, labels: np.ndarray, confidence: float,
               key: str) -> list[dict[str, Any]]:
    rows = []
    for group in np.unique(groups):
        members = groups == group
        row = {key: int(group), **_rate(flags[members], confidence)}
        if key == "prompt_id":
            row["label"] = int(np.bincount(labels[members], minlength=2).argmax())
        rows.append(row)
    return sorted(rows, key=lambda row: (-row["rate"], row[key])) if key == "prompt_id" else rows


def compute_audit(config: AuditConfig, sets: list[SyntheticSet], figures: Path, *,
                  progress: bool = False) -> tuple[dict[str, Any], dict[str, str]]:
    """Run the audit, draw the figures into ``figures``; return the metrics and the per-set CSV texts."""
    from histoaug.evaluation.figures import correlation_histograms, pair_grid

    _check_inputs(config, sets, None, True)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    train = PCam(config.train.root, config.train.split)
    reference = PCam(config.reference.root, config.reference.split)
    if len(train) < 2:
        raise InvalidArgumentError(f"the training split {config.train.name} has {len(train)} patch; the audit "
                                   "needs at least 2 (nearest and second-nearest)")
    if _same_split(train, reference):
        raise InvalidArgumentError(f"the reference {config.reference.name} is the training split itself; name "
                                   "held-out real patches (e.g. ROOT:valid or ROOT:test)")
    loaded = [load_synthetic_set(entry) for entry in sets]
    for entry in loaded:
        if _same_split(train, PCam(entry.path)):
            raise InvalidArgumentError(f"synthetic set {entry.name!r} is the training file itself")
    reference_x = reference.read_images(np.arange(len(reference)))
    space = load_feature_space(config.features, inception_weights=config.inception_weights, device=config.device)
    seconds["load"] = round(time.perf_counter() - start, 2)

    start = time.perf_counter()
    index = build_training_index(train, space, config, progress)
    seconds["training index"] = round(time.perf_counter() - start, 2)
    start = time.perf_counter()
    ref_matches, engine = match_patches(REFERENCE, reference, reference_x, index, space, config, progress=progress)
    thresholds = calibrate(ref_matches, config)
    ref_flags = ref_matches.correlation > thresholds.correlation
    seconds["reference"] = round(time.perf_counter() - start, 2)
    ref_order = np.argsort(-ref_matches.correlation, kind="stable")[:config.pairs_shown]
    pair_grid(_pair_rows(ref_order, ref_matches, reference_x, train, "ref ", ref_flags),
              figures / "closest_reference.png")

    csvs: dict[str, str] = {}
    results = []
    for entry in loaded:
        start = time.perf_counter()
        matches, _ = match_patches(entry.name, PCam(entry.path), entry.images, index, space, config,
                                   progress=progress)
        flags = matches.correlation > thresholds.correlation
        feature_flags = matches.feature_distance < thresholds.feature_distance
        name = slug(entry.name)
        order = np.argsort(-matches.correlation, kind="stable")[:config.pairs_shown]
        pairs = pair_grid(_pair_rows(order, matches, entry.images, train, "", flags),
                          figures / f"closest_{name}.png")
        histogram = correlation_histograms(
            {entry.name: (matches.correlation, matches.feature_distance),
             f"{REFERENCE} ({config.reference.name})": (ref_matches.correlation, ref_matches.feature_distance)},
            figures / f"histograms_{name}.png", correlation_threshold=thresholds.correlation,
            feature_threshold=thresholds.feature_distance, feature_name=space.name)
        csvs[f"matches_{name}.csv"] = _matches_csv(matches, entry.labels, entry.prompt_ids, flags)
        closest = [{"index": int(i), "train_index": int(matches.train_index[i]),
                    "correlation": float(matches.correlation[i]), "transform": DIHEDRAL_NAMES[matches.transform[i]],
                    "pixel_ratio": float(matches.pixel_ratio[i]), "label": int(entry.labels[i]),
                    "prompt_id": None if entry.prompt_ids is None else int(entry.prompt_ids[i]),
                    "copy": bool(flags[i])} for i in order]
        results.append({
            "name": entry.name, "path": str(entry.path), "items": len(entry.images),
            "labels": {str(label): int((entry.labels == label).sum()) for label in (0, 1)},
            "provenance": entry.provenance,
            "copies": _rate(flags, config.confidence),
            "feature_only": _rate(feature_flags, config.confidence),
            "by_label": _breakdown(flags, entry.labels, entry.labels, config.confidence, "label"),
            "by_prompt": (None if entry.prompt_ids is None else
                          _breakdown(flags, entry.prompt_ids, entry.labels, config.confidence, "prompt_id")),
            "distributions": _distributions(matches),
            "closest": closest,
            "figures": {"pairs": f"figures/{pairs.name}", "histograms": f"figures/{histogram.name}"},
            "matches_csv": f"matches_{name}.csv",
        })
        seconds[entry.name] = round(time.perf_counter() - start, 2)
    failed = ([] if config.fail_above is None else
              [result["name"] for result in results if result["copies"]["rate"] > config.fail_above])
    metrics = {
        "histoaug_version": __version__,
        "command_line": config.command_line,
        "train": {"root": config.train.name, "path": str(train.files.images), "items": len(train),
                  "labels": {str(label): int((train.labels == label).sum()) for label in (0, 1)}},
        "reference": {"root": config.reference.name, "path": str(reference.files.images), "items": len(reference),
                      "copies_at_threshold": _rate(ref_flags, config.confidence),
                      "distributions": _distributions(ref_matches),
                      "closest": [{"index": int(i), "train_index": int(ref_matches.train_index[i]),
                                   "correlation": float(ref_matches.correlation[i]),
                                   "transform": DIHEDRAL_NAMES[ref_matches.transform[i]]} for i in ref_order],
                      "figure": "figures/closest_reference.png"},
        "features": {"space": space.name, "description": space.description, "fingerprint": space.fingerprint,
                     "dims": int(index.features.shape[1]), "standardised": "per dimension, training mean and std"},
        "search": {"engine": engine, "exact": True, "feature_neighbours": config.feature_neighbours,
                   "pixel_neighbours": config.pixel_neighbours, "device": config.device,
                   "thumbnail": "8x8x3 block means of 12x12 px, centred, unit norm, 8 dihedral transforms of "
                                "the query"},
        "thresholds": {**asdict(thresholds), "confidence": config.confidence,
                       "rule": "near-copy: best-of-8-dihedral normalised correlation of the band-pass pixel detail "
                               "(grey, DoG sigma 1 - 4 px) with a training patch > max(floor, reference (1 - q) "
                               "quantile)"},
        "sets": results,
        "gate": {"fail_above": config.fail_above, "failed": failed},
        "seconds": seconds,
    }
    return metrics, csvs


def write_audit_report(config: AuditConfig, sets: list[SyntheticSet], out: str | Path, *, overwrite: bool = False,
                       progress: bool = False) -> dict[str, Any]:
    """Run the audit and write ``out/`` (report.md, metrics.json, matches_*.csv, figures/) atomically."""
    from histoaug.evaluation.audit_markdown import render_audit_markdown

    out = Path(out)
    _check_inputs(config, sets, out, overwrite)
    return write_report_directory(out, overwrite, lambda figures: compute_audit(config, sets, figures,
                                                                                progress=progress),
                                  render_audit_markdown)
