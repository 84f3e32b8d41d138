"""Nearest-neighbour search over 128-d face descriptors, in memory only.

    index = VectorIndex()
    index.add(ids, vectors)                     # int64 (n,), float32 (n, 128)
    hits = index.search(queries, k=10, allowed=case_ids)   # per query [(id, distance), ...]

Distances are Euclidean, dlib's metric (same person mostly 0.3-0.55, different people mostly
0.7 and more, but down to ~0.44 among 200k pairs). What a distance may be shown as (match,
possible) is custodes.faces.calibration's call, not this module's.

Two regimes, measured by bench/face_search.py (2 shared cores, heavily loaded; synthetic
descriptors spread like dlib's):

- below ``HNSW_FROM`` stored vectors, exact brute force in numpy: one matrix product per batch of
  queries, no build, 0.5 KB a face. Top-10 of one query: 21 ms median at 100k, 65 ms at 1M.
- from ``HNSW_FROM`` on, a faiss HNSW graph (IndexHNSWFlat, M=32): 0.5 ms at 100k, 1.6 ms at
  1M, but the graph took 45 s (100k) and 880 s (1M) to build, +50 % memory, and its recall@10
  at 1M was 0.90 (0.83 inside a 10 % scope). A case search is rare and must not miss a face,
  so brute force is kept up to 1M; beyond, the graph is the only way to stay interactive. The
  graph's own storage then holds the vectors (no second copy); brute force over a subset
  reads them there.

A search restricted to ``allowed`` ids (a case's cameras and time range) is exact whenever the
allowed set is small enough to scan (``EXACT_UP_TO``), and otherwise runs the graph with a
filter and a search breadth widened in proportion to what the filter hides. HNSW cannot delete:
removed ids are hidden by the same filter and the graph is rebuilt once they make up a quarter
of it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import faiss
import numpy as np
import numpy.typing as npt

DIM: Final = 128
# Brute force up to here: exact, and at 1M still well under a second per case search, where
# the graph costs minutes of CPU to build and loses ~10 % of the true top 10 (see above).
HNSW_FROM: Final = 1_000_000
# A filtered search over at most this many candidates scans them exactly.
EXACT_UP_TO: Final = 50_000
HNSW_M: Final = 32
HNSW_EF_CONSTRUCTION: Final = 64
HNSW_EF_SEARCH: Final = 96
REBUILD_DEAD_SHARE: Final = 0.25

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
Hits = list[list[tuple[int, float]]]

# faiss's bundled type hints lack much of its SWIG surface (HNSW search parameters, get_xb).
_faiss: Any = faiss


class VectorIndex:
    """ids (int64) to float32 vectors (DIM); see the module doc for how it searches."""

    def __init__(self, *, hnsw_from: int = HNSW_FROM, exact_up_to: int = EXACT_UP_TO,
                 ef_search: int = HNSW_EF_SEARCH) -> None:
        self.hnsw_from = hnsw_from
        self.exact_up_to = exact_up_to
        self.ef_search = ef_search
        self._size = 0  # positions used (alive or not)
        self._ids: I64 = np.empty(0, dtype=np.int64)
        self._alive = np.empty(0, dtype=bool)
        self._norms: F32 = np.empty(0, dtype=np.float32)  # squared norms, for brute force
        self._flat: F32 = np.empty((0, DIM), dtype=np.float32)  # unused once the graph exists
        self._hnsw: Any = None
        self._count = 0  # alive
        self._max_id = -(2**63)

    def __len__(self) -> int:
        return self._count

    @property
    def uses_hnsw(self) -> bool:
        return self._hnsw is not None

    def ids(self) -> I64:
        """The ids stored (in insertion order)."""
        return self._ids[:self._size][self._alive[:self._size]].copy()

    # -- changes ------------------------------------------------------------------------

    def add(self, ids: npt.ArrayLike, vectors: npt.ArrayLike) -> None:
        new_ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        new = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, DIM)
        if len(new_ids) != len(new):
            raise ValueError(f"{len(new_ids)} ids for {len(new)} vectors")
        if not len(new_ids):
            return
        # Rows arrive in id order, so the full check against what is stored is rarely needed.
        if len(np.unique(new_ids)) != len(new_ids) or (
                int(new_ids.min()) <= self._max_id
                and np.isin(new_ids, self._ids[:self._size][self._alive[:self._size]]).any()):
            raise ValueError("ids must be unique")
        start, end = self._size, self._size + len(new_ids)
        self._reserve(end)
        self._ids[start:end] = new_ids
        self._alive[start:end] = True
        self._norms[start:end] = np.einsum("ij,ij->i", new, new)
        self._size = end
        self._count += len(new_ids)
        self._max_id = max(self._max_id, int(new_ids.max()))
        if self._hnsw is not None:
            self._hnsw.add(new)
        else:
            self._flat[start:end] = new
            if len(self) >= self.hnsw_from:
                self._build_graph()

    def remove(self, ids: Iterable[int]) -> None:
        gone = np.fromiter(ids, dtype=np.int64)
        if not len(gone):
            return
        live = self._alive[:self._size]
        hit = live & np.isin(self._ids[:self._size], gone)
        if not hit.any():
            return
        live &= ~hit
        self._count = int(live.sum())
        if self._hnsw is None:
            self._compact()  # O(n) below HNSW_FROM, and nothing removed stays in memory
            return
        # The graph cannot drop a vector; blank it, so that a removed face's descriptor does
        # not linger in memory until the rebuild (the filter already keeps it out of results).
        self._vectors()[hit] = 0.0
        if self._size - self._count > REBUILD_DEAD_SHARE * self._size:
            self._compact()

    def _reserve(self, needed: int) -> None:
        capacity = len(self._ids)
        if needed <= capacity:
            return
        # Double, so that adding faces one at a time costs amortised O(1) copies.
        capacity = max(needed, 2 * capacity, 1024)
        self._ids = _grown(self._ids, capacity)
        self._alive = _grown(self._alive, capacity)
        self._norms = _grown(self._norms, capacity)
        if self._hnsw is None:
            self._flat = _grown(self._flat, capacity)

    def _vectors(self) -> F32:
        """The stored vectors by position: the flat array, or a view of the graph's storage."""
        if self._hnsw is None:
            return self._flat[:self._size]
        storage = _faiss.downcast_index(self._hnsw.storage)
        flat = _faiss.rev_swig_ptr(storage.get_xb(), self._size * DIM)
        return np.asarray(flat).reshape(self._size, DIM)

    def _build_graph(self) -> None:
        live = self._alive[:self._size]
        vectors = np.ascontiguousarray(self._vectors()[live])
        ids, norms = self._ids[:self._size][live].copy(), self._norms[:self._size][live].copy()
        graph = _faiss.IndexHNSWFlat(DIM, HNSW_M)
        graph.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        graph.add(vectors)
        self._hnsw = graph
        self._flat = np.empty((0, DIM), dtype=np.float32)
        self._size = len(ids)
        self._ids, self._norms = ids, norms
        self._alive = np.ones(len(ids), dtype=bool)

    def _compact(self) -> None:
        """Rebuild without the removed vectors: flat again if few enough remain."""
        live = self._alive[:self._size]
        if self._count >= self.hnsw_from:
            self._build_graph()
            return
        vectors = self._vectors()[live].copy()
        ids, norms = self._ids[:self._size][live].copy(), self._norms[:self._size][live].copy()
        self._hnsw = None
        self._flat, self._ids, self._norms = vectors, ids, norms
        self._size = len(ids)
        self._alive = np.ones(len(ids), dtype=bool)

    # -- search -------------------------------------------------------------------------

    def search(self, queries: npt.ArrayLike, k: int,
               allowed: npt.ArrayLike | None = None) -> Hits:
        """For each query, up to k (id, distance) nearest first, among ``allowed`` ids if given."""
        q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, DIM)
        if k < 1:
            raise ValueError("k must be at least 1")
        mask = self._alive[:self._size].copy()
        if allowed is not None:
            mask &= np.isin(self._ids[:self._size], np.asarray(allowed, dtype=np.int64))
        candidates = int(mask.sum())
        if candidates == 0 or len(q) == 0:
            return [[] for _ in q]
        if self._hnsw is None or candidates <= self.exact_up_to:
            return self._exact(q, k, mask, candidates)
        return self._graph(q, k, mask, candidates)

    def _exact(self, q: F32, k: int, mask: npt.NDArray[np.bool_], candidates: int) -> Hits:
        if candidates == self._size:
            positions = None
            vectors, norms, ids = self._vectors(), self._norms[:self._size], self._ids
        else:
            positions = np.flatnonzero(mask)
            vectors = self._vectors()[positions]
            norms, ids = self._norms[positions], self._ids[positions]
        # |q - x|^2 = |q|^2 - 2 q.x + |x|^2: one matrix product for all queries.
        d2 = norms[None, :] - 2.0 * (q @ vectors.T)
        d2 += np.einsum("ij,ij->i", q, q)[:, None]
        k = min(k, candidates)
        if k < candidates:
            nearest = np.argpartition(d2, k - 1, axis=1)[:, :k]
        else:
            nearest = np.broadcast_to(np.arange(candidates), (len(q), candidates))
        out: Hits = []
        for row, cols in zip(d2, nearest, strict=True):
            order = cols[np.argsort(row[cols], kind="stable")]
            dist = np.sqrt(np.maximum(row[order], 0.0))
            out.append([(int(ids[c]), float(d)) for c, d in zip(order, dist, strict=True)])
        return out

    def _graph(self, q: F32, k: int, mask: npt.NDArray[np.bool_], candidates: int) -> Hits:
        params: Any = None
        ef = max(self.ef_search, k)
        if candidates < self._size:
            bits = np.packbits(mask, bitorder="little")
            selector = _faiss.IDSelectorBitmap(self._size, _faiss.swig_ptr(bits))
            # A filter hides part of what the graph walks through: widen the search in
            # proportion, so that enough allowed neighbours are still reached.
            ef = min(int(ef * self._size / candidates), 4096)
            params = _faiss.SearchParametersHNSW(sel=selector, efSearch=ef)
            distances, positions = self._hnsw.search(q, k, params=params)
            del bits  # kept alive until the search is over: the selector points into it
        else:
            params = _faiss.SearchParametersHNSW(efSearch=ef)
            distances, positions = self._hnsw.search(q, k, params=params)
        out: Hits = []
        for drow, prow in zip(distances, positions, strict=True):
            out.append([(int(self._ids[p]), float(np.sqrt(max(d, 0.0))))
                        for d, p in zip(drow, prow, strict=True) if p >= 0])
        return out


def _grown(array: npt.NDArray[Any], capacity: int) -> npt.NDArray[Any]:
    grown = np.empty((capacity, *array.shape[1:]), dtype=array.dtype)
    grown[:len(array)] = array
    return grown
