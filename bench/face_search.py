"""Face search at scale: brute force vs HNSW top-10 latency, recall, build time, memory.

    python bench/face_search.py [--sizes 100000 1000000] [--queries 200] [--decrypt 100000]
    python bench/face_search.py --quick     # smoke test: 20,000 faces, 50 queries (~15 s)

Vectors are synthetic but spread like dlib's descriptors: identities are centers around a common
mean, each stored face a sample of its identity, with the spreads set so that two faces of one
person are ~SAME apart and two people ~OTHER apart (the medians measured on LFW photos with this
node's embedder: same person ~0.45, different ~0.76). Each identity is seen FACES_PER_ID times
(a person passing cameras over days). Queries are new samples of stored identities, as a case
subject's photo would be.

For each size: the time to fill a VectorIndex (brute force: append; HNSW: graph build), the
resident memory it adds, the top-10 latency of one query at a time (median and p95), recall@10
of HNSW against the exact answer, and the same for a search limited to 10 % of the faces (one
case's cameras and time range). Then the cache build the first search pays: --decrypt sealed
descriptors read from SQLite and opened (AES-256-GCM), as FaceDescriptors.warm() does.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from sqlalchemy import Connection, insert

from custodes.faces.descriptors import FaceDescriptors
from custodes.faces.index import DIM, VectorIndex
from custodes.keys import NodeKeys
from custodes.store import schema
from custodes.store.db import Store

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
SAME = 0.45  # median distance between two photos of one person (LFW, this embedder)
OTHER = 0.76  # median distance between two people
FACES_PER_ID = 20
K = 10


def sigmas() -> tuple[float, float]:
    """Per-dimension spreads (between identities, within one) giving SAME and OTHER."""
    within = SAME / np.sqrt(2 * DIM)
    between = np.sqrt((OTHER / np.sqrt(2 * DIM)) ** 2 - within**2)
    return float(between), float(within)


def faces(n: int, queries: int, seed: int = 0) -> tuple[F32, F32]:
    rng = np.random.default_rng(seed)
    between, within = sigmas()
    identities = max(1, n // FACES_PER_ID)
    mean = rng.normal(0, 0.09, DIM).astype(np.float32)  # descriptors share a common offset
    centers = (mean + rng.normal(0, between, (identities, DIM))).astype(np.float32)
    stored = np.empty((n, DIM), dtype=np.float32)
    for lo in range(0, n, 100_000):  # in blocks, to keep the float64 temporaries small
        hi = min(n, lo + 100_000)
        owners = rng.integers(0, identities, hi - lo)
        stored[lo:hi] = centers[owners] + rng.normal(0, within, (hi - lo, DIM))
    asked = centers[rng.integers(0, identities, queries)] + rng.normal(0, within,
                                                                       (queries, DIM))
    return stored, asked.astype(np.float32)


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@dataclass
class Result:
    kind: str
    n: int
    fill_s: float
    memory_mb: float
    median_ms: float
    p95_ms: float
    recall: float
    filtered_median_ms: float
    filtered_recall: float


def timed_search(index: VectorIndex, queries: F32,
                 allowed: I64 | None) -> tuple[list[list[int]], list[float]]:
    found, times = [], []
    for q in queries:
        t = time.perf_counter()
        hits = index.search(q[None, :], K, allowed)
        times.append(time.perf_counter() - t)
        found.append([i for i, _ in hits[0]])
    return found, times


def recall(found: list[list[int]], truth: list[list[int]]) -> float:
    return float(np.mean([len(set(f) & set(t)) / max(1, len(t))
                          for f, t in zip(found, truth, strict=True)]))


def run_size(n: int, n_queries: int) -> list[Result]:
    stored, queries = faces(n, n_queries)
    ids = np.arange(1, n + 1, dtype=np.int64)
    allowed = ids[np.random.default_rng(1).random(n) < 0.1]
    out, truth, truth_filtered = [], None, None
    for kind, threshold in (("brute force", n + 1), ("hnsw", 0)):
        gc.collect()
        before = rss()
        t = time.perf_counter()
        index = VectorIndex(hnsw_from=threshold)
        for lo in range(0, n, 50_000):  # as the cache fills: in batches of new rows
            index.add(ids[lo:lo + 50_000], stored[lo:lo + 50_000])
        fill = time.perf_counter() - t
        memory = (rss() - before) / 2**20
        found, times = timed_search(index, queries, None)
        found_f, times_f = timed_search(index, queries[: n_queries // 4], allowed)
        if truth is None:
            truth, truth_filtered = found, found_f
        assert truth_filtered is not None
        ms = sorted(x * 1000 for x in times)
        out.append(Result(kind, n, fill, memory, statistics.median(ms),
                          ms[int(0.95 * (len(ms) - 1))], recall(found, truth),
                          statistics.median(x * 1000 for x in times_f),
                          recall(found_f, truth_filtered)))
        del index
    return out


def decrypt_cost(n: int) -> tuple[float, float, float]:
    """(seconds to write n sealed rows, to warm the cache, of which opening alone)."""
    stored, _ = faces(n, 1, seed=2)
    with tempfile.TemporaryDirectory() as tmp:
        keys = NodeKeys.load_or_create(Path(tmp) / "keys")
        with Store(Path(tmp) / "node.db") as store:
            descriptors = FaceDescriptors(store, keys)
            t = time.perf_counter()
            for lo in range(0, n, 5000):
                rows = [{"camera": f"cam{i % 8}", "start": float(i), "end": i + 2.0,
                         "detections": 5, "box": "[0,0,80,80]", "quality": 0.5,
                         "sealed": descriptors.seal(stored[i].tobytes(), f"cam{i % 8}",
                                                    float(i))}
                        for i in range(lo, min(n, lo + 5000))]

                def write(conn: Connection, rows: list[dict[str, object]] = rows) -> None:
                    conn.execute(insert(schema.faces), rows)

                store.write(write)
            written = time.perf_counter() - t
            t = time.perf_counter()
            assert descriptors.warm() == n
            warm = time.perf_counter() - t
            blobs = [descriptors.seal(stored[i].tobytes(), "cam", float(i))
                     for i in range(min(n, 20_000))]
            t = time.perf_counter()
            for i, blob in enumerate(blobs):
                descriptors.open(blob, "cam", float(i))
            opening = (time.perf_counter() - t) * n / len(blobs)
    return written, warm, opening


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--decrypt", type=int, default=100_000,
                        help="rows for the decrypt-all measurement (0: skip)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 20,000 faces, 50 queries, 5,000 sealed rows")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.queries, args.decrypt = [20_000], 50, 5_000
    between, within = sigmas()
    check, _ = faces(20 * 50, 0, seed=3)
    same = np.linalg.norm(check[0] - check[1:], axis=1)
    print(f"synthetic descriptors: sigma between {between:.4f}, within {within:.4f} per "
          f"dimension; {FACES_PER_ID} faces per identity; threads: {os.cpu_count()} cores")
    print(f"  nearest other face of the same identity / median to others: "
          f"{np.sort(same)[:3].round(2)} / {np.median(same):.2f}")
    header = (f"{'index':12} {'faces':>9} {'fill s':>8} {'mem MB':>8} {'top10 med ms':>13} "
              f"{'p95 ms':>8} {'recall@10':>10} {'10% scope ms':>13} {'recall':>7}")
    print(header)
    print("-" * len(header))
    for n in args.sizes:
        for r in run_size(n, args.queries):
            print(f"{r.kind:12} {r.n:>9,} {r.fill_s:>8.1f} {r.memory_mb:>8.0f} "
                  f"{r.median_ms:>13.2f} {r.p95_ms:>8.2f} {r.recall:>10.3f} "
                  f"{r.filtered_median_ms:>13.2f} {r.filtered_recall:>7.3f}", flush=True)
    if args.decrypt:
        written, warm, opening = decrypt_cost(args.decrypt)
        print(f"\ncache build for {args.decrypt:,} sealed descriptors in SQLite: "
              f"warm() {warm:.2f} s (of which AES-GCM open {opening:.2f} s, "
              f"{opening / args.decrypt * 1e6:.1f} us a row); writing them took {written:.1f} s")


if __name__ == "__main__":
    main()
