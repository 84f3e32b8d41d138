"""The analysis of cameras: one camera's pipeline, and the worker process that runs several.

    frames (decode.py) -> motion (motion.py) -> faces in the moving regions (faces.py)
    -> tracks (tracker.py) -> per finished track: descriptors of its best faces, if allowed
    -> messages to the node: motion spans, face tracks, redacted snapshots, statistics

Live pictures are not made here (custodes.live has decoders of its own): a worker takes its
cameras in turn and sheds its rate under load, and a picture must not wait for that.

The worker never touches the database: it sends plain messages on a queue and the node's
event maintainer stores and publishes them. A stream that fails ends the open motion span
and tracks, waits (1 s doubling to 60 s) and reconnects, while the worker's other cameras go
on. A worker that cannot keep up lowers its cameras' analysis rates (load shedding).

Each statistics message carries what the camera costs its worker (CPU per analysed frame, and
its share of the decoding and snapshots), so that the supervisor can move cameras from a busy
worker to an idle one: a worker hands a camera over when told to (`Release`), at a moment
when no face is tracked on it, and takes one on (`Adopt`).
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing.synchronize
import os
import queue
import signal
import statistics
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import numpy as np

from custodes.analytics.motion import (
    MotionDetector,
    MotionResult,
    MotionSpan,
    MotionTracker,
    SpanEnd,
)
from custodes.config import AnalyticsConfig, FacesConfig
from custodes.masking import install_log_filter, mask_credentials
from custodes.process import backoff, die_with_parent
from custodes.redaction.blur import Polygon, encode_jpeg, redact_snapshot
from custodes.redaction.detect import NODE_SETTINGS
from custodes.vision.cuts import Thumbnail
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
# One event per visit, not per track: a face lost behind a shoulder for half a second, or a
# group walking past, makes many tracks (17 in the 10 s Hamilton clip). Tracks that follow
# within VISIT_GAP seconds of the last one are one visit, cut at VISIT_MAX seconds so that a
# corridor busy all day still gives events that end.
VISIT_GAP = 10.0
VISIT_MAX = 300.0
# The network sees the analysed frame at 3/4 of its size: ~40 % less CPU on the face-heavy
# clips, and on the shared clips (bench/analytics.py, offline) as many faces or more (194 vs
# 182 at full size; 195 at 0.6, 180 at 0.5: a close face scores higher when smaller). Never so
# small that the smallest face considered (faces.min_size) falls under NET_SMALLEST pixels.
DETECT_SCALE = 0.75
NET_SMALLEST = 15
SNAPSHOT_BUSY = "skipped: too many snapshots were waiting to be redacted (node busy)"
SNAPSHOT_NO_FRAME = "the frame of the best face was no longer held (analysis fell behind)"


@dataclass
class _Visit:
    key: int
    start: float
    end: float
    tracks: int = 0
    detections: int = 0
    snapshot: bool = False  # one of its tracks carries the visit's picture


@dataclass(frozen=True)
class WorkerSpec:
    camera: str
    url: str
    config: AnalyticsConfig
    snapshots: Path  # the node's snapshot folder
    zones: Sequence[Polygon] = ()  # the camera's privacy zones, blurred in every picture


# -- messages to the node -----------------------------------------------------------------


@dataclass(frozen=True)
class MotionStarted:
    camera: str
    key: int  # matches the MotionEnded of the same span
    start: float
    continues: bool = False  # the span before it was cut at max_span: the motion goes on


@dataclass(frozen=True)
class MotionEnded:
    camera: str
    key: int
    start: float
    end: float
    peak: float
    snapshot: str | None  # relative to the snapshot folder
    ended: SpanEnd = SpanEnd.QUIET
    no_snapshot: str = ""  # why there is none, when snapshot is None


@dataclass(frozen=True)
class FaceTrack:
    camera: str
    start: float
    end: float
    detections: int
    box: tuple[int, int, int, int]
    quality: float
    embedding: bytes | None  # 128 float32 of the best face; None unless descriptors are allowed
    snapshot: str | None
    # (n, 128) float32 of the track's best faces (the best first), for deciding per track: a
    # watchlist names someone only when several agree. Never stored: only `embedding` is.
    samples: bytes | None = None
    # The visit the track belongs to (see VisitEnded); 0: a track on its own, one event.
    visit: int = 0
    no_snapshot: str = ""  # why there is none, when snapshot is None


@dataclass(frozen=True)
class VisitEnded:
    """The face tracks of one visit are complete: no face was seen for VISIT_GAP seconds,
    the visit reached VISIT_MAX, or the stream ended. One event stands for the whole visit."""

    camera: str
    visit: int  # the `visit` of its FaceTracks
    start: float
    end: float
    tracks: int
    detections: int


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
    stream_fps: float = 0.0  # frames the camera sent per second (not all decoded)
    analysis_fps: float = 0.0  # the rate aimed at now: the configured one unless shed
    shed: bool = False  # the rate is below the configured one: the worker is overloaded
    # What the camera costs its worker (the supervisor balances the workers by it): CPU-s of
    # the analysis per analysed frame, and CPU-s per second of the rest of the worker's CPU
    # (decoding, snapshots), shared evenly between its streaming cameras.
    cpu_per_frame: float = 0.0
    cpu_other: float = 0.0
    # Wall seconds of the worker's analysis thread per analysed frame: what fills a worker
    # (one thread) and makes it shed, CPU plus the time it waited for a core or the GIL.
    wall_per_frame: float = 0.0


Message = MotionStarted | MotionEnded | FaceTrack | VisitEnded | Stats


class Outbox(Protocol):
    def put(self, message: Message) -> None: ...


# -- commands from the supervisor -------------------------------------------------------------


@dataclass(frozen=True)
class Release:
    """Stop analysing ``camera`` (another worker takes it over): at the first moment no face
    is tracked on it, or after RELEASE_WAIT seconds. The worker answers with the camera's name
    on its `Control.released` once its tracks, motion span and snapshots are finished."""

    camera: str


@dataclass(frozen=True)
class Adopt:
    """Start analysing this camera (released by another worker)."""

    spec: WorkerSpec


Command = Release | Adopt


class CommandSource(Protocol):
    def get_nowait(self) -> Command: ...  # raises queue.Empty


class ReleasedSink(Protocol):
    def put(self, camera: str, /) -> None: ...


@dataclass(frozen=True)
class Control:
    """A worker's line to its supervisor: commands in, released cameras out."""

    commands: CommandSource
    released: ReleasedSink


