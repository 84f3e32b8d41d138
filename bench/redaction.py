"""Redacted exports re-scanned for faces: what the redaction leaves, and how fast it runs.

    python bench/redaction.py                 # every real clip, then subject access (~15 min)
    python bench/redaction.py --stride 2      # detect on every other frame
    python bench/redaction.py --clips hamilton --no-subject
    python bench/redaction.py --live 30       # live pictures only: frame age, 30 s (~40 s)

For each real clip in ../shared/data/video (the GIFs' MP4 twins stand for the GIFs):
1. `redact_file` writes a redacted H.264 copy; redaction frames/s = frames / wall seconds.
2. The original and the redacted copy are both scanned on EVERY frame, at least as finely as
   the redactor looks (dlib HOG, upsample 2, all sizes, threshold -0.3; faces at dlib's
   default threshold 0 are counted too). Residual = faces found after / faces found before.
   "surviving": faces found after where the original's same frame had a face (IoU >= 0.3),
   i.e. faces the redaction left findable; the rest of "after" are blurred blobs (or other
   texture) that HOG takes for a face where there was none. Detections are not ground
   truth: the "before" count includes the detector's false faces, and the residual measures
   what a detector of this kind can still find, not what a human can still recognise.

Subject access (the Hamilton clip, Lin-Manuel Miranda, with his reference photo): the clip is
redacted with `subject_keep(photo)`, then both copies are scanned every frame as above and
every face found of at least 40 px is compared with the photo (distance < 0.6 = him): frames
where he is seen before and after, and the faces of others before and after.

Live (--live SECONDS): the Hamilton clip served as a 640x360 15 fps RTSP camera by the
simulator, analysed as a worker does (FrameSource at 5 fps, CameraAnalysis with a live folder)
while a viewer asks for the picture every second; reports the pictures written per second and
the frame age when each is written (capture to JPEG on disk), and the analysis lag.
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

import av
import cv2
import numpy as np
import numpy.typing as npt

from custodes.analytics.decode import luma
from custodes.analytics.embedding import MATCH_THRESHOLD, FaceEmbedder
from custodes.analytics.faces import Face, FaceDetector
from custodes.privacy.redact_video import DetectorSettings, redact_file
from custodes.privacy.subject_access import subject_keep

U8 = npt.NDArray[np.uint8]
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
HAMILTON = "face_recognition_short_hamilton_clip.mp4"
MIRANDA = Path("faces/face_recognition/Lin-Manuel_Miranda/lin-manuel-miranda.png")
RESCAN_UPSAMPLE = 2
RESCAN_THRESHOLD = -0.3
EMBED_MIN_SIDE = 40  # smaller faces give descriptors too poor to name anyone


@dataclass
class Scan:
    found: list[list[Face]]  # per frame

    @property
    def faces(self) -> int:  # score >= RESCAN_THRESHOLD
        return sum(map(len, self.found))

    @property
    def strong(self) -> int:  # score >= 0 (dlib's default)
        return sum(f.score >= 0 for faces in self.found for f in faces)

    def survivors(self, original: Scan) -> int:
        """Faces found here where the same frame of `original` had a face (IoU >= 0.3): faces
        the redaction left findable, as opposed to blurred blobs HOG takes for faces."""
        return sum(any(f.box.iou(o.box) >= 0.3 for o in old)
                   for new, old in zip(self.found, original.found, strict=True) for f in new)


def clips(names: list[str]) -> list[Path]:
    found = sorted(p for p in (DATA / "video").iterdir() if p.suffix in (".mp4", ".avi"))
    return [p for p in found if not names or any(n in p.name for n in names)]


def frames_with_faces(path: Path, threads: int = 2) -> Iterator[tuple[U8, list[Face]]]:
    """Every frame (RGB) of a file with the faces found in it at the re-scan setting."""
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


def rescan(path: Path) -> Scan:
    return Scan([faces for _, faces in frames_with_faces(path)])


def ratio(after: int, before: int) -> str:
    return f"{after / before:6.1%}" if before else "     -"


def residuals(paths: list[Path], settings: DetectorSettings, work: Path) -> None:
    print(f"redactor: {settings}; re-scan: every frame, upsample {RESCAN_UPSAMPLE}, "
          f"threshold {RESCAN_THRESHOLD} (and 0)")
    header = (f"{'clip':46} {'size':>9} {'frames':>6} {'redact fps':>10} {'tracks':>6} "
              f"{'before':>6} {'after':>5} {'residual':>8} {'before@0':>8} {'after@0':>7} "
              f"{'resid@0':>7} {'surviving':>9}")
    print(header)
    total = [0, 0, 0, 0, 0]
    for path in paths:
        out = work / f"{path.stem}.redacted.mp4"
        started = time.perf_counter()
        info = redact_file(path, out, settings=settings)
        seconds = time.perf_counter() - started
        frames = int(str(info["frames"]))
        before, after = rescan(path), rescan(out)
        with av.open(str(path)) as c:
            size = f"{c.streams.video[0].width}x{c.streams.video[0].height}"
        surviving = after.survivors(before)
        total = [total[0] + before.faces, total[1] + after.faces, total[2] + before.strong,
                 total[3] + after.strong, total[4] + surviving]
        print(f"{path.name:46} {size:>9} {frames:6d} {frames / seconds:10.1f} "
              f"{info['faces_blurred']!s:>6} {before.faces:6d} {after.faces:5d} "
              f"{ratio(after.faces, before.faces):>8} {before.strong:8d} {after.strong:7d} "
              f"{ratio(after.strong, before.strong):>7} {surviving:9d}", flush=True)
    print(f"{'total':46} {'':>9} {'':>6} {'':>10} {'':>6} {total[0]:6d} {total[1]:5d} "
          f"{ratio(total[1], total[0]):>8} {total[2]:8d} {total[3]:7d} "
          f"{ratio(total[3], total[2]):>7} {total[4]:9d}")


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
    from custodes.analytics.decode import FrameSource  # noqa: PLC0415
    from custodes.analytics.live import request_live  # noqa: PLC0415
    from custodes.analytics.worker import CameraAnalysis, Message, WorkerSpec  # noqa: PLC0415
    from custodes.config import AnalyticsConfig  # noqa: PLC0415
    from custodes.record.layout import Layout  # noqa: PLC0415
    from custodes.sim.media import prepare_clip  # noqa: PLC0415
    from custodes.sim.rtsp import SimServer  # noqa: PLC0415

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
    parser.add_argument("--no-subject", action="store_true")
    parser.add_argument("--live", type=float, default=0.0, metavar="SECONDS",
                        help="only measure live pictures, for this long")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"no test data at {DATA}")
    settings = DetectorSettings(upsample=args.upsample, stride=args.stride)
    run: list[Callable[[Path], None]] = [lambda work: residuals(clips(args.clips), settings,
                                                                 work)]
    if args.live:
        run = [lambda work: live(args.live, work)]
    elif not args.no_subject:
        run.append(lambda work: subject(settings, work))
    with tempfile.TemporaryDirectory(prefix="custodes-redaction-") as work:
        for step in run:
            step(Path(work))


if __name__ == "__main__":
    main()
