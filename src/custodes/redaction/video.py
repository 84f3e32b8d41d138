"""Irreversible redaction of a video file: every face and every privacy zone, in every frame.

    info = redact_file(src, dst, zones=camera.privacy_zones)            # everyone blurred
    info = redact_file(src, dst, keep=subject_keep(photo))              # a subject access export

Two passes over the file, because a face must be blurred in frames where the detector misses
it, before its first detection as well as after its last:

1. Detect faces in every `stride`-th frame (`custodes.redaction.detect.RedactionDetector`: dlib
   HOG at `export_upsample` with a threshold below dlib's default, joined with OpenCV's Haar
   profile and frontal cascades, which find the turned faces HOG misses; a missed face is a
   leak, a false one only a blurred patch) and link the detections into tracks.
2. Decode again and blur each track over its whole life: between two detections along the
   line joining their boxes, and for `hold` seconds before the first and after the last one,
   where the box is carried along the track's motion and widened. Privacy zones are blurred
   in every frame. The frames go raw to ffmpeg, which encodes H.264 (libx264), no audio.

Decoding twice costs far less than detecting once, and no frame has to be kept in memory.

Linking is done here, not with `custodes.vision.tracker.Tracker`: the live tracker reports
a track only when it ends, with its best face, whereas an export needs every detection's track
(to blur the track over its whole life and to decide per track whether it is a subject who
stays visible). The rule is the same: greedy by overlap, then by distance in face widths.

`keep` (subject access) is asked once per track, with the track's best faces (`BestFace`:
crops around the face with landmarks, sharpest and most frontal first); a track it keeps is
left unblurred in all its frames, every other face is blurred. So one person is not visible in
some frames and blurred in others, and a stranger is not shown because one frame looked alike.
Anything `keep` is not asked about stays blurred: it fails closed. That includes a face the
detectors missed, and a track only the Haar cascades found (a face in profile or turned away):
it has no landmarks, so it cannot be compared with the subject's photo, and even the subject's
own profile track is blurred. Where the subject's face is detected, another track's held box
(a guess, see 2.) is not drawn over it (`_plan`).

Costs on the 2-core box (`bench/redaction.py`): detection dominates, ~0.2 s per 640x360 frame
for HOG at upsample 2 plus ~0.5 s for the cascades, split over `workers` threads (dlib and
OpenCV release the GIL while they scan).
"""

from __future__ import annotations

import bisect
import logging
import math
import os
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Final

import av
import numpy as np
import numpy.typing as npt

from custodes.media import ffmpeg_exe
from custodes.record.playback import ExportError
from custodes.redaction.blur import Polygon, blur_polygons, blur_regions
from custodes.redaction.detect import HOG_THRESHOLD, Found, RedactionDetector, describe
from custodes.vision.decode import luma
from custodes.vision.faces import Box, Face
from custodes.vision.tracker import CROP_MARGIN, BestFace

log = logging.getLogger(__name__)

U8 = npt.NDArray[np.uint8]
Keep = Callable[[Sequence[BestFace]], bool]

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
# A held box covering more than this share of a kept face (subject access) is dropped there.
HELD_OVER_SHOWN: Final = 0.25
# The Haar cascades scan exports at up to 540 lines: a 1080p export has them find faces from
# ~36 px (below HOG's ~40 px at upsample 1), at ~2.0 s a frame against ~1.1 s at 360 lines.
EXPORT_HAAR_SIDE: Final = 540
_STDERR_LINES = 8


class RedactionError(ExportError):
    """A video that cannot be redacted (unreadable input, encoder failure)."""


@dataclass(frozen=True)
class DetectorSettings:
    """How faces are searched for."""

    upsample: int | None = None  # None: export_upsample(height, width)
    threshold: float = HOG_THRESHOLD
    haar: bool = True  # False: HOG alone, as before the cascades were added (for comparison)
    stride: int = 1  # detect on every stride-th frame; the others get interpolated boxes
    hold: float = 0.5  # seconds a face stays blurred before its first / after its last sighting
    workers: int = 2  # detection threads

    def describe(self, upsample: int) -> dict[str, object]:
        return {**describe(upsample, threshold=self.threshold, haar=self.haar,
                           haar_side=EXPORT_HAAR_SIDE),
                "stride": self.stride, "hold_s": self.hold}


