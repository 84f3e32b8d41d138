"""Redaction's cost and what it leaves, audited by an independent detector.

    python bench/redaction.py                 # cost (old and new), then every real clip audited
    python bench/redaction.py --quick         # CI: cost on 3 s of 720p, the Hamilton audience
    python bench/redaction.py --only residual --clips hamilton --audit-fps 5 --audit-max 12 \
        --crops /tmp/leaks    # every searched frame eligible, 12 spread over the clip
    python bench/redaction.py --only small --clips MOT20 --figures honest --part 1/3
    python bench/redaction.py --live 30       # live pictures of 9 cameras: age, CPU, 30 s

Cost. A 720p 15 fps stream (the shared Hamilton and arcade clips, scaled to 1280x720 at 15 fps,
13.3 s) is redacted the way a playback copy or export is (`redact_file`), with the process and
its ffmpeg child pinned to one core: CPU seconds (ours and ffmpeg's) per frame, and the real-
time factor, seconds of video per CPU second. Then again with the segment's boxes reused (the
box cache: what every later viewer or export of the segment costs), and as a playback copy
(at most 720 lines; the same here). Then an export as the node makes one (`export_cost`): the
stream recorded as 10 s (the node's default) and 2 s segments, a range joined from them,
blurred after a search of the joined file (exports before issue 9's follow-up), with the
segments' boxes searched and kept (no viewer had asked), and from the kept boxes (an export
after viewing, or of a range exported before: `custodes.redaction.exports`). Beside it, in
the same run, the old redaction detector (dlib HOG at upsample 2 and OpenCV's three Haar
cascades at scale step 1.05, as removed from custodes.redaction.detect) on a 640x360 frame:
the old cost was 0.75 s a frame there, 216 CPU-s per 10 s of 720p (issue 9).

Residual. For each real clip in ../shared/data/video (the GIFs' MP4 twins stand for the GIFs),
redacted with the node's settings. The auditor is dlib's CNN face detector (MMOD,
`mmod_human_face_detector.dat` from face_recognition_models): trained on other data than
CenterFace, it is not blind where the redactor is. It is slow, so it looks at `--audit-fps`
frames a second of video, at most `--audit-max` a clip; upsample 1 up to 540 lines (faces from
~40 px), 0 above (1080p: from ~80 px). Faces it finds in the original's audited frames are
"faces"; those it finds again at the same place (IoU >= 0.3) in the redacted copy are "leaks";
residual = leaks / faces. Two figures:

- tuned: audited frames are frames the redactor searched (multiples of its stride). The
  settings were chosen on these clips.
- honest: audited frames moved half a stride on, to the frames the redactor did NOT search
  farthest from both searches, where only the tracks' interpolated, held and grown boxes
  cover the faces.

The redacted frame is searched again only around the original's faces (`found_again`): what a
leak needs, at a fraction of the cost. The Hamilton audience (7.6-9.6 s, faces turned
sideways) is audited on every frame of its own. Small faces (SMALL_FACES: MOT20's night crowd,
vtest's plaza), which the auditor cannot see at the clips' own size, are audited again on
frames enlarged 8-10x for the auditor only (the redactor sees the clip as it is), at most
`--small-max` frames a figure: ~2.5-4 CPU-min a frame. A long audit is split over runs with
`--clips`, `--figures` and `--part K/N`; `--crops DIR` writes each leak (and each small face
found) as original | redacted. Detections are not ground truth: the auditor has false faces
and misses of its own: look at the crops.

Ground truth. WIDER FACE's hand-drawn boxes (`ground_truth`): each photo searched once as each
way of redacting sees it (a 720p video frame: as the coarse and as the fine search do), and
(`video_truth`) each photo made into 2 s of slowly panning 720p video and redacted as a video
is (searches, fine searches, followed faces, holds): the share of face-frames hidden.

Settings side by side: `--variants fine_lines=480,fine_every=1 fine_lines=0` measures the
first viewer's and the search's cost, and both ground truths, for each, in the same run (the
same load); `--settings` replaces the node's settings throughout; `--only cost video` runs
only those parts.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
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

import custodes
from custodes.media import ffmpeg_exe
from custodes.redaction.blur import FACE_MARGIN
from custodes.redaction.copies import PLAYBACK_LINES
from custodes.redaction.detect import (
    NODE_SETTINGS,
    RedactionSettings,
    blur_boxes,
    snapshot_scale,
)
from custodes.redaction.video import (
    BoxStream,
    keyframe_before,
    plan_boxes,
    redact_file,
    redact_stream,
    warm,
)
from custodes.vision.faces import Box

U8 = npt.NDArray[np.uint8]
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
HAMILTON = "face_recognition_short_hamilton_clip.mp4"
FACENET = "facenet-pytorch_video.mp4"  # 1080p
# Clips whose faces the auditor cannot see at their own size (MOT20's night crowd: heads
# ~8-15 px, mostly from above; vtest's plaza: faces ~5-8 px), and how many times enlarged it
# sees them. At upsample 0 it finds faces from ~80 px (Hamilton's 49 px face: found at
# upsample 1 only; at half size, 24 px, only enlarged 4x), so 8x sees MOT20's faces from
# ~10 px, 10x vtest's from ~8 px; at 4x it found no face in 8 frames of either (2026-12-01).
# Cost grows with the square: ~2.5 (vtest) to ~4 (MOT20) CPU-min a frame.
SMALL_FACES = {"dlib_MOT20-05-raw_even_shorter.mp4": 8, "opencv_vtest_reencoded_480x360.avi": 10}
TILE_OVERLAP = 32  # px of the frame: enlarged tiles overlap by more than a small face
AGAIN_CONTEXT = 96  # px: the least of a redacted frame searched again around a face
SMALL_CONTEXT = 48  # px of the frame around a small face searched again in the redacted copy
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

    def faces(self, rgb: U8, upsample: int | None = None) -> list[Box]:
        if upsample is None:
            upsample = self.upsample(*rgb.shape[:2])
        found = self._cnn(np.ascontiguousarray(rgb), upsample)
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


FIGURES = ("tuned", "honest")


def audited(count: int, rate: Fraction, stride: int, *, fps: float, most: int,
            figure: str) -> list[int]:
    """Frames to audit: searched frames (multiples of `stride`) about `fps` a second of video,
    at most `most` spread over the clip; for the honest figure each moved half a stride on,
    to the frame the redactor did not search that is farthest from both searches."""
    shift = stride // 2 if figure == "honest" else 0
    step = stride * max(1, round(float(rate) / fps / stride))
    chosen = list(range(0, count - shift, step))
    if len(chosen) > most:
        chosen = [chosen[round(k * (len(chosen) - 1) / (most - 1))] for k in range(most)]
    return [i + shift for i in chosen]


def frame_kind(index: int, stride: int) -> str:
    return "searched" if index % stride == 0 else "not searched"


def part_of(indexes: list[int], part: tuple[int, int]) -> list[int]:
    """The k-th of every n audited frames (`--part k/n`): a long audit in several runs."""
    k, n = part
    return indexes[k - 1::n]


def parse_part(text: str) -> tuple[int, int]:
    k, _, n = text.partition("/")
    if not (k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
        raise argparse.ArgumentTypeError(f"expected K/N with 1 <= K <= N, got {text!r}")
    return int(k), int(n)


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
        pair = np.hstack([f[index][crop.y:crop.bottom, crop.x:crop.right]
                          for f in (before, after)])
        # Small faces enlarged (nearest neighbour: the pixels as they are) for the eye.
        times = max(1, 160 // max(1, crop.h))
        pair = np.asarray(cv2.resize(pair, None, fx=times, fy=times,
                                     interpolation=cv2.INTER_NEAREST), dtype=np.uint8)
        written = folder / f"{name}-{index:04d}-{n}-{box.w}x{box.h}px.png"
        cv2.imwrite(str(written), cv2.cvtColor(pair, cv2.COLOR_RGB2BGR))


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


def cost(work: Path, seconds: float | None, old_frames: int, settings: RedactionSettings,
         variants: list[RedactionSettings]) -> None:
    """New redaction of a 720p 15 fps stream on one core, against the old detector."""
    source = stream_720p(work, seconds)
    rate, count = rate_and_count(source)
    video = count / float(rate)
    pin_one_core()  # ffmpeg inherits it
    load = os.getloadavg()[0]
    print(f"cost: {source.name} 1280x720 {float(rate):g} fps, {count} frames ({video:.1f} s), "
          f"pinned to one core; load average {load:.1f} on {os.cpu_count()} cores (other "
          f"work on this machine counts in wall time, not in CPU time); custodes from "
          f"{Path(custodes.__file__).parent}")
    print(f"{'run':34} {'CPU s':>6} {'wall s':>6} {'ms/frame':>8} {'x real time':>11} "
          f"{'CPU s per 10 s':>14}")

    def row(name: str, cpu: float, wall: float) -> None:
        print(f"{name:34} {cpu:6.1f} {wall:6.1f} {1000 * cpu / count:8.1f} "
              f"{video / cpu:11.2f} {10 * cpu / video:14.1f}", flush=True)

    for each in (settings, *variants):  # loading and onnxruntime's first runs at each
        warm(each)                      # size are the process's (the node warms at start)
    started, wall = cpu_seconds(), time.perf_counter()
    with (work / "first.mp4").open("wb") as out:
        redact_stream(source, out, max_lines=PLAYBACK_LINES, settings=settings)
    row("first viewer (one pass, streamed)", cpu_seconds() - started, time.perf_counter() - wall)
    for variant in variants:  # the same, other settings, side by side at the same load
        started, wall = cpu_seconds(), time.perf_counter()
        with (work / "first.mp4").open("wb") as out:
            redact_stream(source, out, max_lines=PLAYBACK_LINES, settings=variant)
        row(f"  with {changed(variant)}", cpu_seconds() - started, time.perf_counter() - wall)
    started, wall = cpu_seconds(), time.perf_counter()
    plan = plan_boxes(source, settings)
    search, search_wall = cpu_seconds() - started, time.perf_counter() - wall
    redact_file(source, work / "two-pass.mp4", plan=plan, settings=settings)
    row("two passes (search, then encode)", cpu_seconds() - started, time.perf_counter() - wall)
    row("  of which the search", search, search_wall)
    for variant in variants:
        started, wall = cpu_seconds(), time.perf_counter()
        stream = BoxStream(source, variant)
        for _ in stream:
            pass
        row(f"  search with {changed(variant)}", cpu_seconds() - started,
            time.perf_counter() - wall)
        scan = stream._scan  # the bench reports what the search did
        print(f"    {scan.fine_searches} fine searches, {scan.followed} faces followed, "
              f"{scan.detections} detections", flush=True)
    started, wall = cpu_seconds(), time.perf_counter()
    redact_file(source, work / "cached.mp4", plan=plan, settings=settings)
    row("box cache hit (encode only)", cpu_seconds() - started, time.perf_counter() - wall)
    started, wall = cpu_seconds(), time.perf_counter()
    redact_file(source, work / "copy.mp4", plan=plan, max_lines=360, settings=settings)
    row("cache hit, copy at 360 lines", cpu_seconds() - started, time.perf_counter() - wall)
    export_cost(work, source)
    mid_segment(work, source, at=round(0.7 * min(video, 10.0), 1), settings=settings)
    old = old_detector_cost(old_frames)
    print(f"old HOG + Haar detector, 640x360: {old:.2f} s a frame measured now over "
          f"{old_frames} frames (issue 9: {OLD_COST} s; {OLD_PER_10S_720P:.0f} CPU-s per 10 s "
          f"of 720p); {plan.detections} faces found in {count // plan.stride} searched frames")


def mid_segment(work: Path, source: Path, at: float, settings: RedactionSettings) -> None:
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
                          progress=progress, settings=settings)
        results.append(reached[0] if reached else float("nan"))
    print(f"click {at:g} s into a {count / float(rate):.0f} s 720p segment: {results[0]:.2f} "
          f"CPU-s to its frame from "
          f"the segment's start, {results[1]:.2f} from the keyframe at {begins:.2f} s (the "
          f"CPU-s include ffmpeg's only once it has exited: the encoder's share, ~20 %, is "
          f"missing from both)")


def export_cost(work: Path, source: Path) -> None:
    """An export as the node makes one, of the 720p stream followed by itself mirrored (every
    picture differs): recorded as a camera cuts it, at the keyframe (every 2 s) after
    `segment_seconds`, with the node's default 10 s and with 2 s (the worst case: an edge
    every 2 s), the range 0.5 s in to 0.5 s before the end joined by stream copy, and blurred
    (`custodes.redaction.exports`): after a search of the joined file (exports before the box
    cache); with each segment searched alone and its plan kept (an export of footage nobody
    watched: what a viewer's copy searches, each segment opening and closing with a fine
    search); and from the kept boxes (an export after viewing, or of a range exported
    before). Rows in the frames of the exported stream."""
    import yaml  # noqa: PLC0415 - only this part builds a node

    from custodes.app import Node  # noqa: PLC0415
    from custodes.config import parse_config  # noqa: PLC0415
    from custodes.record.playback import export_range, segments_in_range  # noqa: PLC0415
    from custodes.redaction.exports import SegmentBoxes, redact_joined  # noqa: PLC0415
    from custodes.store.schema import segments as segment_rows  # noqa: PLC0415

    pin_one_core()
    stream = work / "export-stream.mp4"
    ffmpeg("-i", str(source), "-filter_complex",
           "[0:v]split[a][b];[b]hflip[m];[a][m]concat=n=2:v=1[v]", "-map", "[v]",
           "-c:v", "libx264", "-preset", "veryfast", "-g", "30", "-pix_fmt", "yuv420p", "-an",
           str(stream))
    rate, count = rate_and_count(stream)
    video = count / float(rate)
    print(f"export: {stream.name} {count} frames ({video:.1f} s), load average "
          f"{os.getloadavg()[0]:.1f}")

    def row(name: str, cpu: float, wall: float) -> None:
        print(f"{name:34} {cpu:6.1f} {wall:6.1f} {1000 * cpu / count:8.1f} "
              f"{video / cpu:11.2f} {10 * cpu / video:14.1f}", flush=True)

    lengths = {10: "cam10", 2: "cam2"}  # segment_seconds -> camera
    config = {"sites": {"site": {"name": "bench"}}, "storage": {"path": str(work / "node")},
              "cameras": {camera: {"site": "site", "location": "corridor", "purpose": "bench",
                                   "main_url": f"rtsp://127.0.0.1:1/{camera}"}
                          for camera in lengths.values()}}
    node = Node(parse_config(yaml.safe_dump(config)))
    node.layout.create()
    node.store.open()
    try:
        joined: dict[str, Path] = {}
        found: dict[str, list[Any]] = {}
        for seconds, camera in lengths.items():
            folder = work / camera
            folder.mkdir()
            ffmpeg("-i", str(stream), "-c", "copy", "-f", "segment", "-segment_time",
                   str(seconds), "-reset_timestamps", "1", "-segment_format", "mp4",
                   str(folder / "seg%03d.mp4"))
            rows, start = [], 0.0
            for part in sorted(folder.glob("seg*.mp4")):
                part_rate, frames = rate_and_count(part)
                duration = frames / float(part_rate)
                target = node.layout.segment_path(camera, start)
                target.parent.mkdir(parents=True, exist_ok=True)
                part.rename(target)
                rows.append({"camera": camera, "start": start, "end": start + duration,
                             "duration": duration, "bytes": target.stat().st_size,
                             "path": target.relative_to(node.layout.recordings).as_posix()})
                start += duration
            node.store.write(functools.partial(insert_rows, segment_rows, rows))
            joined[camera] = work / f"export-{camera}.mp4"
            export_range(node.store, node.layout, camera, 0.5, start - 0.5, joined[camera])
            with node.store.read() as conn:
                found[camera] = segments_in_range(conn, camera, 0.5, start - 0.5)
        boxes = SegmentBoxes(node)
        copies = node.redacted_copies

        def forget(camera: str) -> None:
            for segment in found[camera]:
                copies.boxes_path(node, segment).unlink(missing_ok=True)

        started, wall = cpu_seconds(), time.perf_counter()
        redact_file(joined["cam10"], work / "export-fresh.mp4")
        row("export, joined file searched", cpu_seconds() - started, time.perf_counter() - wall)
        for seconds, camera in lengths.items():
            forget(camera)
            started, wall = cpu_seconds(), time.perf_counter()
            info = redact_joined(joined[camera], work / f"export-alone-{camera}.mp4",
                                 found[camera], boxes)
            row(f"{seconds} s segments searched {info['boxes']['searched']}/{len(found[camera])}",
                cpu_seconds() - started, time.perf_counter() - wall)
        started, wall = cpu_seconds(), time.perf_counter()
        redact_joined(joined["cam10"], work / "export-kept.mp4", found["cam10"], boxes)
        row("export from kept boxes", cpu_seconds() - started, time.perf_counter() - wall)
    finally:
        node.store.close()


def insert_rows(table: Any, rows: list[dict[str, Any]], conn: Any) -> None:
    for values in rows:
        conn.execute(table.insert().values(values))


def pin_one_core() -> None:
    """This process and the ffmpeg it starts on one core (CPU time is what is measured)."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def residuals(paths: list[Path], work: Path, *, fps: float, most: int,
              crops: Path | None, settings: RedactionSettings, figures: list[str],
              part: tuple[int, int]) -> None:
    """Each clip redacted as a whole, the auditor on the same frames of the original and of
    the redacted copy (`audited`: searched frames for the tuned figure, frames between
    searches for the honest one)."""
    auditor = Auditor()
    print(f"\nresidual: redactor {settings.describe()}; auditor dlib CNN (MMOD), "
          f"{fps:g} frames a second, at most {most} a clip, part {part[0]}/{part[1]}; "
          f"tuned: frames searched, honest: half a stride on, not searched (load average "
          f"{os.getloadavg()[0]:.1f})")
    print(f"{'clip':44} {'size':>9} {'stride':>6} {'figure':>7} {'audited':>7} {'faces':>5} "
          f"{'leaks':>5} {'residual':>8} {'other':>5}  frames", flush=True)
    totals = {figure: Tally() for figure in figures}
    for path in paths:
        rate, count = rate_and_count(path)
        stride = settings.stride(rate)
        out = work / f"{path.stem}.redacted.mp4"
        redact_file(path, out, settings=settings)
        if (written := rate_and_count(out)[1]) != count:
            print(f"{path.name}: the redacted copy has {written} frames, the original "
                  f"{count}: not audited (the frames would not correspond)", flush=True)
            continue
        for figure in figures:
            indexes = part_of(audited(count, rate, stride, fps=fps, most=most, figure=figure),
                              part)
            before, after = decode(path, set(indexes)), decode(out, set(indexes))
            found = {i: auditor.faces(rgb) for i, rgb in before.items()}
            again = {i: found_again(auditor, rgb, found[i]) for i, rgb in after.items()}
            leaks: list[tuple[int, Box]] = []
            result = tally(found, again, leaks)
            totals[figure].add(result)
            height, width = next(iter(before.values())).shape[:2]
            print(f"{path.name:44} {f'{width}x{height}':>9} {stride:6d} {figure:>7} "
                  f"{len(indexes):7d} {result.faces:5d} {result.leaks:5d} "
                  f"{result.residual():>8} {result.other:5d}  "
                  f"{','.join(map(str, indexes))}", flush=True)
            for index, box in leaks:
                print(f"  leak: frame {index} ({frame_kind(index, stride)}), box {box.x},{box.y} "
                      f"{box.w}x{box.h} px", flush=True)
            if crops is not None and leaks:
                save_crops(crops, f"{path.stem}-{figure}", before, after, leaks)
        out.unlink()
    for figure, total in totals.items():
        print(f"{'total':44} {'':>9} {'':>6} {figure:>7} {'':>7} {total.faces:5d} "
              f"{total.leaks:5d} {total.residual():>8} {total.other:5d}")
    print(f"(load average {os.getloadavg()[0]:.1f})", flush=True)