# -- snapshots ------------------------------------------------------------------------------


class SnapshotWriter:
    """Redacts and writes event pictures in a thread of its own.

    Redaction scans the whole picture with redaction's detector (~0.1 s at 640x360), and
    onnxruntime releases the GIL while it does, so doing it here keeps the analysis loop on
    time. The path is decided at once, so the event that names it can leave
    before the file is written. When too many are waiting, a snapshot is skipped (and logged)
    rather than delaying or growing without bound.
    """

    def __init__(self, folder: Path, faces: FacesConfig, maxsize: int = 8,
                 zones: Sequence[Polygon] = ()) -> None:
        self.folder = folder
        self.zones = list(zones)
        # Redaction's own detector: faces of any size at REDACT_THRESHOLD, whatever `faces`
        # says: the analysis settings are for recognition, not for redaction.
        self.detector = NODE_SETTINGS.detector()
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

    def close(self) -> None:
        """End the thread once the snapshots waiting are written (the camera moved away)."""
        self._jobs.put(None)

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


def detect_scale(min_size: int) -> float:
    """The factor the analysis detector resizes a frame by (see DETECT_SCALE)."""
    return min(1.0, max(DETECT_SCALE, NET_SMALLEST / min_size))


class CameraAnalysis:
    """Everything computed from one camera's frames; fed one frame at a time."""

    def __init__(self, spec: WorkerSpec, outbox: Outbox,
                 embedder: FaceEmbedder | None = None) -> None:
        self.spec = spec
        self.config = spec.config
        self.outbox = outbox
        faces = self.config.faces
        self.detector = FaceDetector(threshold=faces.threshold, min_size=faces.min_size,
                                     scale=detect_scale(faces.min_size))
        self.embedder = embedder
        if faces.embeddings and embedder is None:
            self.embedder = FaceEmbedder("onnx", threads=1)
        self.tracker = Tracker(max_age=1.0)
        self.motion: MotionDetector | None = None
        self.spans = MotionTracker(self.config.motion.end_after, self.config.motion.max_span)
        self._span_keys = itertools.count(1)
        self._span_key = 0
        self._peak_frame: Frame | None = None
        self._colour: deque[Frame] = deque(maxlen=RGB_FRAMES_KEPT)
        self.snapshots = SnapshotWriter(spec.snapshots, faces, zones=spec.zones)
        self._frames = 0
        self._thumbnail: Thumbnail | None = None  # of the last frame, while faces are followed
        # Visit keys unique across restarts of the worker, like the node's event ids are.
        self._visit_keys = itertools.count(int(time.time() * 1000))
        self._visit: _Visit | None = None

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
                self.outbox.put(MotionStarted(self.spec.camera, self._span_key, started.start,
                                              started.continues))
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

        thumbnail = self._end_tracks_at_cut(frame)
        for track in self.tracker.update(frame.t, faces, grey, colour):
            self._finish_track(track)
        if self.tracker.active:
            self._thumbnail = thumbnail or Thumbnail.of(frame.rgb())
        else:
            self._thumbnail = None
            if self._visit is not None and frame.t - self._visit.end > VISIT_GAP:
                self._end_visit()

    def _end_tracks_at_cut(self, frame: Frame) -> Thumbnail | None:
        """End every track if the picture cut to another (the camera moved, was masked, its
        lights switched), so that a face of the new picture is not joined to someone else's
        record. Looked for only while faces are followed: a thumbnail needs the frame in
        colour (~1 ms). Returns the frame's thumbnail, if it was made."""
        if not self.tracker.active:
            return None
        thumbnail = Thumbnail.of(frame.rgb())
        if self._thumbnail is not None and thumbnail.cut_from(self._thumbnail):
            for track in self.tracker.flush():
                self._finish_track(track)
        return thumbnail

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
        self._end_visit()
        self.snapshots.drain()

    def _end_motion(self, span: MotionSpan) -> None:
        snapshot, why = None, SNAPSHOT_NO_FRAME
        if self._peak_frame is not None:
            snapshot, why = self._snapshot(self._peak_frame, "motion")
        self.outbox.put(MotionEnded(self.spec.camera, self._span_key, span.start, span.last,
                                    span.peak, snapshot, span.ended, why))
        self._peak_frame = None

    def _visit_of(self, track: FinishedTrack) -> _Visit:
        """The visit ``track`` belongs to, a new one if it came too late or the current one
        is at its longest."""
        visit = self._visit
        if visit is not None and (track.first_seen - visit.end > VISIT_GAP
                                  or track.last_seen - visit.start > VISIT_MAX):
            self._end_visit()
            visit = None
        if visit is None:
            visit = self._visit = _Visit(next(self._visit_keys), track.first_seen,
                                         track.last_seen)
        visit.start = min(visit.start, track.first_seen)
        visit.end = max(visit.end, track.last_seen)
        visit.tracks += 1
        visit.detections += track.detections
        return visit

    def _end_visit(self) -> None:
        visit, self._visit = self._visit, None
        if visit is not None:
            self.outbox.put(VisitEnded(self.spec.camera, visit.key, visit.start, visit.end,
                                       visit.tracks, visit.detections))

    def _finish_track(self, track: FinishedTrack) -> None:
        best = track.best
        embedding = samples = None
        if self.config.faces.embeddings and self.embedder is not None:
            # Each sample is its own crop; their chips go through the network in one batch.
            chips = np.concatenate([self.embedder.extract_chips(s.image, [s.face.dlib_shape()])
                                    for s in track.samples])
            vectors = self.embedder.embed_chips(chips).astype(np.float32)
            embedding, samples = vectors[0].tobytes(), vectors.tobytes()
        visit = self._visit_of(track)
        # One picture per visit (its event has one): the first track that can give one.
        # Pictures of the visit's other tracks would be files no event names, which nothing
        # would delete with the footage.
        snapshot, why = None, ""
        if not visit.snapshot:
            frame = next((f for f in self._colour if f.t == best.time), None)
            snapshot, why = (self._snapshot(frame, "face", [best.box]) if frame is not None
                             else (None, SNAPSHOT_NO_FRAME))
            visit.snapshot = snapshot is not None
        b = best.box
        self.outbox.put(FaceTrack(
            self.spec.camera, track.first_seen, track.last_seen, track.detections,
            (b.x, b.y, b.w, b.h), best.quality, embedding, snapshot, samples,
            visit=visit.key, no_snapshot=why,
        ))

    def _snapshot(self, frame: Frame, kind: str,
                  known: list[Box] | None = None) -> tuple[str | None, str]:
        """Have a redacted JPEG of ``frame`` written: (its path below the snapshot folder,
        "") or (None, why not)."""
        # Faces the tracker follows are blurred even where the redaction scan misses them.
        boxes = [*(known or []), *self.tracker.predict(frame.t)]
        path = self.snapshots.submit(self.spec.camera, frame, kind, boxes)
        return (path, "") if path is not None else (None, SNAPSHOT_BUSY)


