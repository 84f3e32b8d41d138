"""Motion: what moved in a frame, and when a camera's motion starts and ends.

Each analysed frame is shrunk to a small grey image, blurred, and compared with a running
average of the recent frames (a background that adapts to light changes in a few seconds).
Pixels that differ by more than ``threshold`` grey levels move; masked areas never do.
Connected moving areas above ``min_area`` are reported as boxes in the analysed frame's
coordinates: the face detector searches only there.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import cv2
import numpy as np
import numpy.typing as npt

from custodes.config import MotionConfig
from custodes.vision.faces import Box

Grey = npt.NDArray[np.uint8]

SMALL_WIDTH = 160  # motion is judged on a 160-pixel-wide image: fast, and noise averages out
BACKGROUND_RATE = 0.2  # share of each new frame blended into the background


@dataclass(frozen=True)
class MotionResult:
    area: float  # share of the (unmasked) frame that moved, 0..1
    boxes: list[Box]  # in pixels of the analysed frame


class MotionDetector:
    def __init__(self, config: MotionConfig, width: int, height: int) -> None:
        self.config = config
        self.width, self.height = width, height
        self.scale = SMALL_WIDTH / width
        self.small = (SMALL_WIDTH, max(1, round(height * self.scale)))
        self.mask = self._mask()
        self.counted = int(np.count_nonzero(self.mask)) or 1
        self._background: npt.NDArray[np.float32] | None = None

    def _mask(self) -> Grey:
        """255 where motion counts, 0 in the configured masks."""
        w, h = self.small
        mask = np.full((h, w), 255, np.uint8)
        for polygon in self.config.masks:
            points = np.array([(x * w, y * h) for x, y in polygon], np.int32)
            cv2.fillPoly(mask, [points], 0)
        return mask

    def update(self, grey: Grey) -> MotionResult:
        small = cv2.resize(grey, self.small, interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (5, 5), 0)
        if self._background is None:
            self._background = small.astype(np.float32)
            return MotionResult(0.0, [])
        diff = cv2.absdiff(small, cv2.convertScaleAbs(self._background))
        cv2.accumulateWeighted(small, self._background, BACKGROUND_RATE)
        _, moving = cv2.threshold(diff, self.config.threshold, 255, cv2.THRESH_BINARY)
        moving = cv2.bitwise_and(moving, self.mask)
        # Join the parts of one moving person (head, arms, legs) into one region.
        moving = cv2.dilate(moving, np.ones((3, 3), np.uint8), iterations=2)
        count, _, stats, _ = cv2.connectedComponentsWithStats(moving, connectivity=8)
        min_pixels = self.config.min_area * self.counted
        boxes: list[Box] = []
        area = 0
        for x, y, w, h, pixels in stats[1:count]:
            if pixels < min_pixels:
                continue
            area += int(pixels)
            boxes.append(Box(
                int(x / self.scale), int(y / self.scale),
                int(np.ceil(w / self.scale)), int(np.ceil(h / self.scale)),
            ))
        return MotionResult(min(1.0, area / self.counted), boxes)


class SpanEnd(StrEnum):
    """Why a motion span (or a visit, or an outage) ended: stored with its event as
    ``ended``, so a reviewer knows whether the motion really stopped."""

    QUIET = "quiet"  # no motion for end_after seconds
    CEILING = "max_span"  # still moving at max_span seconds: a new span continues it
    STREAM = "stream"  # the stream ended or the node stopped
    RESTART = "restart"  # found open at the node's start: the last run stopped without ending it
    # Found open when a new one began on the camera: its analysis process crashed (the node's
    # event maintainer closes it; also used for face visits).
    LOST = "lost"
    STOP = "stop"  # a camera outage open when the node stopped recording the camera


@dataclass
class MotionSpan:
    start: float
    last: float  # time of the latest frame with motion
    peak: float
    peak_at: float
    ended: SpanEnd = SpanEnd.QUIET
    continues: bool = False  # the span before it was cut at max_span


class MotionTracker:
    """Turns per-frame results into motion spans: started at the first moving frame, ended
    ``end_after`` seconds after the last one, or cut at ``max_span`` seconds (and continued in
    a new span) so that a scene that never goes quiet still gives spans that end."""

    def __init__(self, end_after: float, max_span: float | None = None) -> None:
        self.end_after = end_after
        self.max_span = max_span
        self.current: MotionSpan | None = None

    def update(
        self, t: float, result: MotionResult
    ) -> tuple[MotionSpan | None, MotionSpan | None]:
        """(span that started at t, span that ended before t)."""
        span = self.current
        if result.boxes:
            if span is not None and self.max_span is not None \
                    and t - span.start >= self.max_span:
                span.ended, span.last = SpanEnd.CEILING, t  # the next one takes over at t
                self.current = MotionSpan(t, t, result.area, t, continues=True)
                return self.current, span
            if span is None:
                self.current = MotionSpan(t, t, result.area, t)
                return self.current, None
            span.last = t
            if result.area > span.peak:
                span.peak, span.peak_at = result.area, t
            return None, None
        if span is not None and t - span.last >= self.end_after:
            self.current = None
            return None, span
        return None, None

    def flush(self) -> MotionSpan | None:
        span, self.current = self.current, None
        if span is not None:
            span.ended = SpanEnd.STREAM
        return span