def found_again(auditor: Auditor, rgb: U8, faces: list[Box]) -> list[Box]:
    """The auditor on a redacted frame only around the original's `faces` (each grown by its
    size on every side, to at least AGAIN_CONTEXT px), at the whole frame's upsample: what a
    leak needs, at a fraction of the whole frame's cost ("other" then counts only there)."""
    height, width = rgb.shape[:2]
    upsample = auditor.upsample(height, width)
    again: list[Box] = []
    for face in faces:
        near = face.expand(1.0).at_least(AGAIN_CONTEXT).clip(width, height)
        for found in auditor.faces(rgb[near.y:near.bottom, near.x:near.right], upsample):
            box = found.shift(near.x, near.y)
            if not any(box.iou(other) >= 0.5 for other in again):
                again.append(box)
    return again


def enlarged_faces(auditor: Auditor, rgb: U8, scale: int, region: Box | None = None,
                   tile: int = 256) -> list[Box]:
    """Faces the auditor finds in `rgb` (or its `region`) enlarged `scale` times for it, in
    frame coordinates. Searched in tiles of `tile` px of the frame overlapping by TILE_OVERLAP
    (a face is smaller than that here), so that memory stays bounded at 8x; a face found in
    two tiles counts once."""
    height, width = rgb.shape[:2]
    area = region.clip(width, height) if region is not None else Box(0, 0, width, height)
    step = tile - TILE_OVERLAP
    found: list[Box] = []
    for y in range(area.y, max(area.y + 1, area.bottom - TILE_OVERLAP), step):
        for x in range(area.x, max(area.x + 1, area.right - TILE_OVERLAP), step):
            piece = rgb[y:min(y + tile, area.bottom), x:min(x + tile, area.right)]
            big = np.asarray(cv2.resize(piece, None, fx=scale, fy=scale,
                                        interpolation=cv2.INTER_CUBIC), dtype=np.uint8)
            for face in auditor.faces(big):
                box = _scaled_box(face, 1 / scale).shift(x, y)
                if not any(box.iou(other) >= 0.5 for other in found):
                    found.append(box)
    return found