# -- the process ----------------------------------------------------------------------------

# Load shedding: the share of wall time the analysis thread spent analysing decides. Above
# SHED_HIGH every camera's rate is cut at once to what would bring it to SHED_TARGET; below
# SHED_LOW it is raised a quarter at a time back to the configured rate. The band between
# them keeps the rates from see-sawing. Wall time, not CPU time: analysis runs at a lower
# priority than recording, so a CPU busy with recording shows as slower analysis and is shed.
SHED_HIGH = 0.85
SHED_TARGET = 0.7
SHED_LOW = 0.6
SHED_RAISE = 1.25
# However loaded, a camera is analysed once every 5 s: motion is still noticed.
MIN_FPS = 0.2
# A camera to be handed over waits at most this long for a moment when no face is tracked on
# it; then its tracks are ended (and the next worker starts new ones).
RELEASE_WAIT = 10.0
# Analysis yields the CPU to recording and the web server: a late analysed frame costs a
# little accuracy, a late recorded packet costs footage.
NICENESS = 10
# Seconds a stopping worker waits for its cameras' last snapshots; less than the supervisor's
# STOP_GRACE, so that the worker exits by itself, its messages handed over, before it is killed.
FLUSH_WAIT = 2.0


class Shedder:
    """One worker's load shedding: a factor on every camera's configured rate."""

    def __init__(self, min_fps: float = MIN_FPS) -> None:
        self.min_fps = min_fps
        self.factor = 1.0

    def update(self, busy: float) -> float:
        """Take the share of the last interval spent analysing; the new factor."""
        if busy > SHED_HIGH:
            self.factor = max(0.001, self.factor * SHED_TARGET / busy)
        elif busy < SHED_LOW:
            self.factor = min(1.0, self.factor * SHED_RAISE)
        return self.factor

    def rate(self, configured: float) -> float:
        """The rate a camera configured for ``configured`` fps is analysed at now."""
        return max(min(configured, self.min_fps), configured * self.factor)


