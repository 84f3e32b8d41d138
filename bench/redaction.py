"""Redaction's cost and what it leaves, audited by an independent detector.

    python bench/redaction.py                 # cost (old and new), then every real clip audited
    python bench/redaction.py --quick         # CI: cost on 3 s of 720p, the Hamilton audience
    python bench/redaction.py --clips hamilton --crops /tmp/leaks
    python bench/redaction.py --live 30       # live pictures of 9 cameras: age, CPU, 30 s

Cost. A 720p 15 fps stream (the shared Hamilton and arcade clips, scaled to 1280x720 at 15 fps,
13.3 s) is redacted the way a playback copy or export is (`redact_file`), with the process and
its ffmpeg child pinned to one core: CPU seconds (ours and ffmpeg's) per frame, and the real-
time factor, seconds of video per CPU second. Then again with the segment's boxes reused (the
box cache: what every later viewer or export of the segment costs), and as a playback copy
(at most 720 lines; the same here). Then an export as the node makes one (`export_cost`): the
stream recorded as 2 s segments, a range joined from them, blurred after a search of the joined
file (exports before issue 9's follow-up), with the segments' boxes searched and kept (no
viewer had asked), and from the kept boxes (an export after viewing, or of a range exported
before: `custodes.redaction.exports`). Beside it, in the same run, the old redaction detector
(dlib HOG at upsample 2 and OpenCV's three Haar cascades at scale step 1.05, as removed from
custodes.redaction.detect) on a 640x360 frame: the old cost was 0.75 s a frame there, 216 CPU-s
per 10 s of 720p (issue 9).

Residual. For each real clip in ../shared/data/video (the GIFs' MP4 twins stand for the GIFs),
redacted with the node's settings. The auditor is dlib's CNN face detector (MMOD,
`mmod_human_face_detector.dat` from face_recognition_models): trained on other data than
CenterFace, it is not blind where the redactor is. It is slow, so it looks at `--audit-fps`
frames a second of video, at most `--audit-max` a clip; upsample 1 up to 540 lines (faces from
~40 px), 0 above (1080p: from ~80 px). Faces it finds in the original's audited frames are
"faces"; those it finds again at the same place (IoU >= 0.3) in the redacted copy are "leaks";
residual = leaks / faces. Two figures:

- tuned: audited frames are frames the redactor searched (at 1 audited frame a second and a
  stride dividing the frame rate, they all are). The settings were chosen on these clips.
- honest: audited frames moved one frame on, to frames the redactor did NOT search, where
  only the tracks' interpolated, held and grown boxes cover the faces.

The Hamilton audience (7.6-9.6 s, faces turned sideways) is audited on every frame of its own.
Small faces (SMALL_FACES: MOT20's night crowd, vtest's plaza), which the auditor cannot see at
the clips' own size, are audited again on frames enlarged for the auditor only (the redactor
sees the clip as it is), at most `--small-max` frames a figure: ~20-50 CPU-s a frame.
Detections are not ground truth: the auditor has false faces and misses of its own.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import dlib  # type: ignore[import-untyped]  # dlib ships no type information
import face_recognition_models  # type: ignore[import-untyped]  # neither does this
import numpy as np
import numpy.typing as npt

from custodes.media import ffmpeg_exe
from custodes.redaction.blur import FACE_MARGIN
from custodes.redaction.copies import PLAYBACK_LINES
from custodes.redaction.detect import NODE_SETTINGS, blur_boxes, snapshot_scale
from custodes.redaction.video import keyframe_before, plan_boxes, redact_file, redact_stream
from custodes.vision.faces import Box

U8 = npt.NDArray[np.uint8]
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
HAMILTON = "face_recognition_short_hamilton_clip.mp4"
FACENET = "facenet-pytorch_video.mp4"  # 1080p
# Clips whose faces the auditor cannot see at their own size (MOT20's night crowd ~8-15 px,
# mostly from above; vtest's plaza ~5 px), and how much it sees them enlarged. Even so (4x
# with upsample 1) it found no face in 8 audited frames of either (2026-12-01): their residual
# stays unmeasured; 8x would cost ~3 CPU-min a MOT20 frame.
SMALL_FACES = {"dlib_MOT20-05-raw_even_shorter.mp4": 2, "opencv_vtest_reencoded_480x360.avi": 2}
AUDIENCE = (7.6, 9.6)  # seconds of the Hamilton clip: the audience, turned to the stage
SAME_PLACE = 0.3  # IoU with a face of the original's same frame: the same face
OLD_COST = 0.75  # s a 640x360 frame, HOG + Haar (issue 9)
OLD_PER_10S_720P = 216.0  # CPU-s


class Auditor:
    """dlib's CNN (MMOD) face detector on RGB frames: boxes in frame coordinates."""

    def __init__(self, upsample: int | None = None) -> None:
        model = face_recognition_models.cnn_face_detector_model_location()
        self._cnn: Any = dlib.cnn_face_detection_model_v1(model)
        self._upsample = upsample  # None: by the picture's size

    def upsample(self, height: int, width: int) -> int:
        if self._upsample is not None:
            return self._upsample
        return 1 if min(height, width) <= 540 else 0

    def faces(self, rgb: U8) -> list[Box]:
        found = self._cnn(np.ascontiguousarray(rgb), self.upsample(*rgb.shape[:2]))
        return [Box.from_corners(d.rect.left(), d.rect.top(), d.rect.right() + 1,
                                 d.rect.bottom() + 1) for d in found]


