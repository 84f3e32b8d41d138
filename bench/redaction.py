"""Redacted exports audited by an independent detector: what the redaction leaves, and cost.

    python bench/redaction.py                 # every real clip, before/after, then subject access
    python bench/redaction.py --clips hamilton --no-subject --crops /tmp/leaks
    python bench/redaction.py --audit-fps 2   # audit twice a second of video (slower)
    python bench/redaction.py --cost          # detector cost per frame, 640x360 and 1080p
    python bench/redaction.py --live 30       # live pictures only: frame age, 30 s (~40 s)

For each real clip in ../shared/data/video (the GIFs' MP4 twins stand for the GIFs), redacted
twice: "hog" (dlib HOG alone, the redaction before the Haar cascades were added) and "union"
(`custodes.redaction.detect.RedactionDetector`: HOG + Haar profile both ways + Haar frontal).

The auditor is dlib's CNN face detector (MMOD, `mmod_human_face_detector.dat` from the
face_recognition_models package): trained differently from HOG and from the cascades, it finds
turned and profile faces, so it sees the leaks a re-scan with the redactor's own detector is
blind to. It is slow (~1.4 s a 640x360 frame at upsample 0, ~4x that at upsample 1, on the
2-core box), so it looks at `--audit-fps` frames per second of video, at most `--audit-max`
per clip, evenly spread; upsample 1 up to 540 lines (faces from ~40 px), 0 above (1080p:
from ~80 px). Smaller faces are not audited: the crowd clips (MOT20, vtest) have few it sees.

Per clip and redactor: "faces" = what the auditor finds in the original's audited frames;
"leaks" = what it finds in the redacted copy at the same place (IoU >= 0.3 with a face of the
original's same frame), i.e. faces left findable; residual = leaks / faces; "other" = what it
finds in the redacted copy elsewhere (a blurred blob taken for a face). HOG re-scans the same
frames as before (upsample 2, threshold -0.3): "hog faces" / "hog leaks". Detections are not
ground truth: the auditor has false faces and misses of its own.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import cv2
import dlib  # type: ignore[import-untyped]  # dlib ships no type information
import face_recognition_models  # type: ignore[import-untyped]  # neither does this
import numpy as np
import numpy.typing as npt

from custodes.redaction.blur import snapshot_upsample
from custodes.redaction.detect import RedactionDetector
from custodes.redaction.subject_access import subject_keep
from custodes.redaction.video import (
    EXPORT_HAAR_SIDE,
    DetectorSettings,
    export_upsample,
    redact_file,
)
from custodes.vision.decode import luma
from custodes.vision.embedding import MATCH_THRESHOLD, FaceEmbedder
from custodes.vision.faces import Box, Face, FaceDetector

U8 = npt.NDArray[np.uint8]
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
HAMILTON = "face_recognition_short_hamilton_clip.mp4"
FACENET = "facenet-pytorch_video.mp4"  # 1080p
MIRANDA = Path("faces/face_recognition/Lin-Manuel_Miranda/lin-manuel-miranda.png")
RESCAN_UPSAMPLE = 2
RESCAN_THRESHOLD = -0.3
SAME_PLACE = 0.3  # IoU with a face of the original's same frame: the same face
EMBED_MIN_SIDE = 40  # smaller faces give descriptors too poor to name anyone


class Auditor:
    """dlib's CNN (MMOD) face detector on RGB frames: boxes in frame coordinates."""

    def __init__(self) -> None:
        model = face_recognition_models.cnn_face_detector_model_location()
        self._cnn: Any = dlib.cnn_face_detection_model_v1(model)

    @staticmethod
    def upsample(height: int, width: int) -> int:
        return 1 if min(height, width) <= 540 else 0

    def faces(self, rgb: U8) -> list[Box]:
        found = self._cnn(np.ascontiguousarray(rgb), self.upsample(*rgb.shape[:2]))
        return [Box.from_corners(d.rect.left(), d.rect.top(), d.rect.right() + 1,
                                 d.rect.bottom() + 1) for d in found]


@dataclass
class Audit:
    """What the auditor and HOG find in the audited frames of one file."""

    frames: dict[int, U8]  # index -> RGB
    cnn: dict[int, list[Box]]
    hog: dict[int, list[Box]]

    def faces(self) -> int:
        return sum(map(len, self.cnn.values()))

    def hog_faces(self) -> int:
        return sum(map(len, self.hog.values()))

    def leaks(self, original: Audit, hog: bool = False) -> list[tuple[int, Box]]:
        """Faces found here at the place of a face found (by the same detector) in the
        original's same frame."""
        mine, theirs = (self.hog, original.hog) if hog else (self.cnn, original.cnn)
        return [(i, box) for i, boxes in mine.items() for box in boxes
                if any(box.iou(o) >= SAME_PLACE for o in theirs[i])]


