"""``histoaug eval``'s report: every measurement of the paper for one or more synthetic sets.

:func:`write_report` computes, per synthetic set (one column each):

1. distribution distances in each requested feature space (FID with Inception-v3, a Frechet
   distance in any transformers vision model's features, or stain-texture statistics) and
   precision / recall / density / coverage, all against the real train split, with the real
   test split as the real-vs-real reference row;
2. a coverage map (UMAP, or PCA stated on the figure) of real and synthetic features;
3. the downstream table (:mod:`histoaug.evaluation.downstream`): probe ROC AUC on the real test
   split for real / synthetic / mixed / small-real arms, mean and t-interval over seeds;
4. label fidelity and the classifier two-sample test (:mod:`histoaug.evaluation.measures`);
5. patch grids, real vs synthetic per label and synthetic per prompt, and ROC curves;

and writes ``report.md``, ``metrics.json`` and the PNGs into one directory, atomically.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from tqdm.auto import tqdm

from histoaug._version import __version__
from histoaug.atomic_files import atomic_directory
from histoaug.data.pcam import PCam
from histoaug.errors import InvalidArgumentError, OutputExistsError
from histoaug.evaluation.classifier import ClassifierConfig, fit_classifier, predict_scores
from histoaug.evaluation.downstream import DownstreamConfig, run_downstream
from histoaug.evaluation.features import FeatureSpace, load_feature_space, split_features
from histoaug.evaluation.frechet import frechet_distance_of
from histoaug.evaluation.measures import (
    accuracy,
    check_patches,
    label_agreement,
    matched_synthetic,
    roc_auc,
    two_sample_auc,
)
from histoaug.evaluation.prdc import compute_prdc
from histoaug.evaluation.projection import project

logger = logging.getLogger(__name__)

REAL = "real"
MAX_PROMPT_ROWS = 24


@dataclass(frozen=True)
class ReportConfig:
    real_root: Path
    real_name: str = ""  # how the report names the real data (e.g. "sample"); default: the path
    train_split: str = "train"
    test_split: str = "test"
    features: tuple[str, ...] = ("inception",)
    inception_weights: Path | None = None
    cache_dir: Path | None = None  # None: $HISTOAUG_CACHE/embeddings or ~/.cache/histoaug/embeddings
    use_cache: bool = True
    prdc_k: int = 5
    projection: str = "auto"
    folds: int = 4
    fidelity_blur_sigma: float = 1.5
    probe: ClassifierConfig = field(default_factory=ClassifierConfig)
    downstream: DownstreamConfig = field(default_factory=DownstreamConfig)
    device: str = "cpu"
    command_line: str = ""
    preset: str = "custom"  # "full" or "quick" from the CLI; said in the report next to the settings


@dataclass(frozen=True)
class SyntheticSet:
    name: str
    path: Path


@dataclass
class LoadedSet:
    name: str
    path: Path
    images: np.ndarray
    labels: np.ndarray
    prompt_ids: np.ndarray | None
    provenance: dict[str, Any]


def load_synthetic_set(entry: SyntheticSet) -> LoadedSet:
    """Every patch, label, prompt id and provenance attribute of a synthetic file (also read by ``histoaug audit``)."""
    dataset = PCam(entry.path)
    images = dataset.read_images(np.arange(len(dataset)))
    labels = check_patches(images, dataset.labels, what=f"{entry.name!r}")
    with h5py.File(dataset.files.images, "r") as handle:
        prompt_ids = handle["prompt_id"][...].astype(np.int64) if "prompt_id" in handle else None
        provenance = {key: (value.item() if isinstance(value, np.generic) else
                            value.tolist() if isinstance(value, np.ndarray) else str(value)
                            if not isinstance(value, int | float | str | bool) else value)
                      for key, value in handle.attrs.items()}
    return LoadedSet(entry.name, entry.path, images, labels, prompt_ids, provenance)


def _prompt_counts(prompt_ids: np.ndarray | None) -> dict[str, int] | None:
    if prompt_ids is None:
        return None
    ids, counts = np.unique(prompt_ids, return_counts=True)
    return {str(pid): int(count) for pid, count in zip(ids, counts, strict=True)}


def _label_counts(labels: np.ndarray) -> dict[str, int]:
    return {str(label): int((labels == label).sum()) for label in (0, 1)}


class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def stage(self, name: str) -> _Stage:
        return _Stage(self, name)


class _Stage:
    def __init__(self, timer: _Timer, name: str) -> None:
        self.timer, self.name = timer, name

    def __enter__(self) -> None:
        self.start = time.perf_counter()
        logger.info("eval: %s", self.name)

    def __exit__(self, *exc: object) -> None:
        self.timer.seconds[self.name] = round(time.perf_counter() - self.start, 2)


def _check_inputs(config: ReportConfig, sets: list[SyntheticSet], out: Path | None, overwrite: bool) -> None:
    if not sets:
        raise InvalidArgumentError("name at least one synthetic set (--synthetic PATH)")
    names = [entry.name for entry in sets]
    if len({slug(name) for name in names}) != len(names) or REAL in names:
        raise InvalidArgumentError(f"synthetic set names must differ (also in their letters and digits) and not be "
                                   f"{REAL!r}: {names}")
    if out is not None and out.exists() and not overwrite:
        raise OutputExistsError(f"{out} exists; pass --overwrite to replace it")
    if config.folds < 2:
        raise InvalidArgumentError(f"folds must be >= 2, got {config.folds}")
    if not config.features:
        raise InvalidArgumentError("name at least one feature space (--features)")
    if config.inception_weights is not None and "inception" not in config.features:
        raise InvalidArgumentError("--inception-weights is given but --features does not include inception")


def _distances(spaces: list[FeatureSpace], config: ReportConfig, train: PCam, test: PCam,
               sets: list[LoadedSet], figures: Path, progress: bool) -> list[dict[str, Any]]:
    from histoaug.evaluation.figures import projection_figure

    results = []
    for space in spaces:
        def features(dataset: PCam, space: FeatureSpace = space) -> np.ndarray:
            return split_features(dataset, space, cache_dir=config.cache_dir, use_cache=config.use_cache,
                                  progress=progress)

        real = features(train)
        columns = {config.test_split: features(test), **{entry.name: features(PCam(entry.path)) for entry in sets}}
        rows = {}
        for name, values in columns.items():
            rows[name] = {"items": len(values), "frechet": frechet_distance_of(real, values),
                          **compute_prdc(real, values, k=config.prdc_k).to_dict()}
        projection = project({REAL: real, **{entry.name: columns[entry.name] for entry in sets}},
                             reference=REAL, method=config.projection, seed=config.probe.seed)
        figure = figures / f"projection_{slug(space.name)}.png"
        projection_figure(projection, figure, title=f"{space.name} features, real {config.train_split} vs synthetic")
        results.append({"space": space.name, "distance_name": space.distance_name, "description": space.description,
                        "fingerprint": space.fingerprint, "dims": int(real.shape[1]), "real_items": len(real),
                        "reference_split": config.train_split, "columns": rows,
                        "projection": {"method": projection.method, "note": projection.note,
                                       "figure": f"figures/{figure.name}"}})
    return results


def slug(name: str) -> str:
    """A file-name-safe form of a set or feature-space name (figure and CSV names)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("_")[:60] or "set"


