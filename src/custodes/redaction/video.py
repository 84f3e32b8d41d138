"""Irreversible redaction of a video file: every face and every privacy zone, in every frame.

    info = redact_file(src, dst, zones=camera.privacy_zones)            # everyone blurred
    info = redact_file(src, dst, keep=subject_keep(photo))              # a subject access export
    plan = plan_boxes(src)                                              # the boxes alone, to
    info = redact_file(src, dst, plan=plan, max_lines=720)              # reuse (box cache)
    plan = redact_stream(src, open_file, max_lines=720)                 # one pass, streamed

What is blurred is decided over the whole file, because a face must be blurred in frames where
the detector did not look or missed it, before its first detection as well as after its last.
`redact_file` makes two passes:

1. Search every `stride`-th frame (`RedactionSettings.detect_fps` searches a second: every 3rd
   frame at 15 fps) and the last one, shrunk to `detect_lines` lines, with redaction's
   detector (CenterFace at REDACT_THRESHOLD: a missed face is a leak, a false one only a
   blurred patch), and link the detections into tracks, ended at cuts. The result, the boxes
   to blur in each frame, is a `BoxPlan`, which can be saved and reused for every copy of the
   same footage (`custodes.redaction.copies`).
   The fine search (pictures of more than NATIVE_LINES lines): the first and last frames and
   one searched frame every `fine_every` seconds are searched at `fine_lines` lines instead,
   which finds faces the coarse search is too coarse for (a 720p picture's under ~40 px: see
   FOLLOW_BELOW); in the searched frames between, each such face's track is followed, looked
   for finely in a crop around where its motion carries it (`_mosaic`: all crops in one run of
   the network); a track first seen that small is held up to the next fine search after its
   last sighting (the coarse searches between could not have seen it) and half as long before
   its first (see `_Scan`: a viewer's first frame waits for that).
2. Decode again and blur each track over its whole life: between two detections along the
   line joining their boxes, and for `hold` seconds before the first and after the last one,
   where the box is carried along the track's motion. Privacy zones are blurred in every
   frame. The frames go raw to ffmpeg (libx264 ultrafast), no audio, optionally shrunk to
   `max_lines` (playback copies: the viewer's picture, not the original's).

`redact_stream` (a viewer's copy, `custodes.redaction.copies`) does both in one pass and writes
fragmented MP4 as it goes (`BoxStream`): a frame is blurred and encoded as soon as no search
still to come can change its boxes, i.e. once the frames `hold` after it are searched, and
longer while a track seen before it may still be extended (MAX_GAP) or a track first seen after
it has only one sighting (its held box follows the motion the second gives). Its boxes are then
exactly the two-pass plan's, not a guess, and the search's plan, returned at the end, is kept
for later copies. `keep` needs every track whole before anything is shown: two passes only.

Fail closed: a frame the detector did not see gets each track's box grown in proportion to
the time to the nearest search (`spread` face sizes per second on each side), so a face that
moves between searches stays covered; a held box (before the first, after the last sighting)
grows the same way on top of HOLD_GROWTH; a face the detector was unsure of is blurred wider
(`custodes.redaction.detect.grown`). Blur more, never less.

Linking is done here, not with `custodes.vision.tracker.Tracker`: the live tracker reports
a track only when it ends, with its best face, whereas an export needs every detection's track
(to blur the track over its whole life and to decide per track whether it is a subject who
stays visible). The rule is the same: greedy by overlap, then by distance in face widths.

`keep` (subject access) is asked once per track, with the track's best faces (`BestFace`:
full-resolution crops around the face with landmarks, sharpest and most frontal first); a track
it keeps is left unblurred in all its frames, every other face is blurred. So one person is not
visible in some frames and blurred in others, and a stranger is not shown because one frame
looked alike. Anything `keep` is not asked about stays blurred: it fails closed. Where the
subject's face is detected, another track's held box (a guess) is not drawn over it (`_Boxes`).

Costs, one core of the 2-core box, a 720p 15 fps stream (`python bench/redaction.py`), CPU
seconds of this process and ffmpeg per frame (load average 3; the old detector measured
1.26 s a 640x360 frame in the same run): a first copy in one pass (`redact_stream`) 24.4 ms a
frame, 2.7x real time (32.8 ms, 2.0x, at load 13), of which the search (240 lines, every 3rd
frame, with decoding) ~16 ms; a copy from kept boxes 12.1 ms (5.5x), at 360 lines 6.6 ms
(10x). Landmarks are not computed for
redaction (`FaceDetector.find`), and the blur is an area average enlarged bilinearly
(`custodes.redaction.blur`): together ~11 ms a frame less than before. The old HOG + Haar
redaction took 216 CPU-s per 10 s of 720p; this takes 3.7 (1.8 from kept boxes). 0.27 CPU-s
before the first frame is out. A viewer who starts t seconds into a segment would wait for
~0.3 + 0.5 t CPU-s at 720p: with `start` the copy begins at the keyframe before t instead
(`custodes.redaction.copies`, a tail), ~0.3 CPU-s plus the search from that keyframe.
Where a first copy's CPU goes (fine search on, 2026-12-02, load ~1, one core, 32 ms a frame):
CenterFace at 240 lines 11 ms, at 480 lines (every 2 s) 5.5, around followed faces 0.6;
encoding (ffmpeg) 6; decoding 2.8; the blur 4.3 before it was done in NV12 with its kernel made
once (`_planes`, `custodes.redaction.blur`; ~3.4 after, at load 6), conversions ~1. The
network is the floor: onnxruntime's options (arena, denormals, graph level) and OpenCV's DNN
were no faster.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import json
import logging
import math
import os
import subprocess
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Final, Literal

import av
import cv2
import numpy as np
import numpy.typing as npt

from custodes.media import ffmpeg_exe
from custodes.record.playback import ExportError
from custodes.redaction.blur import FACE_MARGIN, Polygon, blur_polygons, blur_regions
from custodes.redaction.detect import NODE_SETTINGS, RedactionSettings, grown, snapshot_scale
from custodes.vision.cuts import SIZE as CUT_SIZE
from custodes.vision.cuts import Thumbnail
from custodes.vision.faces import SMALLEST_FACE, Box, Face, FaceDetector, Found
from custodes.vision.tracker import CROP_MARGIN, BestFace

log = logging.getLogger(__name__)

U8 = npt.NDArray[np.uint8]
Keep = Callable[[Sequence[BestFace]], bool]
Stage = Literal["search", "blur"]
# Called as frames are done: the stage, frames done in it, and the frames the file should have
# (0 when its header does not say).
Progress = Callable[[Stage, int, int], None]

METHOD: Final = "pixelate+blur"
SAMPLES_PER_TRACK: Final = 5  # best faces handed to `keep`
# Linking: a detection continues a track seen at most MAX_GAP seconds before, if their boxes
# overlap by IOU_MIN, or else if their centres are at most MAX_DISTANCE face widths apart and
# their sizes differ by at most MAX_SIZE_RATIO (as custodes.vision.tracker.Tracker).
MAX_GAP: Final = 1.0
IOU_MIN: Final = 0.3
MAX_DISTANCE: Final = 2.0
MAX_SIZE_RATIO: Final = 1.5
# A held box (before a track's first or after its last detection) covers both where the face
# was seen and where its motion carries it, grown by this much more per side: the motion
# estimate from two detections is rough.
HOLD_GROWTH: Final = 0.25
# The fine search (RedactionSettings.fine_lines): a face whose smaller side is under
# FOLLOW_BELOW pixels of the coarse search's picture is one the coarse search often misses
# (on WIDER FACE at 240 lines, 58 % of 20-40 px faces of a 720p picture hidden, 88 % of larger
# ones: `bench/redaction.py`). Its track is followed: every other searched frame between two
# fine searches looks, finely, in a crop around where its motion carries it, FOLLOW_MARGIN
# face sizes on each side. The crops of one search together hold at most FOLLOW_SHARE of the
# pixels the coarse search sees (a crowd): the tracks left out are held until the next fine
# search, blurred.
FOLLOW_BELOW: Final = 13
FOLLOW_MARGIN: Final = 0.5
FOLLOW_SHARE: Final = 0.25
DUPLICATE_IOU: Final = 0.5  # a followed face found again by the coarse search: the same face
# The crops around followed faces are searched in one run of the network, side by side in one
# picture MOSAIC_WIDTH wide, MOSAIC_GAP black pixels apart: a run costs ~4 ms however small
# its picture (a 64x64 crop 5 ms, 640x360 113 ms, one thread of the 2-core box), so one run a
# crop would cost more than the crops' pixels.
MOSAIC_WIDTH: Final = 256
MOSAIC_GAP: Final = 16
# libx264's fastest preset: at 720p ~7 ms a frame against ~20 ms for veryfast (one core), for
# files ~2.5x larger at the same quality; encoding would otherwise cost more than the search.
PRESET: Final = "ultrafast"
CRF: Final = 23
GOP_SECONDS: Final = 2  # streamed copies: a keyframe this often
PLAN_VERSION: Final = 1
_STDERR_LINES = 8


class RedactionError(ExportError):
    """A video that cannot be redacted (unreadable input, encoder failure)."""


@dataclass
class BoxPlan:
    """What to blur in each frame of one file: the result of the search, reusable for every
    copy of that file under the same settings (`settings` is their digest)."""

    settings: str
    frames: int
    width: int
    height: int
    rate: Fraction
    stride: int
    detections: int
    faces_blurred: int  # tracks
    faces_kept: int = 0
    boxes: dict[int, list[Box]] = field(default_factory=dict)  # frame index -> boxes

    def to_json(self) -> str:
        return json.dumps({
            "version": PLAN_VERSION, "settings": self.settings, "frames": self.frames,
            "width": self.width, "height": self.height, "rate": str(self.rate),
            "stride": self.stride, "detections": self.detections,
            "faces_blurred": self.faces_blurred, "faces_kept": self.faces_kept,
            "boxes": {str(i): [[b.x, b.y, b.w, b.h] for b in boxes]
                      for i, boxes in self.boxes.items()},
        }, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> BoxPlan:
        data = json.loads(text)
        if data.get("version") != PLAN_VERSION:
            raise ValueError(f"box plan version {data.get('version')}, not {PLAN_VERSION}")
        return cls(settings=str(data["settings"]), frames=int(data["frames"]),
                   width=int(data["width"]), height=int(data["height"]),
                   rate=Fraction(data["rate"]), stride=int(data["stride"]),
                   detections=int(data["detections"]),
                   faces_blurred=int(data["faces_blurred"]), faces_kept=int(data["faces_kept"]),
                   boxes={int(i): [Box(*map(int, b)) for b in boxes]
                          for i, boxes in data["boxes"].items()})

    def save(self, path: Path) -> None:
        """Write atomically: a reader never sees half a plan."""
        tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
        tmp.write_text(self.to_json())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, settings: RedactionSettings) -> BoxPlan | None:
        """The plan saved at `path` for these settings, or None (absent, unreadable, or made
        under other settings: it is then to be made again, never trusted)."""
        try:
            plan = cls.from_json(path.read_text())
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring the box plan %s: %s", path.name, exc)
            return None
        return plan if plan.settings == settings.digest() else None


@dataclass(eq=False)
class _Track:
    id: int
    frames: list[int] = field(default_factory=list)  # frame indexes of its detections
    boxes: list[Box] = field(default_factory=list)  # where to blur: grown if unsure
    seen: list[Box] = field(default_factory=list)  # the detector's boxes
    samples: list[BestFace] = field(default_factory=list)  # best first
    # Frames it is blurred before its first and after its last sighting (None: the scan's
    # `hold` and `after`): a face only the fine search sees is held longer (`_Scan`).
    hold: int | None = None
    after: int | None = None

    def predict(self, frame: int) -> Box:
        """The last box carried along the track's motion to `frame`."""
        dx, dy = self.velocity(-1)
        steps = frame - self.frames[-1]
        return self.seen[-1].shift(round(dx * steps), round(dy * steps))

    def velocity(self, end: int) -> tuple[float, float]:
        """Centre motion per frame between the two detections at the start (0) or end (-1)."""
        if len(self.frames) < 2:
            return 0.0, 0.0
        a, b = (0, 1) if end == 0 else (-2, -1)
        (x0, y0), (x1, y1) = self.seen[a].center, self.seen[b].center
        steps = self.frames[b] - self.frames[a]
        return (x1 - x0) / steps, (y1 - y0) / steps

    def box_at(self, frame: int, hold: int, spread: float, after: int | None = None
               ) -> Box | None:
        """Where to blur this track's face in `frame`, or None outside its life (`hold`
        frames before its first sighting, `after` (default `hold`) after its last).

        `spread`: growth per side, in box sizes per frame away from the nearest detection.
        """
        first, last = self.frames[0], self.frames[-1]
        if frame < first - hold or frame > last + (hold if after is None else after):
            return None
        if frame < first:
            return self._held(0, frame - first).expand(spread * (first - frame))
        if frame > last:
            return self._held(-1, frame - last).expand(spread * (frame - last))
        i = bisect.bisect_left(self.frames, frame)
        if self.frames[i] == frame:
            return self.boxes[i]
        f0, f1 = self.frames[i - 1], self.frames[i]
        between = _lerp(self.boxes[i - 1], self.boxes[i], (frame - f0) / (f1 - f0))
        return between.expand(spread * min(frame - f0, f1 - frame))

    def _held(self, end: int, steps: int) -> Box:
        dx, dy = self.velocity(end)
        seen = self.boxes[end]
        carried = seen.shift(round(dx * steps), round(dy * steps))
        return seen.union(carried).expand(HOLD_GROWTH)


