"""Prompt building: one prompt per patch, from its label (baseline) or label x morphology type.

Baseline (paper): the label only, 2 prompts. Morphology-enriched (paper): a frozen DINO ViT
embeds every training patch, K-means groups the embeddings into K morphology types, and the
prompt of a patch names its label and type: 2 x K prompts (66 for K = 33), ids
``label * K + type``.

A prompts dir holds:

``prompts.json``
    the :class:`~histoaug.prompts.PromptBank` (shared with the runtime).
``prompt_ids.h5``
    the per-image prompt ids, aligned with the PCam indices of the split. Datasets
    ``prompt_id`` (N,) int32, ``label`` (N,) uint8 and ``morphology`` (N,) int16 (-1 for
    baseline); attributes ``format`` (``histoaug.prompt_ids/1``), ``kind``, ``split``, ``n``,
    ``data_hash`` (SHA-256 of the split's labels and images), ``embedder``, ``embedder_hash``,
    ``clusters``, ``seed``, ``silhouette``.
``clusters.safetensors`` (morphology only)
    the K-means centres (``centers`` (K, D)) and ``sizes``, to assign other splits later
    with :func:`histoaug.training.clustering.assign_clusters`.
``report.json``
    cluster sizes, silhouette and patches per prompt, to compare choices of K.

The dir is written under a temporary name and renamed when complete.

K-means is fitted on the training split. To give another split (valid, test) the same
morphology types, build its dir with ``centers_from`` (``--centers-from TRAIN_PROMPTS_DIR``):
its patches are embedded with the same model (checked by hash) and assigned to the nearest
training centre; the prompts are the training dir's.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from histoaug.atomic_files import atomic_directory
from histoaug.errors import ArtifactError, InvalidArgumentError, OutputExistsError, OutputWriteError
from histoaug.prompts import PROMPTS_FILE, Prompt, PromptBank
from histoaug.training.clustering import DEFAULT_CLUSTERS, ClusterConfig, assign_clusters, fit_clusters, silhouette
from histoaug.training.data_source import open_split
from histoaug.training.embedding import DEFAULT_EMBEDDER, embed_dataset, load_embedder
from histoaug.training.hashing import dataset_hash

logger = logging.getLogger(__name__)

PROMPT_IDS_FILE = "prompt_ids.h5"
PROMPT_IDS_FORMAT = "histoaug.prompt_ids/1"
CLUSTERS_FILE = "clusters.safetensors"
REPORT_FILE = "report.json"
KINDS = ("morphology", "baseline")

CONDITIONS = {0: "healthy", 1: "cancerous"}
MORPHOLOGY_TEMPLATE = "a histopathology image of {condition} lymph node tissue, morphology type {morphology}"


def morphology_bank(clusters: int, template: str = MORPHOLOGY_TEMPLATE) -> PromptBank:
    """The 2 x K label x morphology-type prompts, id ``label * K + type``."""
    if clusters < 1:
        raise InvalidArgumentError(f"the number of morphology types must be >= 1, got {clusters}")
    prompts = [
        Prompt(label * clusters + m, label, m, template.format(condition=CONDITIONS[label], morphology=m))
        for label in (0, 1)
        for m in range(clusters)
    ]
    return PromptBank(prompts, kind="morphology", template=template)


@dataclass
class PromptBuildConfig:
    data: str
    out: str
    kind: str = "morphology"
    split: str = "train"
    embedder: str = DEFAULT_EMBEDDER
    clusters: int = DEFAULT_CLUSTERS
    seed: int = 0
    batch_size: int = 256
    num_workers: int = 0
    device: str = "cpu"
    normalize: bool = True
    cache_dir: str | None = None
    use_cache: bool = True
    centers_from: str | None = None  # a morphology prompts dir: assign to its centres instead of fitting
    overwrite: bool = False
    progress: bool = True


@dataclass
class PromptAssignment:
    """Per-image prompt ids of one split, as read from ``prompt_ids.h5``."""

    prompt_ids: np.ndarray
    labels: np.ndarray
    morphology: np.ndarray
    attrs: dict = field(default_factory=dict)


@dataclass
class PromptBuildResult:
    out: Path
    bank: PromptBank
    assignment: PromptAssignment
    report: dict


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise OutputExistsError(f"{out} exists; pass --overwrite to replace it")


def build_prompts(config: PromptBuildConfig) -> PromptBuildResult:
    """Embed, cluster and write a prompts dir (see the module docstring for its files)."""
    if config.kind not in KINDS:
        raise InvalidArgumentError(f"prompt kind must be one of {', '.join(KINDS)}, got {config.kind!r}")
    if config.centers_from and config.kind != "morphology":
        raise InvalidArgumentError("--centers-from applies to --kind morphology")
    if config.num_workers < 0:
        raise InvalidArgumentError(f"num-workers must be >= 0, got {config.num_workers}")
    out = Path(config.out).expanduser()
    _check_out(out, config.overwrite)
    dataset = open_split(config.data, config.split)
    labels = dataset.labels.astype(np.uint8)
    n = len(labels)
    if n == 0:
        raise InvalidArgumentError(f"the {config.split} split of {config.data} is empty")
    data_hash = dataset_hash(dataset)
    attrs: dict = {
        "format": PROMPT_IDS_FORMAT, "kind": config.kind, "split": config.split, "n": n,
        "data_hash": data_hash, "seed": config.seed,
    }
    report: dict = {"kind": config.kind, "split": config.split, "n": n, "data": str(config.data)}
    centers = sizes = None
    if config.kind == "baseline":
        bank = PromptBank.baseline()
        prompt_ids = labels.astype(np.int32)
        morphology = np.full(n, -1, dtype=np.int16)
    elif config.centers_from:
        bank, centers, fitted = _load_fitted(Path(config.centers_from).expanduser())
        clusters = len(centers)
        embedder = load_embedder(config.embedder, device=config.device)
        if embedder.fingerprint != fitted["embedder_hash"]:
            raise InvalidArgumentError(
                f"--embedder {config.embedder!r} is not the model the clusters in {config.centers_from} were fitted "
                f"with ({fitted.get('embedder', 'unknown')}); pass that model"
            )
        embedded = embed_dataset(
            dataset, embedder, batch_size=config.batch_size, cache_dir=config.cache_dir,
            use_cache=config.use_cache, data_hash=data_hash, num_workers=config.num_workers,
            progress=config.progress,
        )
        normalize = fitted["normalize"] == "True"
        assigned = assign_clusters(embedded.embeddings, centers, normalize=normalize)
        sizes = np.bincount(assigned, minlength=clusters).astype(np.int64)
        score = silhouette(embedded.embeddings, assigned, normalize=normalize, seed=config.seed)
        morphology = assigned.astype(np.int16)
        prompt_ids = (labels.astype(np.int32) * clusters + assigned).astype(np.int32)
        attrs.update(embedder=config.embedder, embedder_hash=embedded.model_hash, clusters=clusters,
                     silhouette=score, normalize=normalize, centers_from=str(config.centers_from))
        report.update(
            embedder=config.embedder, embedder_hash=embedded.model_hash, embeddings_from_cache=embedded.from_cache,
            embedding_dim=int(embedded.embeddings.shape[1]), clusters=clusters, algorithm="nearest centre",
            centers_from=str(config.centers_from), silhouette=score, cluster_sizes=sizes.tolist(),
        )
    else:
        if config.clusters > n:  # fail before loading and running the embedder
            raise InvalidArgumentError(
                f"cannot make {config.clusters} clusters from {n} patches; pass --clusters at most {n}"
            )
        embedder = load_embedder(config.embedder, device=config.device)
        embedded = embed_dataset(
            dataset, embedder, batch_size=config.batch_size, cache_dir=config.cache_dir,
            use_cache=config.use_cache, data_hash=data_hash, num_workers=config.num_workers,
            progress=config.progress,
        )
        clustering = fit_clusters(
            embedded.embeddings, ClusterConfig(clusters=config.clusters, seed=config.seed, normalize=config.normalize)
        )
        bank = morphology_bank(config.clusters)
        morphology = clustering.assignments.astype(np.int16)
        prompt_ids = (labels.astype(np.int32) * config.clusters + clustering.assignments).astype(np.int32)
        centers, sizes = clustering.centers, clustering.sizes
        attrs.update(
            embedder=config.embedder, embedder_hash=embedded.model_hash, clusters=config.clusters,
            silhouette=clustering.silhouette, normalize=config.normalize,
        )
        report.update(
            embedder=config.embedder, embedder_hash=embedded.model_hash, embeddings_from_cache=embedded.from_cache,
            embedding_dim=int(embedded.embeddings.shape[1]), clusters=config.clusters,
            algorithm=clustering.algorithm, silhouette=clustering.silhouette, inertia=clustering.inertia,
            cluster_sizes=clustering.sizes.tolist(),
        )
    counts = np.bincount(prompt_ids, minlength=len(bank))
    report["patches_per_prompt"] = counts.tolist()
    report["unused_prompts"] = int((counts == 0).sum())
    bank = bank.with_patch_counts(counts)
    assignment = PromptAssignment(prompt_ids, labels, morphology, attrs)
    _write_dir(out, bank, assignment, centers, sizes, report, config)
    logger.info("wrote %d %s prompts for %d patches to %s", len(bank), config.kind, n, out)
    return PromptBuildResult(out, bank, assignment, report)


def _load_fitted(directory: Path) -> tuple[PromptBank, np.ndarray, dict[str, str]]:
    """Bank, K-means centres and their metadata from a morphology prompts dir."""
    path = directory / CLUSTERS_FILE
    if not path.is_file():
        raise ArtifactError(f"{path} is missing: --centers-from needs a morphology prompts dir")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            centers = handle.get_tensor("centers").numpy()
    except (OSError, ValueError, KeyError) as exc:
        raise ArtifactError(f"{path}: cannot read the cluster centres ({exc})") from exc
    bank = PromptBank.load(directory / PROMPTS_FILE)
    if bank.kind != "morphology" or len(bank) != 2 * len(centers) or "embedder_hash" not in metadata:
        raise ArtifactError(f"{directory} is not a consistent morphology prompts dir")
    return bank, centers, metadata


def _write_dir(out: Path, bank: PromptBank, assignment: PromptAssignment, centers, sizes, report: dict,
               config: PromptBuildConfig) -> None:
    try:
        with atomic_directory(out, replace=True) as work:
            _fill_dir(work, bank, assignment, centers, sizes, {**report, "config": asdict(config)})
    except OSError as exc:
        raise OutputWriteError(f"cannot write prompts dir {out}: {exc}") from exc


def _fill_dir(work: Path, bank: PromptBank, assignment: PromptAssignment, centers, sizes, report: dict) -> None:
    """The prompts dir's files, written into the staging dir of :func:`_write_dir`."""
    bank.save(work / PROMPTS_FILE)
    with h5py.File(work / PROMPT_IDS_FILE, "w") as handle:
        handle.create_dataset("prompt_id", data=assignment.prompt_ids.astype(np.int32))
        handle.create_dataset("label", data=assignment.labels.astype(np.uint8))
        handle.create_dataset("morphology", data=assignment.morphology.astype(np.int16))
        for key, value in assignment.attrs.items():
            handle.attrs[key] = value
    if centers is not None:
        save_file(
            {"centers": torch.from_numpy(np.ascontiguousarray(centers)), "sizes": torch.from_numpy(sizes)},
            work / CLUSTERS_FILE,
            metadata={"embedder_hash": str(assignment.attrs.get("embedder_hash")),
                      "embedder": str(assignment.attrs.get("embedder")),
                      "normalize": str(assignment.attrs.get("normalize"))},
        )
    (work / REPORT_FILE).write_text(json.dumps(report, indent=2, default=str) + "\n")


