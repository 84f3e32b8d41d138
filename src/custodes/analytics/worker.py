"""The analysis of one camera, in a process of its own.

    frames (decode.py) -> motion (motion.py) -> faces in the moving regions (faces.py)
    -> tracks (tracker.py) -> per finished track: one descriptor, if allowed (embedding.py)
    -> messages to the node: motion spans, face tracks, redacted snapshots, statistics
    -> while someone watches: a redacted live picture of the newest frame (live.py)

The worker never touches the database: it sends plain messages on a queue and the node's
event maintainer stores and publishes them. A stream that fails ends the open motion span
and tracks, waits (1 s doubling to 60 s) and reconnects.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing.synchronize
import os
import queue
import statistics
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import numpy as np

from custodes.analytics.motion import MotionDetector, MotionResult, MotionSpan, MotionTracker
from custodes.config import AnalyticsConfig, FacesConfig
from custodes.process import backoff, die_with_parent
from custodes.redaction.blur import Polygon, encode_jpeg, redact_snapshot
from custodes.redaction.detect import RedactionDetector
from custodes.redaction.live import LiveWriter
from custodes.vision.decode import Frame, FrameSource, StreamError
from custodes.vision.embedding import FaceEmbedder
from custodes.vision.faces import Box, FaceDetector
from custodes.vision.tracker import FinishedTrack, Tracker

log = logging.getLogger(__name__)

STATS_INTERVAL = 2.0  # seconds between statistics messages
RGB_FRAMES_KEPT = 16  # colour frames kept for snapshots of tracks' best moments
# The moving regions are searched for new faces on every third frame (0.6 s at 5 fps: nobody
# crosses a corridor faster); faces already tracked are followed on every frame, in a small
# window around where they are expected. That is most of the speed over detecting everywhere.
SCAN_EVERY = 3
# The window around a tracked face, per side: half its size, and at least as far as a walker's
# face moves between two analysed frames (~60 px at 640x360 and 5 fps: a face crossing the
# frame in 2 s), so a fast mover stays one track.
FOLLOW_MARGIN = 0.5
FOLLOW_REACH = 64


@dataclass(frozen=True)
class WorkerSpec:
    camera: str
    url: str
    config: AnalyticsConfig
    snapshots: Path  # the node's snapshot folder
    live: Path | None = None  # the node's live picture folder; None: no live pictures
    zones: Sequence[Polygon] = ()  # the camera's privacy zones, blurred in every picture


# -- messages to the node -----------------------------------------------------------------


@dataclass(frozen=True)
class MotionStarted:
    camera: str
    key: int  # matches the MotionEnded of the same span
    start: float


@dataclass(frozen=True)
class MotionEnded:
    camera: str
    key: int
    start: float
    end: float
    peak: float
    snapshot: str | None  # relative to the snapshot folder


@dataclass(frozen=True)
class FaceTrack:
    camera: str
    start: float
    end: float
    detections: int
    box: tuple[int, int, int, int]
    quality: float
    embedding: bytes | None  # 128 float32; None unless descriptors are allowed
    snapshot: str | None


@dataclass(frozen=True)
class Stats:
    camera: str
    online: bool
    reason: str
    fps: float  # frames analysed per second over the last interval
    lag_p95: float  # seconds from capture to the end of analysis
    dropped: int  # frames skipped deliberately so far
    width: int
    height: int
    stream_fps: float = 0.0  # frames the camera sent per second (all decoded, most skipped)


Message = MotionStarted | MotionEnded | FaceTrack | Stats


class Outbox(Protocol):
    def put(self, message: Message) -> None: ...


# -- snapshots ------------------------------------------------------------------------------


class SnapshotWriter:
    """Redacts and writes event pictures in a thread of its own.

    Redaction scans the whole picture finely (HOG and the Haar cascades, ~0.7 s at
    640x360) and dlib and OpenCV release the GIL while they do, so doing it here keeps the
    analysis loop on time. The path is decided at once, so the event that names it can leave
    before the file is written. When too many are waiting, a snapshot is skipped (and logged)
    rather than delaying or growing without bound.
    """

    def __init__(self, folder: Path, faces: FacesConfig, maxsize: int = 8,
                 zones: Sequence[Polygon] = ()) -> None:
        self.folder = folder
        self.zones = list(zones)
        # A detector of its own: dlib's and OpenCV's detectors are not to be shared between
        # threads. It finds faces of any size, turned ones too, whatever `faces` says: the
        # analysis settings are for recognition, not for redaction.
        self.detector = RedactionDetector()
        self._jobs: queue.Queue[tuple[Frame, list[Box], Path] | None] = queue.Queue(maxsize)
        self._names = itertools.count(1)
        self._thread = threading.Thread(target=self._run, name="snapshots", daemon=True)
        self._thread.start()

    def submit(self, camera: str, frame: Frame, kind: str, known: list[Box]) -> str | None:
        """The snapshot's path below the folder, or None if it had to be skipped."""
        day = datetime.fromtimestamp(frame.t, UTC)
        relative = Path(camera, day.strftime("%Y-%m-%d"),
                        f"{day.strftime('%H%M%S')}-{kind}-{next(self._names)}.jpg")
        try:
            self._jobs.put_nowait((frame, known, self.folder / relative))
        except queue.Full:
            log.warning("%s: snapshot skipped, %d waiting to be redacted", camera,
                        self._jobs.qsize())
            return None
        return relative.as_posix()

    def drain(self) -> None:
        """Wait until every submitted snapshot is on disk."""
        self._jobs.join()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            frame, known, target = job
            try:
                redacted = redact_snapshot(frame.rgb(), self.detector, known, zones=self.zones)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(encode_jpeg(redacted))
            except Exception:
                log.exception("could not write snapshot %s", target.name)
            finally:
                self._jobs.task_done()


