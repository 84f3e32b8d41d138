"""Joins per-frame face detections into tracks, and keeps each track's best faces.

    tracker = Tracker(max_age=1.0)
    for t, grey, frame in frames:                      # t in seconds, increasing
        faces = detector.detect(grey, regions=motion)
        for done in tracker.update(t, faces, grey, lambda: to_rgb(frame)):
            vector = embedder.embed(done.best.image, [done.best.face.dlib_shape()])
    for done in tracker.flush():                       # camera offline / stopping
        ...

Matching is greedy: first by IoU of each track's predicted box (its last box moved by its
velocity) with the detections, then, for what is left, by center distance relative to the face
size, which catches fast movers whose boxes no longer overlap. A track that has not been
matched for more than `max_age` seconds ends and is returned once, as a FinishedTrack.

For each track its SAMPLES best faces so far are kept (highest `Face.quality`, from different
frames): a small RGB crop around each, large enough for dlib's 150x150 face chip with padding
0.25, and its landmarks relative to that crop, so no frame needs to be kept. Several, because a
track is identified only when several of its faces agree (`custodes.faces.calibration`). The
RGB frame is asked for (converting it costs time) only when a detection earns a place.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from custodes.vision.faces import Box, Face

log = logging.getLogger(__name__)

U8 = npt.NDArray[np.uint8]
RgbProvider = Callable[[], U8]

# Margin around the face box for the kept crop, per side, as a fraction of the box. dlib's chip
# (padding 0.25) spans ~1.5x the aligned face; a head rolled by 45 degrees needs ~1.5 x 1.41 =
# 2.1x: 0.6 per side gives 2.2x, so the chip comes out the same as one cut from the whole frame.
CROP_MARGIN: Final = 0.6
SAMPLES: Final = 3  # best faces kept per track
# Weight of the newest velocity measurement; the rest is the previous estimate (detector boxes
# jitter by a few pixels from frame to frame).
VELOCITY_SMOOTHING: Final = 0.5


@dataclass(frozen=True, slots=True, eq=False)
class BestFace:
    """A track's best face, enough to compute its embedding later without the frame."""

    time: float
    quality: float
    box: Box  # in frame coordinates
    image: U8  # RGB crop (h, w, 3) of the frame around the face
    face: Face  # box and landmarks relative to `image`
    offset: tuple[int, int]  # where the crop's top-left corner was in the frame (x, y)


@dataclass(frozen=True, slots=True, eq=False)
class FinishedTrack:
    id: int
    first_seen: float
    last_seen: float
    first_box: Box
    last_box: Box
    detections: int
    best: BestFace
    samples: tuple[BestFace, ...]  # the best faces, best first (`best` is the first)

    @property
    def duration(self) -> float:
        return self.last_seen - self.first_seen


@dataclass(slots=True, eq=False)
class _Track:
    id: int
    first_seen: float
    last_seen: float
    first_box: Box
    last_box: Box
    best: BestFace
    samples: list[BestFace] = field(default_factory=list)  # best first, at most SAMPLES
    detections: int = 1
    vx: float = 0.0  # velocity of the box center, pixels per second
    vy: float = 0.0

    def predict(self, t: float) -> Box:
        """The last box moved along the velocity to time t (tracks live at most max_age)."""
        dt = max(t - self.last_seen, 0.0)
        return self.last_box.shift(round(self.vx * dt), round(self.vy * dt))

    def observe(self, t: float, box: Box) -> None:
        dt = t - self.last_seen
        if dt > 0:
            (x0, y0), (x1, y1) = self.last_box.center, box.center
            a = VELOCITY_SMOOTHING if self.detections > 1 else 1.0
            self.vx = a * (x1 - x0) / dt + (1 - a) * self.vx
            self.vy = a * (y1 - y0) / dt + (1 - a) * self.vy
        self.last_seen, self.last_box = t, box
        self.detections += 1

    def finished(self) -> FinishedTrack:
        return FinishedTrack(id=self.id, first_seen=self.first_seen, last_seen=self.last_seen,
                             first_box=self.first_box, last_box=self.last_box,
                             detections=self.detections, best=self.best,
                             samples=tuple(self.samples))

    def offer(self, t: float, quality: float, face: Face, rgb: _Lazy) -> None:
        """Keep this face if it is among the track's SAMPLES best."""
        if len(self.samples) == SAMPLES and quality <= self.samples[-1].quality:
            return
        self.samples.append(_best_face(t, quality, face, rgb()))
        self.samples.sort(key=lambda sample: -sample.quality)
        del self.samples[SAMPLES:]
        self.best = self.samples[0]


