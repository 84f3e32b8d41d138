"""Live view pictures: how one is redacted, and how it travels from the live picture service
(custodes.live) to the web server.

    <storage>/live/<camera>.watch    rewritten by the API on every live request (request_live):
                                     its time says someone watches, its text the tile's width
    <storage>/live/<camera>.jpg      the newest redacted picture (write_picture); its
                                     modification time is the frame's capture time
    <storage>/live/<camera>.state    JSON: what the service is doing for that camera (LiveState)

Files, not a pipe: the service is a process of its own (a crash in a decoder or the detector
must not take the recorder down) and the web server may restart; both just look again. Every
file is replaced atomically (temporary file, then os.replace): a reader never sees half one.

Redaction (LiveRedactor) searches the picture at the size it is served: a face too small for
the detector there is too small to recognise there. It fails closed: a picture whose search
fails is served fully obscured, never as it is.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from custodes.record.layout import Layout
from custodes.redaction.blur import Polygon, blur_polygons, blur_regions, encode_jpeg
from custodes.redaction.detect import NODE_SETTINGS, RedactionSettings, blur_boxes
from custodes.vision.faces import Box, FaceDetector

log = logging.getLogger(__name__)

U8 = npt.NDArray[np.uint8]

WATCH_SECONDS: Final = 5.0  # a request keeps the live picture coming this long
MAX_AGE: Final = 10.0  # latest_live ignores a picture captured longer ago than this
STATE_MAX_AGE: Final = 3.0  # read_state ignores a state older than this (the service writes
# one a second for every watched camera: an older one is from a service that stopped)
# Widths a picture is made at. A tile gets the narrowest that it shows enlarged at most
# MAX_ENLARGEMENT times: the detector's cost grows with the pixels (on one core of the 2-core
# box ~23 ms at 320x180, 48 ms at 480x270, 80 ms at 640x360), so a 9-tile grid on a 1400 px
# screen costs 320 px pictures, a 4-tile grid 480, one tile 640.
LIVE_WIDTHS: Final = (320, 480, 640)
MAX_ENLARGEMENT: Final = 1.5


class State:
    """What a watched camera's live picture is doing (LiveState.state)."""

    STARTING: Final = "starting"  # the stream is being opened
    LIVE: Final = "live"  # pictures come at least at the service's least rate
    BUSY: Final = "busy"  # the server cannot keep up, or too many cameras are watched
    DOWN: Final = "down"  # the camera's stream failed; retried with a backoff


def picture_path(folder: Path, camera: str) -> Path:
    return folder / f"{camera}.jpg"


def watch_path(folder: Path, camera: str) -> Path:
    return folder / f"{camera}.watch"


def state_path(folder: Path, camera: str) -> Path:
    return folder / f"{camera}.state"


def live_width(requested: int | None) -> int:
    """The picture width for a tile `requested` pixels wide (None: the smallest)."""
    if requested is None:
        return LIVE_WIDTHS[0]
    return min([w for w in LIVE_WIDTHS if w * MAX_ENLARGEMENT >= requested],
               default=LIVE_WIDTHS[-1])


def request_live(layout: Layout, camera: str, width: int = LIVE_WIDTHS[0]) -> None:
    """Someone watches `camera` at `width` (one of LIVE_WIDTHS, see live_width): have the live
    picture service make its pictures for WATCH_SECONDS."""
    path = watch_path(layout.live, camera)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written in place, not replaced: a reader that catches it empty takes the default width
    # for one look, which is harmless, and a rename per request would be two syscalls more.
    path.write_text(str(width))


def read_watch(folder: Path, camera: str, now: float | None = None) -> int | None:
    """The width asked for `camera` within WATCH_SECONDS, or None when nobody watches."""
    path = watch_path(folder, camera)
    try:
        touched = path.stat().st_mtime
        if (now if now is not None else time.time()) - touched > WATCH_SECONDS:
            return None
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    width = int(text) if text.isdigit() else 0
    return width if width in LIVE_WIDTHS else LIVE_WIDTHS[0]


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