@dataclass(eq=False)
class _Track:
    id: int
    frames: list[int] = field(default_factory=list)  # frame indexes of its detections
    boxes: list[Box] = field(default_factory=list)
    samples: list[BestFace] = field(default_factory=list)  # best first

    def predict(self, frame: int) -> Box:
        """The last box carried along the track's motion to `frame`."""
        dx, dy = self.velocity(-1)
        steps = frame - self.frames[-1]
        return self.boxes[-1].shift(round(dx * steps), round(dy * steps))

    def velocity(self, end: int) -> tuple[float, float]:
        """Centre motion per frame between the two detections at the start (0) or end (-1)."""
        if len(self.frames) < 2:
            return 0.0, 0.0
        a, b = (0, 1) if end == 0 else (-2, -1)
        (x0, y0), (x1, y1) = self.boxes[a].center, self.boxes[b].center
        steps = self.frames[b] - self.frames[a]
        return (x1 - x0) / steps, (y1 - y0) / steps

    def box_at(self, frame: int, hold: int) -> Box | None:
        """Where to blur this track's face in `frame`, or None outside its life (+- hold)."""
        first, last = self.frames[0], self.frames[-1]
        if frame < first - hold or frame > last + hold:
            return None
        if frame < first:
            return self._held(0, frame - first)
        if frame > last:
            return self._held(-1, frame - last)
        i = bisect.bisect_left(self.frames, frame)
        if self.frames[i] == frame:
            return self.boxes[i]
        f0, f1 = self.frames[i - 1], self.frames[i]
        return _lerp(self.boxes[i - 1], self.boxes[i], (frame - f0) / (f1 - f0))

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

    def add(self, frame: int, faces: Sequence[Box]) -> list[_Track]:
        """The track of each face (box), in order."""
        alive = [t for t in self.tracks if 0 < frame - t.frames[-1] <= self.max_gap]
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
        for fi, face in enumerate(faces):
            joined = chosen.get(fi)
            if joined is None:
                joined = _Track(len(self.tracks) + 1)
                self.tracks.append(joined)
            joined.frames.append(frame)
            joined.boxes.append(face)
            result.append(joined)
        return result


@dataclass
class _Scan:
    """What the first pass learnt about a file."""

    frames: int = 0
    width: int = 0
    height: int = 0
    rate: Fraction = Fraction(25)
    detections: int = 0
    tracks: list[_Track] = field(default_factory=list)


def redact_file(src: Path, dst: Path, *, zones: Sequence[Polygon] = (),
                keep: Keep | None = None,
                settings: DetectorSettings = DetectorSettings()) -> dict[str, object]:
    """Write `src` to `dst` (MP4, H.264) with faces and privacy zones blurred for good.

    `zones` are polygons of (x, y) points in 0..1 of the picture's width and height. `keep`
    decides, per track, which faces stay visible (see the module's text); without it every
    face is blurred. Frame count and frame rate are kept; audio is dropped. `dst` appears only
    when complete. Returns a description of what was done, for the export's signed manifest.
    Raises RedactionError (an ExportError).
    """
    started = time.perf_counter()
    if dst.exists():
        raise RedactionError(f"{dst} exists already; choose another name")
    if not dst.parent.is_dir():
        raise RedactionError(f"the folder {dst.parent} does not exist")
    scan = _scan(src, settings, with_samples=keep is not None)
    upsample = _upsample(settings, scan.height, scan.width)
    # A track without samples (only the cascades found it) is never asked about: blurred.
    kept = {track.id for track in scan.tracks
            if keep is not None and track.samples and keep(track.samples)}
    blurred = [track for track in scan.tracks if track.id not in kept]
    hold = math.ceil(settings.hold * float(scan.rate))
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.partial")
    try:
        boxes = _plan(scan, blurred, hold, _seen(t for t in scan.tracks if t.id in kept))
        _encode(src, tmp, scan, boxes=boxes, zones=zones)
        tmp.rename(dst)
    finally:
        tmp.unlink(missing_ok=True)
    seconds = time.perf_counter() - started
    log.info("redacted %s: %d frames, %d faces blurred, %d kept, %.1f s", src.name, scan.frames,
             len(blurred), len(kept), seconds)
    return {
        "applied": True,
        "method": METHOD,
        "faces_blurred": len(blurred),
        "faces_kept": len(kept),
        "detections": scan.detections,
        "frames": scan.frames,
        "zones": len(zones),
        "detector": settings.describe(upsample),
        "keep": "subject" if keep is not None else None,
        "seconds": round(seconds, 2),
    }