class _Linker:
    """Joins detections, frame after frame, into tracks."""

    def __init__(self, max_gap: int) -> None:
        self.max_gap = max_gap
        self.tracks: list[_Track] = []
        self.since = 0  # the first frame of the current shot

    def cut(self, frame: int) -> None:
        """A new shot starts at `frame`: no track seen before it continues."""
        self.since = frame

    def add(self, frame: int, faces: Sequence[Box]) -> list[_Track]:
        """The track of each face (box), in order."""
        alive = [t for t in self.tracks
                 if 0 < frame - t.frames[-1] <= self.max_gap and t.frames[-1] >= self.since]
        pairs: list[tuple[float, int, int]] = []  # (cost, track index, face index)
        for ti, track in enumerate(alive):
            predicted = track.predict(frame)
            for fi, face in enumerate(faces):
                iou = predicted.iou(face)
                if iou >= IOU_MIN:
                    pairs.append((-iou, ti, fi))
                elif (distance := _distance(predicted, face)) is not None:
                    pairs.append((distance, ti, fi))
        chosen: dict[int, _Track] = {}
        used: set[int] = set()
        for _, ti, fi in sorted(pairs):
            if ti not in used and fi not in chosen:
                used.add(ti)
                chosen[fi] = alive[ti]
        result = []
        for fi in range(len(faces)):
            joined = chosen.get(fi)
            if joined is None:
                joined = _Track(len(self.tracks) + 1)
                self.tracks.append(joined)
            result.append(joined)
        return result