def _replace(target: Path, data: bytes, mtime: float | None = None) -> None:
    tmp = target.with_name(f".{target.name}.partial")
    tmp.write_bytes(data)
    if mtime is not None:
        os.utime(tmp, (mtime, mtime))
    os.replace(tmp, target)


def write_picture(folder: Path, camera: str, jpeg: bytes, captured: float) -> None:
    """Replace `camera`'s live picture; its modification time carries the capture time."""
    _replace(picture_path(folder, camera), jpeg, captured)


@dataclass(frozen=True)
class LiveState:
    state: str  # a State value
    detail: str  # for the viewer: why, in a few words
    fps: float  # pictures written per second lately
    width: int  # of the pictures
    cost_ms: float  # CPU per picture lately (search, blur, JPEG)
    at: float  # UTC epoch seconds when written


def write_state(folder: Path, camera: str, state: LiveState) -> None:
    _replace(state_path(folder, camera), json.dumps(asdict(state)).encode())


def read_state(folder: Path, camera: str, max_age: float = STATE_MAX_AGE) -> LiveState | None:
    """What the service last said about `camera`, if it said it within `max_age` seconds."""
    try:
        fields = json.loads(state_path(folder, camera).read_bytes())
        state = LiveState(**fields)
    except (FileNotFoundError, ValueError, TypeError):
        return None  # none yet, or written by another version: as good as none
    return state if time.time() - state.at <= max_age else None


class LiveRedactor:
    """Redacts one camera's live pictures, one after the other.

    Each picture is searched whole with redaction's detector at its own size, and a face
    found in the last `settings.hold` seconds stays blurred, its box grown by `settings.spread`
    face sizes a second (as redacted copies do between searches): a face the detector misses
    in one picture, turning or blurred by motion, is still covered from the pictures before.
    """

    def __init__(self, zones: Sequence[Polygon] = (), *,
                 settings: RedactionSettings = NODE_SETTINGS,
                 detector: FaceDetector | None = None) -> None:
        self.zones = list(zones)
        self.settings = settings
        self.detector = detector or settings.detector()
        # (capture time, picture width, blur boxes) of recent pictures, oldest first.
        self._held: deque[tuple[float, int, list[Box]]] = deque()
        self.failures = 0

    def redact(self, rgb: U8, t: float) -> U8:
        """A copy of the RGB picture captured at `t` with faces and privacy zones obscured;
        the whole picture obscured if the search fails."""
        height, width = rgb.shape[:2]
        try:
            found = blur_boxes(self.detector.find(rgb, scale=1.0))
        except Exception:
            # Fail closed: without a search nothing in the picture is known to be safe.
            if self.failures == 0:
                log.exception("live picture search failed: serving obscured pictures")
            self.failures += 1
            return blur_regions(rgb, [Box(0, 0, width, height)], margin=0, ellipse=False)
        if self.failures:
            log.info("live picture search works again after %d failures", self.failures)
            self.failures = 0
        boxes = [*found, *self._held_boxes(t, width)]
        while self._held and t - self._held[0][0] > self.settings.hold:
            self._held.popleft()
        self._held.append((t, width, found))
        redacted = blur_regions(rgb, boxes)
        return blur_polygons(redacted, self.zones) if self.zones else redacted

    def jpeg(self, rgb: U8, t: float) -> bytes:
        return encode_jpeg(self.redact(rgb, t))

    def _held_boxes(self, t: float, width: int) -> list[Box]:
        out = []
        for seen, seen_width, boxes in self._held:
            if not 0 <= t - seen <= self.settings.hold:
                continue
            ratio = width / seen_width  # the tile may have changed size since
            grow = self.settings.spread * (t - seen)
            for box in boxes:
                scaled = box if ratio == 1 else Box(
                    math.floor(box.x * ratio), math.floor(box.y * ratio),
                    math.ceil(box.w * ratio), math.ceil(box.h * ratio))
                out.append(scaled.expand(grow))
        return out
