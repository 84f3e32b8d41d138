"""Finding the faces to blur in whatever leaves the box: exports, playback copies, snapshots
and live pictures all ask this one detector.

    detector = RedactionDetector()                 # one per thread
    found = detector.detect(grey, upsample=2)      # [Found(box, face, by), ...]
    boxes = detector.boxes(grey, upsample=2)       # just where to blur

dlib's HOG detector (`custodes.vision.faces.FaceDetector`) is trained on frontal faces: a
face turned a quarter away (an audience watching a stage) or in profile is not found, and
so was not blurred. Here three detectors look at the same grey picture and their boxes are
joined:

- HOG, as before: threshold -0.3 (below dlib's 0: for redaction a missed face is a leak, a
  false one a blurred patch), any size, at the upsample the caller's rule gives.
- OpenCV's Haar profile cascade (`haarcascade_profileface.xml`), on the picture and on its
  mirror image, because it only knows faces turned to one side.
- OpenCV's Haar frontal cascade (`haarcascade_frontalface_alt2.xml`), which finds some
  frontal and three-quarter faces HOG misses (dark, small, tilted).

Boxes that overlap (IOU >= MERGE_IOU, or one mostly inside the other) become one box, their
union; the caller grows it by its usual margins. A HOG face keeps its landmarks (`Found.face`),
which subject access needs to recognise the subject; a face only a cascade found has none, so
it can never be matched to anyone and is always blurred (fails closed).

The cascades scan a copy of the picture whose shorter side is at most `haar_side` (pixels), so
their cost is bounded whatever the camera: HAAR_SIDE (360, a sub-stream picture) for live
pictures and snapshots; exports ask for more (`redact_video.EXPORT_HAAR_SIDE`). Faces are
found from MIN_SIZE pixels of that copy: 18 px at 360 lines, ~54 px in a 1080p picture at
360, ~36 px at 540.

Cost on the 2-core box (`python bench/redaction.py --cost`, one thread, per picture): 640x360,
HOG at upsample 2 ~0.21 s, with the cascades ~0.7 s; 1920x1080, HOG at upsample 1 ~0.45 s,
with the cascades at 360 lines ~1.1 s, at 540 lines (exports) ~2.0 s. The cascades cost more
than HOG: the fine scale step (SCALE_FACTOR) is what finds the turned faces. What they add:
see `bench/redaction.py` (the Hamilton clip's audience: 7 of 15 faces left visible by HOG
alone, none by the union).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

from custodes.vision.faces import Box, Face, FaceDetector
from custodes.vision.weights import FaceModelFiles

U8 = npt.NDArray[np.uint8]

HOG_THRESHOLD: Final = -0.3
PROFILE_CASCADE: Final = "haarcascade_profileface.xml"
FRONTAL_CASCADE: Final = "haarcascade_frontalface_alt2.xml"
HAAR_SIDE: Final = 360  # the cascades scan a copy whose shorter side is at most this (pixels)
# Cascade settings, tuned on frames of the real clips (every 10th of the Hamilton clip: 41
# faces) against dlib's CNN detector: HOG alone covers 19 of the 41, the union with these
# settings 38 (the 3 left: a close-up profile cut by the frame's edge), with ~0.5 boxes a
# frame where the CNN sees no face. A scale step of 1.2 misses much of the turned audience
# (30 of 41); at 1.1 the cascade loses Barack Obama's three-quarter face in some frames unless
# the neighbour count drops to 2, which adds more false boxes than the finer 1.05 step with 5
# (that costs ~+0.2 s at 640x360). Equalizing the histogram first (as OpenCV's sample does)
# adds false boxes and finds nothing more.
SCALE_FACTOR: Final = 1.05
MIN_NEIGHBOURS: Final = 5
MIN_SIZE: Final = 18  # pixels in the scanned copy; the cascades' own window is 20x20
MERGE_IOU: Final = 0.3
MERGE_INSIDE: Final = 0.6  # share of the smaller box inside the larger that merges them too


@dataclass(frozen=True, slots=True)
class Found:
    """A face to blur: its box, HOG's face (with landmarks) when HOG found it, and which
    detectors found it ("hog", "profile", "frontal")."""

    box: Box
    face: Face | None
    by: tuple[str, ...]


class RedactionDetector:
    """HOG + Haar profile (both ways) + Haar frontal, merged. Not to be shared between threads
    (dlib's and OpenCV's detector objects are not documented as thread-safe): one per thread.

    `haar` False leaves HOG alone, as redaction was before (for comparison in the bench).
    """

    def __init__(self, *, threshold: float = HOG_THRESHOLD, haar: bool = True,
                 haar_side: int = HAAR_SIDE, model_files: FaceModelFiles | None = None) -> None:
        if haar_side < 2 * MIN_SIZE:
            raise ValueError(f"haar_side must be at least {2 * MIN_SIZE}, got {haar_side}")
        self.threshold = threshold
        self.haar = haar
        self.haar_side = haar_side
        self.hog = FaceDetector(min_size=0, model_files=model_files)
        self._profile = _cascade(PROFILE_CASCADE)
        self._frontal = _cascade(FRONTAL_CASCADE)

    def describe(self, upsample: int) -> dict[str, object]:
        """The settings, for an export's manifest."""
        return describe(upsample, threshold=self.threshold, haar=self.haar,
                        haar_side=self.haar_side)

    def detect(self, grey: U8, upsample: int) -> list[Found]:
        """Every face found in a grey (H, W) uint8 picture, HOG's first."""
        faces = self.hog.detect(grey, upsample=upsample, min_size=0, threshold=self.threshold)
        found = [Found(face.box, face, ("hog",)) for face in faces]
        if self.haar:
            found += [Found(box, None, (name,)) for name, box in self._cascades(grey)]
        return _merge(found)

    def boxes(self, grey: U8, upsample: int) -> list[Box]:
        """Where the faces are, nothing more."""
        return [f.box for f in self.detect(grey, upsample)]

    def _cascades(self, grey: U8) -> list[tuple[str, Box]]:
        height, width = grey.shape
        scale = min(1.0, self.haar_side / min(height, width))
        small = grey if scale == 1.0 else cv2.resize(
            grey, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
        mirrored = cv2.flip(small, 1)
        side = small.shape[1]
        found: list[tuple[str, Box]] = []
        for name, cascade, image, flipped in (("profile", self._profile, small, False),
                                              ("profile", self._profile, mirrored, True),
                                              ("frontal", self._frontal, small, False)):
            rects = cascade.detectMultiScale(image, scaleFactor=SCALE_FACTOR,
                                             minNeighbors=MIN_NEIGHBOURS,
                                             minSize=(MIN_SIZE, MIN_SIZE))
            for x, y, w, h in np.asarray(rects, dtype=np.int64).reshape(-1, 4).tolist():
                left = side - x - w if flipped else x
                found.append((name, Box.from_corners(left / scale, y / scale,
                                                     (left + w) / scale, (y + h) / scale)))
        return found


def describe(upsample: int, *, threshold: float = HOG_THRESHOLD, haar: bool = True,
             haar_side: int = HAAR_SIDE) -> dict[str, object]:
    """What a RedactionDetector with these settings does, for an export's manifest."""
    hog: dict[str, object] = {"name": "dlib-hog", "upsample": upsample, "threshold": threshold}
    if not haar:
        return hog
    return {**hog, "name": "dlib-hog+haar", "haar": [PROFILE_CASCADE, FRONTAL_CASCADE],
            "haar_side": haar_side, "haar_min_size": MIN_SIZE,
            "haar_scale_factor": SCALE_FACTOR, "haar_min_neighbours": MIN_NEIGHBOURS}


def _cascade(name: str) -> cv2.CascadeClassifier:
    # OpenCV's type stubs leave out cv2.data, the folder of the cascades it ships.
    path = Path(cv2.data.haarcascades) / name  # type: ignore[attr-defined]
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise RuntimeError(f"cannot load OpenCV's cascade {path}")
    return cascade


def _overlap(a: Box, b: Box) -> bool:
    inter = a.intersection(b)
    if inter == 0:
        return False
    return a.iou(b) >= MERGE_IOU or inter >= MERGE_INSIDE * min(a.area, b.area)


def _merge(found: Sequence[Found]) -> list[Found]:
    """Join overlapping finds into one, the union of their boxes, until none overlap. HOG's
    face (the best-scoring one) is kept where a group has one."""
    merged: list[Found] = []
    for item in found:
        current = item
        changed = True
        while changed:
            changed = False
            for other in merged:
                # Two HOG faces stay apart: each is its own person (HOG already dropped its
                # duplicates), and subject access must not hide a neighbour inside the
                # subject's box.
                both = current.face is not None and other.face is not None
                if not both and _overlap(current.box, other.box):
                    merged.remove(other)
                    current = _join(current, other)
                    changed = True
                    break
        merged.append(current)
    return merged


def _join(a: Found, b: Found) -> Found:
    faces = [f for f in (a.face, b.face) if f is not None]
    face = max(faces, key=lambda f: f.score) if faces else None
    return Found(a.box.union(b.box), face, tuple(sorted({*a.by, *b.by})))