# -- the analysis -------------------------------------------------------------------------


class CameraAnalysis:
    """Everything computed from one camera's frames; fed one frame at a time."""

    def __init__(self, spec: WorkerSpec, outbox: Outbox,
                 embedder: FaceEmbedder | None = None) -> None:
        self.spec = spec
        self.config = spec.config
        self.outbox = outbox
        faces = self.config.faces
        self.detector = FaceDetector(threshold=faces.threshold, min_size=faces.min_size)
        self.embedder = embedder
        if faces.embeddings and embedder is None:
            self.embedder = FaceEmbedder("onnx", threads=1)
        self.tracker = Tracker(max_age=1.0)
        self.motion: MotionDetector | None = None
        self.spans = MotionTracker(self.config.motion.end_after)
        self._span_keys = itertools.count(1)
        self._span_key = 0
        self._peak_frame: Frame | None = None
        self._colour: deque[Frame] = deque(maxlen=RGB_FRAMES_KEPT)
        self.snapshots = SnapshotWriter(spec.snapshots, faces, zones=spec.zones)
        self.live = (LiveWriter(spec.live, spec.camera, spec.zones)
                     if spec.live is not None else None)
        self._frames = 0

    def process(self, frame: Frame) -> None:
        grey = frame.grey
        if self.motion is None:
            self.motion = MotionDetector(self.config.motion, grey.shape[1], grey.shape[0])
        result = self.motion.update(grey) if self.config.motion.enabled else None
        if result is not None:
            started, ended = self.spans.update(frame.t, result)
            if ended is not None:
                self._end_motion(ended)
            if started is not None:
                self._span_key = next(self._span_keys)
                self._peak_frame = frame
                self.outbox.put(MotionStarted(self.spec.camera, self._span_key, started.start))
            elif self.spans.current is not None and self.spans.current.peak_at == frame.t:
                self._peak_frame = frame
        faces = []
        if self.config.faces.detect:
            regions = self._search_regions(frame.t, result)
            if regions is None or regions:  # colour only when something is to be scanned
                faces = self.detector.detect(frame.rgb(), regions=regions, grey=grey)

        def colour() -> np.ndarray:
            self._colour.append(frame)
            return frame.rgb()

        for track in self.tracker.update(frame.t, faces, grey, colour):
            self._finish_track(track)
        if self.live is not None:
            # The faces of this frame and those the tracker follows through a missed frame.
            self.live.offer(frame, self.tracker.predict(frame.t))

    def _search_regions(self, t: float, motion: MotionResult | None) -> list[Box] | None:
        """Where to look for faces in this frame: [] nowhere, None the whole frame."""
        self._frames += 1
        following = [box.expand(max(FOLLOW_MARGIN, FOLLOW_REACH / max(box.w, 1)))
                     for box in self.tracker.predict(t)]
        if self._frames % SCAN_EVERY:
            return following
        if motion is None:  # motion detection is off: scan everything
            return None
        # Faces are searched only where something moves: a still corridor costs nothing.
        return [*motion.boxes, *following]

    def flush(self) -> None:
        """The stream ended: close the open motion span and every track."""
        span = self.spans.flush()
        if span is not None:
            self._end_motion(span)
        for track in self.tracker.flush():
            self._finish_track(track)
        self.snapshots.drain()

    def _end_motion(self, span: MotionSpan) -> None:
        snapshot = None
        if self._peak_frame is not None:
            snapshot = self._snapshot(self._peak_frame, "motion")
        self.outbox.put(MotionEnded(self.spec.camera, self._span_key, span.start, span.last,
                                    span.peak, snapshot))
        self._peak_frame = None

    def _finish_track(self, track: FinishedTrack) -> None:
        best = track.best
        embedding = None
        if self.config.faces.embeddings and self.embedder is not None:
            vector = self.embedder.embed(best.image, [best.face.dlib_shape()])[0]
            embedding = vector.astype(np.float32).tobytes()
        frame = next((f for f in self._colour if f.t == best.time), None)
        snapshot = self._snapshot(frame, "face", [best.box]) if frame is not None else None
        b = best.box
        self.outbox.put(FaceTrack(
            self.spec.camera, track.first_seen, track.last_seen, track.detections,
            (b.x, b.y, b.w, b.h), best.quality, embedding, snapshot,
        ))

    def _snapshot(self, frame: Frame, kind: str, known: list[Box] | None = None) -> str | None:
        """Have a redacted JPEG of ``frame`` written; its path below the snapshot folder."""
        # Faces the tracker follows are blurred even where the redaction scan misses them.
        boxes = [*(known or []), *self.tracker.predict(frame.t)]
        return self.snapshots.submit(self.spec.camera, frame, kind, boxes)