def load_prompts_dir(directory: str | Path) -> tuple[PromptBank, PromptAssignment]:
    """Read a prompts dir: its bank and per-image ids, checked against each other."""
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise ArtifactError(f"prompts dir {directory} does not exist; build one with `histoaug prompts build`")
    bank = PromptBank.load(directory / PROMPTS_FILE)
    path = directory / PROMPT_IDS_FILE
    if not path.is_file():
        raise ArtifactError(f"{path} is missing; rebuild the prompts dir with `histoaug prompts build`")
    try:
        with h5py.File(path, "r") as handle:
            attrs = {key: (value.item() if hasattr(value, "item") else value) for key, value in handle.attrs.items()}
            assignment = PromptAssignment(
                prompt_ids=handle["prompt_id"][()].astype(np.int64),
                labels=handle["label"][()].astype(np.uint8),
                morphology=handle["morphology"][()].astype(np.int16),
                attrs=attrs,
            )
    except (OSError, KeyError) as exc:
        raise ArtifactError(f"{path}: cannot read prompt ids ({exc})") from exc
    if attrs.get("format") != PROMPT_IDS_FORMAT:
        raise ArtifactError(f"{path}: not a {PROMPT_IDS_FORMAT} file")
    ids = assignment.prompt_ids
    if ids.size and (ids.min() < 0 or ids.max() >= len(bank)):
        raise ArtifactError(f"{path}: prompt ids outside 0..{len(bank) - 1}")
    prompt_labels = np.array([p.label for p in bank], dtype=np.uint8)
    if ids.size and not np.array_equal(prompt_labels[ids], assignment.labels):
        raise ArtifactError(f"{path}: prompt ids disagree with the stored labels")
    return bank, assignment