def small_faces(work: Path, names: list[str], *, fps: float, most: int, scale: int | None,
                crops: Path | None, settings: RedactionSettings, figures: list[str],
                part: tuple[int, int]) -> None:
    """The clips whose faces are too small for the auditor at their own size (SMALL_FACES):
    the auditor (upsample 0) sees their frames enlarged `scale` times for it only (the
    redactor sees them as they are): faces from ~80 / scale px of the original. The whole
    original frame is searched; in the redacted frame, only around each face found (the
    face's box grown to at least SMALL_CONTEXT px), which is what a leak needs and a fraction
    of the cost ("other" is not counted). A leak is a face found again there (IoU >=
    SAME_PLACE)."""
    auditor = Auditor(upsample=0)
    print(f"\nsmall faces: auditor on frames enlarged for it only, upsample 0, {fps:g} frames "
          f"a second, at most {most} a clip, part {part[0]}/{part[1]} (load average "
          f"{os.getloadavg()[0]:.1f})")
    print(f"{'clip':44} {'size':>9} {'seen as':>9} {'stride':>6} {'figure':>7} {'audited':>7} "
          f"{'faces':>5} {'leaks':>5} {'residual':>8} {'CPU s':>6}  frames", flush=True)
    # --clips picks among SMALL_FACES, or any clip when given with --small-scale.
    chosen = [p.name for p in clips(names)] if names and scale else list(SMALL_FACES)
    for name in chosen:
        if names and not any(n in name for n in names):
            continue
        times = scale or SMALL_FACES[name]
        path = DATA / "video" / name
        rate, count = rate_and_count(path)
        stride = settings.stride(rate)
        out = work / f"{path.stem}.small.redacted.mp4"
        redact_file(path, out, settings=settings)
        for figure in figures:
            indexes = part_of(audited(count, rate, stride, fps=fps, most=most, figure=figure),
                              part)
            started = cpu_seconds()
            before = decode(path, set(indexes))
            found = {i: enlarged_faces(auditor, rgb, times) for i, rgb in before.items()}
            after = decode(out, {i for i, faces in found.items() if faces})
            result, leaks = Tally(), []
            for i, faces in found.items():
                result.faces += len(faces)
                for face in faces:
                    near = face.at_least(SMALL_CONTEXT).expand(0.5)
                    if any(face.iou(again) >= SAME_PLACE
                           for again in enlarged_faces(auditor, after[i], times, near)):
                        result.leaks += 1
                        leaks.append((i, face))
            height, width = next(iter(before.values())).shape[:2]
            print(f"{name:44} {f'{width}x{height}':>9} {f'{times}x':>9} {stride:6d} "
                  f"{figure:>7} {len(indexes):7d} {result.faces:5d} {result.leaks:5d} "
                  f"{result.residual():>8} {cpu_seconds() - started:6.0f}  "
                  f"{','.join(map(str, indexes))}", flush=True)
            for i, faces in found.items():
                for face in faces:
                    state = "LEAK" if (i, face) in leaks else "hidden"
                    print(f"  face: frame {i} ({frame_kind(i, stride)}), box {face.x},{face.y} "
                          f"{face.w}x{face.h} px: {state}", flush=True)
            if crops is not None:  # every face found, to be checked by eye
                hidden = [(i, face) for i, faces in found.items() for face in faces
                          if (i, face) not in leaks]
                save_crops(crops, f"{path.stem}-{figure}-small-leak", before, after, leaks)
                save_crops(crops, f"{path.stem}-{figure}-small-hidden", before, after, hidden)
        out.unlink()
    print(f"(load average {os.getloadavg()[0]:.1f})", flush=True)


