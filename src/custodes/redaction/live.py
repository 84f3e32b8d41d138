"""Live view pictures: a redacted JPEG of a camera's newest analysed frame, while watched.

    <storage>/live/<camera>.watch    touched by the API on every live request (request_live)
    <storage>/live/<camera>.jpg      written by the camera's analysis worker (LiveWriter)

The analysis worker already decodes the camera at the analysis rate, so the live picture costs
no second decoder: the worker offers each analysed frame with the boxes its tracker follows,
and a thread of its own redacts it (a fresh face scan with redaction's detector, CenterFace at
REDACT_THRESHOLD, plus those boxes and the privacy zones) and replaces the JPEG atomically
(temporary file, then os.replace: a reader never sees half a picture). Nothing is done unless
someone watched within WATCH_SECONDS, and at most `fps` pictures a second are made; a frame
that arrives while the previous one is still being redacted replaces the waiting one (newest
wins), so the picture never lags behind the camera by more than one redaction. The JPEG's
modification time is the frame's capture time. A redaction takes ~0.1 s at 640x360 on one
core of the 2-core box (the detector's scan; the blur and the JPEG ~3 ms), so LIVE_FPS
pictures a second cost ~0.3 s of CPU a second per watched camera.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from custodes.record.layout import Layout
from custodes.redaction.blur import Polygon, encode_jpeg, redact_snapshot
from custodes.redaction.detect import NODE_SETTINGS, RedactionSettings
from custodes.vision.decode import Frame
from custodes.vision.faces import Box

log = logging.getLogger(__name__)

WATCH_SECONDS: Final = 5.0  # a request keeps the live picture coming this long
LIVE_FPS: Final = 3.0  # most pictures per second per camera
WATCH_CHECK: Final = 0.5  # seconds between looks at the watch file (a stat per frame is waste)
MAX_AGE: Final = 10.0  # latest_live ignores a picture captured longer ago than this


def picture_path(folder: Path, camera: str) -> Path:
    return folder / f"{camera}.jpg"


def watch_path(folder: Path, camera: str) -> Path:
    return folder / f"{camera}.watch"


def request_live(layout: Layout, camera: str) -> None:
    """Someone watches `camera`: have its worker write live pictures for WATCH_SECONDS."""
    path = watch_path(layout.live, camera)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def latest_live(layout: Layout, camera: str, max_age: float = MAX_AGE
                ) -> tuple[bytes, float] | None:
    """The newest live JPEG of `camera` and its capture time (UTC epoch seconds), or None
    when there is none captured within `max_age` seconds."""
    path = picture_path(layout.live, camera)
    try:
        with path.open("rb") as f:
            captured = os.fstat(f.fileno()).st_mtime
            data = f.read()
    except FileNotFoundError:
        return None
    if time.time() - captured > max_age:
        return None
    return data, captured


class LiveWriter:
    """Redacts and writes one camera's live picture in a thread of its own, while watched."""

    def __init__(self, folder: Path, camera: str, zones: Sequence[Polygon] = (), *,
                 fps: float = LIVE_FPS,
                 settings: RedactionSettings = NODE_SETTINGS) -> None:
        self.folder = folder
        self.camera = camera
        self.zones = list(zones)
        self.interval = 1.0 / fps
        self.check_every = WATCH_CHECK
        self.ages: deque[float] = deque(maxlen=100)  # capture-to-written seconds, newest last
        # Redaction's own detector (REDACT_THRESHOLD, any size), not the analysis one: the
        # analysis settings are for recognition. Frames come at the analysis width, so a
        # picture costs the same on any camera.
        self.detector = settings.detector()
        self._lock = threading.Condition()
        self._waiting: tuple[Frame, list[Box]] | None = None
        self._busy = False
        self._closed = False
        self._last_offer = float("-inf")  # capture time of the last frame taken
        self._watched = False
        self._checked = float("-inf")  # monotonic time of the last look at the watch file
        folder.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name=f"live-{camera}", daemon=True)
        self._thread.start()

    def watched(self) -> bool:
        """Whether someone asked for the picture within WATCH_SECONDS (looked up at most every
        `check_every` seconds)."""
        now = time.monotonic()
        if now - self._checked >= self.check_every:
            self._checked = now
            try:
                touched = watch_path(self.folder, self.camera).stat().st_mtime
                self._watched = time.time() - touched <= WATCH_SECONDS
            except FileNotFoundError:
                self._watched = False
        return self._watched

    def offer(self, frame: Frame, known: list[Box]) -> bool:
        """Hand over an analysed frame and the face boxes known in it; True if taken.

        Cheap when nobody watches: no colour conversion, no copy.
        """
        if frame.t - self._last_offer < self.interval or not self.watched():
            return False
        self._last_offer = frame.t
        # Converted here, in the analysis thread (~1 ms at 640x360): the frame's decoder-side
        # converter is not to be used from two threads, and the tracker may want it too.
        frame.rgb()
        with self._lock:
            self._waiting = (frame, list(known))
            self._lock.notify_all()
        return True

    def drain(self) -> None:
        """Wait until the picture of the last frame taken is written."""
        with self._lock:
            while self._waiting is not None or self._busy:
                self._lock.wait()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._lock:
                while self._waiting is None and not self._closed:
                    self._lock.wait()
                if self._closed or self._waiting is None:
                    return
                (frame, known), self._waiting = self._waiting, None
                self._busy = True
            try:
                self._write(frame, known)
            except Exception:
                log.exception("%s: could not write the live picture", self.camera)
            finally:
                with self._lock:
                    self._busy = False
                    self._lock.notify_all()

    def _write(self, frame: Frame, known: list[Box]) -> None:
        redacted = redact_snapshot(frame.rgb(), self.detector, known, zones=self.zones)
        target = picture_path(self.folder, self.camera)
        tmp = target.with_name(f".{target.name}.partial")
        tmp.write_bytes(encode_jpeg(redacted))
        os.utime(tmp, (frame.t, frame.t))  # the capture time travels with the picture
        os.replace(tmp, target)
        self.ages.append(time.time() - frame.t)