# -- the process ----------------------------------------------------------------------------


def run_worker(spec: WorkerSpec, outbox: Outbox,
               stop: multiprocessing.synchronize.Event) -> None:
    """Process entry point: analyse the camera until ``stop`` is set."""
    # If the recorder dies, even by SIGKILL, its analysis processes go with it instead of
    # analysing on as orphans.
    parent = os.getppid()
    die_with_parent()
    if os.getppid() != parent:  # the parent died before prctl took effect
        return
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    analysis = CameraAnalysis(spec, outbox)
    failures = 0
    while not stop.is_set():
        reason = _analyse_stream(spec, analysis, outbox, stop)
        analysis.flush()
        if stop.is_set():
            break
        failures = failures + 1 if reason else 0
        outbox.put(Stats(spec.camera, False, reason or "stream ended", 0.0, 0.0, 0, 0, 0))
        stop.wait(backoff(failures))


def _analyse_stream(spec: WorkerSpec, analysis: CameraAnalysis, outbox: Outbox,
                    stop: multiprocessing.synchronize.Event) -> str:
    """Analyse until the stream fails (return why) or ``stop`` (return "")."""
    lags: list[float] = []
    analysed = decoded = 0
    last_report: float | None = None  # from the first frame: opening the stream takes time
    try:
        with FrameSource(spec.url, spec.config.fps, spec.config.width) as source:
            for frame in source:
                if stop.is_set():
                    return ""
                analysis.process(frame)
                analysed += 1
                lags.append(time.time() - frame.t)
                now = time.monotonic()
                if last_report is None:
                    last_report, analysed = now, 0
                    decoded = source.stats.decoded
                elif now - last_report >= STATS_INTERVAL:
                    height, width = frame.grey.shape
                    elapsed = now - last_report
                    outbox.put(Stats(
                        spec.camera, True, "", analysed / elapsed,
                        _p95(lags), source.stats.dropped, width, height,
                        stream_fps=(source.stats.decoded - decoded) / elapsed,
                    ))
                    lags.clear()
                    analysed, last_report = 0, now
                    decoded = source.stats.decoded
    except StreamError as exc:
        return str(exc)
    return "stream ended"


def _p95(values: list[float]) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=20)[-1]
