"""histoaug audit's building blocks: exact nearest neighbours (faiss == torch == brute force), dihedral pixel checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from evaluation_data import real_split

from histoaug.errors import InvalidArgumentError
from histoaug.evaluation import nearest_neighbours as nn
from histoaug.evaluation.pixel_similarity import (
    ThumbnailEmbedder,
    aligned_correlation,
    detail,
    dihedral,
    dihedral_thumbnail_vectors,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _brute_force(queries, base, k):
    d = np.sqrt(((queries[:, None, :].astype(np.float64) - base[None].astype(np.float64)) ** 2).sum(axis=2))
    order = np.lexsort((np.broadcast_to(np.arange(len(base)), d.shape), d), axis=1)[:, :k]
    return order, np.take_along_axis(d, order, axis=1)


@pytest.mark.parametrize("engine", ["faiss", "torch"])
def test_search_is_exact_brute_force(engine, monkeypatch):
    rng = np.random.default_rng(0)
    base = rng.normal(size=(1500, 24)).astype(np.float32)
    queries = rng.normal(size=(230, 24)).astype(np.float32)
    monkeypatch.setattr(nn, "QUERY_BLOCK", 64)  # several query and base blocks: exercises the running top-k
    monkeypatch.setattr(nn, "BASE_BLOCK", 400)
    found = nn.nearest_neighbours(queries, base, 5, engine=engine)
    indices, distances = _brute_force(queries, base, 5)
    np.testing.assert_array_equal(found.indices, indices)
    np.testing.assert_allclose(found.distances, distances, rtol=1e-12)
    assert found.engine.startswith(engine)


def test_faiss_and_torch_give_identical_neighbours_including_ties():
    rng = np.random.default_rng(1)
    base = rng.integers(0, 3, size=(3000, 8)).astype(np.float32)  # many exact ties
    queries = rng.integers(0, 3, size=(500, 8)).astype(np.float32)
    a = nn.nearest_neighbours(queries, base, 4, engine="faiss")
    b = nn.nearest_neighbours(queries, base, 4, engine="torch")
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.distances, b.distances)


def test_engine_choice_is_explicit(monkeypatch):
    assert nn.resolve_engine("auto") == "faiss"
    assert nn.resolve_engine("auto", "meta") == "torch"
    monkeypatch.setattr(nn, "faiss_available", lambda: False)
    assert nn.resolve_engine("auto") == "torch"
    with pytest.raises(InvalidArgumentError, match="needs faiss"):
        nn.resolve_engine("faiss")
    with pytest.raises(InvalidArgumentError, match="one of"):
        nn.resolve_engine("annoy")
    with pytest.raises(InvalidArgumentError, match="dims"):
        nn.nearest_neighbours(np.zeros((2, 3)), np.zeros((4, 5)), 1, engine="torch")
    with pytest.raises(InvalidArgumentError, match="NaN"):
        nn.nearest_neighbours(np.full((2, 3), np.nan), np.zeros((4, 3)), 1, engine="torch")


def test_dihedral_transforms_commute_with_detail_and_thumbnails():
    x, _ = real_split("train")
    patches = x[:6]
    vectors = ThumbnailEmbedder().embed(patches).numpy()
    turned = dihedral_thumbnail_vectors(vectors)
    base = detail(patches)
    seen = set()
    for t in range(8):
        moved = np.ascontiguousarray(dihedral(patches, t))
        seen.add(moved[0].tobytes())
        np.testing.assert_allclose(ThumbnailEmbedder().embed(moved).numpy(), turned[t], atol=1e-5)
        np.testing.assert_allclose(detail(moved).numpy(), dihedral(base, t).numpy(), atol=1e-3)
    assert len(seen) == 8


def test_aligned_correlation_finds_the_transform_that_undoes_a_flip_or_rotation():
    x, _ = real_split("train")
    inverse = {0: 0, 1: 3, 2: 2, 3: 1, 4: 4, 5: 5, 6: 6, 7: 7}
    queries = np.stack([np.ascontiguousarray(dihedral(x[t], t)) for t in range(8)])
    candidates = np.stack([x[:8]] * 8)  # every query against the 8 originals
    corr, which = aligned_correlation(queries, candidates)
    np.testing.assert_array_equal(corr.argmax(axis=1), np.arange(8))
    np.testing.assert_allclose(corr[np.arange(8), np.arange(8)], 1.0, atol=1e-5)
    assert [int(which[t, t]) for t in range(8)] == [inverse[t] for t in range(8)]
    off_diagonal = corr[~np.eye(8, dtype=bool)]
    assert off_diagonal.max() < 0.5
    flat = np.full((1, 96, 96, 3), 200, np.uint8)
    assert aligned_correlation(flat, np.stack([flat])) [0][0, 0] == 0.0  # undefined for a flat patch: scored 0
    assert torch.get_num_threads() == 1