def _grids(sets: list[LoadedSet], real_train: tuple[np.ndarray, np.ndarray], figures: Path) -> dict[str, Any]:
    from histoaug.evaluation.figures import patch_rows

    real_x, real_y = real_train
    out: dict[str, Any] = {}
    names = {0: "0 healthy", 1: "1 tumour"}
    for entry in sets:
        rows = []
        for label in (0, 1):
            rows.append((f"real, label {names[label]}", real_x[real_y == label]))
            rows.append((f"{entry.name}\nlabel {names[label]}", entry.images[entry.labels == label]))
        by_label = patch_rows(rows, figures / f"grid_labels_{slug(entry.name)}.png")
        record = {"labels": f"figures/{by_label.name}"}
        if entry.prompt_ids is not None:
            ids, counts = np.unique(entry.prompt_ids, return_counts=True)
            shown = ids[np.argsort(-counts, kind="stable")][:MAX_PROMPT_ROWS]
            prompt_rows = []
            for pid in sorted(shown.tolist()):
                members = entry.prompt_ids == pid
                label = int(np.bincount(entry.labels[members], minlength=2).argmax())
                prompt_rows.append((f"{entry.name}\nprompt {pid} (label {label}, {int(members.sum())})",
                                    entry.images[members]))
            by_prompt = patch_rows(prompt_rows, figures / f"grid_prompts_{slug(entry.name)}.png")
            record.update(prompts=f"figures/{by_prompt.name}", prompts_shown=len(shown), prompts_total=len(ids))
        out[entry.name] = record
    return out