@dataclass
class Tally:
    faces: int = 0
    leaks: int = 0
    other: int = 0

    def add(self, other: Tally) -> None:
        self.faces += other.faces
        self.leaks += other.leaks
        self.other += other.other

    def residual(self) -> str:
        return f"{self.leaks / self.faces:6.1%}" if self.faces else "     -"


def cpu_seconds() -> float:
    """CPU time of this process and its waited-for children (ffmpeg)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def decode(path: Path, wanted: set[int] | None = None) -> dict[int, U8]:
    with av.open(str(path)) as container:
        return {i: np.asarray(v.to_ndarray(format="rgb24"), dtype=np.uint8)
                for i, v in enumerate(container.decode(video=0))
                if wanted is None or i in wanted}


def rate_and_count(path: Path) -> tuple[Fraction, int]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = Fraction(stream.guessed_rate or stream.average_rate or 25)
        count = stream.frames or sum(1 for _ in container.decode(stream))
    return rate, count


def audited(count: int, rate: Fraction, fps: float, most: int, shift: int) -> list[int]:
    step = max(1, round(float(rate) / fps))
    chosen = list(range(0, count - shift, step))
    if len(chosen) > most:
        chosen = [chosen[round(k * (len(chosen) - 1) / (most - 1))] for k in range(most)]
    return [i + shift for i in chosen]


def tally(original: dict[int, list[Box]], redacted: dict[int, list[Box]],
          leaks: list[tuple[int, Box]] | None = None) -> Tally:
    result = Tally()
    for i, before in original.items():
        result.faces += len(before)
        for box in redacted[i]:
            if any(box.iou(o) >= SAME_PLACE for o in before):
                result.leaks += 1
                if leaks is not None:
                    leaks.append((i, box))
            else:
                result.other += 1
    return result


def save_crops(folder: Path, name: str, before: dict[int, U8], after: dict[int, U8],
               leaks: list[tuple[int, Box]]) -> None:
    """Each leak as a PNG: the original's crop left, the redacted copy's right."""
    folder.mkdir(parents=True, exist_ok=True)
    for n, (index, box) in enumerate(leaks):
        height, width = before[index].shape[:2]
        crop = box.expand(0.5).clip(width, height)
        pair = [f[index][crop.y:crop.bottom, crop.x:crop.right] for f in (before, after)]
        cv2.imwrite(str(folder / f"{name}-{index:04d}-{n}.png"),
                    cv2.cvtColor(np.hstack(pair), cv2.COLOR_RGB2BGR))


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", *args],
                   check=True)


def stream_720p(work: Path, seconds: float | None) -> Path:
    """The Hamilton and arcade clips at 1280x720, 15 fps, one after the other (13.3 s), or
    the first `seconds` of it."""
    target = work / "stream-720p.mp4"
    scale = "scale=1280:720,fps=15,setsar=1"
    ffmpeg("-i", str(DATA / "video" / HAMILTON), "-i", str(DATA / "video" / FACENET),
           "-filter_complex", f"[0:v]{scale}[a];[1:v]{scale}[b];[a][b]concat=n=2:v=1[v]",
           "-map", "[v]", *(("-t", str(seconds)) if seconds else ()),
           "-c:v", "libx264", "-preset", "veryfast", "-g", "30", "-pix_fmt", "yuv420p", "-an",
           str(target))
    return target


def old_detector_cost(frames: int) -> float:
    """Seconds a 640x360 frame for the removed HOG + Haar redaction detector, one thread."""
    with av.open(str(DATA / "video" / HAMILTON)) as container:
        grey = next(np.asarray(v.to_ndarray(format="gray"), dtype=np.uint8)
                    for i, v in enumerate(container.decode(video=0)) if i == 240)
    hog: Any = dlib.get_frontal_face_detector()
    folder = Path(cv2.data.haarcascades)  # type: ignore[attr-defined]  # not in the stubs
    cascades = [cv2.CascadeClassifier(str(folder / name)) for name in
                ("haarcascade_profileface.xml", "haarcascade_frontalface_alt2.xml")]
    mirrored = cv2.flip(grey, 1)
    started = cpu_seconds()
    for _ in range(frames):
        hog.run(grey, 2, -0.3)  # with scores: the threshold below dlib's 0 it used
        for cascade, image in ((cascades[0], grey), (cascades[0], mirrored),
                               (cascades[1], grey)):
            cascade.detectMultiScale(image, scaleFactor=1.05, minNeighbors=5, minSize=(18, 18))
    return (cpu_seconds() - started) / frames


def cost(work: Path, seconds: float | None, old_frames: int) -> None:
    """New redaction of a 720p 15 fps stream on one core, against the old detector."""
    source = stream_720p(work, seconds)
    rate, count = rate_and_count(source)
    video = count / float(rate)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # ffmpeg inherits it
    load = os.getloadavg()[0]
    print(f"cost: {source.name} 1280x720 {float(rate):g} fps, {count} frames ({video:.1f} s), "
          f"pinned to one core; load average {load:.1f} on {os.cpu_count()} cores (other "
          f"work on this machine counts in wall time, not in CPU time)")
    print(f"{'run':34} {'CPU s':>6} {'wall s':>6} {'ms/frame':>8} {'x real time':>11} "
          f"{'CPU s per 10 s':>14}")

    def row(name: str, cpu: float, wall: float) -> None:
        print(f"{name:34} {cpu:6.1f} {wall:6.1f} {1000 * cpu / count:8.1f} "
              f"{video / cpu:11.2f} {10 * cpu / video:14.1f}", flush=True)

    NODE_SETTINGS.detector()  # the first load imports onnx (seconds): not the redaction's
    started, wall = cpu_seconds(), time.perf_counter()
    with (work / "first.mp4").open("wb") as out:
        redact_stream(source, out, max_lines=PLAYBACK_LINES)
    row("first viewer (one pass, streamed)", cpu_seconds() - started, time.perf_counter() - wall)
    started, wall = cpu_seconds(), time.perf_counter()
    plan = plan_boxes(source)
    search, search_wall = cpu_seconds() - started, time.perf_counter() - wall
    redact_file(source, work / "two-pass.mp4", plan=plan)
    row("two passes (search, then encode)", cpu_seconds() - started, time.perf_counter() - wall)
    row("  of which the search", search, search_wall)
    started, wall = cpu_seconds(), time.perf_counter()
    redact_file(source, work / "cached.mp4", plan=plan)
    row("box cache hit (encode only)", cpu_seconds() - started, time.perf_counter() - wall)
    started, wall = cpu_seconds(), time.perf_counter()
    redact_file(source, work / "copy.mp4", plan=plan, max_lines=360)
    row("cache hit, copy at 360 lines", cpu_seconds() - started, time.perf_counter() - wall)
    export_cost(work, source, row)
    mid_segment(work, source, at=round(0.7 * min(video, 10.0), 1))
    old = old_detector_cost(old_frames)
    print(f"old HOG + Haar detector, 640x360: {old:.2f} s a frame measured now over "
          f"{old_frames} frames (issue 9: {OLD_COST} s; {OLD_PER_10S_720P:.0f} CPU-s per 10 s "
          f"of 720p); {plan.detections} faces found in {count // plan.stride} searched frames")


def mid_segment(work: Path, source: Path, at: float) -> None:
    """A viewer who clicks `at` seconds into a 720p segment (the stream's first 10 s) nobody
    watched: CPU seconds
    until the frame at `at` is encoded, from the segment's start (the whole copy, as before)
    and from the keyframe before `at` (a tail, custodes.redaction.copies)."""
    segment = work / "segment-10s.mp4"
    ffmpeg("-i", str(source), "-t", "10", "-c", "copy", str(segment))
    rate, count = rate_and_count(segment)
    begins = keyframe_before(segment, at)
    results = []
    for start in (0.0, begins):
        reached: list[float] = []
        started = cpu_seconds()
        wanted = round((at - start) * float(rate))

        def progress(stage: str, done: int, _total: int, wanted: int = wanted,
                     reached: list[float] = reached, started: float = started) -> None:
            if stage == "blur" and done == wanted + 1 and not reached:
                reached.append(cpu_seconds() - started)

        with (work / "mid.mp4").open("wb") as out:
            redact_stream(segment, out, max_lines=PLAYBACK_LINES, start=start,
                          progress=progress)
        results.append(reached[0] if reached else float("nan"))
    print(f"click {at:g} s into a {count / float(rate):.0f} s 720p segment: {results[0]:.2f} "
          f"CPU-s to its frame from "
          f"the segment's start, {results[1]:.2f} from the keyframe at {begins:.2f} s (the "
          f"CPU-s include ffmpeg's only once it has exited: the encoder's share, ~20 %, is "
          f"missing from both)")


def export_cost(work: Path, source: Path, row: Callable[[str, float, float], None]) -> None:
    """An export of the stream as the node makes one: recorded as 2 s segments, the range
    (0.5 s in, to 0.5 s before the end) joined, then blurred after a search of the joined file
    (as exports did before) or with the segments' kept boxes (`custodes.redaction.exports`):
    first searched and kept (no viewer had asked), then from the kept boxes (an export after
    viewing, or a second export of the range). Rows in the frames of the whole stream."""
    import yaml  # noqa: PLC0415 - only this part builds a node

    from custodes.app import Node  # noqa: PLC0415
    from custodes.config import parse_config  # noqa: PLC0415
    from custodes.record.playback import export_range, segments_in_range  # noqa: PLC0415
    from custodes.redaction.exports import SegmentBoxes, redact_joined  # noqa: PLC0415
    from custodes.store.schema import segments as segment_rows  # noqa: PLC0415

    config = {"sites": {"site": {"name": "bench"}}, "storage": {"path": str(work / "node")},
              "cameras": {"cam": {"site": "site", "location": "corridor", "purpose": "bench",
                                  "main_url": "rtsp://127.0.0.1:1/cam"}}}
    node = Node(parse_config(yaml.safe_dump(config)))
    node.layout.create()
    node.store.open()
    try:
        # The stream has a keyframe every 2 s: segments as a camera's recording cuts them.
        ffmpeg("-i", str(source), "-c", "copy", "-f", "segment", "-segment_time", "2",
               "-reset_timestamps", "1", "-segment_format", "mp4", str(work / "seg%03d.mp4"))
        rows, start = [], 0.0
        for part in sorted(work.glob("seg*.mp4")):
            _, frames = rate_and_count(part)
            seconds = frames / 15
            target = node.layout.segment_path("cam", start)
            target.parent.mkdir(parents=True, exist_ok=True)
            part.rename(target)
            rows.append({"camera": "cam", "start": start, "end": start + seconds,
                         "duration": seconds, "bytes": target.stat().st_size,
                         "path": target.relative_to(node.layout.recordings).as_posix()})
            start += seconds
        node.store.write(lambda conn: [conn.execute(segment_rows.insert().values(r))
                                       for r in rows])
        joined = work / "export-joined.mp4"
        export_range(node.store, node.layout, "cam", 0.5, start - 0.5, joined)
        with node.store.read() as conn:
            found = segments_in_range(conn, "cam", 0.5, start - 0.5)
        boxes = SegmentBoxes(node)
        started, wall = cpu_seconds(), time.perf_counter()
        redact_file(joined, work / "export-fresh.mp4")
        row("export, joined file searched", cpu_seconds() - started, time.perf_counter() - wall)
        for name, out in (("export, segments searched", "export-first.mp4"),
                          ("export from kept boxes", "export-kept.mp4")):
            started, wall = cpu_seconds(), time.perf_counter()
            info = redact_joined(joined, work / out, found, boxes)
            row(f"{name} {info['boxes']['searched']}/{len(found)}",
                cpu_seconds() - started, time.perf_counter() - wall)
    finally:
        node.store.close()


def residuals(paths: list[Path], work: Path, *, fps: float, most: int,
              crops: Path | None) -> None:
    auditor = Auditor()
    print(f"\nresidual: redactor {NODE_SETTINGS.describe()}; auditor dlib CNN (MMOD), "
          f"{fps:g} frames a second, at most {most} a clip")
    print(f"{'clip':44} {'size':>9} {'stride':>6} {'figure':>7} {'audited':>7} {'faces':>5} "
          f"{'leaks':>5} {'residual':>8} {'other':>5}", flush=True)
    totals = {"tuned": Tally(), "honest": Tally()}
    for path in paths:
        rate, count = rate_and_count(path)
        stride = NODE_SETTINGS.stride(rate)
        out = work / f"{path.stem}.redacted.mp4"
        redact_file(path, out)
        for figure, shift in (("tuned", 0), ("honest", 1 if stride > 1 else 0)):
            indexes = audited(count, rate, fps, most, shift)
            before, after = decode(path, set(indexes)), decode(out, set(indexes))
            found = {i: auditor.faces(rgb) for i, rgb in before.items()}
            again = {i: auditor.faces(rgb) for i, rgb in after.items()}
            leaks: list[tuple[int, Box]] = []
            result = tally(found, again, leaks)
            totals[figure].add(result)
            height, width = next(iter(before.values())).shape[:2]
            print(f"{path.name:44} {f'{width}x{height}':>9} {stride:6d} {figure:>7} "
                  f"{len(indexes):7d} {result.faces:5d} {result.leaks:5d} "
                  f"{result.residual():>8} {result.other:5d}", flush=True)
            if crops is not None and leaks:
                save_crops(crops, f"{path.stem}-{figure}", before, after, leaks)
        out.unlink()
    for figure, total in totals.items():
        print(f"{'total':44} {'':>9} {'':>6} {figure:>7} {'':>7} {total.faces:5d} "
              f"{total.leaks:5d} {total.residual():>8} {total.other:5d}")


def small_faces(work: Path, *, fps: float, most: int) -> None:
    """The clips whose faces are too small for the auditor at their own size (SMALL_FACES):
    the auditor sees their frames enlarged (the redactor sees them as they are), with
    upsample 1 on top: faces from ~40 / (2 * scale) px of the original. The auditor costs
    ~20 s (vtest) to ~50 s (MOT20) a frame there, so fewer frames are audited, and a redacted
    frame only where the original's has a face (leaks are counted only there; "other" then
    counts only in those frames)."""
    auditor = Auditor(upsample=1)
    print(f"\nsmall faces: auditor on frames enlarged for it only, upsample 1, {fps:g} frames "
          f"a second, at most {most} a clip")
    print(f"{'clip':44} {'size':>9} {'seen as':>9} {'stride':>6} {'figure':>7} {'audited':>7} "
          f"{'faces':>5} {'leaks':>5} {'residual':>8} {'other':>5}", flush=True)

    def enlarged(rgb: U8, scale: int) -> U8:
        return np.asarray(cv2.resize(rgb, None, fx=scale, fy=scale,
                                     interpolation=cv2.INTER_CUBIC), dtype=np.uint8)

    for name, scale in SMALL_FACES.items():
        path = DATA / "video" / name
        rate, count = rate_and_count(path)
        stride = NODE_SETTINGS.stride(rate)
        out = work / f"{path.stem}.small.redacted.mp4"
        redact_file(path, out)
        for figure, shift in (("tuned", 0), ("honest", 1 if stride > 1 else 0)):
            indexes = audited(count, rate, fps, most, shift)
            before = decode(path, set(indexes))
            found = {i: [_scaled_box(b, 1 / scale) for b in auditor.faces(enlarged(rgb, scale))]
                     for i, rgb in before.items()}
            after = decode(out, {i for i, faces in found.items() if faces})
            again = {i: [_scaled_box(b, 1 / scale) for b in auditor.faces(enlarged(rgb, scale))]
                     for i, rgb in after.items()}
            result = tally({i: found[i] for i in after}, again)
            result.faces = sum(len(faces) for faces in found.values())
            height, width = next(iter(before.values())).shape[:2]
            print(f"{name:44} {f'{width}x{height}':>9} {f'{scale}x':>9} {stride:6d} "
                  f"{figure:>7} {len(indexes):7d} {result.faces:5d} {result.leaks:5d} "
                  f"{result.residual():>8} {result.other:5d}", flush=True)
        out.unlink()


def _scaled_box(box: Box, factor: float) -> Box:
    return Box.from_corners(box.x * factor, box.y * factor, box.right * factor,
                            box.bottom * factor)


def audience(work: Path, every: int, upsample: int) -> None:
    """The Hamilton clip's audience, faces turned to the stage: audited frame by frame."""
    auditor = Auditor(upsample)
    source = DATA / "video" / HAMILTON
    out = work / "hamilton.redacted.mp4"
    redact_file(source, out)
    with av.open(str(source)) as container:
        stream = container.streams.video[0]
        indexes = {i for i, v in enumerate(container.decode(stream))
                   if v.time is not None and AUDIENCE[0] <= v.time < AUDIENCE[1]}
        stride = NODE_SETTINGS.stride(Fraction(stream.guessed_rate or stream.average_rate or 25))
    # Every `every`-th of the searched frames and of those between searches, so that both
    # kinds are audited whatever the stride.
    ordered = sorted(indexes)
    indexes = (set([i for i in ordered if i % stride == 0][::every])
               | set([i for i in ordered if i % stride][::every]))
    before, after = decode(source, indexes), decode(out, indexes)
    searched, between = Tally(), Tally()
    for i in sorted(indexes):
        result = tally({i: auditor.faces(before[i])}, {i: auditor.faces(after[i])})
        (searched if i % stride == 0 else between).add(result)
    print(f"\nHamilton audience {AUDIENCE[0]}-{AUDIENCE[1]} s, {len(indexes)} frames (stride "
          f"{stride}), auditor upsample {upsample}: searched frames {searched.leaks} of "
          f"{searched.faces} faces left visible, frames between searches {between.leaks} of "
          f"{between.faces}", flush=True)


