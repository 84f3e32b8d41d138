"""Irreversible redaction of a video file: every face and every privacy zone, in every frame.

    info = redact_file(src, dst, zones=camera.privacy_zones)            # everyone blurred
    info = redact_file(src, dst, keep=subject_keep(photo))              # a subject access export
    plan = plan_boxes(src)                                              # the boxes alone, to
    info = redact_file(src, dst, plan=plan, max_lines=720)              # reuse (box cache)

Two passes over the file, because a face must be blurred in frames where the detector did not
look or missed it, before its first detection as well as after its last:

1. Search every `stride`-th frame (`RedactionSettings.detect_fps` searches a second: every 3rd
   frame at 15 fps) and the last one, shrunk to `detect_lines` lines, with redaction's
   detector (CenterFace at REDACT_THRESHOLD: a missed face is a leak, a false one only a
   blurred patch), and link the detections into tracks, ended at cuts. The result, the boxes
   to blur in each frame, is a `BoxPlan`, which can be saved and reused for every copy of the
   same footage (`custodes.redaction.copies`).
2. Decode again and blur each track over its whole life: between two detections along the
   line joining their boxes, and for `hold` seconds before the first and after the last one,
   where the box is carried along the track's motion. Privacy zones are blurred in every
   frame. The frames go raw to ffmpeg (libx264 ultrafast), no audio, optionally shrunk to
   `max_lines` (playback copies: the viewer's picture, not the original's).

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
subject's face is detected, another track's held box (a guess) is not drawn over it (`_plan`).

Costs, one core of the 2-core box, a 720p 15 fps stream (`python bench/redaction.py`), CPU
seconds of this process and ffmpeg per frame (load average ~3.5; the old detector measured
1.18 s a 640x360 frame in the same run): the search (240 lines, every 3rd frame, decoding)
16 ms, the blur and encoding (YUV planes, libx264 ultrafast) 18 ms; a first copy 35 ms a
frame, 1.9x real time; a copy from cached boxes 18 ms (3.7x), at 360 lines 10 ms (7x). The
old HOG + Haar redaction took 216 CPU-s per 10 s of 720p; this takes 5.2 (2.7 from cached
boxes).
"""

from __future__ import annotations

import bisect
import functools
import json
import logging
import math
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Final, Literal

import av
import numpy as np
import numpy.typing as npt

from custodes.media import ffmpeg_exe
from custodes.record.playback import ExportError
from custodes.redaction.blur import FACE_MARGIN, Polygon, blur_polygons, blur_regions
from custodes.redaction.detect import NODE_SETTINGS, RedactionSettings, grown
from custodes.vision.cuts import SIZE as CUT_SIZE
from custodes.vision.cuts import Thumbnail
from custodes.vision.faces import Box, Face, FaceDetector
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
# libx264's fastest preset: at 720p ~7 ms a frame against ~20 ms for veryfast (one core), for
# files ~2.5x larger at the same quality; encoding would otherwise cost more than the search.
PRESET: Final = "ultrafast"
CRF: Final = 23
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

    def box_at(self, frame: int, hold: int, spread: float) -> Box | None:
        """Where to blur this track's face in `frame`, or None outside its life (+- hold).

        `spread`: growth per side, in box sizes per frame away from the nearest detection.
        """
        first, last = self.frames[0], self.frames[-1]
        if frame < first - hold or frame > last + hold:
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


@dataclass
class _Scan:
    """What the first pass learnt about a file."""

    frames: int = 0
    width: int = 0
    height: int = 0
    rate: Fraction = Fraction(25)
    stride: int = 1
    detections: int = 0
    tracks: list[_Track] = field(default_factory=list)