class Tracker:
    """Greedy IoU tracker over face detections of one camera.

    `max_age`: seconds a track survives without a detection (a missed frame, a turned head).
    `iou_threshold`: least IoU between a track's predicted box and a detection to match.
    `max_distance`: for the fallback match, the largest center distance in face widths (2: a
    walker's 37-pixel face moves ~60 px between frames analysed at 5 fps).
    `max_size_ratio`: boxes whose widths differ by more than this are never joined.
    """

    def __init__(self, max_age: float = 1.0, iou_threshold: float = 0.3, *,
                 max_distance: float = 2.0, max_size_ratio: float = 1.5) -> None:
        if max_age <= 0 or not 0 < iou_threshold <= 1:
            raise ValueError("max_age must be positive and iou_threshold in (0, 1]")
        self.max_age = max_age
        self.iou_threshold = iou_threshold
        self.max_distance = max_distance
        self.max_size_ratio = max_size_ratio
        self._tracks: list[_Track] = []
        self._ids = itertools.count(1)
        self._now = float("-inf")

    @property
    def active(self) -> int:
        """Number of tracks not yet finished."""
        return len(self._tracks)

    def update(self, t: float, faces: Sequence[Face], frame_grey: U8,
               frame_rgb_provider: RgbProvider) -> list[FinishedTrack]:
        """Add one analysed frame's faces (at time t, seconds); return the tracks that ended.

        Call it for every analysed frame, also one without faces: that is how tracks age.
        `frame_rgb_provider` returns the frame as RGB (H, W, 3) uint8. It is called at most
        once, and only when a face starts a track or earns a place among its best faces.
        """
        if t < self._now:
            raise ValueError(f"time went backwards: {t} after {self._now}")
        self._now = t
        # Expire first, so that a face back after more than max_age starts a new track.
        finished = self._end(lambda track: t - track.last_seen > self.max_age)
        rgb = _Lazy(frame_rgb_provider)
        matches, unmatched = self._match(t, faces)
        for track, face in matches:
            track.observe(t, face.box)
            track.offer(t, face.quality(frame_grey), face, rgb)
        for face in unmatched:
            best = _best_face(t, face.quality(frame_grey), face, rgb())
            track = _Track(id=next(self._ids), first_seen=t, last_seen=t, first_box=face.box,
                           last_box=face.box, best=best, samples=[best])
            self._tracks.append(track)
            log.debug("track %d starts at %.2f s: %s", track.id, t, face.box)
        return finished

    def flush(self) -> list[FinishedTrack]:
        """End every track (the camera went offline, the worker stops)."""
        return self._end(lambda track: True)

    def predict(self, t: float, *, extrapolate: bool = True) -> list[Box]:
        """Where the active tracks' faces are expected at time t.

        For redaction between detections: a frame where the detector missed a face still gets
        that face blurred. With `extrapolate` the last box moves along the track's velocity;
        without, it stays where it was last seen. Tracks unseen for more than max_age are
        left out, even before the next update ends them.
        """
        alive = [track for track in self._tracks if t - track.last_seen <= self.max_age]
        return [track.predict(t) if extrapolate else track.last_box for track in alive]

    def _match(self, t: float, faces: Sequence[Face]
               ) -> tuple[list[tuple[_Track, Face]], list[Face]]:
        """Pairs (track, face) matched greedily, best first, and the faces left unmatched."""
        predicted = [track.predict(t) for track in self._tracks]
        pairs: list[tuple[float, int, int]] = []  # (cost, track index, face index)
        for ti, box in enumerate(predicted):
            for fi, face in enumerate(faces):
                # A face does not change size by half between two analysed frames; one that
                # seems to is someone else in the same place (a cut, a person passing behind).
                if not self._similar_size(box, face.box):
                    continue
                iou = box.iou(face.box)
                if iou >= self.iou_threshold:
                    pairs.append((-iou, ti, fi))  # higher IoU first
                elif (distance := self._distance(box, face.box)) is not None:
                    pairs.append((distance, ti, fi))  # after every IoU match (costs >= 0)
        used_tracks: set[int] = set()
        used_faces: set[int] = set()
        matches: list[tuple[_Track, Face]] = []
        for _, ti, fi in sorted(pairs):
            if ti not in used_tracks and fi not in used_faces:
                used_tracks.add(ti)
                used_faces.add(fi)
                matches.append((self._tracks[ti], faces[fi]))
        return matches, [face for fi, face in enumerate(faces) if fi not in used_faces]

    def _similar_size(self, a: Box, b: Box) -> bool:
        return max(a.w, b.w) <= self.max_size_ratio * min(a.w, b.w)

    def _distance(self, predicted: Box, box: Box) -> float | None:
        """Center distance in face widths, or None when too far."""
        size = (predicted.w + box.w) / 2
        if size <= 0:
            return None
        (x0, y0), (x1, y1) = predicted.center, box.center
        distance = float(np.hypot(x1 - x0, y1 - y0)) / size
        return distance if distance <= self.max_distance else None

    def _end(self, ended: Callable[[_Track], bool]) -> list[FinishedTrack]:
        done = [track for track in self._tracks if ended(track)]
        self._tracks = [track for track in self._tracks if not ended(track)]
        for track in done:
            log.debug("track %d ends: %.2f-%.2f s, %d detections", track.id, track.first_seen,
                      track.last_seen, track.detections)
        return [track.finished() for track in done]


class _Lazy:
    """Calls the provider on first use only, then hands out the same frame."""

    def __init__(self, provider: RgbProvider) -> None:
        self._provider = provider
        self._frame: U8 | None = None

    def __call__(self) -> U8:
        if self._frame is None:
            self._frame = self._provider()
        return self._frame


def _best_face(t: float, quality: float, face: Face, rgb: U8) -> BestFace:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"the RGB frame must be uint8 (rows, cols, 3), got {rgb.dtype} "
                         f"{rgb.shape}")
    crop = face.box.expand(CROP_MARGIN).clip(rgb.shape[1], rgb.shape[0])
    # A copy, so the track does not keep the whole frame alive through a view.
    image = rgb[crop.y:crop.bottom, crop.x:crop.right].copy()
    return BestFace(time=t, quality=quality, box=face.box, image=image,
                    face=face.shifted(-crop.x, -crop.y), offset=(crop.x, crop.y))