# A label-fidelity figure means something only if its probe labels real held-out patches well:
# below this accuracy on the real test split the headline is withheld (a probe near chance labels
# synthetic patches near chance too, or worse, by whatever cue it picked up).
MIN_FIDELITY_PROBE_ACCURACY = 0.75


def fidelity_probe_check(probe_accuracy: float, test_split: str) -> dict[str, Any]:
    """Whether the fidelity probe is good enough on real data for its fidelity figure to be read."""
    passed = bool(probe_accuracy >= MIN_FIDELITY_PROBE_ACCURACY)
    reason = None if passed else (
        f"its probe labels the real {test_split} split with accuracy {probe_accuracy:.3f}, below "
        f"{MIN_FIDELITY_PROBE_ACCURACY}: it cannot tell the labels apart on real data, so its label for a synthetic "
        "patch means little (a split from other tissues, or too few probe steps; try --test-split valid)")
    return {"min_real_accuracy": MIN_FIDELITY_PROBE_ACCURACY, "passed": passed, "withheld_because": reason}


def _real_two_sample_reference(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                               config: ReportConfig, progress: bool) -> dict[str, Any]:
    """The two-sample test between the real train and test splits (same label mix): the score of a
    generator that reproduced the train split exactly. A test split from other slides or tissues
    makes even that high, so a synthetic set's AUC is read against it."""
    short = [label for label in (0, 1) if (train_y == label).sum() < (test_y == label).sum()]
    if short:
        return {"auc": None, "items_per_side": len(test_x), "folds": config.folds,
                "why_not": f"the train split has fewer patches of label {short[0]} than the test split"}
    same_mix = matched_synthetic(train_y, test_y, config.probe.seed)
    return {"auc": two_sample_auc(test_x, train_x[same_mix], folds=config.folds, config=config.probe,
                                  progress=progress),
            "items_per_side": len(test_x), "folds": config.folds}