def _scaled_box(box: Box, factor: float) -> Box:
    return Box.from_corners(box.x * factor, box.y * factor, box.right * factor,
                            box.bottom * factor)


def audience(work: Path, every: int, upsample: int, settings: RedactionSettings, *,
             crops: Path | None = None, part: tuple[int, int] = (1, 1)) -> None:
    """The Hamilton clip's audience, faces turned to the stage: audited frame by frame."""
    auditor = Auditor(upsample)
    source = DATA / "video" / HAMILTON
    out = work / "hamilton.redacted.mp4"
    redact_file(source, out, settings=settings)
    with av.open(str(source)) as container:
        stream = container.streams.video[0]
        indexes = {i for i, v in enumerate(container.decode(stream))
                   if v.time is not None and AUDIENCE[0] <= v.time < AUDIENCE[1]}
        stride = settings.stride(Fraction(stream.guessed_rate or stream.average_rate or 25))
    # Every `every`-th of the searched frames and of those between searches, so that both
    # kinds are audited whatever the stride.
    ordered = sorted(indexes)
    indexes = set(part_of(sorted(set([i for i in ordered if i % stride == 0][::every])
                                 | set([i for i in ordered if i % stride][::every])), part))
    before, after = decode(source, indexes), decode(out, indexes)
    searched, between = Tally(), Tally()
    leaks: list[tuple[int, Box]] = []
    for i in sorted(indexes):
        faces = auditor.faces(before[i])
        result = tally({i: faces}, {i: found_again(auditor, after[i], faces)}, leaks)
        (searched if i % stride == 0 else between).add(result)
    print(f"\nHamilton audience {AUDIENCE[0]}-{AUDIENCE[1]} s, {len(indexes)} frames "
          f"(part {part[0]}/{part[1]}: {min(indexes)}-{max(indexes)}, stride "
          f"{stride}), auditor upsample {upsample}: searched frames {searched.leaks} of "
          f"{searched.faces} faces left visible, frames between searches {between.leaks} of "
          f"{between.faces} (load average {os.getloadavg()[0]:.1f})", flush=True)
    for index, box in leaks:
        print(f"  leak: frame {index} ({frame_kind(index, stride)}), box {box.x},{box.y} "
              f"{box.w}x{box.h} px", flush=True)
    if crops is not None and leaks:
        save_crops(crops, "hamilton-audience", before, after, leaks)