@dataclass
class _Camera:
    """One camera of a worker: its analysis, its stream (None while waiting to reconnect),
    and what its next statistics message needs."""

    spec: WorkerSpec
    analysis: CameraAnalysis
    source: FrameSource | None = None
    failures: int = 0
    retry_at: float = 0.0
    rate: float = 0.0
    seen_frame: bool = False
    analysed: int = 0
    packets: int = 0
    counted_since: float = 0.0  # monotonic start of what `analysed` and `packets` count
    size: tuple[int, int] = (0, 0)
    lags: list[float] = field(default_factory=list)
    # CPU-s and wall seconds of the analysis thread, and frames processed, since the last
    # statistics message.
    cpu: float = 0.0
    wall: float = 0.0
    processed: int = 0
    releasing: float | None = None  # monotonic time a Release came for it


def run_worker(specs: Sequence[WorkerSpec], outbox: Outbox,
               stop: multiprocessing.synchronize.Event, *, keyframes: bool = True,
               min_fps: float = MIN_FPS, control: Control | None = None) -> None:
    """Process entry point: analyse ``specs`` round-robin until ``stop`` is set.

    ``keyframes``: decode only the keyframes of a main stream (see vision/decode.py);
    ``control``: cameras to hand over or take on, from the supervisor.
    """
    # If the recorder dies, even by SIGKILL, its analysis processes go with it instead of
    # analysing on as orphans.
    parent = os.getppid()
    die_with_parent()
    if os.getppid() != parent:  # the parent died before prctl took effect
        return
    # Ctrl-C in a terminal reaches the whole process group; the node stops its workers itself,
    # in order, after the recorders have closed their segments.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.nice(NICENESS)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_filter()  # a failing stream's exception text holds its URL
    analyses = []
    for spec in specs:
        if stop.is_set():  # loading a camera's models takes ~0.5 s: a stop may come meanwhile
            return
        analyses.append(CameraAnalysis(spec, outbox))
    analyse_cameras(analyses, outbox, stop, keyframes=keyframes, min_fps=min_fps,
                    control=control)


def analyse_cameras(analyses: Sequence[CameraAnalysis], outbox: Outbox,
                    stop: multiprocessing.synchronize.Event, *, keyframes: bool = True,
                    min_fps: float = MIN_FPS, control: Control | None = None) -> None:
    """Analyse the cameras round-robin, each from its own stream, until ``stop`` is set;
    then end their motion spans and tracks. ``control``: cameras to hand over or take on."""
    cameras = [_Camera(a.spec, a, rate=a.spec.config.fps) for a in analyses]
    try:
        _analyse(cameras, outbox, stop, Shedder(min_fps), keyframes=keyframes,
                 control=control)
    finally:
        for cam in cameras:
            if cam.source is not None:
                cam.source.request_stop()  # all at once: each may take a read timeout to end
        _flush_all(cameras)