# Ways the node searches a picture for faces (custodes.redaction): the picture's size (lines,
# its smaller side; None: as photographed) and the detector's scale at that size.
GROUND_MODES = {
    "snapshot, event picture (720 lines)": (None, snapshot_scale),
    "live tile, 9-grid (320 px wide)": (180, lambda h, w: 1.0),
    "live tile, single (640 px wide)": (360, lambda h, w: 1.0),
    "720p video frame (searched at 240 lines)": (720, NODE_SETTINGS.scale),
}
GROUND_SIZES = ((0, 10), (10, 20), (20, 40), (40, 100_000))  # px, smaller side at that size
HIDDEN = 0.8  # share of a face's annotated box under the blur for it to count as hidden


def ground_truth(every: int) -> None:
    """Redaction against people, not a detector: WIDER FACE's official face boxes (faceboxes/,
    drawn by hand: profiles, occlusion, crowds, small faces) in every `every`-th photo. Each
    photo is shrunk as each way of redacting sees it and searched as that way does; a face is
    hidden when HIDDEN of its annotated box lies under a blur ellipse (`blur_regions`'
    geometry). By the face's size in the picture redacted: a face under 10 px is hard to
    recognise by anyone, one over 40 px easy."""
    folder = DATA / "faceboxes"
    truth: dict[str, list[Box]] = {}
    with (folder / "boxes.csv").open(newline="") as f:
        for line in csv.DictReader(f):
            truth.setdefault(line["image"], []).append(
                Box(int(line["x"]), int(line["y"]), int(line["w"]), int(line["h"])))
    names = sorted(truth)[::every]
    detector = NODE_SETTINGS.detector()
    print(f"\nground truth: {len(names)} WIDER FACE photos, "
          f"{sum(len(truth[n]) for n in names)} annotated faces; hidden = {HIDDEN:.0%} of the "
          f"face's box under the blur (load average {os.getloadavg()[0]:.1f})")
    sizes = [f"{lo}-{hi} px" if hi < 100_000 else f"{lo}+ px" for lo, hi in GROUND_SIZES]
    print(f"{'redacted as':42} {'hidden':>13} " + " ".join(f"{s:>14}" for s in sizes))
    for mode, (lines, scale) in GROUND_MODES.items():
        hidden = [0] * len(GROUND_SIZES)
        total = [0] * len(GROUND_SIZES)
        for name in names:
            bgr = cv2.imread(str(folder / name), cv2.IMREAD_COLOR)
            assert bgr is not None, name
            factor = 1.0 if lines is None else lines / min(bgr.shape[:2])
            if factor != 1.0:
                bgr = cv2.resize(bgr, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
            rgb: U8 = np.ascontiguousarray(bgr[:, :, ::-1], dtype=np.uint8)
            height, width = rgb.shape[:2]
            mask = np.zeros((height, width), np.uint8)
            for box in blur_boxes(detector.find(rgb, scale=scale(height, width))):
                grown = box.expand(FACE_MARGIN)
                cx, cy = grown.center
                cv2.ellipse(mask, (round(cx), round(cy)), (grown.w // 2, grown.h // 2), 0, 0,
                            360, 255, thickness=-1)
            for annotated in truth[name]:
                face = _scaled_box(annotated, factor).clip(width, height)
                if face.area == 0:
                    continue
                under = np.count_nonzero(mask[face.y:face.bottom, face.x:face.right])
                size = min(face.w, face.h)
                k = next(i for i, (lo, hi) in enumerate(GROUND_SIZES) if lo <= size < hi)
                total[k] += 1
                hidden[k] += int(under >= HIDDEN * face.area)
        cells = " ".join(f"{pct(hidden[k], total[k]):>14}" for k in range(len(GROUND_SIZES)))
        print(f"{mode:42} {pct(sum(hidden), sum(total)):>13} {cells}", flush=True)


def pct(part: int, whole: int) -> str:
    return f"{part / whole:.1%} of {whole}" if whole else "-"


def live(seconds: float, work: Path, cameras: int = 9) -> None:
    """The live picture service (custodes.live) with `cameras` watched at a 9-grid tile's
    width: each picture's age when it appears on disk, pictures a second, CPU per camera."""
    import threading  # noqa: PLC0415

    from custodes.live.service import LiveCamera, LiveService  # noqa: PLC0415
    from custodes.record.layout import Layout  # noqa: PLC0415
    from custodes.redaction.live import latest_live, request_live  # noqa: PLC0415
    from custodes.sim.media import prepare_clip  # noqa: PLC0415
    from custodes.sim.rtsp import SimServer  # noqa: PLC0415

    layout = Layout(work / "node")
    layout.create()
    clip = prepare_clip(DATA / "video" / HAMILTON, work / "clips", width=480, height=270)
    names = [f"cam{i + 1:02d}" for i in range(cameras)]
    with SimServer() as sim:
        service = LiveService(layout.live, [LiveCamera(n, sim.add_camera(n, clip))
                                            for n in names])
        stop = threading.Event()
        runner = threading.Thread(target=service.run, args=(stop,), daemon=True)
        runner.start()
        for name in names:
            request_live(layout, name, 320)
        time.sleep(5.0)  # connections and first pictures are not what is measured
        ages: list[float] = []
        last = dict.fromkeys(names, 0.0)
        cpu, started, asked = time.process_time(), time.monotonic(), 0.0
        while (now := time.monotonic()) - started < seconds:
            if now - asked >= 1.0:
                for name in names:
                    request_live(layout, name, 320)
                asked = now
            for name in names:
                found = latest_live(layout, name)
                if found is not None and found[1] > last[name]:
                    last[name] = found[1]
                    ages.append(time.time() - found[1])
            time.sleep(0.02)
        elapsed = time.monotonic() - started
        used = time.process_time() - cpu  # the simulated cameras' few % included
        stop.set()
        runner.join(10)
    ages.sort()
    print(f"\nlive pictures of {cameras} cameras over {elapsed:.0f} s: "
          f"{len(ages) / elapsed / cameras:.1f} a second per camera, "
          f"CPU {100 * used / elapsed / cameras:.1f}% of a core per camera "
          f"(load average {os.getloadavg()[0]:.1f})")
    print(f"age when written: p50 {np.median(ages):.2f} s, p95 "
          f"{ages[int(0.95 * (len(ages) - 1))]:.2f} s, max {ages[-1]:.2f} s")


def clips(names: list[str]) -> list[Path]:
    found = sorted(p for p in (DATA / "video").iterdir() if p.suffix in (".mp4", ".avi"))
    return [p for p in found if not names or any(n in p.name for n in names)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="CI: 3 s of 720p, 2 old-detector frames, the audience every 12th "
                             "frame audited at upsample 0, no other clip")
    parser.add_argument("--clips", nargs="*", default=[], help="parts of clip names")
    parser.add_argument("--audit-fps", type=float, default=1.0,
                        help="audited frames per second of video")
    parser.add_argument("--audit-max", type=int, default=10, help="most audited frames a clip")
    parser.add_argument("--small-max", type=int, default=4,
                        help="most audited frames a small-face clip (each ~20-50 s)")
    parser.add_argument("--crops", type=Path, default=None,
                        help="write each leak (original | redacted) as a PNG here")
    parser.add_argument("--live", type=float, default=0.0, metavar="SECONDS",
                        help="only measure live pictures, for this long")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"no test data at {DATA}")
    run: list[Callable[[Path], None]]
    if args.live:
        run = [lambda work: live(args.live, work)]
    elif args.quick:
        run = [lambda work: cost(work, 3.0, 2), lambda work: audience(work, 12, 0),
               lambda work: ground_truth(every=20)]
    else:
        run = [lambda work: cost(work, None, 5), lambda work: audience(work, 1, 1),
               lambda work: ground_truth(every=1),
               lambda work: residuals(clips(args.clips), work, fps=args.audit_fps,
                                      most=max(2, args.audit_max), crops=args.crops),
               lambda work: small_faces(work, fps=args.audit_fps,
                                        most=max(2, args.small_max))]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="custodes-redaction-") as work:
        for step in run:
            step(Path(work))
    print(f"\n{time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