def export_upsample(height: int, width: int) -> int:
    """The detector's upsample for an export: faces down to ~20 px up to 720p, ~40 px above.

    Finer than for snapshots (`snapshot_upsample`) in the 480-720 band: on the MOT20 crowd
    (826x540) upsample 1 leaves most of what upsample 2 finds. At 1080p, upsample 2 would cost
    ~2 s a frame; upsample 1 (~0.45 s) finds faces of 1/27 of the height.
    """
    return 2 if min(height, width) <= 720 else 1


def _upsample(settings: DetectorSettings, height: int, width: int) -> int:
    return export_upsample(height, width) if settings.upsample is None else settings.upsample


def _open(src: Path) -> av.container.InputContainer:
    try:
        container = av.open(str(src))
    except (av.FFmpegError, OSError) as exc:
        raise RedactionError(f"{src.name} cannot be read: {exc}") from None
    if not container.streams.video:
        container.close()
        raise RedactionError(f"{src.name} has no video stream")
    return container


def _frames(src: Path) -> Iterator[av.VideoFrame]:
    container = _open(src)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        yield from container.decode(stream)
    except av.FFmpegError as exc:
        raise RedactionError(f"{src.name} cannot be decoded: {exc}") from None
    finally:
        container.close()


def _rate(src: Path) -> Fraction:
    container = _open(src)
    try:
        stream = container.streams.video[0]
        rate = stream.guessed_rate or stream.average_rate
    finally:
        container.close()
    return Fraction(rate) if rate else Fraction(25)


def _scan(src: Path, settings: DetectorSettings, *, with_samples: bool) -> _Scan:
    """Pass 1: faces in every stride-th frame, linked into tracks."""
    scan = _Scan(rate=_rate(src))
    linker = _Linker(max_gap=math.ceil(MAX_GAP * float(scan.rate)))
    local = threading.local()

    def detect(grey: U8, upsample: int) -> list[Found]:
        # dlib's and OpenCV's detectors are not to be shared between threads: one per thread.
        if not hasattr(local, "detector"):
            local.detector = RedactionDetector(threshold=settings.threshold,
                                               haar=settings.haar, haar_side=EXPORT_HAAR_SIDE)
        found: list[Found] = local.detector.detect(grey, upsample)
        return found

    pending: deque[tuple[int, U8, av.VideoFrame | None, Future[list[Found]]]] = deque()

    def settle() -> None:
        index, grey, video, future = pending.popleft()
        found = future.result()
        scan.detections += len(found)
        tracks = linker.add(index, [f.box for f in found])
        if with_samples and video is not None and any(f.face is not None for f in found):
            rgb = np.asarray(video.to_ndarray(format="rgb24"), dtype=np.uint8)
            for item, track in zip(found, tracks, strict=True):
                # Only HOG's faces have the landmarks the subject's comparison needs.
                if item.face is not None:
                    _add_sample(track, item.face, rgb, grey, float(index / scan.rate))

    with ThreadPoolExecutor(max(1, settings.workers), thread_name_prefix="redact") as pool:
        for index, video in enumerate(_frames(src)):
            if index == 0:
                scan.width, scan.height = video.width, video.height
            scan.frames += 1
            if index % settings.stride:
                continue
            grey = luma(video, video.width)
            upsample = _upsample(settings, video.height, video.width)
            pending.append((index, grey, video if with_samples else None,
                            pool.submit(detect, grey, upsample)))
            # A few frames in flight keep every thread busy without holding the whole file.
            while len(pending) > 2 * settings.workers:
                settle()
        while pending:
            settle()
    if scan.frames == 0:
        raise RedactionError(f"{src.name} has no frames")
    scan.tracks = linker.tracks
    return scan


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


