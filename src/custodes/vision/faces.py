"""Face detection on grey frames: dlib's HOG detector, 5-point landmarks, and a quality score.

    detector = FaceDetector(upsample=0, min_size=60)
    faces = detector.detect(grey, regions=motion_boxes)   # frame coordinates
    best = max(faces, key=lambda f: f.quality(grey))

Costs measured on the 2-core box (640x360 grey frame, dlib-bin): the full-frame HOG scan takes
~13-19 ms at upsample 0 and ~50-80 ms at upsample 1, and grows with the pixels scanned, so
running it only on motion regions (`regions=`) costs in proportion to their area (a 160x160
crop: ~2.5 ms; a person's upper body, ~40 % of the frame: ~7.6 ms against 14.3 ms for the whole
frame, same faces). The 5-point landmarks cost ~0.2 ms per face and are computed eagerly for
every face kept, because the tracker needs them for frontalness and alignment anyway.
`Face.quality` costs ~0.05 ms.

HOG scans an 80x80 window over an image pyramid: at upsample 0 it finds faces of about 80 px
and up, at upsample 1 about 40 px, at upsample 2 about 20 px (each step costs ~4x the time).
The 68-point landmark model is never used: dlib documents it as restricted to non-commercial
use by its training data; the 5-point model is not.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import cv2
import dlib  # type: ignore[import-untyped]  # dlib ships no type information
import numpy as np
import numpy.typing as npt

from custodes.vision.weights import FaceModelFiles, face_model_files

log = logging.getLogger(__name__)

U8 = npt.NDArray[np.uint8]
I32 = npt.NDArray[np.int32]

HOG_WINDOW: Final = 80  # dlib's frontal face detector: smallest face at upsample 0, in pixels
# Where dlib's 5-point model puts its points: two corners of each eye, then the base of the nose.
EYE_A: Final = (0, 1)
EYE_B: Final = (2, 3)
NOSE: Final = 4
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
class Face:
    """One detected face. `landmarks` is (5, 2) int32 x, y in the same coordinates as `box`."""

    box: Box
    score: float  # the HOG detector's margin: > 0 is a face at dlib's default threshold
    landmarks: I32

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
        points = self.landmarks.astype(np.float64)
        eye_a, eye_b = points[list(EYE_A)].mean(axis=0), points[list(EYE_B)].mean(axis=0)
        axis = eye_b - eye_a
        length2 = float(axis @ axis)
        if length2 == 0.0:
            return 0.0
        along = float((points[NOSE] - eye_a) @ axis) / length2  # 0 at eye_a, 1 at eye_b
        return max(0.0, 1.0 - 2.0 * abs(along - 0.5))

    def quality(self, grey: U8) -> float:
        """0..1: size x sharpness x frontalness, so a face poor in any one of them ranks low."""
        return self.size_term() * self.sharpness_term(grey) * self.frontalness()

    def shifted(self, dx: int, dy: int) -> Face:
        """The same face in coordinates moved by (dx, dy), e.g. relative to a crop."""
        offset = np.array([dx, dy], dtype=np.int32)
        return Face(self.box.shift(dx, dy), self.score, self.landmarks + offset)

    def dlib_shape(self) -> Any:
        """A dlib.full_object_detection, what dlib's face chips and descriptors take."""
        rect = dlib.rectangle(self.box.x, self.box.y, self.box.right - 1, self.box.bottom - 1)
        return dlib.full_object_detection(rect, [dlib.point(int(x), int(y))
                                                 for x, y in self.landmarks])