def audited_frames(path: Path, fps: float, most: int) -> list[int]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = float(stream.guessed_rate or stream.average_rate or 25)
        count = stream.frames or sum(1 for _ in container.decode(stream))
    step = max(1, round(rate / fps))
    chosen = list(range(0, count, step))
    if len(chosen) > most:
        chosen = [chosen[round(k * (len(chosen) - 1) / (most - 1))] for k in range(most)]
    return chosen


def audit(path: Path, indexes: list[int], auditor: Auditor, hog: FaceDetector) -> Audit:
    wanted = set(indexes)
    result = Audit({}, {}, {})
    with av.open(str(path)) as container:
        for index, video in enumerate(container.decode(video=0)):
            if index not in wanted:
                continue
            rgb = np.asarray(video.to_ndarray(format="rgb24"), dtype=np.uint8)
            result.frames[index] = rgb
            result.cnn[index] = auditor.faces(rgb)
            result.hog[index] = [f.box for f in hog.detect(
                luma(video, video.width), upsample=RESCAN_UPSAMPLE, min_size=0,
                threshold=RESCAN_THRESHOLD)]
    return result


def clips(names: list[str]) -> list[Path]:
    found = sorted(p for p in (DATA / "video").iterdir() if p.suffix in (".mp4", ".avi"))
    return [p for p in found if not names or any(n in p.name for n in names)]


def frames_with_faces(path: Path, threads: int = 2) -> Iterator[tuple[U8, list[Face]]]:
    """Every frame (RGB) of a file with the faces HOG finds in it at the re-scan setting."""
    local = threading.local()

    def detect(grey: U8) -> list[Face]:
        if not hasattr(local, "detector"):
            local.detector = FaceDetector(min_size=0)
        found: list[Face] = local.detector.detect(grey, upsample=RESCAN_UPSAMPLE, min_size=0,
                                                  threshold=RESCAN_THRESHOLD)
        return found

    with av.open(str(path)) as container, ThreadPoolExecutor(threads) as pool:
        batch: list[av.VideoFrame] = []

        def flush() -> Iterator[tuple[U8, list[Face]]]:
            greys = [luma(v, v.width) for v in batch]
            for video, faces in zip(batch, pool.map(detect, greys), strict=True):
                yield np.asarray(video.to_ndarray(format="rgb24"), dtype=np.uint8), faces
            batch.clear()

        for video in container.decode(video=0):
            batch.append(video)
            if len(batch) == 2 * threads:
                yield from flush()
        yield from flush()


def ratio(after: int, before: int) -> str:
    return f"{after / before:6.1%}" if before else "     -"


def save_crops(folder: Path, name: str, original: Audit, redacted: Audit,
               leaks: list[tuple[int, Box]]) -> None:
    """Each leak as a PNG: the original's crop left, the redacted copy's right."""
    folder.mkdir(parents=True, exist_ok=True)
    for n, (index, box) in enumerate(leaks):
        height, width = original.frames[index].shape[:2]
        crop = box.expand(0.5).clip(width, height)
        pair = [a.frames[index][crop.y:crop.bottom, crop.x:crop.right]
                for a in (original, redacted)]
        image = cv2.cvtColor(np.hstack(pair), cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(folder / f"{name}-{index:04d}-{n}.png"), image)