# Ways the node searches a picture for faces (custodes.redaction): the picture's size (lines,
# its smaller side; None: as photographed) and the detector's scale at that size.
Scale = Callable[[int, int], float]
GROUND_MODES: dict[str, tuple[int | None, Scale]] = {
    "snapshot, event picture (720 lines)": (None, snapshot_scale),
    "live tile, 9-grid (320 px wide)": (180, lambda h, w: 1.0),
    "live tile, single (640 px wide)": (360, lambda h, w: 1.0),
}
GROUND_SIZES = ((0, 10), (10, 20), (20, 40), (40, 100_000))  # px, smaller side at that size
HIDDEN = 0.8  # share of a face's annotated box under the blur for it to count as hidden
PAN = 2  # px a frame: the video ground truth's photos drift sideways, as a slow camera pan
PAN_SECONDS = 2.0
PAN_RATE = 15


def wider_truth(every: int) -> dict[str, list[Box]]:
    """WIDER FACE's annotated face boxes of every `every`-th photo, by photo name."""
    truth: dict[str, list[Box]] = {}
    with (DATA / "faceboxes" / "boxes.csv").open(newline="") as f:
        for line in csv.DictReader(f):
            truth.setdefault(line["image"], []).append(
                Box(int(line["x"]), int(line["y"]), int(line["w"]), int(line["h"])))
    return {name: truth[name] for name in sorted(truth)[::every]}