class FaceDetector:
    """dlib's HOG frontal face detector with 5-point landmarks, on grey uint8 frames.

    `upsample` (0..2) doubles the image that many times before scanning: smallest face ~80 px
    at 0, ~40 px at 1; each step costs ~4x. `min_size` drops faces whose smaller side is
    shorter (pixels). `threshold` is the detector's score cut (dlib's default 0; lower finds
    more faces and more false ones). `roi_margin` grows each motion region by that fraction of
    its size on each side before scanning, so that a face at its edge is scanned whole.

    Loading takes ~0.5 s. dlib's objects are not documented as thread-safe: use one detector
    per worker thread.
    """

    def __init__(self, *, upsample: int = 0, min_size: int = 40, threshold: float = 0.0,
                 roi_margin: float = 0.25, model_files: FaceModelFiles | None = None) -> None:
        if not 0 <= upsample <= 2:
            raise ValueError(f"upsample must be 0, 1 or 2, got {upsample}")
        if min_size < 0 or roi_margin < 0:
            raise ValueError("min_size and roi_margin must not be negative")
        self.upsample = upsample
        self.min_size = min_size
        self.threshold = threshold
        self.roi_margin = roi_margin
        files = model_files or face_model_files()
        self._detector: Any = dlib.get_frontal_face_detector()
        self._predictor: Any = dlib.shape_predictor(str(files.shape_predictor_5))

    def detect(self, grey: U8, regions: Sequence[Box] | None = None, *,
               upsample: int | None = None, min_size: int | None = None,
               threshold: float | None = None) -> list[Face]:
        """Faces in a grey (H, W) uint8 frame, in frame coordinates, best score first.

        With `regions` (motion boxes) only those parts of the frame are scanned; an empty list
        scans nothing. The keyword arguments override the detector's settings for this call
        (a snapshot redactor wants a finer upsample and every face, however small).
        """
        up = self.upsample if upsample is None else upsample
        if not 0 <= up <= 2:
            raise ValueError(f"upsample must be 0, 1 or 2, got {up}")
        if grey.dtype != np.uint8 or grey.ndim != 2:
            raise ValueError(f"grey must be uint8 (rows, cols), got {grey.dtype} {grey.shape}")
        # dlib silently finds nothing in a non-contiguous view (a decoder's Y plane with row
        # padding, a crop): hand it contiguous pixels, copied only when needed.
        grey = np.ascontiguousarray(grey)
        smallest = self.min_size if min_size is None else min_size
        cut = self.threshold if threshold is None else threshold
        height, width = grey.shape
        full = Box(0, 0, width, height)
        crops = [full] if regions is None else self.scan_boxes(regions, width, height, up,
                                                                 smallest)
        found: list[tuple[Box, float]] = []
        for crop in crops:
            pixels = grey if crop == full else np.ascontiguousarray(
                grey[crop.y:crop.bottom, crop.x:crop.right])
            rects, scores, _ = self._detector.run(pixels, up, cut)
            for rect, score in zip(rects, scores, strict=True):
                box = Box.from_corners(rect.left() + crop.x, rect.top() + crop.y,
                                       rect.right() + 1 + crop.x, rect.bottom() + 1 + crop.y)
                if min(box.w, box.h) >= smallest:
                    found.append((box, float(score)))
        return [self._face(grey, box, score) for box, score in _dedupe(found)]

    def scan_boxes(self, regions: Iterable[Box], width: int, height: int,
                   upsample: int | None = None, min_size: int | None = None) -> list[Box]:
        """The crops `detect` scans for these regions: grown, merged where they overlap.

        Each region grows by `roi_margin` and to at least twice the smallest face that can be
        found (HOG's window at this upsample, or min_size if larger), so a face fits with some
        context; overlapping crops merge, so no pixel is scanned twice.
        """
        up = self.upsample if upsample is None else upsample
        smallest = max(HOG_WINDOW >> up, self.min_size if min_size is None else min_size)
        boxes = [r.expand(self.roi_margin).at_least(2 * smallest).clip(width, height)
                 for r in regions]
        return _merge([b for b in boxes if b.area > 0])

    def landmarks(self, grey: U8, box: Box) -> I32:
        """dlib's 5 landmarks (5, 2) int32 for a face box, in frame coordinates."""
        rect = dlib.rectangle(box.x, box.y, box.right - 1, box.bottom - 1)
        shape = self._predictor(grey, rect)
        return np.array([(shape.part(i).x, shape.part(i).y) for i in range(5)], dtype=np.int32)

    def _face(self, grey: U8, box: Box, score: float) -> Face:
        # The box keeps the detector's own (unclipped) coordinates, as dlib's alignment wants
        # them; callers clip when they cut pixels.
        return Face(box=box, score=score, landmarks=self.landmarks(grey, box))


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


def _dedupe(found: list[tuple[Box, float]], max_iou: float = 0.5) -> list[tuple[Box, float]]:
    """Keep the best-scoring box of any group overlapping by more than max_iou."""
    kept: list[tuple[Box, float]] = []
    for box, score in sorted(found, key=lambda item: -item[1]):
        if all(box.iou(other) <= max_iou for other, _ in kept):
            kept.append((box, score))
    return kept