def residuals(paths: list[Path], settings: DetectorSettings, work: Path, *, fps: float,
              most: int, crops: Path | None) -> None:
    auditor, hog = Auditor(), FaceDetector(min_size=0)
    print(f"redactor: {settings} (haar off/on); auditor: dlib CNN (MMOD), {fps:g} frames per "
          f"second of video, at most {most} per clip; HOG re-scan: upsample "
          f"{RESCAN_UPSAMPLE}, threshold {RESCAN_THRESHOLD}")
    header = (f"{'clip':44} {'size':>9} {'audited':>7} {'redactor':>8} {'fps':>5} "
              f"{'faces':>5} {'leaks':>5} {'residual':>8} {'other':>5} {'hog faces':>9} "
              f"{'hog leaks':>9}")
    print(header, flush=True)
    totals: dict[str, list[int]] = {}
    for path in paths:
        indexes = audited_frames(path, fps, most)
        original = audit(path, indexes, auditor, hog)
        height, width = next(iter(original.frames.values())).shape[:2]
        for haar in (False, True):
            label = "union" if haar else "hog"
            out = work / f"{path.stem}.{label}.mp4"
            redactor = DetectorSettings(upsample=settings.upsample, stride=settings.stride,
                                        haar=haar)
            started = time.perf_counter()
            info = redact_file(path, out, settings=redactor)
            seconds = time.perf_counter() - started
            redacted = audit(out, indexes, auditor, hog)
            leaks = redacted.leaks(original)
            other = redacted.faces() - len(leaks)
            hog_leaks = len(redacted.leaks(original, hog=True))
            total = totals.setdefault(label, [0, 0, 0, 0, 0])
            for k, v in enumerate((original.faces(), len(leaks), other,
                                   original.hog_faces(), hog_leaks)):
                total[k] += v
            print(f"{path.name:44} {f'{width}x{height}':>9} {len(indexes):7d} {label:>8} "
                  f"{int(str(info['frames'])) / seconds:5.1f} {original.faces():5d} "
                  f"{len(leaks):5d} {ratio(len(leaks), original.faces()):>8} {other:5d} "
                  f"{original.hog_faces():9d} {hog_leaks:9d}", flush=True)
            if crops is not None and leaks:
                save_crops(crops, f"{path.stem}-{label}", original, redacted, leaks)
            out.unlink()
    for label, (faces, leaked, other, hog_faces, hog_leaks) in totals.items():
        print(f"{'total':44} {'':>9} {'':>7} {label:>8} {'':>5} {faces:5d} {leaked:5d} "
              f"{ratio(leaked, faces):>8} {other:5d} {hog_faces:9d} {hog_leaks:9d}")


def cost(repeats: int = 5) -> None:
    """Seconds per frame of the redaction detector, HOG alone and the union, one thread."""
    with av.open(str(DATA / "video" / HAMILTON)) as c:
        small = next(luma(v, v.width) for i, v in enumerate(c.decode(video=0)) if i == 240)
    with av.open(str(DATA / "video" / FACENET)) as c:
        large = next(luma(v, v.width) for i, v in enumerate(c.decode(video=0)) if i == 50)
    print(f"{'picture':10} {'use':9} {'upsample':>8} {'hog s':>6} {'union s':>7} "
          f"{'boxes hog/union':>15}")
    hog_only = RedactionDetector(haar=False)
    exports, snapshots = RedactionDetector(haar_side=EXPORT_HAAR_SIDE), RedactionDetector()
    for grey in (small, large):
        for use, up, union in (("export", export_upsample(*grey.shape), exports),
                               ("snapshot", snapshot_upsample(*grey.shape), snapshots)):
            seconds = []
            for detector in (hog_only, union):
                detector.detect(grey, up)  # warm up
                started = time.perf_counter()
                for _ in range(repeats):
                    found = detector.detect(grey, up)
                seconds.append((time.perf_counter() - started) / repeats)
            counts = f"{len(hog_only.detect(grey, up))}/{len(found)}"
            size = f"{grey.shape[1]}x{grey.shape[0]}"
            print(f"{size:10} {use:9} {up:8d} {seconds[0]:6.2f} {seconds[1]:7.2f} "
                  f"{counts:>15}", flush=True)


def subject(settings: DetectorSettings, work: Path) -> None:
    clip = DATA / "video" / HAMILTON
    image = cv2.imread(str(DATA / MIRANDA), cv2.IMREAD_COLOR)
    if image is None:
        sys.exit(f"cannot read {MIRANDA}")
    photo = np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), dtype=np.uint8)
    out = work / "subject.mp4"
    started = time.perf_counter()
    info = redact_file(clip, out, keep=subject_keep(photo), settings=settings)
    seconds = time.perf_counter() - started
    embedder = FaceEmbedder("onnx")
    reference = _reference(photo, embedder)
    rows = []
    for name, path in (("original", clip), ("subject access", out)):
        him = others = frames = 0
        for rgb, faces in frames_with_faces(path):
            frames += 1
            seen = False
            for face in faces:
                if min(face.box.w, face.box.h) < EMBED_MIN_SIDE:
                    others += 1  # too small to be anyone's match: counts as someone else
                    continue
                vector = embedder.embed(rgb, [face.dlib_shape()])[0]
                if float(np.linalg.norm(vector - reference)) < MATCH_THRESHOLD:
                    seen = True
                else:
                    others += 1
            him += seen
        rows.append((name, frames, him, others))
    print(f"\nsubject access on {HAMILTON} with {MIRANDA.name}: {info['faces_kept']} tracks "
          f"kept, {info['faces_blurred']} blurred, {int(str(info['frames'])) / seconds:.1f} "
          f"frames/s")
    print(f"{'copy':16} {'frames':>6} {'frames with Miranda':>19} {'other faces':>11}")
    for name, frames, him, others in rows:
        print(f"{name:16} {frames:6d} {him:19d} {others:11d}")


