"""Recorded footage by time range: which segments cover it, where the holes are, and export.

Times are UTC epoch seconds, as in the index.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Row, func, select

from custodes.media import MediaError, ffmpeg_exe, probe
from custodes.record.layout import Layout
from custodes.store import schema
from custodes.store.db import Store
from custodes.store.schema import segments

log = logging.getLogger(__name__)

# Lines of ffmpeg's stderr quoted in an export error: enough to see the cause, not a log dump.
_STDERR_LINES = 8


class ExportError(Exception):
    """An export that cannot be made; the message says why, for the operator."""


@dataclass(frozen=True)
class Segment:
    id: int
    camera: str
    start: float
    end: float
    duration: float
    bytes: int
    path: str  # relative to the recordings folder

    @classmethod
    def from_row(cls, row: Row[Any]) -> Segment:
        return cls(**row._asdict())


@dataclass(frozen=True)
class Span:
    """A time range [start, end): footage in ``coverage`` spans, a hole in its gaps."""

    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start

    def __str__(self) -> str:
        return f"{utc(self.start)} to {utc(self.end)} ({self.seconds:.1f} s)"


@dataclass(frozen=True)
class ExportResult:
    path: Path
    duration: float  # probed from the written file
    segments: list[Segment]
    gaps: list[Span]  # holes inside the range, left out of the file (allow_gaps only)


def utc(t: float) -> str:
    """A readable UTC time for messages: 2024-05-01 10:00:00Z."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S") + "Z"


def segments_in_range(conn: Connection, camera: str, start: float, end: float) -> list[Segment]:
    """Segments of ``camera`` that overlap [start, end), ordered by start."""
    rows = conn.execute(
        select(segments)
        .where(segments.c.camera == camera, segments.c.start < end, segments.c.end > start)
        .order_by(segments.c.start, segments.c.id)
    )
    return [Segment.from_row(row) for row in rows]


def installed_at(conn: Connection, camera: str) -> float | None:
    """When the node first recorded or tried to record ``camera`` (its first segment or
    state change), None if never: hours before it are not missing footage."""
    seg, states = schema.segments.c, schema.camera_states.c
    first = [conn.execute(select(func.min(seg.start)).where(seg.camera == camera)).scalar(),
             conn.execute(select(func.min(states.at)).where(states.camera == camera)).scalar()]
    known = [float(t) for t in first if t is not None]
    return min(known) if known else None


def coverage(
    conn: Connection, camera: str, start: float, end: float, *, tolerance: float = 1.0
) -> tuple[list[Span], list[Span]]:
    """The recorded spans and the gaps of ``camera`` in [start, end).

    A hole between segments (or at either end of the range) counts as a gap only when it is
    longer than ``tolerance`` seconds: consecutive segments of a live recording rarely meet
    to the millisecond.
    """
    return _coverage(segments_in_range(conn, camera, start, end), start, end, tolerance)


def _coverage(
    found: list[Segment], start: float, end: float, tolerance: float
) -> tuple[list[Span], list[Span]]:
    spans: list[Span] = []
    gaps: list[Span] = []
    covered_to = start  # end of the footage seen so far (clipped to the range)
    for seg in found:
        seg_start, seg_end = max(seg.start, start), min(seg.end, end)
        if seg_start - covered_to > tolerance:
            gaps.append(Span(covered_to, seg_start))
        if spans and seg_start - spans[-1].end <= tolerance:
            spans[-1] = Span(spans[-1].start, max(spans[-1].end, seg_end))
        else:
            spans.append(Span(seg_start, seg_end))
        covered_to = max(covered_to, seg_end)
    if end - covered_to > tolerance:
        gaps.append(Span(covered_to, end))
    return spans, gaps


def export_range(  # noqa: PLR0917 - reads as the request: camera, from, to, into
    store: Store,
    layout: Layout,
    camera: str,
    start: float,
    end: float,
    out: Path,
    *,
    allow_gaps: bool = False,
) -> ExportResult:
    """Write the footage of ``camera`` in [start, end) to the MP4 file ``out``.

    The covering segments are joined by stream copy (no re-encoding: fast, and the pictures
    are exactly those recorded). Stream copy can only cut at keyframes, so the file starts at
    the keyframe at or before ``start`` and may run up to one GOP (the camera's keyframe
    interval) longer than asked. With ``allow_gaps``, holes in the recording are left out and
    the file plays straight across them; the result lists them.

    The file appears only when complete: ffmpeg writes a hidden temporary file beside ``out``
    that is renamed at the end, or removed on failure. Raises ``ExportError``.
    """
    if end <= start:
        raise ExportError(f"the export range must end after it starts ({utc(start)} to {utc(end)})")
    if out.exists():
        raise ExportError(f"{out} exists already; choose another name")
    if not out.parent.is_dir():
        raise ExportError(f"the folder {out.parent} does not exist")
    with store.read() as conn:
        found = segments_in_range(conn, camera, start, end)
    if not found:
        raise ExportError(f"no recordings of {camera} between {utc(start)} and {utc(end)}")
    _, gaps = _coverage(found, start, end, tolerance=1.0)
    if gaps and not allow_gaps:
        holes = "; ".join(str(gap) for gap in gaps)
        raise ExportError(
            f"the recordings of {camera} between {utc(start)} and {utc(end)} have gaps: {holes}"
        )

    tmp = out.with_name(f".{out.name}.{os.getpid()}.partial")
    try:
        with tempfile.TemporaryDirectory(prefix="custodes-export-") as work:
            listing = Path(work) / "segments.ffconcat"
            listing.write_text(_concat_list(layout, found, start, end), encoding="utf-8")
            _run_ffmpeg(listing, tmp)
        try:
            duration = probe(tmp).duration
        except MediaError as exc:
            raise ExportError(f"the exported file cannot be read back: {exc}") from None
        tmp.rename(out)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("exported %s from %s to %s (%d segments) to %s",
             camera, utc(start), utc(end), len(found), out)
    return ExportResult(out, duration, found, gaps)


def _concat_list(layout: Layout, found: list[Segment], start: float, end: float) -> str:
    """An ffconcat script that plays ``found`` trimmed to [start, end)."""
    lines = ["ffconcat version 1.0"]
    for seg in found:
        path = str((layout.recordings / seg.path).resolve())
        # ffconcat quoting: inside single quotes, a quote is written as '\''.
        lines.append("file '" + path.replace("'", "'\\''") + "'")
        # In- and outpoints are offsets into the file, whose timestamps start at zero.
        if start > seg.start:
            lines.append(f"inpoint {start - seg.start:.6f}")
        if end < seg.end:
            lines.append(f"outpoint {end - seg.start:.6f}")
    return "\n".join(lines) + "\n"


def _run_ffmpeg(listing: Path, target: Path) -> None:
    argv = [
        ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error",
        # Without -xerror, a segment that cannot be read ends the input early and ffmpeg
        # still exits 0: the export would silently stop short.
        "-xerror",
        "-f", "concat", "-safe", "0", "-i", str(listing),
        "-map", "0:v", "-c", "copy", "-an",
        # The index at the front lets a player start before the whole file has been read.
        "-movflags", "+faststart",
        "-f", "mp4", str(target),
    ]
    result = subprocess.run(argv, capture_output=True, text=True, errors="replace", check=False)
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-_STDERR_LINES:])
        raise ExportError(f"ffmpeg failed (exit status {result.returncode}):\n{tail}")
