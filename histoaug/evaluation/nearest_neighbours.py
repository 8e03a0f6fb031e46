"""Exact k-nearest-neighbour search in blocks: faiss (``IndexFlatL2``) or torch matmul, same answer.

The memorization audit (:mod:`histoaug.evaluation.memorization`) asks, for every synthetic and
held-out real patch, which training patches are closest. Both engines here are *exact* (brute
force, no approximate index), so they find the same neighbours; they differ only in speed:

* ``faiss`` -- ``faiss.IndexFlatL2`` (the ``audit`` extra installs ``faiss-cpu``): BLAS-blocked
  distance computation with a fused top-k, multi-threaded over OpenMP; CPU only here.
* ``torch`` -- ``||q||^2 + ||b||^2 - 2 q.b`` by matmul over blocks of queries and of the base,
  keeping a running top-k; runs on any torch device (a GPU makes 262k x 100k seconds).

Both search in float32 and return ``k + margin`` candidates, which are then re-ranked with float64
distances and sorted by (distance, index); a query whose last candidate ties the k-th (within
float32 rounding: duplicated training patches, quantised features) is searched again by float64
brute force. So the result does not depend on the engine's rounding or tie order: faiss and torch
give identical neighbours and distances (tests/test_audit_neighbours.py checks it, ties included).
``engine="auto"`` takes faiss when it is installed and the device is the CPU, else torch; the engine
that ran is returned and the audit report states it.

Memory is bounded by the blocks: the base is held once (float32, N x D), the distance blocks are
``query_block x base_block`` floats.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from histoaug.errors import InvalidArgumentError

logger = logging.getLogger(__name__)

ENGINES = ("auto", "faiss", "torch")
RERANK_MARGIN = 8  # extra float32 candidates re-ranked in float64 (engine-independent results)
QUERY_BLOCK = 4096
BASE_BLOCK = 65536


@dataclass(frozen=True)
class Neighbours:
    """``indices[i, j]``: the j-th nearest base row of query ``i``; ``distances`` are Euclidean (float64)."""

    indices: np.ndarray  # (Q, k) int64
    distances: np.ndarray  # (Q, k) float64
    engine: str  # "faiss" or "torch (cpu)" / "torch (cuda:0)"


def faiss_available() -> bool:
    """Whether ``import faiss`` would work (the ``audit`` extra)."""
    return importlib.util.find_spec("faiss") is not None


def resolve_engine(engine: str, device: str | torch.device = "cpu") -> str:
    """``auto`` -> ``faiss`` when installed and the device is the CPU, else ``torch``; refuses a missing faiss."""
    if engine not in ENGINES:
        raise InvalidArgumentError(f"nearest-neighbour engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    on_cpu = torch.device(device).type == "cpu"
    if engine == "auto":
        return "faiss" if on_cpu and faiss_available() else "torch"
    if engine == "faiss":
        if not faiss_available():
            raise InvalidArgumentError("--neighbours faiss needs faiss (pip install 'histoaug[audit]'); "
                                       "--neighbours torch is the same exact search without it")
        if not on_cpu:
            raise InvalidArgumentError(f"--neighbours faiss runs on the CPU here (faiss-cpu); on {device} use "
                                       "--neighbours torch")
    return engine


def _as_float32(values: np.ndarray, what: str) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim != 2:
        raise InvalidArgumentError(f"{what} must be a 2-d (rows, dims) array, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise InvalidArgumentError(f"{what} contain NaN or infinite values")
    return np.ascontiguousarray(values, dtype=np.float32)


def _faiss_candidates(queries: np.ndarray, base: np.ndarray, k: int, progress: bool, desc: str) -> np.ndarray:
    import faiss

    index = faiss.IndexFlatL2(base.shape[1])
    index.add(base)
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in tqdm(range(0, len(queries), QUERY_BLOCK), desc=desc, unit="block", disable=not progress):
        _, found = index.search(queries[start:start + QUERY_BLOCK], k)
        out[start:start + QUERY_BLOCK] = found
    return out


def _torch_candidates(queries: np.ndarray, base: np.ndarray, k: int, device: torch.device, progress: bool,
                      desc: str) -> np.ndarray:
    base_t = torch.from_numpy(base).to(device)
    base_sq = (base_t * base_t).sum(dim=1)
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in tqdm(range(0, len(queries), QUERY_BLOCK), desc=desc, unit="block", disable=not progress):
        q = torch.from_numpy(queries[start:start + QUERY_BLOCK]).to(device)
        q_sq = (q * q).sum(dim=1, keepdim=True)
        best_d = torch.full((len(q), 0), float("inf"), device=device)
        best_i = torch.zeros((len(q), 0), dtype=torch.int64, device=device)
        for b0 in range(0, len(base_t), BASE_BLOCK):
            block = base_t[b0:b0 + BASE_BLOCK]
            distances = (q_sq + base_sq[b0:b0 + BASE_BLOCK][None, :] - 2.0 * (q @ block.T)).clamp_min_(0.0)
            top = min(k, distances.shape[1])
            d, i = torch.topk(distances, top, dim=1, largest=False)
            best_d, order = torch.topk(torch.cat([best_d, d], dim=1), min(k, best_d.shape[1] + top), dim=1,
                                       largest=False)
            best_i = torch.gather(torch.cat([best_i, i + b0], dim=1), 1, order)
        out[start:start + QUERY_BLOCK] = best_i.cpu().numpy()
    return out


def _exact_rows(queries: np.ndarray, base: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Float64 brute force over the whole base for a few queries, sorted by (distance, index)."""
    indices = np.empty((len(queries), k), dtype=np.int64)
    distances = np.empty((len(queries), k), dtype=np.float64)
    positions = np.arange(len(base))
    for row, query in enumerate(queries.astype(np.float64)):
        d = np.empty(len(base), dtype=np.float64)
        for b0 in range(0, len(base), BASE_BLOCK):
            diff = base[b0:b0 + BASE_BLOCK].astype(np.float64) - query
            d[b0:b0 + BASE_BLOCK] = np.sqrt((diff * diff).sum(axis=1))
        order = np.lexsort((positions, d))[:k]
        indices[row], distances[row] = order, d[order]
    return indices, distances


