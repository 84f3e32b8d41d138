"""128-d face descriptors, equal to dlib's `compute_face_descriptor`, computed faster.

dlib-bin (prebuilt dlib without BLAS) spends 73-100 ms per face in its ResNet on a 2-core box.
The same network, with the same weights read from the same file (see dlib_resnet.py), runs here
on ONNX Runtime (4-7 ms per face) or on numpy/OpenBLAS (7-12 ms per face); the descriptors agree
with dlib's to ~1e-6 per element (bench/embed_speed.py). dlib stays the reference backend and
still does the cheap part, the face alignment (`get_face_chips`, ~0.3 ms per face), so the chips
are dlib's own.

    embedder = FaceEmbedder()                      # backend="onnx"; or "numpy", "dlib"
    vectors = embedder.embed(image_rgb, shapes)    # shapes from dlib's 5-point shape_predictor
    vectors = embedder.embed_chips(chips)          # (n, 150, 150, 3) uint8 aligned chips

Same person is ~0.1-0.5 apart (Euclidean), different people ~0.7 and more; dlib's 0.6 holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Final, Literal, get_args

import dlib  # type: ignore[import-untyped]  # dlib ships no type information
import numpy as np
import numpy.typing as npt

from custodes.vision.dlib_resnet import DESCRIPTOR_DIM, load_resnet
from custodes.vision.weights import FaceModelFiles, face_model_files

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]
Backend = Literal["onnx", "numpy", "dlib"]
BACKENDS: Final[tuple[Backend, ...]] = get_args(Backend)

# A dlib.full_object_detection (a face box with its landmarks) from dlib.shape_predictor.
FaceShape = Any

CHIP_SIZE: Final = 150  # the network's input (input_rgb_image_sized<150>)
CHIP_PADDING: Final = 0.25  # dlib's default in compute_face_descriptor and get_face_chip
# Two descriptors closer than this (Euclidean) are taken as the same person: dlib's documented
# threshold for this network, checked on LFW pairs by bench/faces_accuracy.py.
MATCH_THRESHOLD: Final = 0.6


class FaceEmbedder:
    """Face descriptors from one of three backends that give the same numbers.

    Loading reads the weights once (well under a second). The onnx and numpy backends may be
    shared between threads; dlib's may not (its network object reuses buffers between calls,
    so give each thread its own or hold a lock). `threads` caps onnxruntime's threads (None: one
    per core); the numpy backend follows OPENBLAS_NUM_THREADS and dlib is single-threaded. Faces
    go through the network `batch_size` at a time: batches amortise per-layer overhead, and
    bound memory.
    """

    def __init__(self, backend: Backend = "onnx", *, threads: int | None = None,
                 batch_size: int = 16, model_files: FaceModelFiles | None = None) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        files = model_files or face_model_files()
        started = time.perf_counter()
        self.backend: Backend = backend
        self.batch_size = batch_size
        self._net: Callable[[U8], F32]
        self._dlib: Any = None
        if backend == "dlib":
            self._dlib = dlib.face_recognition_model_v1(str(files.resnet))
            self._net = self._dlib_net
        elif backend == "numpy":
            from custodes.vision.resnet_numpy import NumpyResNet  # noqa: PLC0415

            self._net = NumpyResNet(load_resnet(files.resnet))
        else:
            # Imported here so the numpy and dlib backends work without onnxruntime installed.
            from custodes.vision.resnet_onnx import OnnxResNet  # noqa: PLC0415

            self._net = OnnxResNet(load_resnet(files.resnet), threads=threads)
        self.load_seconds = time.perf_counter() - started

    @staticmethod
    def extract_chips(image_rgb: U8, shapes: Sequence[FaceShape]) -> U8:
        """dlib's aligned 150x150 chips, exactly as compute_face_descriptor cuts them."""
        if not shapes:
            return np.empty((0, CHIP_SIZE, CHIP_SIZE, 3), dtype=np.uint8)
        detections = dlib.full_object_detections()
        for shape in shapes:
            detections.append(shape)
        chips = dlib.get_face_chips(_rgb_image(image_rgb), detections, size=CHIP_SIZE,
                                    padding=CHIP_PADDING)
        return np.stack([np.asarray(chip, dtype=np.uint8) for chip in chips])

    def embed(self, image_rgb: U8, shapes: Sequence[FaceShape]) -> F32:
        """Descriptors (n, 128) of the faces in an RGB image, one per landmark shape."""
        return self.embed_chips(self.extract_chips(image_rgb, shapes))

    def embed_chips(self, chips: U8) -> F32:
        """Descriptors (n, 128) of aligned chips (n, 150, 150, 3) uint8 RGB."""
        chips = np.asarray(chips)
        if chips.dtype != np.uint8 or chips.ndim != 4 or \
                chips.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
            raise ValueError(f"chips must be uint8 (n, {CHIP_SIZE}, {CHIP_SIZE}, 3), "
                             f"got {chips.dtype} {chips.shape}")
        if len(chips) == 0:
            return np.empty((0, DESCRIPTOR_DIM), dtype=np.float32)
        return np.concatenate([self._net(chips[i:i + self.batch_size])
                               for i in range(0, len(chips), self.batch_size)])

    def _dlib_net(self, chips: U8) -> F32:
        vectors = self._dlib.compute_face_descriptor([np.ascontiguousarray(c) for c in chips])
        return np.array([np.asarray(v) for v in vectors], dtype=np.float32)


def _rgb_image(image: U8) -> U8:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8 (rows, cols, 3) RGB, got {image.dtype} "
                         f"{image.shape}")
    return np.ascontiguousarray(image)
