"""The ffmpeg command that records one camera, and the segment list it reports back."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from custodes.media import ffmpeg_exe

# Segment files are named by ffmpeg's strftime when they are opened (UTC, see `record_env`);
# the run number keeps two runs that start in the same second apart.
_CACHE_NAME = re.compile(r"^r(\d+)-(\d{8}T\d{6})\.mp4$")


def record_argv(url: str, cache_dir: Path, segment_seconds: int, run: int) -> list[str]:
    """ffmpeg arguments: RTSP over TCP, stream copy of the first video stream, MP4 segments.

    Each completed segment is announced as one CSV line ``name,start,end`` on stdout (the
    segment list written to ``pipe:1``), so the recorder learns of segments and their exact
    durations from ffmpeg itself instead of probing the files again.
    """
    return [
        ffmpeg_exe(),
        "-hide_banner",
        "-nostdin",
        "-loglevel", "warning",
        "-rtsp_transport", "tcp",
        # Give up on a camera that sends nothing for 10 s; the supervisor retries with backoff.
        "-timeout", "10000000",
        "-i", url,
        "-map", "0:v:0",
        "-c", "copy",
        "-an", "-dn", "-sn",
        "-f", "segment",
        "-segment_time", str(segment_seconds),
        "-segment_format", "mp4",
        "-reset_timestamps", "1",
        "-strftime", "1",
        "-segment_list", "pipe:1",
        "-segment_list_type", "csv",
        str(cache_dir / f"r{run}-%Y%m%dT%H%M%S.mp4"),
    ]


def record_env(base: dict[str, str]) -> dict[str, str]:
    """ffmpeg's strftime uses local time; file names must be UTC."""
    return {**base, "TZ": "UTC"}


@dataclass(frozen=True)
class ListEntry:
    name: str
    start: float  # stream time, seconds
    end: float


def parse_list_line(line: str) -> ListEntry | None:
    """One line of ffmpeg's CSV segment list, or None if it is not one."""
    parts = line.strip().rsplit(",", 2)
    if len(parts) != 3:
        return None
    try:
        return ListEntry(parts[0].strip('"'), float(parts[1]), float(parts[2]))
    except ValueError:
        return None


def start_from_cache_name(name: str) -> float | None:
    """The UTC second a cached segment was opened, from its file name."""
    m = _CACHE_NAME.match(name)
    if not m:
        return None
    return datetime.strptime(m.group(2), "%Y%m%dT%H%M%S").replace(tzinfo=UTC).timestamp()