def compute_report(config: ReportConfig, sets: list[SyntheticSet], figures: Path, *,
                   progress: bool = False) -> dict[str, Any]:
    """Run every measurement, draw the figures into ``figures``, and return the metrics."""
    from histoaug.evaluation.figures import roc_figure

    _check_inputs(config, sets, None, True)
    timer = _Timer()
    # every input is opened and checked before the first progress bar, so a user error is one clean line
    with timer.stage("load"):
        train, test = PCam(config.real_root, config.train_split), PCam(config.real_root, config.test_split)
        train_x, train_y = train.read_images(np.arange(len(train))), train.labels.astype(np.int64)
        test_x, test_y = test.read_images(np.arange(len(test))), test.labels.astype(np.int64)
        loaded = [load_synthetic_set(entry) for entry in sets]
        spaces = [load_feature_space(spec, inception_weights=config.inception_weights, device=config.device)
                  for spec in config.features]
    stages = tqdm(total=6, initial=1, desc="histoaug eval", unit="stage", disable=not progress)
    with timer.stage("features"):
        distances = _distances(spaces, config, train, test, loaded, figures, progress)
    stages.update()
    with timer.stage("label fidelity"):
        probe_desc = "fidelity probe on real (%s)"
        robust = fit_classifier(train_x, train_y, replace(config.probe, blur_sigma_max=config.fidelity_blur_sigma),
                                progress=progress, desc=probe_desc % "focus-blur augmented")
        plain = fit_classifier(train_x, train_y, config.probe, progress=progress, desc=probe_desc % "plain")
        robust_scores, plain_scores = predict_scores(robust, test_x), predict_scores(plain, test_x)
        probe_accuracy = accuracy(test_y, robust_scores)
        fidelity = {
            "real_probe_test_auc": roc_auc(test_y, robust_scores),
            "real_probe_test_accuracy": probe_accuracy,
            "plain_probe_test_accuracy": accuracy(test_y, plain_scores),
            "blur_sigma": config.fidelity_blur_sigma,
            "probe_check": fidelity_probe_check(probe_accuracy, config.test_split),
            "sets": {entry.name: {"blur_probe": asdict(label_agreement(robust, entry.images, entry.labels)),
                                  "plain_probe": asdict(label_agreement(plain, entry.images, entry.labels))}
                     for entry in loaded},
        }
    stages.update()
    with timer.stage("two-sample test"):
        c2st = {}
        for entry in loaded:
            fake = matched_synthetic(entry.labels, test_y, config.probe.seed)
            c2st[entry.name] = {"auc": two_sample_auc(test_x, entry.images[fake], folds=config.folds,
                                                      config=config.probe, progress=progress),
                                "items_per_side": len(test_x), "folds": config.folds}
        c2st_reference = _real_two_sample_reference(train_x, train_y, test_x, test_y, config, progress)
    stages.update()
    with timer.stage("downstream"):
        downstream = run_downstream(config.real_root, {entry.name: entry.path for entry in loaded},
                                    replace(config.downstream, probe=config.probe), train_split=config.train_split,
                                    test_split=config.test_split, progress=progress)
    stages.update()
    with timer.stage("figures"):
        grids = _grids(loaded, (train_x, train_y), figures)
        roc = roc_figure(downstream, test_y, [entry.name for entry in loaded], figures / "roc.png")
    stages.update()
    stages.close()
    return {
        "histoaug_version": __version__,
        "command_line": config.command_line,
        "real": {"root": config.real_name or str(config.real_root), "train_split": config.train_split,
                 "test_split": config.test_split,
                 "train_items": len(train), "test_items": len(test), "train_labels": _label_counts(train_y),
                 "test_labels": _label_counts(test_y)},
        "synthetic_sets": [{"name": entry.name, "path": str(entry.path), "items": len(entry.images),
                            "labels": _label_counts(entry.labels),
                            "prompts": _prompt_counts(entry.prompt_ids),
                            "provenance": entry.provenance} for entry in loaded],
        "settings": {"preset": config.preset, "probe": asdict(config.probe), "folds": config.folds,
                     "prdc_k": config.prdc_k,
                     "projection": config.projection, "features": list(config.features),
                     "downstream": {"ratios": list(config.downstream.ratios),
                                    "real_fractions": list(config.downstream.real_fractions),
                                    "seeds": list(config.downstream.seeds),
                                    "confidence": config.downstream.confidence}},
        "distances": distances,
        "label_fidelity": fidelity,
        "two_sample_test": c2st,
        "two_sample_reference": c2st_reference,
        "downstream": [result.to_dict() for result in downstream],
        "figures": {"roc": f"figures/{roc.name}", "grids": grids},
        "seconds": timer.seconds,
    }


def write_report(config: ReportConfig, sets: list[SyntheticSet], out: str | Path, *, overwrite: bool = False,
                 progress: bool = False) -> dict[str, Any]:
    """Compute the report and write ``out/`` (report.md, metrics.json, figures/) atomically."""
    from histoaug.evaluation.report_markdown import render_markdown

    out = Path(out)
    _check_inputs(config, sets, out, overwrite)
    return write_report_directory(out, overwrite, lambda figures: (
        compute_report(config, sets, figures, progress=progress), {}), render_markdown)


def write_report_directory(out: Path, overwrite: bool,
                           compute: Callable[[Path], tuple[dict[str, Any], dict[str, str]]],
                           render: Callable[[dict[str, Any]], str]) -> dict[str, Any]:
    """Stage ``out/`` (figures/, metrics.json, report.md, any extra text files ``compute`` returns)
    and move it into place in one step, so a report directory is never seen half-written.

    ``compute(figures_dir)`` returns ``(metrics, {file name: text})``; the total time goes into
    ``metrics["seconds"]["total"]``.
    """
    start = time.perf_counter()
    with atomic_directory(out, replace=overwrite) as staging:
        figures = staging / "figures"
        figures.mkdir()
        metrics, extra_files = compute(figures)
        metrics["seconds"]["total"] = round(time.perf_counter() - start, 2)
        for name, text in extra_files.items():
            (staging / name).write_text(text)
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2, default=json_default) + "\n")
        (staging / "report.md").write_text(render(metrics))
    return metrics


def json_default(value: Any) -> Any:
    """numpy scalars and paths in metrics.json."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