def _rerank(queries: np.ndarray, base: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact float64 distances of the candidates, sorted by (distance, index); the first ``k`` kept.

    Where the last candidate is as close as the k-th (within float32 rounding), more base rows may
    tie beyond the candidates, and which of them an engine returned is its own business: those
    queries are searched again by float64 brute force, so ties resolve to the lowest indices.
    """
    indices = np.empty((len(queries), k), dtype=np.int64)
    distances = np.empty((len(queries), k), dtype=np.float64)
    ambiguous = np.zeros(len(queries), dtype=bool)
    step = max(1, (1 << 24) // max(1, candidates.shape[1] * base.shape[1]))  # ~128 MB of float64 per step
    for start in range(0, len(queries), step):
        cand = candidates[start:start + step]
        diff = base[cand].astype(np.float64) - queries[start:start + step, None, :].astype(np.float64)
        d = np.sqrt((diff * diff).sum(axis=2))
        order = np.lexsort((cand, d), axis=1)
        kept = order[:, :k]
        indices[start:start + step] = np.take_along_axis(cand, kept, axis=1)
        distances[start:start + step] = np.take_along_axis(d, kept, axis=1)
        if candidates.shape[1] < len(base):
            kth = distances[start:start + step, -1]
            farthest = np.take_along_axis(d, order[:, -1:], axis=1)[:, 0]
            tolerance = 1e-5 * np.maximum(kth, 1.0)
            ambiguous[start:start + step] = farthest - kth <= tolerance
    if ambiguous.any():
        logger.debug("%d queries tie at the candidate boundary: exact float64 search", int(ambiguous.sum()))
        indices[ambiguous], distances[ambiguous] = _exact_rows(queries[ambiguous], base, k)
    return indices, distances


def nearest_neighbours(queries: np.ndarray, base: np.ndarray, k: int, *, engine: str = "auto",
                       device: str | torch.device = "cpu", progress: bool = False,
                       desc: str = "nearest neighbours") -> Neighbours:
    """The ``k`` nearest ``base`` rows (Euclidean) of every query row, exact, in blocks.

    ``engine``: ``auto``, ``faiss`` or ``torch`` (see the module docstring: same neighbours either way).
    """
    queries, base = _as_float32(queries, "query features"), _as_float32(base, "training features")
    if queries.shape[1] != base.shape[1]:
        raise InvalidArgumentError(f"query features have {queries.shape[1]} dims but training features "
                                   f"{base.shape[1]}")
    if len(base) == 0:
        raise InvalidArgumentError("the training set has no rows to search")
    if k < 1:
        raise InvalidArgumentError(f"k must be >= 1, got {k}")
    k = min(k, len(base))
    wide = min(k + RERANK_MARGIN, len(base))
    name = resolve_engine(engine, device)
    if name == "faiss":
        candidates = _faiss_candidates(queries, base, wide, progress, desc)
        label = "faiss"
    else:
        torch_device = torch.device(device)
        candidates = _torch_candidates(queries, base, wide, torch_device, progress, desc)
        label = f"torch ({torch_device})"
    if (candidates < 0).any():  # faiss pads with -1 when it finds fewer than k (cannot happen for a flat index)
        raise RuntimeError("the nearest-neighbour search returned fewer candidates than asked")
    indices, distances = _rerank(queries, base, candidates, k)
    logger.debug("%d x %d nearest neighbours (k=%d) with %s", len(queries), len(base), k, label)
    return Neighbours(indices, distances, label)
