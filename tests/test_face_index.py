"""The vector index: exact brute force, the HNSW graph beyond a size, filters, removals."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from custodes.faces.index import DIM, VectorIndex

F32 = npt.NDArray[np.float32]


def clustered(n: int, identities: int, seed: int = 0) -> tuple[F32, F32]:
    """Unit vectors around random identity centers (as dlib descriptors cluster per person)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(identities, DIM)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    owners = rng.integers(0, identities, n)
    vectors = centers[owners] + rng.normal(scale=0.02, size=(n, DIM)).astype(np.float32)
    return vectors.astype(np.float32), centers


def brute(vectors: F32, ids: npt.NDArray[np.int64], q: F32, k: int) -> list[list[int]]:
    d = np.linalg.norm(vectors[None, :, :] - q[:, None, :], axis=2)
    return [[int(ids[i]) for i in np.argsort(row, kind="stable")[:k]] for row in d]


def test_brute_force_is_exact_and_reports_euclidean_distances() -> None:
    vectors, centers = clustered(3000, 100)
    ids = np.arange(1000, 4000, dtype=np.int64)
    index = VectorIndex()
    index.add(ids[:10], vectors[:10])
    index.add(ids[10:], vectors[10:])  # grows past its first buffer
    assert len(index) == 3000
    assert not index.uses_hnsw
    q = centers[:4]
    hits = index.search(q, 5)
    assert [[i for i, _ in row] for row in hits] == brute(vectors, ids, q, 5)
    expected = np.linalg.norm(vectors[hits[0][0][0] - 1000] - q[0])
    assert hits[0][0][1] == pytest.approx(expected, abs=1e-5)
    assert all(row == sorted(row, key=lambda h: h[1]) for row in hits)


def test_allowed_ids_restrict_the_search() -> None:
    vectors, centers = clustered(2000, 50, seed=1)
    ids = np.arange(2000, dtype=np.int64)
    index = VectorIndex()
    index.add(ids, vectors)
    allowed = ids[ids % 7 == 0]
    hits = index.search(centers[:3], 10, allowed)
    assert [[i for i, _ in row] for row in hits] == brute(vectors[allowed], allowed,
                                                          centers[:3], 10)
    assert index.search(centers[:1], 10, np.array([], dtype=np.int64)) == [[]]
    assert [len(row) for row in index.search(centers[:1], 10, ids[:3])] == [3]


def test_removed_ids_are_never_returned_and_ids_stay_unique() -> None:
    vectors, _ = clustered(500, 20, seed=2)
    ids = np.arange(500, dtype=np.int64)
    index = VectorIndex()
    index.add(ids, vectors)
    index.remove(range(0, 500, 2))
    assert len(index) == 250
    hits = index.search(vectors[:4], 20)
    assert all(i % 2 == 1 for row in hits for i, _ in row)
    assert hits[1][0][0] == 1
    assert hits[1][0][1] == pytest.approx(0.0, abs=1e-3)
    with pytest.raises(ValueError, match="unique"):
        index.add([1], vectors[:1])
    index.add([0], vectors[:1])  # a removed id may come back


def test_beyond_the_threshold_a_graph_answers_like_brute_force() -> None:
    vectors, _centers = clustered(6000, 300, seed=3)
    ids = np.arange(10, 6010, dtype=np.int64)
    graph = VectorIndex(hnsw_from=4000, exact_up_to=500)
    exact = VectorIndex()
    for index in (graph, exact):
        index.add(ids[:3000], vectors[:3000])
        index.add(ids[3000:], vectors[3000:])
    assert graph.uses_hnsw
    assert not exact.uses_hnsw
    q = vectors[:50] + np.float32(0.01)
    found = [{i for i, _ in row} for row in graph.search(q, 10)]
    truth = [{i for i, _ in row} for row in exact.search(q, 10)]
    recall = np.mean([len(f & t) / 10 for f, t in zip(found, truth, strict=True)])
    assert recall > 0.95

    # A filter that leaves many candidates goes through the graph; a small one is exact.
    for allowed in (ids[ids % 2 == 0], ids[ids % 50 == 0]):
        got = graph.search(q[:5], 10, allowed)
        assert all(i % 2 == 0 for row in got for i, _ in row)
        want = exact.search(q[:5], 10, allowed)
        assert np.mean([len({i for i, _ in g} & {i for i, _ in w}) / 10
                        for g, w in zip(got, want, strict=True)]) > 0.9

    # Removal hides at once; past a quarter removed, the graph is rebuilt without them.
    graph.remove(ids[:1000])
    assert graph.uses_hnsw
    assert all(i >= 1010 for row in graph.search(q, 10) for i, _ in row)
    graph.remove(ids[1000:3000])
    assert len(graph) == 3000
    assert not graph.uses_hnsw
    assert [[i for i, _ in r] for r in graph.search(q[:5], 10)] == \
        [[i for i, _ in r] for r in exact.search(q[:5], 10, ids[3000:])]