def _flush_all(cameras: list[_Camera]) -> None:
    """End every camera's motion span and tracks, side by side, for at most FLUSH_WAIT.

    A flush sends its messages first and then waits for its snapshots to be redacted; one
    after the other, 64 cameras' waits would add up past the node's stop time and the last
    cameras' messages would be lost with the killed process. Side by side, every camera's
    messages leave at once, and snapshots not written by FLUSH_WAIT are given up.
    """
    threads = [threading.Thread(target=cam.analysis.flush, name=f"flush-{cam.spec.camera}",
                                daemon=True) for cam in cameras]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + FLUSH_WAIT
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))


def _analyse(cameras: list[_Camera], outbox: Outbox, stop: multiprocessing.synchronize.Event,
             shedder: Shedder, *, keyframes: bool, control: Control | None = None) -> None:
    """Take each camera's newest frame in turn, until ``stop``."""
    ready = threading.Event()  # set by any decoder thread with a new frame
    busy = analysis_cpu = 0.0  # wall and CPU seconds spent analysing since the last report
    last_report = time.monotonic()
    cpu_at_report = time.process_time()
    while not stop.is_set():
        if control is not None:
            _take_commands(cameras, control, outbox, shedder)
            _hand_over(cameras, control)
        now = time.monotonic()
        ready.clear()  # before looking: a frame arriving while we look wakes the next wait
        worked = False
        for cam in list(cameras):
            if stop.is_set():  # a pass over many busy cameras takes seconds: stop within one
                return
            spent = _step(cam, outbox, ready, now, keyframes=keyframes)
            if spent is not None:
                busy += spent[0]
                analysis_cpu += spent[1]
                worked = True
        now = time.monotonic()
        if now - last_report >= STATS_INTERVAL:
            # The process's CPU beyond the analysis thread's (decoders, snapshot threads),
            # shared evenly by the cameras that stream.
            cpu_now = time.process_time()
            other = max(0.0, cpu_now - cpu_at_report - analysis_cpu) / (now - last_report)
            streaming = sum(cam.source is not None for cam in cameras) or 1
            _report(cameras, outbox, shedder, busy / (now - last_report), other / streaming)
            busy = analysis_cpu = 0.0
            last_report, cpu_at_report = now, cpu_now
        if not worked:
            ready.wait(0.5)


def _step(cam: _Camera, outbox: Outbox, ready: threading.Event, now: float, *,
          keyframes: bool) -> tuple[float, float] | None:
    """Analyse ``cam``'s newest frame, if one waits: (wall, CPU) seconds it took, or None."""
    if cam.source is None:
        if now >= cam.retry_at:
            cam.source = FrameSource(cam.spec.url, cam.rate, cam.spec.config.width,
                                     keyframes=keyframes, on_frame=ready.set)
            cam.source.start()
        return None
    try:
        frame = cam.source.take()
    except StreamError as exc:
        _offline(cam, outbox, str(exc) or "stream failed")
        return None
    if frame is None:
        if cam.source.done:
            _offline(cam, outbox, "stream ended")
        return None
    started, cpu = time.monotonic(), time.thread_time()
    try:
        cam.analysis.process(frame)
    except Exception as exc:  # one camera's failure must not stop the worker's others
        log.exception("%s: analysis failed", cam.spec.camera)
        _offline(cam, outbox, f"analysis failed: {exc}")
        return None
    finally:
        spent = (time.monotonic() - started, time.thread_time() - cpu)
        cam.wall += spent[0]
        cam.cpu += spent[1]
        cam.processed += 1
    _analysed(cam, frame, cam.source.stats.packets)
    return spent


def _analysed(cam: _Camera, frame: Frame, packets: int) -> None:
    height, width = frame.grey.shape
    cam.size = (width, height)
    if not cam.seen_frame:
        # Counting starts with the first frame: opening a stream takes time. A stream that
        # gives frames has recovered: the next failure waits from 1 s again.
        cam.seen_frame, cam.failures, cam.analysed, cam.packets = True, 0, 0, packets
        cam.counted_since = time.monotonic()
        return
    cam.analysed += 1
    cam.lags.append(time.time() - frame.t)


