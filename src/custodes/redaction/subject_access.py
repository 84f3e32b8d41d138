"""Subject access: which faces of an export are the requester's, judged per track.

    keep = subject_keep(photo_rgb)                 # the requester's photo, RGB
    info = redact_file(src, dst, keep=keep)        # only the requester's face stays visible

The photo's face is described once (dlib's 128-d descriptor through FaceEmbedder); each track
of the export is then judged on its SAMPLES_PER_TRACK best faces (sharpest, most frontal), at
the calibrated levels of `custodes.faces.calibration`: a track is the requester's only if its
faces reach "match" by the track rule (`track_level`: at least MIN_AGREEING of them below
MATCH_DISTANCE, and most of them). Showing a face to the requester discloses it, and the
question asked is the one the calibration answers ("is this face one of the people asked
about?"), not dlib's 0.6 "are these two photos one person?", at which a stranger resembling the
requester would often pass. Anything weaker stays blurred (fail closed): a "possible" track, a
track with fewer than MIN_AGREEING faces large enough to describe, no match.

The price is the calibration's: from one photo only ~39 % of true matches reach "match", so the
requester is often blurred too and must bring a better photo (frontal, sharp) or be shown by a
person. Measured on the Hamilton clip (5.5-8.5 s at 10 fps, faces found by CenterFace,
tests/test_subject_access.py) against his reference photo: Lin-Manuel Miranda's track
0.40-0.51 (close-up, "possible": blurred); the audience's tracks 0.68 and more.
Nothing is stored: the photo's descriptor lives as long as the returned function.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

from custodes.faces.calibration import MIN_AGREEING, MatchLevel, track_level
from custodes.vision.embedding import FaceEmbedder
from custodes.vision.faces import FaceDetector
from custodes.vision.tracker import BestFace

log = logging.getLogger(__name__)

U8 = npt.NDArray[np.uint8]

# Faces smaller than this (pixels, smaller side) are not compared: their descriptors are too
# poor to tell people apart, so they count as "not the requester".
MIN_FACE: Final = 40


class NoFaceInPhoto(ValueError):
    """The requester's photo shows no face that can be described."""


def subject_keep(photo_rgb: U8, *, embedder: FaceEmbedder | None = None,
                 detector: FaceDetector | None = None) -> Callable[[Sequence[BestFace]], bool]:
    """A `keep` for `redact_file`: True for a track whose faces are the photo's person.

    The photo's largest face is the requester's. Raises NoFaceInPhoto when it has none.
    """
    embedder = embedder or FaceEmbedder("onnx")
    detector = detector or FaceDetector()
    reference = _describe_photo(photo_rgb, embedder, detector)

    def keep(samples: Sequence[BestFace]) -> bool:
        usable = [s for s in samples if min(s.face.box.w, s.face.box.h) >= MIN_FACE]
        # track_level judges a single face on its own; a disclosure needs faces that agree.
        if len(usable) < MIN_AGREEING:
            return False
        chips = np.concatenate([embedder.extract_chips(s.image, [s.face.dlib_shape()])
                                for s in usable])
        distances = np.linalg.norm(embedder.embed_chips(chips) - reference, axis=1)
        found = track_level([float(d) for d in distances])
        log.debug("track: distances %s, %s", np.round(distances, 2).tolist(), found)
        return found is MatchLevel.MATCH

    return keep


def _describe_photo(photo_rgb: U8, embedder: FaceEmbedder,
                    detector: FaceDetector) -> npt.NDArray[np.float32]:
    if photo_rgb.dtype != np.uint8 or photo_rgb.ndim != 3 or photo_rgb.shape[2] != 3:
        raise ValueError(f"the photo must be RGB uint8 (rows, cols, 3), got {photo_rgb.dtype} "
                         f"{photo_rgb.shape}")
    faces = detector.detect(photo_rgb, min_size=MIN_FACE)
    if not faces:
        raise NoFaceInPhoto("no face of at least 40 px found in the photo")
    face = max(faces, key=lambda f: f.box.area)
    vector: npt.NDArray[np.float32] = embedder.embed(photo_rgb, [face.dlib_shape()])[0]
    return vector