class _Scan:
    """Pass 1, fed the decoded frames in order: faces in every stride-th frame and in the
    last one, linked into tracks, and which frames' boxes are final (`ready`)."""

    def __init__(self, src: Path, settings: RedactionSettings, *, with_samples: bool) -> None:
        self.name = src.name
        self.settings = settings
        self.rate, self.size = _header(src)
        self.stride = settings.stride(self.rate)
        self.fine_stride = settings.fine_stride(self.rate)
        # Frames a track is blurred before its first and after its last detection: at least
        # up to the searches next to them. A face too small for the coarse search
        # (`_small_face`) is held up to the next fine search after its last sighting (the
        # searches between could not have seen it), and half a fine stride before its first:
        # not a whole one, because a frame of a streamed copy waits until every face that can
        # be held back to it is found (`ready`), and a viewer would wait for the next fine
        # search (the search before the first frame of a 720p copy, at fine_every 2 s: 0.9
        # CPU-s so, 0.5 at half, 0.2 without the fine search). `hold` and `after`: the
        # longest of each.
        self.near_hold = max(math.ceil(settings.hold * float(self.rate)), self.stride)
        self.small_before = max(self.near_hold, self.fine_stride // 2)
        self.small_after = max(self.near_hold, self.fine_stride)
        fine = settings.fine_lines > 0
        self.hold = self.small_before if fine else self.near_hold
        self.after = self.small_after if fine else self.near_hold
        self.spread = settings.spread / float(self.rate)  # per frame: see _Track.box_at
        self.linker = _Linker(max_gap=math.ceil(MAX_GAP * float(self.rate)))
        self.detector = _detector(settings)
        self.with_samples = with_samples
        self.frames = 0
        self.width = self.height = 0
        self.detections = 0
        self.searched = -1  # the last frame searched so far
        self.finished = False
        self.fine_searches = self.followed = 0  # for the bench
        self._fined = -1  # the last frame searched finely
        self._scale, self._small = 1.0, (0, 0)
        self._fine: float | None = None  # the fine search's scale (None: no fine search)
        self._fine_size = (0, 0)
        self._near = 1.0  # the scale at which followed faces are looked at
        self._thumbnail: Thumbnail | None = None
        self._last: av.VideoFrame | None = None
        self._open: list[_Track] = []  # tracks a later search may still extend

    @property
    def tracks(self) -> list[_Track]:
        return self.linker.tracks

    def add(self, video: av.VideoFrame) -> None:
        """The next frame of the file; searched if it is a stride-th one."""
        index = self.frames
        if index == 0:
            self.width, self.height = video.width, video.height
            self._scale = self.settings.scale(video.height, video.width)
            self._small = (max(1, round(video.width * self._scale)),
                           max(1, round(video.height * self._scale)))
            self._fine = self.settings.fine_scale(video.height, video.width)
            if self._fine is None:
                self.hold = self.after = self.near_hold  # no fine search: none held longer
            else:
                self._fine_size = (max(1, round(video.width * self._fine)),
                                   max(1, round(video.height * self._fine)))
                # Followed faces are looked at as a snapshot is (up to SNAPSHOT_LINES): the
                # crops are small, and a face found at the fine size is surer found there.
                self._near = max(self._fine, snapshot_scale(video.height, video.width))
        elif (video.width, video.height) != (self.width, self.height):
            raise RedactionError(f"{self.name} changes picture size at frame {index}")
        self.frames += 1
        self._last = video
        if index % self.stride == 0:
            self._search(index, video)

    def finish(self) -> None:
        """The file has no more frames. Raises RedactionError if it had none."""
        if self._last is None:
            raise RedactionError(f"{self.name} has no frames")
        last = self.frames - 1
        searched_finely = self._fine is None or self._fined == last
        if not self.finished and (last % self.stride or not searched_finely):
            # A face that comes in after the last stride-th frame has no later search to be
            # interpolated or held from: the last frame is searched too, finely (again, if
            # it was searched coarsely).
            self._search(last, self._last, last=True)
        self.finished = True
        self._last = None

    def ready(self, index: int) -> bool:
        """Whether frame `index`'s boxes are final: no search still to come can change them
        (the boxes `_Boxes.at` gives then are those of the whole file's plan).

        Searches still to come are of frames after `searched`. One of them can change frame
        `index` by (a) finding a face first that is held back to `index` (first - hold <=
        index), (b) extending a track last seen at or before `index` (its boxes between the two
        sightings are interpolated, no longer held), or (c) giving the second sighting of a
        track first seen after `index` (the motion its box is held back along). A track can be
        extended only by a sighting at most max_gap frames after its last, in the same shot.
        """
        if self.finished:
            return True
        # With the fine search, the last frame searched may be searched again (finely, if it
        # is the file's last: `finish`), and that search too can find a face held back.
        again = 0 if self._fine is None else 1
        if index + self.hold > self.searched - again:  # (a)
            return False
        return all(index <= t.frames[-1]  # (b)
                   and (len(t.frames) > 1 or index >= t.frames[0]  # (c)
                        or index < t.frames[0] - self.hold)
                   for t in self._open)

    def plan(self, keep: Keep | None) -> BoxPlan:
        """The boxes of every frame, once finished. With `keep` (subject access) the tracks it
        keeps are left out."""
        assert self.finished, "plan() before finish()"
        # A track without samples (its faces too poor to compare) is never asked about:
        # blurred.
        kept = {track.id for track in self.tracks
                if keep is not None and track.samples and keep(track.samples)}
        blurred = [track for track in self.tracks if track.id not in kept]
        shown = _seen((t for t in self.tracks if t.id in kept), self.stride)
        boxes = _Boxes(blurred, self.hold, self.spread, shown, after=self.after)
        return BoxPlan(settings=self.settings.digest(), frames=self.frames, width=self.width,
                       height=self.height, rate=self.rate, stride=self.stride,
                       detections=self.detections, faces_blurred=len(blurred),
                       faces_kept=len(kept),
                       boxes={i: found for i in range(self.frames) if (found := boxes.at(i))})

    def _search(self, index: int, video: av.VideoFrame, *, last: bool = False) -> None:
        previous, self._thumbnail = self._thumbnail, _thumbnail(video)
        cut = previous is not None and self._thumbnail.cut_from(previous)
        if cut:
            self.linker.cut(index)
        # Fine: at the first frame, a fine stride after the last fine search, and at the last
        # frame (a small face that comes in after the last fine search has no later one to be
        # held back from). Not at a cut: a new shot's small faces are found by the next fine
        # search and held back to the cut and beyond, and the cost stays what the settings
        # say whatever the footage (an edited film cuts every few seconds).
        fine = self._fine is not None and (
            self._fined < 0 or index - self._fined >= self.fine_stride or last)
        found: list[tuple[Found, Box]] = []  # each face and its box in the frame
        again = index == self.searched  # the last frame, searched coarsely before
        if fine:
            assert self._fine is not None
            self._fined = index
            self.fine_searches += 1
            found += self._find(video, self._fine_size, self._fine, None)
        else:
            found += self._find(video, self._small, self._scale, None)
            # Every other search: a followed face is seen 2.5 times a second at 15 fps,
            # often enough to keep its track (MAX_GAP) and to interpolate between, for half
            # the cost of following at every search.
            follow = (self._follow(index)
                      if self._fine is not None and (index // self.stride) % 2 else [])
            if follow:
                self.followed += len(follow)
                found = _unique(found + self._find_near(video, follow))
        if again:  # only the faces the first search of this frame did not find
            before = [t.seen[-1] for t in self._open if t.frames[-1] == index]
            found = [(face, box) for face, box in found
                     if all(box.iou(other) <= DUPLICATE_IOU for other in before)]
        self.detections += len(found)
        seen = [box for _, box in found]
        tracks = self.linker.add(index, seen)
        for (face, box), track in zip(found, tracks, strict=True):
            if not track.frames:  # new: how long it is held before its first sighting
                small = self._small_face(box)
                track.hold = self.small_before if small else self.near_hold
                track.after = self.small_after if small else self.near_hold
            track.frames.append(index)
            track.seen.append(box)
            track.boxes.append(grown(box, face.score))
        if self.with_samples and found:
            _sample(video, self.detector, float(index / self.rate),
                    ((face, box, track) for (face, box), track in zip(found, tracks,
                                                                      strict=True)))
        self.searched = index
        # Open: may still be extended by a sighting after this search (see `ready`). A track
        # is extended only while open, so the open ones are those open before and the new.
        self._open += [t for t in tracks if t not in self._open]
        self._open = [t for t in self._open
                      if t.frames[-1] + self.linker.max_gap > index
                      and t.frames[-1] >= self.linker.since]

    def _find(self, video: av.VideoFrame, size: tuple[int, int], scale: float,
              regions: list[Box] | None) -> list[tuple[Found, Box]]:
        """Faces of the frame seen at `size` (`scale` of it), in `regions` (frame
        coordinates) or everywhere, each with its box in the frame."""
        # libswscale shrinks and converts in one step: far cheaper than RGB at full size.
        rgb = np.asarray(video.to_ndarray(width=size[0], height=size[1], format="rgb24"),
                         dtype=np.uint8)
        crops = None if regions is None else [_scaled(r, scale) for r in regions]
        return [(face, _scaled(face.box, 1 / scale))
                for face in self.detector.find(rgb, crops, scale=1.0)]

    def _find_near(self, video: av.VideoFrame, regions: list[Box]) -> list[tuple[Found, Box]]:
        """Faces in these regions of the frame (frame coordinates), looked at at `_near`
        scale, in one run of the network (`_mosaic`)."""
        # Unscaled, libswscale converts a 720p frame to RGB in ~0.3 ms; shrunk, ~4 ms.
        rgb = np.asarray(video.to_ndarray(format="rgb24"), dtype=np.uint8)
        crops = self.detector.scan_boxes(regions, self.width, self.height,
                                         math.ceil(SMALLEST_FACE / self._near))
        return [(face, face.box) for face in _mosaic(self.detector, rgb, crops, self._near)]

    def _small_face(self, box: Box) -> bool:
        """Whether the coarse search mostly misses a face of this box (FOLLOW_BELOW)."""
        return self._fine is not None and min(box.w, box.h) * self._scale < FOLLOW_BELOW

    def _follow(self, index: int) -> list[Box]:
        """Where to look finely in frame `index`: around the small faces of the open tracks,
        the most recently seen first, crops of at most FOLLOW_SHARE of the coarse search's
        pixels."""
        budget = FOLLOW_SHARE * self._small[0] * self._small[1]
        grows = (1 + 2 * self.detector.roi_margin) ** 2 * self._near ** 2  # as scan_boxes
        regions = []
        for track in sorted(self._open, key=lambda t: -t.frames[-1]):
            if track.frames[-1] < self.linker.since or not self._small_face(track.seen[-1]):
                continue
            region = track.predict(index).expand(FOLLOW_MARGIN)
            budget -= region.area * grows
            if budget < 0:
                break
            regions.append(region)
        return regions


class _Boxes:
    """The boxes to blur in each frame, asked for in frame order: each track over its life,
    `hold` frames before and `after` frames after (each track's own, if it has them).

    `tracks` in the order of their first detection (the linker's), and it may grow between
    calls (streaming: `_Scan.ready` says when a frame's tracks are known). `shown`: where a
    kept track's face (subject access) is, per frame (`_seen`). Another track's held box (a
    guess where its face went before it was first or after it was last seen) is dropped where
    its blur would touch such a face: the subject is seen there, and a guess (grown with time,
    carried along a rough motion estimate, across a cut to the next shot) must not blur part of
    him, which would make him unrecognisable to whoever checks the copy. Detected and
    interpolated boxes always count.
    """

    def __init__(self, tracks: list[_Track], hold: int, spread: float,
                 shown: dict[int, list[Box]] | None = None, *, after: int | None = None
                 ) -> None:
        self.tracks = tracks
        self.hold = hold  # the longest before a track's first sighting
        self.after = hold if after is None else after  # and after its last
        self.spread = spread
        self.shown = shown or {}
        self._next = 0  # tracks[:_next] have been taken into _live
        self._live: list[_Track] = []

    def at(self, index: int) -> list[Box]:
        hold = self.hold
        while self._next < len(self.tracks) and self.tracks[self._next].frames[0] - hold <= index:
            self._live.append(self.tracks[self._next])
            self._next += 1
        # A track past its hold is done for good: by the time a frame is asked for, no later
        # sighting can extend a track last seen more than `hold` frames before it (`ready`).
        self._live = [t for t in self._live if t.frames[-1] + self.after >= index]
        boxes = []
        for track in self._live:
            box = track.box_at(index, hold if track.hold is None else track.hold, self.spread,
                               self.after if track.after is None else track.after)
            if box is None:
                continue
            first, last = track.frames[0], track.frames[-1]
            if (index < first or index > last) and any(
                    box.expand(FACE_MARGIN).intersection(face)
                    for face in self.shown.get(index, ())):
                continue
            boxes.append(box)
        return boxes


def plan_boxes(src: Path, settings: RedactionSettings = NODE_SETTINGS, *,
               keep: Keep | None = None, progress: Progress | None = None) -> BoxPlan:
    """Pass 1: where to blur in every frame of `src` (see the module's text).

    With `keep` (subject access) the tracks it keeps are left out of the plan. Raises
    RedactionError.
    """
    scan = _Scan(src, settings, with_samples=keep is not None)
    total = frame_count(src) if progress is not None else 0
    for video in _frames(src):
        scan.add(video)
        if progress is not None:
            progress("search", scan.frames, total)
    scan.finish()
    return scan.plan(keep)


class BoxStream:
    """Pass 1 in step with the decoding: each frame of `src` with its boxes, handed out as
    soon as no search still to come can change them (`_Scan.ready`).

        stream = BoxStream(src)
        for index, video, boxes in stream: ...     # boxes == plan_boxes(src).boxes[index]
        stream.plan                                # the whole file's plan, afterwards

    The boxes are those of `plan_boxes(src, settings)`, frame by frame, not a guess: a frame
    waits until every search that could still change it is done. That is `hold` frames after it
    (a face first found later is held back that far), longer while a track seen before it
    could still be extended (up to MAX_GAP after its last sighting) or a track first seen
    after it has no second sighting yet (its motion, which its held box follows).
    """

    def __init__(self, src: Path, settings: RedactionSettings = NODE_SETTINGS, *,
                 progress: Progress | None = None, start: float = 0.0) -> None:
        self.src = src
        self.start = start  # seconds: from the keyframe at or before it (`keyframe_before`)
        self.settings = settings
        self.progress = progress
        self.total = frame_count(src) if progress is not None else 0  # for `progress`
        self._scan = _Scan(src, settings, with_samples=False)
        self.rate = self._scan.rate
        # The header's (None if it does not say): the frames may still differ.
        self.size = self._scan.size if min(self._scan.size) > 0 else None
        self.plan: BoxPlan | None = None

    def __iter__(self) -> Iterator[tuple[int, av.VideoFrame, list[Box]]]:
        scan = self._scan
        boxes = _Boxes(scan.tracks, scan.hold, scan.spread, after=scan.after)
        pending: deque[tuple[int, av.VideoFrame]] = deque()
        for video in _frames(self.src, self.start):
            scan.add(video)
            if self.progress is not None:
                self.progress("search", scan.frames, self.total)
            pending.append((scan.frames - 1, video))
            while pending and scan.ready(pending[0][0]):
                index, ready = pending.popleft()
                yield index, ready, boxes.at(index)
        scan.finish()
        while pending:
            index, ready = pending.popleft()
            yield index, ready, boxes.at(index)
        self.plan = scan.plan(None)


def redact_stream(src: Path, out: BinaryIO, *, zones: Sequence[Polygon] = (),
                  settings: RedactionSettings = NODE_SETTINGS, plan: BoxPlan | None = None,
                  max_lines: int | None = None,
                  progress: Progress | None = None, start: float = 0.0,
                  origin: float = 0.0) -> BoxPlan:
    """`src` redacted as by `redact_file` (no `keep`), written to `out` while it is made:
    fragmented MP4, a fragment a frame, each written as soon as the frame is encoded, so that
    a player can start before the end (`custodes.redaction.copies`).

    Without `plan`, one pass: the frames are searched and blurred as they are decoded
    (`BoxStream`), and the search's plan is returned, to be kept for later copies. With `plan`
    (the same settings) its boxes are used, and it is returned. `out` is an open file: ffmpeg
    writes to its descriptor. Raises RedactionError; whatever was written to `out` is then
    to be thrown away.

    With `start` (seconds), the copy begins at the keyframe at or before it
    (`keyframe_before`), its first frame at time 0, and is searched from there: a viewer who
    starts in the middle of a segment does not wait for the search of what comes before. Its
    plan then covers those frames only (a plan from `origin`, see below).
    With `plan` and `start`: the frames from `start` with that plan's boxes, matched to them
    by their times (`_sliced`), where `origin` is where the plan's first frame is (0 for a
    whole file's plan, the `start` of the copy that searched it); `start` >= `origin`.
    """
    if plan is not None:
        if plan.settings != settings.digest():
            raise ValueError("a reused plan must be made with the same settings")
        if start < origin - 1e-6:
            raise ValueError("a kept plan has no boxes for frames before its first")
        frames = (_sliced(src, plan, origin, start) if start > 0
                  else _planned(src, plan))
        _encode(src.name, frames, out, rate=plan.rate, zones=zones,
                max_lines=max_lines, total=plan.frames, progress=progress,
                size=(plan.width, plan.height))
        return plan
    stream = BoxStream(src, settings, progress=progress, start=start)
    _encode(src.name, iter(stream), out, rate=stream.rate, zones=zones, max_lines=max_lines,
            total=stream.total, progress=progress, size=stream.size)
    assert stream.plan is not None  # set when the frames are all out
    return stream.plan


def redact_file(src: Path, dst: Path, *, zones: Sequence[Polygon] = (),
                keep: Keep | None = None,
                settings: RedactionSettings = NODE_SETTINGS,
                plan: BoxPlan | None = None, max_lines: int | None = None,
                progress: Progress | None = None) -> dict[str, object]:
    """Write `src` to `dst` (MP4, H.264) with faces and privacy zones blurred for good.

    `zones` are polygons of (x, y) points in 0..1 of the picture's width and height. `keep`
    decides, per track, which faces stay visible (see the module's text); without it every
    face is blurred. `plan` (from `plan_boxes` with the same settings, e.g. a box cache) skips
    the search. `max_lines` shrinks taller pictures to that many lines. Frame count and frame
    rate are kept; audio is dropped. `dst` appears only when complete. Returns a description
    of what was done, for the export's signed manifest. Raises RedactionError (an
    ExportError).
    """
    started = time.perf_counter()
    if dst.exists():
        raise RedactionError(f"{dst} exists already; choose another name")
    if not dst.parent.is_dir():
        raise RedactionError(f"the folder {dst.parent} does not exist")
    if plan is not None and (keep is not None or plan.settings != settings.digest()):
        raise ValueError("a reused plan must be made with the same settings and no keep")
    cached = plan is not None
    if plan is None:
        plan = plan_boxes(src, settings, keep=keep, progress=progress)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.partial")
    try:
        width, height = _encode(src.name, _planned(src, plan), tmp, rate=plan.rate,
                                zones=zones, max_lines=max_lines, total=plan.frames,
                                progress=progress)
        tmp.rename(dst)
    finally:
        tmp.unlink(missing_ok=True)
    seconds = time.perf_counter() - started
    log.info("redacted %s: %d frames, %d faces blurred, %d kept, %.1f s%s", src.name,
             plan.frames, plan.faces_blurred, plan.faces_kept, seconds,
             " (boxes reused)" if cached else "")
    return {
        "applied": True,
        "method": METHOD,
        "faces_blurred": plan.faces_blurred,
        "faces_kept": plan.faces_kept,
        "detections": plan.detections,
        "frames": plan.frames,
        "size": [width, height],
        "zones": len(zones),
        "detector": {**settings.describe(), "stride": plan.stride},
        "keep": "subject" if keep is not None else None,
        "seconds": round(seconds, 2),
    }


def frame_count(src: Path) -> int:
    """The frames `src`'s header announces (0 when it does not say), for a progress bar."""
    container = _open(src)
    try:
        stream = container.streams.video[0]
        if stream.frames:
            return int(stream.frames)
        rate = stream.guessed_rate or stream.average_rate
        if stream.duration is None or stream.time_base is None or not rate:
            return 0
        return round(float(stream.duration * stream.time_base) * float(rate))
    finally:
        container.close()


def _open(src: Path) -> av.container.InputContainer:
    try:
        container = av.open(str(src))
    except (av.FFmpegError, OSError) as exc:
        raise RedactionError(f"{src.name} cannot be read: {exc}") from None
    if not container.streams.video:
        container.close()
        raise RedactionError(f"{src.name} has no video stream")
    return container


def _frames(src: Path, start: float = 0.0) -> Iterator[av.VideoFrame]:
    """The frames of `src`; with `start` (seconds after its first frame), from the first
    frame at or after it: decoded from the keyframe at or before it, the frames between
    dropped unsearched (a keyframe's time or `frame_before`'s gives a copy from that frame)."""
    container = _open(src)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if start <= 0:
            yield from container.decode(stream)
            return
        _seek(container, stream, start)
        first, base = stream.start_time or 0, stream.time_base
        for video in container.decode(stream):
            if base is None or video.pts is None or (video.pts - first) * base >= start - 1e-6:
                yield video
    except av.FFmpegError as exc:
        raise RedactionError(f"{src.name} cannot be decoded: {exc}") from None
    finally:
        container.close()


def _seek(container: av.container.InputContainer, stream: av.VideoStream, t: float) -> None:
    """Position the demuxer on the keyframe at or before `t` seconds after the first frame."""
    base = stream.time_base
    if base is None:
        raise RedactionError("the video stream has no time base: it cannot be seeked")
    first = stream.start_time or 0
    # Rounded, not truncated: a keyframe's own time, given back, must find that keyframe.
    container.seek(first + round(t / base), stream=stream, backward=True, any_frame=False)


def keyframe_before(src: Path, t: float) -> float:
    """Where a copy of `src` asked to start at `t` seconds (after its first frame) really
    starts: the keyframe at or before `t`, the first frame a decoder can begin with. 0 for
    the file's start; raises RedactionError when it cannot be read."""
    if t <= 0:
        return 0.0
    container = _open(src)
    try:
        stream = container.streams.video[0]
        first = stream.start_time or 0
        _seek(container, stream, t)
        for video in container.decode(stream):
            if video.pts is None or stream.time_base is None:
                return 0.0
            return max(0.0, float((video.pts - first) * stream.time_base))
        return 0.0
    except av.FFmpegError as exc:
        raise RedactionError(f"{src.name} cannot be decoded: {exc}") from None
    finally:
        container.close()


def frame_before(src: Path, t: float) -> float:
    """The time (seconds after the first frame) of the frame showing at `t`: the last one at
    or before it, 0 for the file's start. Read from the packets' times, not decoded. Raises
    RedactionError when `src` cannot be read."""
    if t <= 0:
        return 0.0
    container = _open(src)
    try:
        stream = container.streams.video[0]
        first, base = stream.start_time or 0, stream.time_base
        if base is None:
            return 0.0
        _seek(container, stream, t)
        found = 0.0
        for packet in container.demux(stream):
            if packet.pts is None:
                continue
            at = float((packet.pts - first) * base)
            if at <= t + 1e-6:
                found = max(found, at)
            elif packet.is_keyframe or at > t + 1:  # no earlier frame comes after these
                break
        return found
    except av.FFmpegError as exc:
        raise RedactionError(f"{src.name} cannot be read: {exc}") from None
    finally:
        container.close()


def _header(src: Path) -> tuple[Fraction, tuple[int, int]]:
    """The frame rate (25 if unknown) and picture size that `src`'s header announces."""
    container = _open(src)
    try:
        stream = container.streams.video[0]
        rate = stream.guessed_rate or stream.average_rate
        size = (stream.codec_context.width, stream.codec_context.height)
    finally:
        container.close()
    return Fraction(rate) if rate else Fraction(25), size


@functools.cache
def _detector(settings: RedactionSettings) -> FaceDetector:
    """One detector per settings for the whole process: loading one takes ~0.3 s, and it
    may be used from several threads at once (the pool of `custodes.redaction.copies`)."""
    return settings.detector()


def warm(settings: RedactionSettings = NODE_SETTINGS) -> None:
    """Load redaction's detector and run it once on a blank picture of the size it searches.
    The first search of a process otherwise pays for loading the network and onnxruntime's
    first run (0.7-4.8 s measured under load), and the first viewer of a redacted copy waits
    for it."""
    for lines in (settings.detect_lines, settings.fine_lines):
        if lines:
            _detector(settings).find(np.zeros((lines, lines * 16 // 9, 3), np.uint8))


def _thumbnail(video: av.VideoFrame) -> Thumbnail:
    """The frame's thumbnail for telling cuts (`custodes.vision.cuts`), shrunk by the decoder's
    scaler: far cheaper than converting the whole frame first."""
    return Thumbnail.of(np.asarray(video.to_ndarray(width=CUT_SIZE[0], height=CUT_SIZE[1],
                                                    format="rgb24"), dtype=np.uint8))


def _sample(video: av.VideoFrame, detector: FaceDetector, t: float,
            found: Iterable[tuple[Found, Box, _Track]]) -> None:
    """Keep the faces of this frame that are among their track's best, at full resolution
    (the subject's comparison needs the detail the shrunk search picture lost)."""
    rgb = np.asarray(video.to_ndarray(format="rgb24"), dtype=np.uint8)
    grey = np.asarray(video.to_ndarray(format="gray"), dtype=np.uint8)
    for item, box, track in found:
        face = Face(box=box, score=item.score, landmarks=detector.landmarks(grey, box))
        _add_sample(track, face, rgb, grey, t)


def _add_sample(track: _Track, face: Face, rgb: U8, grey: U8, t: float) -> None:
    """Keep the face if it is among the track's SAMPLES_PER_TRACK best (by quality)."""
    quality = face.quality(grey)
    if len(track.samples) == SAMPLES_PER_TRACK and quality <= track.samples[-1].quality:
        return
    crop = face.box.expand(CROP_MARGIN).clip(rgb.shape[1], rgb.shape[0])
    sample = BestFace(time=t, quality=quality, box=face.box,
                      image=rgb[crop.y:crop.bottom, crop.x:crop.right].copy(),
                      face=face.shifted(-crop.x, -crop.y), offset=(crop.x, crop.y))
    track.samples.append(sample)
    track.samples.sort(key=lambda s: -s.quality)
    del track.samples[SAMPLES_PER_TRACK:]


def _seen(tracks: Iterable[_Track], stride: int) -> dict[int, list[Box]]:
    """Frame index -> where these tracks' faces are in it: detected, between two detections,
    and after the last until the next search (which did not find it): the frames that are
    not searched after a track's last detection are as likely to show it as not."""
    seen: dict[int, list[Box]] = {}
    for track in tracks:
        for index in range(track.frames[0], track.frames[-1] + stride):
            box = track.box_at(index, stride - 1, 0.0)
            if box is not None:
                seen.setdefault(index, []).append(box)
    return seen


def _output_size(width: int, height: int, max_lines: int | None) -> tuple[int, int]:
    """Even sides (yuv420p needs them), shrunk to `max_lines` lines if taller."""
    if max_lines is not None and height > max_lines:
        width, height = round(width * max_lines / height), max_lines
    return max(2, width // 2 * 2), max(2, height // 2 * 2)


def _planned(src: Path, plan: BoxPlan) -> Iterator[tuple[int, av.VideoFrame, list[Box]]]:
    """The frames of `src` with the plan's boxes. Raises RedactionError when they do not
    match (another file, or one that changed)."""
    count = 0
    for index, video in enumerate(_frames(src)):
        if index >= plan.frames:
            break
        if (video.width, video.height) != (plan.width, plan.height):
            raise RedactionError(f"{src.name} changes picture size at frame {index}")
        count += 1
        yield index, video, plan.boxes.get(index, [])
    if count != plan.frames:
        raise RedactionError(f"{src.name}: {count} frames on the second pass, "
                             f"{plan.frames} on the first")


def _sliced(src: Path, plan: BoxPlan, origin: float, start: float
            ) -> Iterator[tuple[int, av.VideoFrame, list[Box]]]:
    """The frames of `src` from `start` on with the boxes of `plan`, whose first frame is the
    first at or after `origin` (a tail's plan, or 0: a whole file's). A frame's box list is
    found by its time among the times of the plan's frames, read from the packets (not
    decoded): decoding starts at the keyframe before `start`, not `origin`. Raises
    RedactionError when they do not match (another file, or one that changed): nothing is
    shown with boxes that may be another frame's."""
    times = _packet_times(src, origin)
    if len(times) != plan.frames:
        raise RedactionError(f"{src.name}: {len(times)} frames from {origin:.3f} s, "
                             f"{plan.frames} in the plan")
    index = {pts: i for i, pts in enumerate(times)}
    for video in _frames(src, start):
        at = index.get(video.pts) if video.pts is not None else None
        if at is None or (video.width, video.height) != (plan.width, plan.height):
            raise RedactionError(f"{src.name}: a frame at {video.time} s is not in the plan")
        yield at, video, plan.boxes.get(at, [])


def _packet_times(src: Path, start: float) -> list[int]:
    """The times (pts) of the frames that `_frames(src, start)` decodes, in order."""
    container = _open(src)
    try:
        stream = container.streams.video[0]
        first, base = stream.start_time or 0, stream.time_base
        if base is None:
            raise RedactionError(f"{src.name}: the video stream has no time base")
        if start > 0:
            _seek(container, stream, start)
        return sorted(p.pts for p in container.demux(stream) if p.pts is not None
                      and (start <= 0 or (p.pts - first) * base >= start - 1e-6))
    except av.FFmpegError as exc:
        raise RedactionError(f"{src.name} cannot be read: {exc}") from None
    finally:
        container.close()


def _encode(name: str, frames: Iterable[tuple[int, av.VideoFrame, Sequence[Box]]],
            target: Path | BinaryIO, *, rate: Fraction, zones: Sequence[Polygon],
            max_lines: int | None, total: int, progress: Progress | None,
            size: tuple[int, int] | None = None) -> tuple[int, int]:
    """Blur (each frame's boxes and the zones) and pipe every frame to ffmpeg. Returns the
    output's size.

    To a path: an ordinary MP4, its index first (players that download it can start at
    once). To an open file: fragmented MP4 (`redact_stream`). With `size` (the source's, from
    its header), ffmpeg is started before the first frame is there: while the first frames are
    searched, not after (~0.1 s less before a streamed copy's first bytes).
    """
    with tempfile.TemporaryFile() as errors:
        encoder = _Encoder(target, rate, max_lines, errors)
        try:
            if size is not None:
                encoder.start(size)
            written = 0
            for index, video, boxes in frames:
                if (video.width, video.height) != encoder.source:
                    if written:
                        raise RedactionError(f"{name} changes picture size at frame {index}")
                    encoder.start((video.width, video.height))  # the header was wrong
                encoder.write(video, boxes, zones)
                written += 1
                if progress is not None:
                    progress("blur", written, total)
            if not written:
                raise RedactionError(f"{name} has no frames")
            encoder.close()
        except BaseException:
            encoder.kill()
            raise
    return encoder.width, encoder.height


class _Encoder:
    """ffmpeg (libx264) fed raw frames on its stdin."""

    def __init__(self, target: Path | BinaryIO, rate: Fraction, max_lines: int | None,
                 errors: BinaryIO) -> None:
        self.target = target
        self.rate = rate
        self.max_lines = max_lines
        self.errors = errors
        self.proc: subprocess.Popen[bytes] | None = None
        self.source = (0, 0)  # the frames' size
        self.width = self.height = 0  # the output's
        self.factor = 1.0

    def start(self, source: tuple[int, int]) -> None:
        self.kill()
        self.source = source
        self.width, self.height = _output_size(*source, self.max_lines)
        self.factor = self.height / source[1]
        self.proc = subprocess.Popen(
            _ffmpeg_argv(self.width, self.height, self.rate, self.target),
            stdin=subprocess.PIPE, stderr=self.errors,
            stdout=subprocess.DEVNULL if isinstance(self.target, Path) else self.target)

    def write(self, video: av.VideoFrame, boxes: Sequence[Box],
              zones: Sequence[Polygon]) -> None:
        """Blurred, in YUV 4:2:0 as decoded and as encoded, in NV12's two planes: converting
        a 720p frame to RGB and back would cost more than the blur and the encoding together
        (~13 ms of ~30 ms a frame). NV12 interleaves U and V, so both are blurred in one pass
        over a two-channel picture (a third fewer blurs than planar U and V; `_planes`), and
        libx264 takes NV12 as it is (it keeps chroma so itself)."""
        assert self.proc is not None
        assert self.proc.stdin is not None  # Popen with stdin=PIPE always sets it
        # Y at full size, UV at half.
        scales = (self.factor, self.factor / 2)
        try:
            for plane, scale in zip(_planes(video, self.width, self.height), scales,
                                    strict=True):
                done = _blurred(plane, [_scaled(b, scale) for b in boxes], zones)
                self.proc.stdin.write(done.data)
        except BrokenPipeError:
            self._failed()  # ffmpeg stopped: its exit status and message say why
            raise RedactionError("ffmpeg stopped reading its input") from None

    def close(self) -> None:
        """Wait for ffmpeg to finish. Raises RedactionError if it failed."""
        assert self.proc is not None
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # ffmpeg stopped: _failed says why
            self.proc.stdin.close()
        self._failed()

    def kill(self) -> None:
        if self.proc is None:
            return
        self.proc.kill()
        self.proc.wait()
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):  # unflushed bytes for a killed process
            self.proc.stdin.close()
        self.proc = None

    def _failed(self) -> None:
        assert self.proc is not None
        code = self.proc.wait()
        if code != 0:
            self.errors.seek(0)
            tail = "\n".join(self.errors.read().decode(errors="replace").strip()
                             .splitlines()[-_STDERR_LINES:])
            self.proc = None
            raise RedactionError(f"ffmpeg failed (exit status {code}):\n{tail}")
        self.proc = None


def _ffmpeg_argv(width: int, height: int, rate: Fraction, target: Path | BinaryIO) -> list[str]:
    argv = [
        ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error",
        "-f", "rawvideo", "-pix_fmt", "nv12", "-s", f"{width}x{height}",
        "-framerate", f"{rate.numerator}/{rate.denominator}", "-i", "-", "-an",
        # NV12 in, NV12 to libx264: no conversion on the way (the H.264 stream is the same
        # 4:2:0 8-bit as from yuv420p; decoders give yuv420p back).
        "-c:v", "libx264", "-preset", PRESET, "-crf", str(CRF), "-pix_fmt", "nv12",
    ]
    if isinstance(target, Path):
        return [*argv, "-movflags", "+faststart", "-f", "mp4", str(target)]
    # Streamed: every frame leaves the encoder at once (zerolatency: no frame threads, no
    # look-ahead) in a fragment of its own, flushed at once, after an index without samples.
    # A keyframe every GOP_SECONDS: where a player that fetches byte ranges can start.
    return [*argv, "-tune", "zerolatency", "-g", str(max(1, round(GOP_SECONDS * rate))),
            "-movflags", "empty_moov+default_base_moof+frag_every_frame",
            "-flush_packets", "1", "-f", "mp4", "pipe:1"]


def _planes(video: av.VideoFrame, width: int, height: int) -> list[U8]:
    """The frame in NV12 at width x height (even sides): its Y plane (height, width) and its
    interleaved UV plane (height / 2, width / 2, 2). Evening odd sides, shrinking and
    interleaving happen in libswscale, which writes a new buffer: the planes are ours to blur
    in place."""
    rows = np.asarray(video.to_ndarray(width=width, height=height, format="nv12"),
                      dtype=np.uint8)
    return [rows[:height], rows[height:].reshape(height // 2, width // 2, 2)]


def _blurred(plane: U8, boxes: list[Box], zones: Sequence[Polygon]) -> U8:
    if boxes:
        plane = blur_regions(plane, boxes, copy=False)  # `_planes`: a fresh buffer
    return blur_polygons(plane, zones) if zones else plane


def _scaled(box: Box, factor: float) -> Box:
    return Box.from_corners(box.x * factor, box.y * factor, box.right * factor,
                            box.bottom * factor)


def _lerp(a: Box, b: Box, f: float) -> Box:
    return Box.from_corners(a.x + (b.x - a.x) * f, a.y + (b.y - a.y) * f,
                            a.right + (b.right - a.right) * f,
                            a.bottom + (b.bottom - a.bottom) * f)


def _mosaic(detector: FaceDetector, rgb: U8, crops: Sequence[Box], scale: float) -> list[Found]:
    """Faces in these crops of `rgb`, each shrunk by `scale`, searched in one run of the
    network: the crops are laid out in rows in one picture, MOSAIC_GAP black pixels apart.
    Boxes in `rgb`'s coordinates; a face is its crop's whose centre it is in."""
    width = max(MOSAIC_WIDTH, *(math.ceil(c.w * scale) for c in crops))
    places: list[tuple[Box, U8, int, int]] = []  # crop, its pixels, where in the mosaic
    x = y = row = 0
    for crop in sorted(crops, key=lambda c: -c.h):
        pixels = rgb[crop.y:crop.bottom, crop.x:crop.right]
        if scale != 1.0:
            pixels = np.asarray(cv2.resize(pixels, None, fx=scale, fy=scale,
                                           interpolation=cv2.INTER_AREA), dtype=np.uint8)
        h, w = pixels.shape[:2]
        if x and x + w > width:
            x, y, row = 0, y + row + MOSAIC_GAP, 0
        places.append((crop, pixels, x, y))
        x, row = x + w + MOSAIC_GAP, max(row, h)
    mosaic = np.zeros((y + row, width, 3), np.uint8)
    for _, pixels, x, y in places:
        mosaic[y:y + pixels.shape[0], x:x + pixels.shape[1]] = pixels
    boxes, scores, points = detector.net.run(mosaic, floor=detector.threshold)
    found = []
    for corners, score, five in zip(boxes, scores.tolist(), points, strict=True):
        cx, cy = (corners[0] + corners[2]) / 2, (corners[1] + corners[3]) / 2
        for crop, pixels, x, y in places:
            if x <= cx < x + pixels.shape[1] and y <= cy < y + pixels.shape[0]:
                # Mosaic to crop (minus where it lies), to the picture (by scale, plus where
                # the crop lies in it).
                origin, offset = np.array([x, y]), np.array([crop.x, crop.y])
                (a, b), (c, d) = (corners.reshape(2, 2) - origin) / scale + offset
                shifted = ((five - origin) / scale + offset).astype(np.float32)
                found.append(Found(Box.from_corners(a, b, c, d), float(score), shifted))
                break
    return found


def _unique(found: list[tuple[Found, Box]]) -> list[tuple[Found, Box]]:
    """The faces with those found twice (by the coarse search and around a followed face,
    boxes overlapping by more than DUPLICATE_IOU) once, by their best score."""
    kept: list[tuple[Found, Box]] = []
    for face, box in sorted(found, key=lambda item: -item[0].score):
        if all(box.iou(other) <= DUPLICATE_IOU for _, other in kept):
            kept.append((face, box))
    return kept


def _distance(predicted: Box, box: Box) -> float | None:
    """Centre distance in face widths, or None when too far or too different in size."""
    size = (predicted.w + box.w) / 2
    if size <= 0 or max(predicted.w, box.w) > MAX_SIZE_RATIO * min(predicted.w, box.w):
        return None
    (x0, y0), (x1, y1) = predicted.center, box.center
    distance = math.hypot(x1 - x0, y1 - y0) / size
    return distance if distance <= MAX_DISTANCE else None
