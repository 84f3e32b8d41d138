"""Frames for analysis: a live stream decoded with PyAV, sampled at a few frames per second.

A decoder thread reads the stream as fast as it arrives (it must: the camera does not wait)
and keeps only the newest sampled frame in a one-place mailbox. The analysis takes whatever
is newest when it is ready; a frame replaced before it was taken is dropped deliberately and
counted. So analysis that falls behind skips frames instead of building a growing lag.

A main stream (wider than twice the analysis width: a camera without a sub stream) is decoded
keyframes only, and only the keyframes that are due at the current rate. Measured on a
synthetic 5 MP H.264 stream (testsrc2, 4 Mbit/s, 15 fps, a keyframe a second), one decoder
thread, scaling included: every frame costs 18 % of a core; the keyframes 2.3 % (15 ms to
decode one, 5 ms to scale it with swscale's default, 2 ms with AREA), and less as load
shedding lowers the rate. A lower rate by skipping other frames is not possible: every
P-frame depends on the one before.
The price is an analysis rate of at most the keyframe rate (often 0.5-1 fps) on such a
camera; a sub stream gives the full rate for ~1 % of a core.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
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
    packets: int = 0  # frames the camera sent (decoded or not)
    decoded: int = 0
    sampled: int = 0
    dropped: int = 0  # sampled but replaced before the analysis took them


def reduced(video: av.VideoFrame, max_width: int,
            interpolation: str | None = None) -> av.VideoFrame:
    """The frame scaled down to ``max_width`` if wider (with swscale's ``interpolation``;
    None: its default, bicubic), as yuv420p."""
    if video.width <= max_width:
        return video
    height = round(video.height * max_width / video.width / 2) * 2
    return video.reformat(width=max_width, height=height, format="yuv420p",
                          interpolation=interpolation)


def luma(video: av.VideoFrame, max_width: int,
         interpolation: str | None = None) -> npt.NDArray[np.uint8]:
    """The grey picture of a frame, scaled down to ``max_width`` if wider."""
    video = reduced(video, max_width, interpolation)
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


# A stream this many times wider than the analysis is a main stream: decode its keyframes only.
KEYFRAMES_ABOVE = 2.0
# swscale's AREA for big reductions (5 MP to 640 wide): 1.8 ms instead of 3.9 ms for the
# default bicubic; averaging is what a large reduction needs anyway (no aliasing).
LARGE_REDUCTION = "AREA"


class FrameSource:
    """Decode ``url`` in a thread; iterate, or `take`, to get the newest frame at ``fps``.

    ``keyframes``: decode only the due keyframes of a stream wider than KEYFRAMES_ABOVE times
    ``width`` (see the module's docstring); False decodes every frame whatever its size.
    ``on_frame``: called from the decoder thread whenever a new frame waits, so that one
    thread can wait for frames of several sources.
    """

    def __init__(self, url: str, fps: float, width: int, *, keyframes: bool = True,
                 on_frame: Callable[[], None] | None = None) -> None:
        self.url = url
        self.interval = 1.0 / fps
        self.width = width
        self.keyframes = keyframes
        self.keyframes_only = False  # whether this stream turned out to need it
        self.stats = DecodeStats()
        self._on_frame = on_frame
        self._lock = threading.Condition()
        self._latest: Frame | None = None
        self._error: BaseException | None = None
        self._done = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._decode, name="decode", daemon=True)

    def __enter__(self) -> FrameSource:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def start(self) -> None:
        self._thread.start()

    def set_fps(self, fps: float) -> None:
        """Sample at ``fps`` from now on (load shedding lowers it)."""
        self.interval = 1.0 / fps

    def set_width(self, width: int) -> None:
        """Scale frames to at most ``width`` from the next one on (a live tile was resized).
        Whether a main stream is decoded keyframes only stays as decided when it opened."""
        self.width = width

    def request_stop(self) -> None:
        """Have the decoder thread end at its next packet; returns at once."""
        self._stop.set()

    def close(self, timeout: float = READ_TIMEOUT + 5) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)

    @property
    def done(self) -> bool:
        """The stream has ended or failed (frames may still be waiting)."""
        return self._done

    def take(self) -> Frame | None:
        """The newest frame not yet taken, or None; raises StreamError once the stream has
        failed and no frame is left, and returns None after a clean end."""
        with self._lock:
            frame, self._latest = self._latest, None
            if frame is None and self._done and self._error is not None:
                raise StreamError(str(self._error)) from self._error
        return frame

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
                # One decoder thread: parallelism comes from decoding many cameras, and frame
                # threading would hold a picture per thread (30 MB at 5 MP) for every camera.
                stream.codec_context.thread_count = 1
                width = stream.codec_context.width
                self.keyframes_only = self.keyframes and width > KEYFRAMES_ABOVE * self.width
                if self.keyframes_only:
                    # Belt and braces: only keyframe packets are sent to the decoder (below),
                    # and the decoder is told to output nothing else either.
                    stream.codec_context.skip_frame = "NONKEY"
                self._read(container, stream)
        except (av.FFmpegError, OSError, IndexError) as exc:
            self._error = exc
        finally:
            with self._lock:
                self._done = True
                self._lock.notify_all()
            if self._on_frame is not None:
                self._on_frame()  # the waiting thread learns of the end at once

    def _read(self, container: av.container.InputContainer, stream: av.VideoStream) -> None:
        anchor: float | None = None  # wall clock minus stream time
        next_sample = 0.0
        interpolation = LARGE_REDUCTION if self.keyframes_only else None
        for packet in container.demux(stream):
            if self._stop.is_set():
                return
            self.stats.packets += 1
            if self.keyframes_only:
                if not packet.is_keyframe:
                    continue
                base = packet.time_base
                when = None if packet.pts is None or base is None else packet.pts * base
                if when is not None and anchor is not None and when < next_sample:
                    continue  # a keyframe not due at this rate: not even decoded
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
                # The frame keeps the picture at analysis size, not the decoded one: the
                # analysis holds a dozen frames for snapshots, and a 5 MP picture is 7.5 MB
                # (measured at 64 cameras of 5 MP: 227 MiB PSS per camera with frames kept
                # at full size, 147-166 MiB at analysis size).
                small = reduced(video, self.width, interpolation)
                self._offer(Frame(anchor + video.time, luma(small, self.width), small))

    def _offer(self, frame: Frame) -> None:
        with self._lock:
            self.stats.sampled += 1
            if self._latest is not None:
                self.stats.dropped += 1
            self._latest = frame
            self._lock.notify_all()
        if self._on_frame is not None:
            self._on_frame()
