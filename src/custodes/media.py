"""The two media tools every stage shares: the ffmpeg binary and a PyAV probe."""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from pathlib import Path

import av
import imageio_ffmpeg


@functools.cache
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary shipped in the imageio-ffmpeg wheel."""
    return str(imageio_ffmpeg.get_ffmpeg_exe())


class MediaError(Exception):
    """A media file that cannot be read."""


@dataclass(frozen=True)
class Probe:
    duration: float
    codec: str
    width: int
    height: int
    frames: int | None


def probe(path: Path) -> Probe:
    """Duration and video stream facts of a file, read from its headers (no decoding)."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"{path.name}: no video stream")
            stream = container.streams.video[0]
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / av.time_base
            else:
                raise MediaError(f"{path.name}: duration unknown")
            return Probe(
                duration=duration,
                codec=stream.codec_context.name,
                width=stream.codec_context.width,
                height=stream.codec_context.height,
                frames=stream.frames or None,
            )
    except av.FFmpegError as exc:
        raise MediaError(f"{path.name}: {exc}") from None


def mp4_is_complete(path: Path) -> str | None:
    """Why an MP4 file is unusable, or None when its top-level boxes look whole.

    A recorder killed mid-segment leaves a file with an mdat but no moov; checking the box
    structure finds that without opening a decoder, which keeps indexing cheap.
    """
    try:
        size = path.stat().st_size
        if size == 0:
            return "empty file"
        seen: set[bytes] = set()
        with path.open("rb") as f:
            offset = 0
            while offset < size:
                f.seek(offset)
                header = f.read(16)
                if len(header) < 8:
                    return f"truncated box header at byte {offset}"
                box_size, kind = struct.unpack(">I4s", header[:8])
                if box_size == 1:
                    if len(header) < 16:
                        return f"truncated box header at byte {offset}"
                    box_size = struct.unpack(">Q", header[8:16])[0]
                elif box_size == 0:
                    box_size = size - offset
                if box_size < 8 or offset + box_size > size:
                    return f"box {kind!r} at byte {offset} runs past the end of the file"
                seen.add(kind)
                offset += box_size
    except OSError as exc:
        return f"unreadable: {exc.strerror}"
    missing = {b"ftyp", b"moov", b"mdat"} - seen
    if missing:
        return "missing " + ", ".join(sorted(m.decode() for m in missing)) + " box"
    return None