def _reference(photo: U8, embedder: FaceEmbedder) -> npt.NDArray[np.float32]:
    grey = np.asarray(cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY), dtype=np.uint8)
    face = max(FaceDetector().detect(grey, upsample=1), key=lambda f: f.box.area)
    vector: npt.NDArray[np.float32] = embedder.embed(photo, [face.dlib_shape()])[0]
    return vector


def live(seconds: float, work: Path) -> None:
    from custodes.analytics.worker import CameraAnalysis, Message, WorkerSpec  # noqa: PLC0415
    from custodes.config import AnalyticsConfig  # noqa: PLC0415
    from custodes.record.layout import Layout  # noqa: PLC0415
    from custodes.redaction.live import request_live  # noqa: PLC0415
    from custodes.sim.media import prepare_clip  # noqa: PLC0415
    from custodes.sim.rtsp import SimServer  # noqa: PLC0415
    from custodes.vision.decode import FrameSource  # noqa: PLC0415

    class Drop:
        def put(self, message: Message) -> None:
            pass

    layout = Layout(work / "node")
    layout.create()
    clip = prepare_clip(DATA / "video" / HAMILTON, work / "clips")
    with SimServer() as sim:
        url = sim.add_camera("stage", clip)
        spec = WorkerSpec("stage", url, AnalyticsConfig(), layout.snapshots, live=layout.live)
        analysis = CameraAnalysis(spec, Drop())
        assert analysis.live is not None
        lags: list[float] = []
        started = time.monotonic()
        asked = 0.0
        with FrameSource(url, 5, 640) as source:
            for frame in source:
                now = time.monotonic()
                if now - asked >= 1.0:
                    request_live(layout, "stage")
                    asked = now
                analysis.process(frame)
                lags.append(time.time() - frame.t)
                if now - started >= seconds:
                    break
        analysis.live.drain()
        ages = sorted(analysis.live.ages)
        analysis.live.close()
    elapsed = time.monotonic() - started
    print(f"\nlive pictures over {elapsed:.0f} s: {len(ages)} written "
          f"(the last {len(ages)} kept), analysis lag p50 {np.median(lags):.2f} s")
    print(f"frame age when written: p50 {np.median(ages):.2f} s, p95 "
          f"{ages[int(0.95 * (len(ages) - 1))]:.2f} s, max {ages[-1]:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", nargs="*", default=[], help="parts of clip names")
    parser.add_argument("--stride", type=int, default=1)
    parser.add_argument("--upsample", type=int, default=None)
    parser.add_argument("--audit-fps", type=float, default=1.0,
                        help="audited frames per second of video")
    parser.add_argument("--audit-max", type=int, default=20, help="most audited frames a clip")
    parser.add_argument("--crops", type=Path, default=None,
                        help="write each leak (original | redacted) as a PNG here")
    parser.add_argument("--no-subject", action="store_true")
    parser.add_argument("--cost", action="store_true", help="only the detector's cost")
    parser.add_argument("--live", type=float, default=0.0, metavar="SECONDS",
                        help="only measure live pictures, for this long")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"no test data at {DATA}")
    settings = DetectorSettings(upsample=args.upsample, stride=args.stride)
    run: list[Callable[[Path], None]] = [lambda work: residuals(
        clips(args.clips), settings, work, fps=args.audit_fps, most=max(2, args.audit_max),
        crops=args.crops)]
    if args.live:
        run = [lambda work: live(args.live, work)]
    elif args.cost:
        run = [lambda work: cost()]
    elif not args.no_subject:
        run.append(lambda work: subject(settings, work))
    with tempfile.TemporaryDirectory(prefix="custodes-redaction-") as work:
        for step in run:
            step(Path(work))


if __name__ == "__main__":
    main()