def plan_boxes(src: Path, settings: RedactionSettings = NODE_SETTINGS, *,
               keep: Keep | None = None, progress: Progress | None = None) -> BoxPlan:
    """Pass 1: where to blur in every frame of `src` (see the module's text).

    With `keep` (subject access) the tracks it keeps are left out of the plan. Raises
    RedactionError.
    """
    scan = _scan(src, settings, with_samples=keep is not None, progress=progress)
    # A track without samples (its faces too poor to compare) is never asked about: blurred.
    kept = {track.id for track in scan.tracks
            if keep is not None and track.samples and keep(track.samples)}
    blurred = [track for track in scan.tracks if track.id not in kept]
    hold = max(math.ceil(settings.hold * float(scan.rate)), scan.stride)
    spread = settings.spread / float(scan.rate)
    shown = _seen((t for t in scan.tracks if t.id in kept), scan.stride)
    boxes = _plan(scan, blurred, hold, spread, shown)
    return BoxPlan(settings=settings.digest(), frames=scan.frames, width=scan.width,
                   height=scan.height, rate=scan.rate, stride=scan.stride,
                   detections=scan.detections, faces_blurred=len(blurred),
                   faces_kept=len(kept), boxes=boxes)


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
        width, height = _encode(src, tmp, plan, zones=zones, max_lines=max_lines,
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


def _scan(src: Path, settings: RedactionSettings, *, with_samples: bool,
          progress: Progress | None) -> _Scan:
    """Pass 1: faces in every stride-th frame and in the last one, linked into tracks."""
    scan = _Scan(rate=_rate(src))
    scan.stride = settings.stride(scan.rate)
    linker = _Linker(max_gap=math.ceil(MAX_GAP * float(scan.rate)))
    detector = _detector(settings)
    total = frame_count(src) if progress is not None else 0
    scale, small = 1.0, (0, 0)
    thumbnail: Thumbnail | None = None

    def search(index: int, video: av.VideoFrame) -> None:
        nonlocal thumbnail
        # libswscale shrinks and converts in one step: far cheaper than RGB at full size.
        rgb = np.asarray(video.to_ndarray(width=small[0], height=small[1], format="rgb24"),
                         dtype=np.uint8)
        previous, thumbnail = thumbnail, _thumbnail(video)
        if previous is not None and thumbnail.cut_from(previous):
            linker.cut(index)
        found = detector.detect(rgb)
        scan.detections += len(found)
        seen = [_scaled(face.box, 1 / scale) for face in found]
        tracks = linker.add(index, seen)
        for face, box, track in zip(found, seen, tracks, strict=True):
            track.frames.append(index)
            track.seen.append(box)
            track.boxes.append(grown(box, face.score))
        if with_samples and found:
            _sample(video, detector, float(index / scan.rate),
                    zip(found, seen, tracks, strict=True))

    last: av.VideoFrame | None = None
    for index, video in enumerate(_frames(src)):
        if index == 0:
            scan.width, scan.height = video.width, video.height
            scale = settings.scale(video.height, video.width)
            small = (max(1, round(video.width * scale)), max(1, round(video.height * scale)))
        elif (video.width, video.height) != (scan.width, scan.height):
            raise RedactionError(f"{src.name} changes picture size at frame {index}")
        scan.frames += 1
        if progress is not None:
            progress("search", scan.frames, total)
        last = video
        if index % scan.stride == 0:
            search(index, video)
    if last is None:
        raise RedactionError(f"{src.name} has no frames")
    if (scan.frames - 1) % scan.stride:
        # A face that comes in after the last stride-th frame has no later search to be
        # interpolated or held from: the last frame is searched too.
        search(scan.frames - 1, last)
    scan.tracks = linker.tracks
    return scan


@functools.cache
def _detector(settings: RedactionSettings) -> FaceDetector:
    """One detector per settings for the whole process: loading one takes ~0.3 s, and it
    may be used from several threads at once (the pool of `custodes.redaction.copies`)."""
    return settings.detector()


def _thumbnail(video: av.VideoFrame) -> Thumbnail:
    """The frame's thumbnail for telling cuts (`custodes.vision.cuts`), shrunk by the decoder's
    scaler: far cheaper than converting the whole frame first."""
    return Thumbnail.of(np.asarray(video.to_ndarray(width=CUT_SIZE[0], height=CUT_SIZE[1],
                                                    format="rgb24"), dtype=np.uint8))


def _sample(video: av.VideoFrame, detector: FaceDetector, t: float,
            found: Iterable[tuple[Face, Box, _Track]]) -> None:
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


def _plan(scan: _Scan, tracks: list[_Track], hold: int, spread: float,
          shown: dict[int, list[Box]]) -> dict[int, list[Box]]:
    """Frame index -> the boxes to blur in it: each track over its life, +- hold frames.

    `shown`: where a kept track's face (subject access) is, per frame (`_seen`). Another
    track's held box (a guess where its face went before it was first or after it was last
    seen) is dropped where its blur would touch such a face: the subject is seen there, and a guess
    (grown with time, carried along a rough motion estimate, across a cut to the next shot)
    must not blur part of him, which would make him unrecognisable to whoever checks the
    copy. Detected and interpolated boxes always count.
    """
    boxes: dict[int, list[Box]] = {}
    for track in tracks:
        first, last = track.frames[0], track.frames[-1]
        for index in range(max(0, first - hold), min(scan.frames, last + hold + 1)):
            box = track.box_at(index, hold, spread)
            if box is None:
                continue
            held = index < first or index > last
            if held and any(box.expand(FACE_MARGIN).intersection(face)
                            for face in shown.get(index, ())):
                continue
            boxes.setdefault(index, []).append(box)
    return boxes


def _output_size(width: int, height: int, max_lines: int | None) -> tuple[int, int]:
    """Even sides (yuv420p needs them), shrunk to `max_lines` lines if taller."""
    if max_lines is not None and height > max_lines:
        width, height = round(width * max_lines / height), max_lines
    return max(2, width // 2 * 2), max(2, height // 2 * 2)


def _encode(src: Path, target: Path, plan: BoxPlan, *, zones: Sequence[Polygon],
            max_lines: int | None, progress: Progress | None) -> tuple[int, int]:
    """Pass 2: blur (the plan's boxes and the zones) and pipe every frame to ffmpeg.
    Returns the output's size.

    The frames stay in YUV 4:2:0, as decoded and as encoded, and each plane is blurred on its
    own: converting a 720p frame to RGB and back would cost more than the blur and the
    encoding together (~13 ms of ~30 ms a frame).
    """
    width, height = _output_size(plan.width, plan.height, max_lines)
    factor = height / plan.height
    argv = [
        ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error",
        "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{width}x{height}",
        "-framerate", f"{plan.rate.numerator}/{plan.rate.denominator}", "-i", "-", "-an",
        "-c:v", "libx264", "-preset", PRESET, "-crf", str(CRF), "-pix_fmt", "yuv420p",
        "-movflags", "+faststart", "-f", "mp4", str(target),
    ]
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stderr=errors)
        assert proc.stdin is not None  # Popen with stdin=PIPE always sets it
        written = 0
        try:
            for index, video in enumerate(_frames(src)):
                if index >= plan.frames:
                    break
                if (video.width, video.height) != (plan.width, plan.height):
                    raise RedactionError(f"{src.name} changes picture size at frame {index}")
                boxes = plan.boxes.get(index, [])
                # Y at full size, U and V at half.
                scales = (factor, factor / 2, factor / 2)
                for plane, scale in zip(_planes(video, width, height), scales, strict=True):
                    done = _blurred(plane, [_scaled(b, scale) for b in boxes], zones)
                    proc.stdin.write(done.tobytes())
                written += 1
                if progress is not None:
                    progress("blur", written, plan.frames)
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
    if written != plan.frames:
        raise RedactionError(f"{src.name}: {written} frames on the second pass, "
                             f"{plan.frames} on the first")
    return width, height


def _planes(video: av.VideoFrame, width: int, height: int) -> list[U8]:
    """The frame's Y, U and V planes (U and V at half size) at width x height, even sides.
    Evening odd sides and shrinking happen in libswscale."""
    rows = np.asarray(video.to_ndarray(width=width, height=height, format="yuv420p"),
                      dtype=np.uint8)
    quarter = (height // 2) * (width // 2)
    chroma = rows[height:].reshape(-1)
    return [rows[:height],
            chroma[:quarter].reshape(height // 2, width // 2),
            chroma[quarter:].reshape(height // 2, width // 2)]


def _blurred(plane: U8, boxes: list[Box], zones: Sequence[Polygon]) -> U8:
    if boxes:
        plane = blur_regions(plane, boxes)
    return blur_polygons(plane, zones) if zones else plane


def _scaled(box: Box, factor: float) -> Box:
    return Box.from_corners(box.x * factor, box.y * factor, box.right * factor,
                            box.bottom * factor)


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
