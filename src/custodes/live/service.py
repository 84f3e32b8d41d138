"""The live picture service: redacted pictures of the cameras someone watches, from decoders of
its own, never waiting on analysis.

    watch files (the API) -> a feed per watched camera: its sub stream (or main stream
    keyframes) decoded, the newest frame kept -> a redaction thread takes the newest frame
    of the camera whose picture is due and waited longest -> <camera>.jpg + <camera>.state

Why its own decoders rather than the analysis worker's frames: one analysis process takes its
cameras in turn and sheds its rate under load (to one frame in 5 s), so a picture made from its
frames waited for the whole round (4-5 s on the 2-core box with 9 cameras). A second decoder
of a sub stream costs ~1 % of a core; the search for faces is the cost either way.

Where a picture's time goes, at 320 px on one core of the 2-core box (measured at load average
0.6): CenterFace's search ~20 ms, everything else ~1 ms (scaling 0.1, colour 0.03, blur
0.2, JPEG 0.2, writing 0.2); decoding every frame of a 480x270 sub stream ~0.8 ms a frame,
12 ms a second per camera. So nine tiles at 2.5 pictures a second cost ~0.6 of a core. One
run of the network for several tiles at once costs more per picture, not less (29.6 ms for
nine against 19.3 ms alone: the batch's activations no longer fit the cache): not done.

Why the newest frame when a thread is free (Schedule.NEWEST) rather than frames sampled at the
picture rate (Schedule.SAMPLED, before): a sampled frame waited for the thread while the other
cameras' pictures were made, up to a whole round, and that wait showed as picture age on
screen. Now the decoders keep frames at SAMPLE_FPS, a thread takes the newest, and each
camera's pictures are paced at the service's rate.

CPU is bounded three ways: at most `max_feeds` cameras are decoded at once (more watched ones
are told the server is busy), each camera's pictures come at most at `fps` a second, and when
the threads are busy more than SHED_HIGH of the time that rate is lowered (not below
SHED_FLOOR), raised again below SHED_LOW. A camera whose pictures come slower than MIN_FPS says
"busy". Nothing runs for a camera nobody watched in the last WATCH_SECONDS.

Redaction does not depend on the schedule: every picture sent is searched itself
(custodes.redaction.live.LiveRedactor, which also holds recent faces), and a picture whose
search fails is sent wholly obscured.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final, Protocol

from custodes.process import backoff
from custodes.redaction.blur import Polygon
from custodes.redaction.detect import NODE_SETTINGS
from custodes.redaction.live import (
    WATCH_SECONDS,
    LiveRedactor,
    LiveState,
    State,
    read_watch,
    write_picture,
    write_state,
)
from custodes.vision.decode import Frame, FrameSource, StreamError
from custodes.vision.faces import FaceDetector

log = logging.getLogger(__name__)

LIVE_FPS: Final = 4.0  # pictures a second per watched camera while the threads keep up
# The least rate: below it a camera says "busy". At 2 pictures a second a picture on screen is
# at most ~0.5 s older than its successor, which keeps its age under 1 s with ~0.3 s to make it.
MIN_FPS: Final = 2.0
# The least rate load shedding asks for (Schedule.NEWEST): above MIN_FPS, so that a camera
# whose pictures come a little late now and then still gets MIN_FPS.
SHED_FLOOR: Final = 2.5
# Frames a second each decoder keeps for the threads (Schedule.NEWEST): a frame is at most
# 1/SAMPLE_FPS old when a thread takes it. Each kept frame costs its scaling, ~0.1 ms (its
# decoding, ~0.8 ms at 480x270, is paid for every frame whatever the rate).
SAMPLE_FPS: Final = 8.0
MAX_FEEDS: Final = 16  # cameras decoded at once
SCAN_EVERY: Final = 0.25  # seconds between looks at the watch files
STATE_EVERY: Final = 1.0  # seconds between state files (and rate decisions)
RATE_WINDOW: Final = 3.0  # seconds over which a camera's picture rate is measured
# Rate decisions, as analysis makes them (custodes.analytics.worker): the share of wall time
# the threads spent making pictures.
SHED_HIGH: Final = 0.85
SHED_TARGET: Final = 0.7
SHED_LOW: Final = 0.6
SHED_RAISE: Final = 1.25


class Schedule(StrEnum):
    """How the threads take the pictures they make."""

    # The newest frame of the camera whose picture is due, taken when a thread is free, each
    # camera's pictures paced at the service's rate: the default.
    NEWEST = "newest"
    # The frame the decoder sampled at the service's rate, which waits for a free thread: the
    # schedule before NEWEST, kept as the baseline of bench/live_grid.py.
    SAMPLED = "sampled"


def default_threads() -> int:
    """Pictures searched at once: all cores but one (that one is recording's and the web
    server's, as for analysis), but two on a 2-core box. Not for more pictures (each camera's
    rate is capped, and shed when the threads are busy) but for their share of the cores,
    which the kernel gives per thread: in quiet runs of tests/test_browser_live.py one thread
    for nine tiles, beside the process's nine decoder threads, a browser and analysis, was
    busy all the time yet made only 1.8-1.9 pictures a second a tile (~17 a second, where a
    free core makes ~45). Two are not yet measured on a quiet box: bench/live_grid.py."""
    cores = len(os.sched_getaffinity(0))
    return max(min(2, cores), cores - 1)


class StopSignal(Protocol):
    """A threading or a multiprocessing Event. Only looked at, never waited on: a process
    killed while waiting on a multiprocessing Event stays counted as a sleeper, and the node's
    `set` would then wait for it for ever."""

    def is_set(self) -> bool: ...


@dataclass(frozen=True)
class LiveCamera:
    name: str
    url: str  # the sub stream if the camera has one, else the main stream
    zones: tuple[Polygon, ...] = ()


class _Feed:
    """One watched camera: its decoder, the frame waiting for a thread, what was made."""

    def __init__(self, camera: LiveCamera, width: int) -> None:
        self.camera = camera
        self.width = width
        self.source: FrameSource | None = None
        self.pending: Frame | None = None
        self.redacting = False
        self.redactor: LiveRedactor | None = None  # made by the first thread to take a frame
        self.due = 0.0  # monotonic time from which its next picture may be made (NEWEST)
        self.failures = 0
        self.retry_at = 0.0  # monotonic
        self.error = ""
        self.opened = 0.0  # monotonic time the current source was started
        self.asked: dict[int, float] = {}  # width: monotonic time it was last asked for
        self.written: deque[float] = deque(maxlen=64)  # monotonic times pictures were written
        self.costs: deque[float] = deque(maxlen=32)  # CPU seconds per picture
        self.state = ""

    def rate(self, now: float) -> float:
        """Pictures a second over the last RATE_WINDOW (less at the start of the feed)."""
        window = min(RATE_WINDOW, now - self.opened)
        if window < 1.0:
            return 0.0
        return sum(1 for t in self.written if now - t <= window) / window

    def redactor_for(self, detector: FaceDetector) -> LiveRedactor:
        if self.redactor is None:
            self.redactor = LiveRedactor(self.camera.zones, detector=detector)
        return self.redactor


class LiveService:
    """Makes live pictures in `folder` for the watched ones of `cameras` until `stop`."""

    def __init__(self, folder: Path, cameras: Sequence[LiveCamera], *,
                 threads: int | None = None, max_feeds: int = MAX_FEEDS,
                 fps: float = LIVE_FPS, min_fps: float = MIN_FPS,
                 schedule: Schedule = Schedule.NEWEST) -> None:
        self.folder = folder
        self.cameras = {c.name: c for c in cameras}
        self.threads = threads or default_threads()
        self.max_feeds = max_feeds
        self.max_fps = fps
        self.min_fps = min_fps
        self.schedule = schedule
        # The least rate shedding asks for; the old schedule shed down to the busy cut itself.
        self.floor = min(fps, max(min_fps, SHED_FLOOR)) if schedule == Schedule.NEWEST \
            else min_fps
        self.fps = fps  # the rate asked of every feed now
        self._feeds: dict[str, _Feed] = {}
        self._lock = threading.Lock()
        self._ready = threading.Event()  # a decoder has a new frame, or a thread is free
        self._busy = 0.0  # seconds the threads spent making pictures since the last decision
        folder.mkdir(parents=True, exist_ok=True)

    # -- the manager: watches, feeds, states, rates -----------------------------------------

    def run(self, stop: StopSignal) -> None:
        work = self._work_newest if self.schedule == Schedule.NEWEST else self._work
        workers = [threading.Thread(target=work, args=(stop,), name=f"live-{i}",
                                    daemon=True) for i in range(self.threads)]
        for worker in workers:
            worker.start()
        decided = time.monotonic()
        try:
            while not stop.is_set():
                time.sleep(SCAN_EVERY)
                over = self._manage()
                now = time.monotonic()
                if now - decided >= STATE_EVERY:
                    self._decide(now - decided)
                    self._publish(over)
                    decided = now
        finally:
            self._ready.set()
            with self._lock:
                feeds, self._feeds = list(self._feeds.values()), {}
            for feed in feeds:
                if feed.source is not None:
                    feed.source.request_stop()
            for worker in workers:
                worker.join(timeout=2)

    def _sample_fps(self) -> float:
        """The rate the decoders keep frames at: the picture rate itself for the old schedule;
        for NEWEST, a fixed rate above it, the threads taking the newest (see SAMPLE_FPS)."""
        return max(SAMPLE_FPS, self.max_fps) if self.schedule == Schedule.NEWEST \
            else self.fps

    def _manage(self) -> list[str]:
        """Start feeds for newly watched cameras, end those nobody watches; returns the
        watched cameras left without a feed (over `max_feeds`)."""
        now_wall, now = time.time(), time.monotonic()
        watched: dict[str, int] = {}
        for name in self.cameras:
            width = read_watch(self.folder, name, now_wall)
            if width is not None:
                watched[name] = width
        over: list[str] = []
        with self._lock:
            for name in [n for n in self._feeds if n not in watched]:
                gone = self._feeds.pop(name)
                if gone.source is not None:
                    gone.source.request_stop()  # its thread ends at the next packet
                log.info("%s: nobody watches, live pictures stopped", name)
            for name, asked in watched.items():
                feed = self._feeds.get(name)
                if feed is None:
                    if len(self._feeds) >= self.max_feeds:
                        over.append(name)
                        continue
                    feed = self._feeds[name] = _Feed(self.cameras[name], asked)
                    log.info("%s: watched, live pictures at %d px wide", name, asked)
                # Two viewers with tiles of different sizes: the larger one's width, rather
                # than the size flipping with whoever asked last.
                feed.asked[asked] = now
                feed.asked = {w: t for w, t in feed.asked.items() if now - t <= WATCH_SECONDS}
                width = max(feed.asked)
                if feed.width != width:
                    feed.width = width
                    if feed.source is not None:
                        feed.source.set_width(width)
                if feed.source is None and now >= feed.retry_at:
                    feed.source = FrameSource(feed.camera.url, self._sample_fps(), feed.width,
                                              on_frame=self._ready.set)
                    feed.opened = now
                    feed.source.start()
        return over

    def _decide(self, interval: float) -> None:
        """Lower or raise every feed's rate by how busy the threads were."""
        with self._lock:
            busy, self._busy = self._busy / (interval * self.threads), 0.0
            before = self.fps
            if busy > SHED_HIGH:
                self.fps = max(self.floor, self.fps * SHED_TARGET / busy)
            elif busy < SHED_LOW:
                self.fps = min(self.max_fps, self.fps * SHED_RAISE)
            if self.fps != before and self.schedule == Schedule.SAMPLED:
                for feed in self._feeds.values():
                    if feed.source is not None:
                        feed.source.set_fps(self.fps)
        # Logged when the rate first drops and when it is back, not at every step.
        if self.fps < self.max_fps <= before:
            log.warning("live pictures: busy %.0f%% of the time, rate lowered to %.1f/s",
                        100 * busy, self.fps)
        elif before < self.max_fps <= self.fps:
            log.info("live pictures: back at %.1f/s", self.fps)

    def _publish(self, over: list[str]) -> None:
        """A state file for every watched camera."""
        now_wall, now = time.time(), time.monotonic()
        states = []
        with self._lock:
            for feed in self._feeds.values():
                rate = feed.rate(now)
                cost = 1000 * sum(feed.costs) / len(feed.costs) if feed.costs else 0.0
                state, detail = self._judge(feed, rate, now)
                if state != feed.state:
                    feed.state = state
                    if state in (State.DOWN, State.BUSY):
                        log.warning("%s: live picture %s (%s)", feed.camera.name, state, detail)
                states.append((feed.camera.name, LiveState(state, detail, round(rate, 2),
                                                           feed.width, round(cost, 1),
                                                           now_wall)))
        for name in over:
            states.append((name, LiveState(
                State.BUSY, f"server busy: more than {self.max_feeds} cameras watched at once",
                0.0, 0, 0.0, now_wall)))
        for name, live in states:
            write_state(self.folder, name, live)

    def _judge(self, feed: _Feed, rate: float, now: float) -> tuple[str, str]:
        source = feed.source
        if source is None or (feed.error and source.stats.sampled == 0):
            # Down until a retry gives a frame: a retry that hangs in its connection timeout
            # is not "starting" again.
            return State.DOWN, f"camera down: {feed.error}"
        if source.stats.sampled == 0:
            return State.STARTING, "connecting to the camera"
        if source.keyframes_only:
            # A main stream is decoded keyframes only (custodes.vision.decode): its rate is the
            # camera's keyframe rate, often 1/s. A sub stream would give the full rate.
            return State.LIVE, "keyframes only: the camera has no sub stream"
        if now - feed.opened >= RATE_WINDOW and rate < self.min_fps:
            return State.BUSY, f"server busy: {rate:.1f} pictures a second"
        if not feed.written:
            return State.STARTING, "making the first picture"
        return State.LIVE, ""

    # -- the threads that make pictures (Schedule.NEWEST) -----------------------------------

    def _work_newest(self, stop: StopSignal) -> None:
        # One detector per thread: the network is shared by the process (vision.centerface),
        # the landmark model is each detector's own.
        detector = NODE_SETTINGS.detector()
        while not stop.is_set():
            self._ready.clear()  # before looking: a frame arriving meanwhile wakes the wait
            job, wait = self._due()
            if job is None:
                self._ready.wait(wait)
                continue
            self._make(detector, *job)

    def _make(self, detector: FaceDetector, feed: _Feed, frame: Frame) -> None:
        wall, cpu = time.monotonic(), time.thread_time()
        try:
            jpeg = feed.redactor_for(detector).jpeg(frame.rgb(), frame.t)
            write_picture(self.folder, feed.camera.name, jpeg, frame.t)
        except Exception:  # one camera's bad frame must not stop the others' pictures
            log.exception("%s: could not make a live picture", feed.camera.name)
        finally:
            done = time.monotonic()
            with self._lock:
                feed.redacting = False
                feed.written.append(done)
                feed.costs.append(time.thread_time() - cpu)
                self._busy += done - wall
            self._ready.set()  # the feed may have a frame waiting for a free thread

    def _due(self) -> tuple[tuple[_Feed, Frame] | None, float]:
        """The newest frame of the camera whose picture is due and waited longest, or none and
        how long to wait for one to fall due."""
        now = time.monotonic()
        interval = 1.0 / self.fps
        with self._lock:
            for feed in self._feeds.values():
                self._collect(feed, now)
            waiting = [f for f in self._feeds.values()
                       if f.pending is not None and not f.redacting]
            ready = [f for f in waiting if f.due <= now]
            if not ready:
                # A new frame wakes the thread too; a feed with a frame falls due by itself.
                wait = min((f.due - now for f in waiting), default=0.5)
                return None, min(0.5, max(0.001, wait))
            # Fairness: the camera whose last picture is oldest goes first, so that a busy
            # server lowers every tile's rate alike instead of starving some.
            feed = min(ready, key=lambda f: f.written[-1] if f.written else float("-inf"))
            frame, feed.pending = feed.pending, None
            assert frame is not None
            feed.redacting = True
            # Due again one interval after it was due, not after it was taken: a picture made
            # late does not lower the rate, and one made very late does not bring several at
            # once (at most one interval is caught up).
            feed.due = max(feed.due, now - interval) + interval
            return (feed, frame), 0.0

    # -- the threads that make pictures (Schedule.SAMPLED) ----------------------------------

    def _work(self, stop: StopSignal) -> None:
        detector = NODE_SETTINGS.detector()
        while not stop.is_set():
            self._ready.clear()  # before looking: a frame arriving meanwhile wakes the wait
            job = self._next()
            if job is None:
                self._ready.wait(0.5)
                continue
            self._make(detector, *job)

    def _next(self) -> tuple[_Feed, Frame] | None:
        """The newest frame of the feed that waited longest for a picture, if any waits."""
        # No frame is dropped for its age: the pending one is the newest the decoder has, and a
        # starved decoder makes every frame old; dropping them would leave the tile with none.
        now = time.monotonic()
        with self._lock:
            for feed in self._feeds.values():
                self._collect(feed, now)
            ready = [f for f in self._feeds.values()
                     if f.pending is not None and not f.redacting]
            if not ready:
                return None
            # Fairness: the camera whose last picture is oldest goes first, so that a busy
            # server lowers every tile's rate alike instead of starving some.
            feed = min(ready, key=lambda f: f.written[-1] if f.written else float("-inf"))
            frame, feed.pending = feed.pending, None
            assert frame is not None
            feed.redacting = True
            return feed, frame

    # -- both -------------------------------------------------------------------------------

    def _collect(self, feed: _Feed, now: float) -> None:
        """Move the decoder's newest frame to `pending`; note a failed stream (under the lock)."""
        if feed.source is None:
            return
        try:
            frame = feed.source.take()
        except StreamError as exc:
            self._failed(feed, str(exc) or "stream failed", now)
            return
        if frame is not None:
            feed.pending = frame
            if feed.failures:
                log.info("%s: live stream back", feed.camera.name)
            feed.failures, feed.error = 0, ""
        elif feed.source.done:
            self._failed(feed, "stream ended", now)

    def _failed(self, feed: _Feed, reason: str, now: float) -> None:
        assert feed.source is not None
        feed.source.close(timeout=0)
        feed.source = None
        feed.failures += 1
        feed.error = reason
        feed.retry_at = now + backoff(feed.failures)
        if feed.failures == 1:  # once when it fails, not every retry
            log.warning("%s: live stream failed: %s", feed.camera.name, reason)
