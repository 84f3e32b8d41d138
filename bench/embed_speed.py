"""Face-embedding speed and agreement: dlib-bin vs the numpy and ONNX Runtime ports.

    python bench/embed_speed.py [--limit 0] [--runs 15]
    python bench/embed_speed.py --quick     # smoke test: 16 photos, 3 rounds (~15 s)

Faces: the labelled photos in ../shared/data/faces, the largest face of each found by dlib's
HOG detector (upsampled once) with 5-point landmarks. Reference: dlib's
`compute_face_descriptor(image, shape)`, the call everyone uses. For each backend: load time,
per-face milliseconds (median over --runs rounds) at batch 1 and batch 8, and the largest
per-element and Euclidean difference from dlib over all faces. Chip cutting (~0.3 ms a face,
dlib's get_face_chips in every backend) is outside the timings.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dlib  # type: ignore[import-untyped]
import numpy as np
import numpy.typing as npt
import onnxruntime as ort  # type: ignore[import-untyped]

from custodes.vision.embedding import Backend, FaceEmbedder
from custodes.vision.weights import face_model_files

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@dataclass
class Row:
    name: str
    load_s: float
    ms_batch1: float
    ms_batch8: float
    max_abs: float
    max_l2: float


def find_faces(limit: int) -> tuple[list[U8], list[object], list[str]]:
    root = SHARED_DATA / "faces"
    with (root / "labels.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    if limit:
        rows = rows[::max(1, len(rows) // limit)][:limit]
    files = face_model_files()
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(files.shape_predictor_5))
    images: list[U8] = []
    shapes: list[object] = []
    paths: list[str] = []
    for row in rows:
        try:
            image = dlib.load_rgb_image(str(root / row["path"]))
        except RuntimeError:  # a few ".jpg" files are WebP, which dlib-bin cannot read
            print(f"skipped, dlib cannot read it: {row['path']}")
            continue
        boxes = detector(image, 1)
        if boxes:
            images.append(image)
            shapes.append(predictor(image, max(boxes, key=lambda b: b.area())))
            paths.append(row["path"])
    return images, shapes, paths


def timed_ms(run: Callable[[U8], F32], chips: U8) -> float:
    t0 = time.perf_counter()
    run(chips)
    return 1000 * (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=0, help="photos to use (0: all)")
    parser.add_argument("--runs", type=int, default=15,
                        help="timed rounds (each: every backend, batch 1 and 8)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 16 photos, 3 rounds; its numbers are not the bench's")
    args = parser.parse_args()
    if args.quick:
        args.limit, args.runs = args.limit or 16, 3

    t0 = time.perf_counter()
    images, shapes, paths = find_faces(args.limit)
    print(f"{len(paths)} faces found in {time.perf_counter() - t0:.1f} s; "
          f"dlib {dlib.__version__}, onnxruntime {ort.__version__}, numpy {np.__version__}, "
          f"{os.cpu_count()} CPUs")

    t0 = time.perf_counter()
    reference_model = dlib.face_recognition_model_v1(str(face_model_files().resnet))
    reference = np.array([np.asarray(reference_model.compute_face_descriptor(im, sh, 0))
                          for im, sh in zip(images, shapes, strict=True)], dtype=np.float32)
    print(f"dlib reference descriptors: {time.perf_counter() - t0:.1f} s")

    chips = np.concatenate([FaceEmbedder.extract_chips(im, [sh])
                            for im, sh in zip(images, shapes, strict=True)])
    configs: list[tuple[str, Backend, int | None]] = [
        ("dlib-bin (reference)", "dlib", None),
        ("numpy + OpenBLAS", "numpy", None),
        ("onnxruntime, 1 thread", "onnx", 1),
        ("onnxruntime, 2 threads", "onnx", 2),
    ]
    embedders = [FaceEmbedder(backend, threads=threads, batch_size=8)
                 for _, backend, threads in configs]
    diffs = []
    for embedder in embedders:
        # dlib's own backend is slow and only shows that the chips are dlib's: a sample will do.
        n = 16 if embedder.backend == "dlib" else len(chips)
        diffs.append(embedder.embed_chips(chips[:n]) - reference[:n])
        embedder.embed_chips(chips[:8])  # warm-up: first-run allocations, thread pools

    # Rounds that take every backend in turn, so that load from other processes on this
    # shared machine falls on all of them alike; the median of the rounds is reported.
    times: dict[tuple[int, int], list[float]] = {}
    for round_no in range(args.runs):
        for i, embedder in enumerate(embedders):
            # OpenBLAS's threads keep spinning for ~0.1 s after a numpy matrix product and
            # would slow down whichever backend runs next (2-thread onnxruntime by ~25 %).
            time.sleep(0.3)
            for batch in (1, 8):
                start = (round_no * batch) % (len(chips) - batch + 1)
                ms = timed_ms(embedder.embed_chips, chips[start:start + batch])
                times.setdefault((i, batch), []).append(ms / batch)

    rows = [Row(name, e.load_seconds, statistics.median(times[i, 1]),
                statistics.median(times[i, 8]), float(np.abs(d).max()),
                float(np.linalg.norm(d, axis=1).max()))
            for i, ((name, _, _), e, d) in enumerate(zip(configs, embedders, diffs, strict=True))]

    base = rows[0].ms_batch1
    print()
    print("| backend | load s | ms/face batch 1 | ms/face batch 8 | speed-up (b1) "
          "| max abs diff vs dlib | max L2 vs dlib |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r.name} | {r.load_s:.2f} | {r.ms_batch1:.1f} | {r.ms_batch8:.1f} "
              f"| {base / r.ms_batch1:.1f}x | {r.max_abs:.1e} | {r.max_l2:.1e} |")
    print(f"\ndiffs over {len(chips)} faces (dlib-bin row: over 16, its own backend vs "
          "compute_face_descriptor on the whole image)")


if __name__ == "__main__":
    main()
