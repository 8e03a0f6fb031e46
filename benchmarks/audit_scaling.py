"""``histoaug audit`` at scale: time against training-set size, faiss and torch against a brute-force baseline.

What the audit does per synthetic patch, and what this script times (random data, same process):

1. feature search: the ``k + margin`` nearest of Q queries among N training rows of D dims
   (D = 2048: Inception's pool features, the largest feature space of ``histoaug eval``);
2. thumbnail search: 8 Q queries (the 8 flips/rotations) among N rows of 192 dims;
3. pixel check: band-pass filtering and aligned correlation with 20 candidates per query
   (independent of N: the candidates are read from the training file);
4. embedding: stain-texture features and thumbnails per patch (Inception or a ViT cost more;
   they are ``histoaug eval``'s extractors and cached the same way).

Engines: ``faiss`` (IndexFlatL2 through :func:`histoaug.evaluation.nearest_neighbours.nearest_neighbours`,
float64 re-rank included), ``torch`` (block matmul, same function), and the baseline, a textbook
exact brute force: ``scipy.spatial.distance.cdist`` (float64) + ``argpartition`` over blocks of
256 queries. All three return the same neighbours (checked here on every size the baseline runs).
Sizes past ``--max-seconds`` for an engine are not run but extrapolated linearly in N (exact search
is linear in N x Q x D), and marked so. Run:

    OMP_NUM_THREADS=2 python benchmarks/audit_scaling.py --json benchmarks/results/audit_scaling.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from histoaug.evaluation.nearest_neighbours import RERANK_MARGIN, nearest_neighbours
from histoaug.evaluation.pixel_similarity import ThumbnailEmbedder, aligned_correlation_indexed
from histoaug.training.stain_embedding import stain_texture_features

PCAM_TRAIN = 262_144
PCAM_SYNTHETIC = 100_000


def baseline_search(queries: np.ndarray, base: np.ndarray, k: int) -> np.ndarray:
    """Exact brute force the plain way: float64 cdist and argpartition, 256 queries at a time."""
    from scipy.spatial.distance import cdist

    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), 256):
        d = cdist(queries[start:start + 256].astype(np.float64), base.astype(np.float64), "sqeuclidean")
        part = np.argpartition(d, k - 1, axis=1)[:, :k]
        order = np.lexsort((part, np.take_along_axis(d, part, axis=1)), axis=1)
        out[start:start + 256] = np.take_along_axis(part, order, axis=1)
    return out


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1024,4096,16384,65536,262144", help="training rows")
    parser.add_argument("--queries", type=int, default=1000, help="synthetic patches (queries)")
    parser.add_argument("--dims", type=int, default=2048, help="feature dims")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--max-seconds", type=float, default=60.0,
                        help="skip (and extrapolate) an engine's size predicted to take longer")
    parser.add_argument("--pixel-queries", type=int, default=256)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    rng = np.random.default_rng(0)
    sizes = [int(s) for s in args.sizes.split(",")]
    queries = rng.normal(size=(args.queries, args.dims)).astype(np.float32)
    thumb_queries = rng.normal(size=(8 * args.queries, 192)).astype(np.float32)
    rows = []
    last: dict[str, tuple[int, float]] = {}

    def run(name: str, n: int, fn) -> float | None:
        if name in last:
            prev_n, prev_s = last[name]
            if prev_s * n / prev_n > args.max_seconds:
                return None
        seconds, value = timed(fn)
        last[name] = (n, seconds)
        run.values[name] = value
        return seconds

    run.values = {}
    for n in sizes:
        base = rng.normal(size=(n, args.dims)).astype(np.float32)
        thumbs = rng.normal(size=(n, 192)).astype(np.float32)
        row = {"train_rows": n}
        for engine in ("faiss", "torch"):
            row[f"feature_{engine}_s"] = run(f"feature_{engine}", n, lambda e=engine, b=base: nearest_neighbours(
                queries, b, args.k, engine=e).indices)
            row[f"thumbnail_{engine}_s"] = run(f"thumbnail_{engine}", n, lambda e=engine, t=thumbs: nearest_neighbours(
                thumb_queries, t, args.k, engine=e).indices)
        row["feature_baseline_s"] = run("feature_baseline", n, lambda b=base: baseline_search(queries, b, args.k))
        same = [np.array_equal(run.values["feature_faiss"], run.values[name])
                for name in ("feature_torch", "feature_baseline") if name in run.values and row.get(f"{name}_s")]
        row["same_neighbours"] = all(same) if same else None
        print(json.dumps(row), flush=True)
        rows.append(row)
    # pixel check and embedding: per patch, independent of N
    patches = rng.integers(0, 256, size=(4096, 96, 96, 3), dtype=np.uint8)
    q = patches[:args.pixel_queries]
    seconds = 0.0
    for start in range(0, len(q), 256):
        cand = rng.integers(0, len(patches), size=(min(256, len(q) - start), 20))
        unique, position = np.unique(cand, return_inverse=True)
        s, _ = timed(lambda c=cand, u=unique, p=position, st=start: aligned_correlation_indexed(
            q[st:st + 256], patches[u], p.reshape(c.shape)))
        seconds += s
    pixel_per_query = seconds / len(q)
    stain_s, _ = timed(lambda: stain_texture_features(patches[:1024]))
    thumb_s, _ = timed(lambda: ThumbnailEmbedder().embed(patches[:1024]))
    per_patch = {"pixel_check_s_per_query": pixel_per_query, "stain_texture_s_per_patch": stain_s / 1024,
                 "thumbnail_s_per_patch": thumb_s / 1024}
    print(json.dumps(per_patch), flush=True)

    def extrapolate(name: str, queries_factor: float) -> float:
        n, s = last[name]
        return s * PCAM_TRAIN / n * queries_factor

    factor = PCAM_SYNTHETIC / args.queries
    pcam = {engine: {"feature_search_s": extrapolate(f"feature_{engine}", factor),
                     "thumbnail_search_s": extrapolate(f"thumbnail_{engine}", factor)}
            for engine in ("faiss", "torch")}
    pcam["baseline"] = {"feature_search_s": extrapolate("feature_baseline", factor)}
    pcam["pixel_check_s"] = pixel_per_query * (PCAM_SYNTHETIC + 32_768)  # synthetic + a valid-sized reference
    pcam["embedding_s"] = (per_patch["stain_texture_s_per_patch"] + per_patch["thumbnail_s_per_patch"]) * (
        PCAM_TRAIN + PCAM_SYNTHETIC + 32_768)
    print(json.dumps({"pcam_extrapolated": pcam}), flush=True)
    result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
                         f"{torch.get_num_threads()}", "queries": args.queries, "dims": args.dims, "k": args.k,
              "candidates_searched": args.k + RERANK_MARGIN, "rows": rows, "per_patch": per_patch,
              "pcam_262144_train_100000_synthetic_extrapolated": pcam, "command": " ".join(sys.argv)}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