def _seen(tracks: Iterable[_Track]) -> dict[int, list[Box]]:
    """Frame index -> the boxes where these tracks' faces were detected in it."""
    seen: dict[int, list[Box]] = {}
    for track in tracks:
        for index, box in zip(track.frames, track.boxes, strict=True):
            seen.setdefault(index, []).append(box)
    return seen


def _plan(scan: _Scan, tracks: list[_Track], hold: int,
          shown: dict[int, list[Box]]) -> dict[int, list[Box]]:
    """Frame index -> the boxes to blur in it: each track over its life, +- hold frames.

    `shown`: where a kept track's face (subject access) was detected, per frame. Another
    track's held box (a guess where its face went before it was first or after it was last
    seen) is dropped where it would cover much of such a face: the subject is seen there,
    and a guess carried along a rough motion estimate (from a false detection on the
    subject's hand, say) must not blur him. Detected and interpolated boxes always count.
    """
    boxes: dict[int, list[Box]] = {}
    for track in tracks:
        first, last = track.frames[0], track.frames[-1]
        for index in range(max(0, first - hold), min(scan.frames, last + hold + 1)):
            box = track.box_at(index, hold)
            if box is None:
                continue
            held = index < first or index > last
            if held and any(box.intersection(face) > HELD_OVER_SHOWN * face.area
                            for face in shown.get(index, ())):
                continue
            boxes.setdefault(index, []).append(box)
    return boxes


def _encode(src: Path, target: Path, scan: _Scan, *, boxes: dict[int, list[Box]],
            zones: Sequence[Polygon]) -> None:
    """Pass 2: blur (`boxes` per frame index, and the zones) and pipe every frame to ffmpeg."""
    argv = [
        ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{scan.width}x{scan.height}",
        "-framerate", f"{scan.rate.numerator}/{scan.rate.denominator}", "-i", "-",
        # yuv420p needs even sides: drop a last odd row or column.
        "-vf", "crop=trunc(iw/2)*2:trunc(ih/2)*2", "-an",
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p",
        "-movflags", "+faststart", "-f", "mp4", str(target),
    ]
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stderr=errors)
        assert proc.stdin is not None  # Popen with stdin=PIPE always sets it
        written = 0
        try:
            for index, video in enumerate(_frames(src)):
                if index >= scan.frames:
                    break
                rgb = np.asarray(video.to_ndarray(format="rgb24"), dtype=np.uint8)
                if (rgb.shape[1], rgb.shape[0]) != (scan.width, scan.height):
                    raise RedactionError(f"{src.name} changes picture size at frame {index}")
                if index in boxes:
                    rgb = blur_regions(rgb, boxes[index])
                if zones:
                    rgb = blur_polygons(rgb, zones)
                proc.stdin.write(np.ascontiguousarray(rgb).tobytes())
                written += 1
            proc.stdin.close()
        except BrokenPipeError:
            pass  # ffmpeg stopped: its exit status and message say why
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        code = proc.wait()
        if code != 0:
            errors.seek(0)
            tail = "\n".join(errors.read().decode(errors="replace").strip()
                             .splitlines()[-_STDERR_LINES:])
            raise RedactionError(f"ffmpeg failed (exit status {code}):\n{tail}")
    if written != scan.frames:
        raise RedactionError(f"{src.name}: {written} frames on the second pass, "
                             f"{scan.frames} on the first")


def _lerp(a: Box, b: Box, f: float) -> Box:
    return Box.from_corners(a.x + (b.x - a.x) * f, a.y + (b.y - a.y) * f,
                            a.right + (b.right - a.right) * f,
                            a.bottom + (b.bottom - a.bottom) * f)


def _distance(predicted: Box, box: Box) -> float | None:
    """Centre distance in face widths, or None when too far or too different in size."""
    size = (predicted.w + box.w) / 2
    if size <= 0 or max(predicted.w, box.w) > MAX_SIZE_RATIO * min(predicted.w, box.w):
        return None
    (x0, y0), (x1, y1) = predicted.center, box.center
    distance = math.hypot(x1 - x0, y1 - y0) / size
    return distance if distance <= MAX_DISTANCE else None