def _take_commands(cameras: list[_Camera], control: Control, outbox: Outbox,
                   shedder: Shedder) -> None:
    while True:
        try:
            command = control.commands.get_nowait()
        except queue.Empty:
            return
        if isinstance(command, Adopt):
            if any(cam.spec.camera == command.spec.camera for cam in cameras):
                continue  # already here (this worker was restarted with it)
            spec = command.spec
            log.info("%s: taken over from another analysis process", spec.camera)
            cameras.append(_Camera(spec, CameraAnalysis(spec, outbox),
                                   rate=shedder.rate(spec.config.fps)))
            continue
        cam = next((c for c in cameras if c.spec.camera == command.camera), None)
        if cam is None:  # not here (any more): nothing to finish
            control.released.put(command.camera)
        elif cam.releasing is None:
            cam.releasing = time.monotonic()


def _hand_over(cameras: list[_Camera], control: Control) -> None:
    """Let go of the cameras being released whose tracks have ended (or that waited long
    enough): their tracks, motion span and visit end here, their snapshots are written."""
    now = time.monotonic()
    for cam in [c for c in cameras if c.releasing is not None]:
        assert cam.releasing is not None
        if cam.analysis.tracker.active and now - cam.releasing < RELEASE_WAIT:
            continue
        if cam.source is not None:
            cam.source.close(timeout=0)  # its thread ends at its next packet
            cam.source = None
        cam.analysis.flush()
        cam.analysis.snapshots.close()
        cameras.remove(cam)
        control.released.put(cam.spec.camera)
        log.info("%s: handed over to another analysis process", cam.spec.camera)


def _report(cameras: list[_Camera], outbox: Outbox, shedder: Shedder, busy: float,
            other: float = 0.0) -> None:
    """Statistics of every streaming camera, then the rates for the next interval.
    ``other``: each streaming camera's share of the CPU the worker spent outside analysis."""
    before = shedder.factor
    factor = shedder.update(busy)
    # Logged once when shedding starts and once when it ends, not every interval.
    if factor < 1.0 <= before:
        log.warning("analysis of %s cannot keep up (busy %.0f%% of the time): rates lowered",
                    ", ".join(c.spec.camera for c in cameras), 100 * busy)
    elif before < 1.0 <= factor:
        log.info("analysis of %s keeps up again: configured rates restored",
                 ", ".join(c.spec.camera for c in cameras))
    for cam in cameras:
        configured = cam.spec.config.fps
        rate = shedder.rate(configured)
        now = time.monotonic()
        elapsed = now - cam.counted_since
        # A camera whose first frame came within the interval waits for the next report: a
        # rate over a fraction of a second says little.
        if cam.source is not None and cam.seen_frame and elapsed >= STATS_INTERVAL / 2:
            packets = cam.source.stats.packets
            outbox.put(Stats(
                cam.spec.camera, True, "", cam.analysed / elapsed, _p95(cam.lags),
                cam.source.stats.dropped, *cam.size,
                stream_fps=(packets - cam.packets) / elapsed,
                analysis_fps=cam.rate, shed=cam.rate < configured,
                cpu_per_frame=cam.cpu / cam.processed if cam.processed else 0.0,
                cpu_other=other,
                wall_per_frame=cam.wall / cam.processed if cam.processed else 0.0,
            ))
            cam.packets, cam.analysed, cam.counted_since = packets, 0, now
            cam.cpu, cam.wall, cam.processed = 0.0, 0.0, 0
            cam.lags.clear()
        if rate != cam.rate:
            cam.rate = rate
            if cam.source is not None:
                cam.source.set_fps(rate)


def _offline(cam: _Camera, outbox: Outbox, reason: str) -> None:
    """The stream failed or ended: close what was open and retry after a backoff."""
    # OpenCV's and ffmpeg's errors repeat the stream URL, password included; the reason
    # ends up on the status page.
    reason = mask_credentials(reason, cam.spec.url)
    assert cam.source is not None
    cam.source.close(timeout=0)  # its thread has ended or is about to; nobody waits for it
    cam.source = None
    cam.seen_frame = False
    cam.lags.clear()
    cam.analysis.flush()
    cam.failures += 1
    cam.retry_at = time.monotonic() + backoff(cam.failures)
    outbox.put(Stats(cam.spec.camera, False, reason, 0.0, 0.0, 0, 0, 0,
                     analysis_fps=cam.rate, shed=cam.rate < cam.spec.config.fps))


def _p95(values: list[float]) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=20)[-1]
