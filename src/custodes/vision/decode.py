"""Frames for analysis: a live stream decoded with PyAV, sampled at a few frames per second.

A decoder thread reads the stream as fast as it arrives (it must: the camera does not wait)
and keeps only the newest sampled frame in a one-place mailbox. The analysis takes whatever
is newest when it is ready; a frame replaced before it was taken is dropped deliberately and
counted. So analysis that falls behind skips frames instead of building a growing lag.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

OPEN_TIMEOUT = 10.0  # seconds to connect and read the stream's header
READ_TIMEOUT = 10.0  # seconds without a packet before the stream counts as dead


class StreamError(Exception):
    """The stream cannot be opened or has stopped."""


@dataclass
class Frame:
    t: float  # UTC epoch seconds at which the camera captured the frame (see FrameSource)
    grey: npt.NDArray[np.uint8]  # the luma plane, at analysis size
    _video: av.VideoFrame = field(repr=False)
    _rgb: npt.NDArray[np.uint8] | None = field(default=None, repr=False)

    def rgb(self) -> npt.NDArray[np.uint8]:
        """The frame in colour (H, W, 3); converted on first use, since most frames never
        need it."""
        rgb = self._rgb
        if rgb is None:
            h, w = self.grey.shape
            converted = self._video.to_ndarray(format="rgb24", width=w, height=h)
            rgb = self._rgb = converted.astype(np.uint8, copy=False)
        return rgb


@dataclass
class DecodeStats:
    decoded: int = 0
    sampled: int = 0
    dropped: int = 0  # sampled but replaced before the analysis took them


def luma(video: av.VideoFrame, max_width: int) -> npt.NDArray[np.uint8]:
    """The grey picture of a frame, scaled down to ``max_width`` if wider."""
    if video.width > max_width:
        height = round(video.height * max_width / video.width / 2) * 2
        video = video.reformat(width=max_width, height=height, format="yuv420p")
    # The Y plane is the grey picture: no colour conversion needed.
    plane = video.planes[0]
    rows = np.frombuffer(memoryview(plane), np.uint8).reshape(video.height, plane.line_size)
    grey: npt.NDArray[np.uint8] = rows[:, : video.width].copy()
    return grey


def file_frames(path: Path, fps: float, width: int, t0: float = 0.0) -> Iterator[Frame]:
    """Every frame of a file at ``fps`` (no pacing, no drops), with times from ``t0``: the
    same frames a live camera would give, for tests and benchmarks."""
    next_sample = 0.0
    with av.open(str(path)) as container:
        for video in container.decode(video=0):
            if video.time is None or video.time < next_sample:
                continue
            next_sample = video.time + 1.0 / fps - 0.001
            yield Frame(t0 + video.time, luma(video, width), video)


class FrameSource:
    """Decode ``url`` in a thread; iterate to get the newest frame at ``fps``."""

    def __init__(self, url: str, fps: float, width: int) -> None:
        self.url = url
        self.interval = 1.0 / fps
        self.width = width
        self.stats = DecodeStats()
        self._lock = threading.Condition()
        self._latest: Frame | None = None
        self._error: BaseException | None = None
        self._done = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._decode, name="decode", daemon=True)

    def __enter__(self) -> FrameSource:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=READ_TIMEOUT + 5)

    def __iter__(self) -> Iterator[Frame]:
        """Newest frames until the stream ends; raises StreamError if it failed."""
        while True:
            with self._lock:
                while self._latest is None and not self._done:
                    self._lock.wait(0.5)
                frame, self._latest = self._latest, None
                if frame is None:
                    if self._error is not None:
                        raise StreamError(str(self._error)) from self._error
                    return
            yield frame

    def _decode(self) -> None:
        try:
            with av.open(
                self.url,
                options={"rtsp_transport": "tcp"},
                timeout=(OPEN_TIMEOUT, READ_TIMEOUT),
            ) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                self._read(container, stream)
        except (av.FFmpegError, OSError, IndexError) as exc:
            self._error = exc
        finally:
            with self._lock:
                self._done = True
                self._lock.notify_all()

    def _read(self, container: av.container.InputContainer, stream: av.VideoStream) -> None:
        anchor: float | None = None  # wall clock minus stream time
        next_sample = 0.0
        for packet in container.demux(stream):
            if self._stop.is_set():
                return
            for video in packet.decode():
                self.stats.decoded += 1
                if video.time is None:
                    continue
                now = time.time()
                # Stream time tells when the camera captured the frame. Frames can arrive
                # late (opening the stream reads ahead) but never early, so the smallest
                # offset seen is the truest relation between stream time and wall clock.
                # A decoder that falls behind shows as capture times further in the past.
                offset = now - video.time
                anchor = offset if anchor is None else min(anchor, offset)
                if video.time < next_sample:
                    continue
                next_sample = video.time + self.interval - 0.001
                self._offer(Frame(anchor + video.time, luma(video, self.width), video))

    def _offer(self, frame: Frame) -> None:
        with self._lock:
            self.stats.sampled += 1
            if self._latest is not None:
                self.stats.dropped += 1
            self._latest = frame
            self._lock.notify_all()
