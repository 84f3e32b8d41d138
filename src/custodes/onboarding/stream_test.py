"""Test a camera's stream before (or after) it is installed: codec, resolution, frame rate and
one redacted picture, read from the stream itself with PyAV.

The picture is redacted like every picture that leaves the node (faces blurred by redaction's
detector, the camera's privacy zones obscured), whoever asks: the administrator who installs
cameras holds no permission to unredacted video, and an onboarding page is no way around that.

Seam: this reads only what RTSP and the decoder say. What ONVIF tells about a camera (maker,
model, firmware, the stream URIs of its profiles, its clock) is custodes.cameras' probe; the
camera page shows both when that module offers them.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import av
import cv2
import numpy as np
import numpy.typing as npt

from custodes.masking import mask_credentials
from custodes.redaction.blur import Polygon, encode_jpeg, redact_snapshot
from custodes.redaction.detect import NODE_SETTINGS
from custodes.vision.faces import FaceDetector

OPEN_TIMEOUT = 10.0  # seconds to connect and to wait for each read
PREVIEW_WIDTH = 640  # the preview is made at this width at most
MAX_PACKETS = 600  # packets read while waiting for a picture to decode (~40 s at 15 fps)


class StreamTestError(Exception):
    """The stream could not be opened or decoded; the message names no password."""


@dataclass(frozen=True)
class StreamFacts:
    codec: str
    width: int
    height: int
    fps: float | None
    preview_jpeg: bytes  # redacted

    def to_json(self) -> dict[str, object]:
        return {"codec": self.codec, "width": self.width, "height": self.height,
                "fps": None if self.fps is None else round(self.fps, 2)}


@functools.cache
def _detector() -> FaceDetector:
    return NODE_SETTINGS.detector()


def probe_stream(url: str, zones: Sequence[Polygon] = ()) -> StreamFacts:
    """Open ``url`` (credentials in it, as ffmpeg takes them), read its first picture."""
    try:
        container = av.open(url, options={"rtsp_transport": "tcp"},
                            timeout=(OPEN_TIMEOUT, OPEN_TIMEOUT))
    except av.FFmpegError as exc:
        raise StreamTestError(f"cannot open the stream: {mask_credentials(str(exc), url)}") \
            from None
    try:
        if not container.streams.video:
            raise StreamTestError("the stream has no video")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        codec = stream.codec_context.name
        image: npt.NDArray[np.uint8] | None = None
        for n, packet in enumerate(container.demux(stream)):
            if n >= MAX_PACKETS:
                break
            frames = packet.decode()
            if frames:
                image = np.asarray(frames[0].to_ndarray(format="rgb24"), dtype=np.uint8)
                break
        if image is None:
            raise StreamTestError(f"no picture could be decoded in {MAX_PACKETS} packets")
        height, width = image.shape[:2]
    except av.FFmpegError as exc:
        raise StreamTestError(f"cannot read the stream: {mask_credentials(str(exc), url)}") \
            from None
    finally:
        container.close()
    if width > PREVIEW_WIDTH:
        image = np.asarray(cv2.resize(image, (PREVIEW_WIDTH, round(height * PREVIEW_WIDTH
                                                                   / width)),
                                      interpolation=cv2.INTER_AREA), dtype=np.uint8)
    redacted = redact_snapshot(image, _detector(), zones=zones)
    return StreamFacts(codec=codec, width=width, height=height,
                       fps=float(Fraction(rate)) if rate else None,
                       preview_jpeg=encode_jpeg(redacted))