def photo(name: str, lines: int | None) -> tuple[U8, float]:
    """A WIDER photo as RGB, shrunk to `lines` lines (None: as it is), and the factor."""
    bgr = cv2.imread(str(DATA / "faceboxes" / name), cv2.IMREAD_COLOR)
    assert bgr is not None, name
    factor = 1.0 if lines is None else lines / min(bgr.shape[:2])
    if factor != 1.0:
        bgr = cv2.resize(bgr, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(bgr[:, :, ::-1], dtype=np.uint8), factor


def blur_mask(boxes: list[Box], height: int, width: int) -> U8:
    """Where `blur_regions` changes the picture for these boxes (its ellipses)."""
    mask = np.zeros((height, width), np.uint8)
    for box in boxes:
        grown = box.expand(FACE_MARGIN)
        cx, cy = grown.center
        cv2.ellipse(mask, (round(cx), round(cy)), (grown.w // 2, grown.h // 2), 0, 0,
                    360, 255, thickness=-1)
    return mask


def size_class(face: Box) -> int:
    size = min(face.w, face.h)
    return next(i for i, (lo, hi) in enumerate(GROUND_SIZES) if lo <= size < hi)


def is_hidden(mask: U8, face: Box) -> bool:
    return bool(np.count_nonzero(mask[face.y:face.bottom, face.x:face.right])
                >= HIDDEN * face.area)


def ground_truth(every: int, settings: RedactionSettings,
                 variants: list[RedactionSettings]) -> None:
    """Redaction against people, not a detector: WIDER FACE's official face boxes (faceboxes/,
    drawn by hand: profiles, occlusion, crowds, small faces) in every `every`-th photo. Each
    photo is shrunk as each way of redacting sees it and searched as that way does; a face is
    hidden when HIDDEN of its annotated box lies under a blur ellipse (`blur_regions`'
    geometry). By the face's size in the picture redacted: a face under 10 px is hard to
    recognise by anyone, one over 40 px easy. A 720p video frame is searched once as the
    coarse search sees it and once as each setting's fine search does (`video_truth` says what
    the two do together in a video)."""
    truth = wider_truth(every)
    detector = settings.detector()
    print(f"\nground truth: {len(truth)} WIDER FACE photos, "
          f"{sum(map(len, truth.values()))} annotated faces; hidden = {HIDDEN:.0%} of the "
          f"face's box under the blur (load average {os.getloadavg()[0]:.1f})")
    sizes = [f"{lo}-{hi} px" if hi < 100_000 else f"{lo}+ px" for lo, hi in GROUND_SIZES]
    print(f"{'redacted as':42} {'hidden':>13} " + " ".join(f"{s:>14}" for s in sizes))
    modes = dict(GROUND_MODES)
    modes[f"720p video frame (searched at {settings.detect_lines} lines)"] = (
        720, settings.scale)
    for variant in (settings, *variants):
        if variant.fine_lines:
            modes[f"720p video frame, fine ({variant.fine_lines} lines)"] = (
                720, functools.partial(fine_scale, variant))
    for mode, (lines, scale) in modes.items():
        hidden = [0] * len(GROUND_SIZES)
        total = [0] * len(GROUND_SIZES)
        for name, boxes in truth.items():
            rgb, factor = photo(name, lines)
            height, width = rgb.shape[:2]
            mask = blur_mask(blur_boxes(detector.find(rgb, scale=scale(height, width))),
                             height, width)
            for annotated in boxes:
                face = _scaled_box(annotated, factor).clip(width, height)
                if face.area == 0:
                    continue
                k = size_class(face)
                total[k] += 1
                hidden[k] += int(is_hidden(mask, face))
        cells = " ".join(f"{pct(hidden[k], total[k]):>14}" for k in range(len(GROUND_SIZES)))
        print(f"{mode:42} {pct(sum(hidden), sum(total)):>13} {cells}", flush=True)


def video_truth(work: Path, every: int, settings: list[RedactionSettings]) -> None:
    """The WIDER photos as 720p video (smaller side 720 lines), PAN_SECONDS at PAN_RATE fps,
    drifting PAN px a frame sideways: the whole redaction of a video (coarse searches, fine
    searches, faces followed, held, interpolated) against the hand-drawn boxes, moved with the
    picture. A face-frame is hidden when HIDDEN of its box lies under the plan's blur in that
    frame; "every frame": the faces hidden in all their frames; "blurred": the share of the
    picture blurred, on average (in a crowd, boxes held and grown fail closed over
    neighbours: what is hidden is then partly hidden by chance). The faces stand still but
    for the pan: walkers are harder."""
    truth = wider_truth(every)
    frames = round(PAN_SECONDS * PAN_RATE)
    print(f"\nvideo ground truth: {len(truth)} WIDER photos as {PAN_SECONDS:g} s of 720p at "
          f"{PAN_RATE} fps panning {PAN} px a frame; share of face-frames hidden (load average "
          f"{os.getloadavg()[0]:.1f})")
    sizes = [f"{lo}-{hi} px" if hi < 100_000 else f"{lo}+ px" for lo, hi in GROUND_SIZES]
    print(f"{'settings':42} {'search CPU s':>12} {'blurred':>7} {'every frame':>13} "
          + " ".join(f"{s:>14}" for s in sizes), flush=True)
    clips = {}
    for name, boxes in truth.items():
        rgb, factor = photo(name, 720)
        clips[name] = (pan_clip(work / f"{Path(name).stem}.mp4", rgb, frames),
                       [_scaled_box(b, factor) for b in boxes], rgb.shape[:2])
    for variant in settings:
        hidden, total = [0] * len(GROUND_SIZES), [0] * len(GROUND_SIZES)
        whole, faces, cpu, blurred, pictures = 0, 0, 0.0, 0.0, 0
        for path, boxes, (height, width) in clips.values():
            started = cpu_seconds()
            plan = plan_boxes(path, variant)
            cpu += cpu_seconds() - started
            always = [True] * len(boxes)
            for i in range(plan.frames):
                mask = blur_mask(plan.boxes.get(i, []), height, width)
                blurred += np.count_nonzero(mask) / mask.size
                pictures += 1
                for j, annotated in enumerate(boxes):
                    face = annotated.shift(PAN * i, 0).clip(width, height)
                    if face.area < 0.5 * annotated.area:
                        continue  # panned out of the picture
                    k = size_class(annotated)
                    total[k] += 1
                    seen = is_hidden(mask, face)
                    hidden[k] += int(seen)
                    always[j] = always[j] and seen
            whole += sum(always)
            faces += len(boxes)
        cells = " ".join(f"{pct(hidden[k], total[k]):>14}" for k in range(len(GROUND_SIZES)))
        print(f"{changed(variant):42} {cpu:12.1f} {blurred / pictures:7.1%} "
              f"{pct(whole, faces):>13} {cells}", flush=True)
    for path, _, _ in clips.values():
        path.unlink()


def pan_clip(target: Path, rgb: U8, frames: int) -> Path:
    """`rgb` drifting PAN px a frame to the right (the edge repeated), as H.264."""
    height, width = rgb.shape[:2]
    height, width = height // 2 * 2, width // 2 * 2
    proc = subprocess.Popen(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-f", "rawvideo",
         "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-framerate", str(PAN_RATE),
         "-i", "-", "-c:v", "libx264", "-preset", "ultrafast", "-crf", "18",
         "-pix_fmt", "yuv420p", "-an", str(target)], stdin=subprocess.PIPE)
    assert proc.stdin is not None
    for i in range(frames):
        shift = np.array([[1, 0, PAN * i], [0, 1, 0]], dtype=np.float32)
        moved = cv2.warpAffine(rgb[:height, :width], shift, (width, height),
                               borderMode=cv2.BORDER_REPLICATE)
        proc.stdin.write(np.ascontiguousarray(moved).tobytes())
    proc.stdin.close()
    if proc.wait() != 0:
        raise RuntimeError(f"ffmpeg could not write {target}")
    return target


def fine_scale(settings: RedactionSettings, height: int, width: int) -> float:
    return settings.fine_scale(height, width) or settings.scale(height, width)


def changed(settings: RedactionSettings) -> str:
    """The settings that differ from the node's, as key=value (or "node settings")."""
    base, mine = NODE_SETTINGS.describe(), settings.describe()
    diff = [f"{k}={v}" for k, v in mine.items() if base.get(k) != v]
    return " ".join(diff) if diff else "node settings"


def parse_settings(text: str) -> RedactionSettings:
    """"fine_lines=480,fine_every=1" -> the node's settings with those changed."""
    fields = {f.name: f.type for f in dataclasses.fields(RedactionSettings)}
    values: dict[str, Any] = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        if key not in fields:
            raise SystemExit(f"unknown redaction setting {key!r}: one of {sorted(fields)}")
        values[key] = int(value) if fields[key] in ("int", int) else float(value)
    return dataclasses.replace(NODE_SETTINGS, **values)


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


PARTS = {"cost", "export", "audience", "truth", "video", "residual", "small",
         "live"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="CI: 3 s of 720p, 2 old-detector frames, the audience every 12th "
                             "frame audited at upsample 0, no other clip")
    parser.add_argument("--clips", nargs="*", default=[],
                        help="parts of clip names (residual and small)")
    parser.add_argument("--audit-fps", type=float, default=1.0,
                        help="audited frames per second of video")
    parser.add_argument("--audit-max", type=int, default=10, help="most audited frames a clip")
    parser.add_argument("--small-max", type=int, default=4,
                        help="most audited frames a small-face clip a figure (~2.5-4 CPU-min each)")
    parser.add_argument("--small-scale", type=int, default=None,
                        help="enlargement the auditor sees the small-face clips at (default: "
                             "SMALL_FACES'; cost grows with its square)")
    parser.add_argument("--figures", nargs="+", choices=FIGURES, default=list(FIGURES),
                        help="residual and small: tuned (frames searched), honest (between)")
    parser.add_argument("--part", type=parse_part, default=(1, 1), metavar="K/N",
                        help="residual, small, audience: only the K-th of every N audited frames "
                             "(a long audit in runs that each hold the lock briefly)")
    parser.add_argument("--crops", type=Path, default=None,
                        help="write each leak (original | redacted) as a PNG here")
    parser.add_argument("--live", type=float, default=0.0, metavar="SECONDS",
                        help="only measure live pictures, for this long")
    parser.add_argument("--settings", type=parse_settings, default=NODE_SETTINGS,
                        metavar="KEY=VALUE,...",
                        help="the redaction settings measured (default: the node's), e.g. "
                             "fine_lines=480,fine_every=1")
    parser.add_argument("--variants", type=parse_settings, nargs="*", default=[],
                        metavar="KEY=VALUE,...",
                        help="other settings measured side by side: first viewer and search "
                             "cost, ground truth, video ground truth")
    parser.add_argument("--only", nargs="*", choices=sorted(PARTS), default=[],
                        help="run only these parts")
    parser.add_argument("--truth-every", type=int, default=0,
                        help="every n-th WIDER photo (default: all, 20 with --quick)")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"no test data at {DATA}")
    settings: RedactionSettings = args.settings
    variants: list[RedactionSettings] = args.variants
    quick = args.quick
    every = args.truth_every or (20 if quick else 1)
    parts: dict[str, Callable[[Path], None]] = {
        "cost": lambda work: cost(work, 3.0 if quick else None, 2 if quick else 5, settings,
                                  variants),
        "audience": lambda work: audience(work, 12 if quick else 1, 0 if quick else 1,
                                          settings, crops=args.crops, part=args.part),
        "truth": lambda work: ground_truth(every, settings, variants),
        "video": lambda work: video_truth(work, 2 * every if quick else max(every, 4),
                                          [settings, *variants]),
        "residual": lambda work: residuals(clips(args.clips), work, fps=args.audit_fps,
                                           most=max(2, args.audit_max), crops=args.crops,
                                           settings=settings, figures=args.figures,
                                           part=args.part),
        "small": lambda work: small_faces(work, args.clips, fps=args.audit_fps,
                                          most=max(2, args.small_max), scale=args.small_scale,
                                          crops=args.crops, settings=settings,
                                          figures=args.figures, part=args.part),
        "live": lambda work: live(args.live or 30.0, work),
        "export": lambda work: export_cost(work, stream_720p(work, 3.0 if quick else None)),
    }
    assert set(parts) == PARTS
    if args.only:
        names = args.only
    elif args.live:
        names = ["live"]
    elif quick:
        names = ["cost", "audience", "truth", "video"]
    else:
        names = ["cost", "audience", "truth", "video", "residual", "small"]
    run = [parts[name] for name in names]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="custodes-redaction-") as work:
        for step in run:
            step(Path(work))
    print(f"\n{time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
