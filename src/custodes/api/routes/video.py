"""Pictures and footage: the camera list, live pictures, the timeline, and playback.

- Live pictures are always redacted (the live picture service, custodes.live, makes them while
  someone watches).
  Watching is audited once per session and camera every ``WATCH_AUDIT_EVERY`` seconds, not per
  picture.
- Playback serves the recorded segment files as they are (no re-encoding) to roles holding
  playback.unredacted; everyone else gets a redacted copy of each segment, made on first
  request and kept in ``<storage>/redacted/`` (see ``RedactedCopies``). The two are different
  URLs backed by different folders, so one is never served as the other. Each playback request
  is audited with the range it opens, not each byte range the browser fetches.

Every file is reached through a database row (a segment or event id), and the resolved path
must lie inside its storage folder: no client-supplied path ever reaches the file system.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response, StreamingResponse
from pydantic import StringConstraints
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from custodes.api.deps import client_address, get_node, require, require_camera
from custodes.audit.actions import Action
from custodes.auth.roles import Actor, Permission
from custodes.config import NAME_PATTERN
from custodes.record.playback import Segment, coverage, installed_at
from custodes.redaction.copies import RedactedCopies
from custodes.redaction.live import (
    LiveState,
    State,
    latest_live,
    live_width,
    picture_path,
    read_state,
    request_live,
)
from custodes.redaction.video import RedactionError
from custodes.sitetime import SiteZone, site_zone
from custodes.store import schema

if TYPE_CHECKING:
    from custodes.app import Node

log = logging.getLogger(__name__)

router = APIRouter(tags=["video"])

StatusViewer = Annotated[Actor, Depends(require(Permission.STATUS_VIEW))]
LiveViewer = Annotated[Actor, Depends(require(Permission.LIVE_VIEW))]
Player = Annotated[Actor, Depends(require(Permission.PLAYBACK_REDACTED))]
UnredactedPlayer = Annotated[Actor, Depends(require(Permission.PLAYBACK_UNREDACTED))]
CameraName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
SegmentId = Annotated[int, PathParam(ge=1, le=2**62)]  # SQLite integers are 64-bit

WATCH_AUDIT_EVERY = 600.0  # seconds: one "live.view" entry per session and camera this often
LIVE_STALE = 5.0  # seconds: an older picture is no live picture
LIVE_WAIT = 2.0  # seconds a request with ``after`` waits for a newer picture
LIVE_CHECK = 0.02  # seconds between looks for it (a stat: cheap)
PLAYBACK_SEGMENTS = 30  # segments per playback answer (5 minutes of 10 s segments)
TIMELINE_MAX = 7 * 86400.0  # seconds: the longest range one timeline answer covers
TIMELINE_ROWS = 20_000  # motion spans or faces per answer: a day of a busy corridor fits
PREFETCH = 2  # redacted copies made ahead of the one being watched


def resolve_inside(root: Path, relative: str) -> Path:
    """``root / relative``, resolved; 404 if it would lead outside ``root``.

    The relative paths come from the database, not from clients; this is the second line.
    """
    base = root.resolve()
    path = (base / relative).resolve()
    if not path.is_relative_to(base):
        log.error("refused a stored path that leads outside %s: %r", base, relative)
        raise HTTPException(404, "no such file")
    return path


# -- cameras -------------------------------------------------------------------------------

@router.get("/api/cameras")
def cameras(request: Request, actor: StatusViewer) -> dict[str, Any]:
    """The cameras the caller may see: where, health, recording, analysis rate."""
    node = get_node(request)
    out = []
    for cam in node.cameras():
        if not actor.sees_camera(cam.name):
            continue
        health = cam.health
        stats = node.events.stats.get(cam.name)
        out.append({
            "name": cam.name, "site": cam.site, "location": cam.location,
            "purpose": cam.purpose, "recording": cam.recording,
            "state": health.state.value if health else "disabled",
            "reason": health.reason if health else "",
            "last_segment_at": health.last_segment_at if health else None,
            "analysed_fps": round(stats.fps, 2) if stats is not None and stats.online else None,
        })
    return {"cameras": out}


# -- live ----------------------------------------------------------------------------------

class WatchLog:
    """Remembers who watches which camera, so that watching is audited once per while."""

    def __init__(self, every: float = WATCH_AUDIT_EVERY) -> None:
        self.every = every
        self._last: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def due(self, viewer: str, camera: str, now: float) -> bool:
        with self._lock:
            last = self._last.get((viewer, camera))
            if last is not None and now - last < self.every:
                return False
            if len(self._last) > 10_000:  # stale sessions; a fresh entry each is harmless
                self._last.clear()
            self._last[(viewer, camera)] = now
            return True


def _app_part(request: Request, name: str, make: type[Any]) -> Any:
    # One per application (one per node): created on first use, shared by every request.
    state = request.app.state
    with _PARTS_LOCK:
        part = getattr(state, name, None)
        if part is None:
            part = make()
            setattr(state, name, part)
    return part


_PARTS_LOCK = threading.Lock()


@router.get("/api/cameras/{camera}/live.jpg", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}}, 503: {}})
async def live_picture(
    request: Request,
    actor: LiveViewer,
    camera: CameraName,
    after: Annotated[float | None, Query(ge=0, le=1e11, description="Capture time of the "
                                         "picture the client has: wait for a newer one")] = None,
    width: Annotated[int | None, Query(ge=1, le=100_000, description="The tile's width in "
                                       "pixels: pictures are made at most this wide")] = None,
) -> Response:
    """The newest live picture of ``camera``, redacted; 503 with the reason while none is
    fresh. ``X-Capture-Time`` is when it was taken, ``X-Frame-Age`` its age when served,
    ``X-Live-State`` what the live picture service is doing for the camera (live, starting,
    busy, down; custodes.redaction.live.State), ``X-Live-Detail`` why, and ``X-Live-Fps`` its
    pictures a second.

    Asking is what keeps the pictures coming (custodes.live): the service makes them only for
    cameras asked for within the last seconds, ``width`` wide or less.

    With ``after``, the answer waits (up to ``LIVE_WAIT`` seconds) for a picture taken later:
    the client asks again at once and gets each picture as soon as it exists, without polling
    faster than the pictures come. Async, so waiting viewers hold no worker thread.
    """
    node = get_node(request)
    # Both may write to the audit log (a refusal, a new watcher): a blocking write, so in a
    # worker thread.
    await run_in_threadpool(require_camera, node, actor, camera)
    session = getattr(request.state, "session", None)
    viewer = session.token_hash if session is not None else f"user:{actor.name}"
    watch: WatchLog = _app_part(request, "live_watch", WatchLog)
    if watch.due(viewer, camera, time.time()):
        await run_in_threadpool(
            node.audit.record, actor.name, Action.LIVE_VIEW, camera, detail={"redacted": True},
            address=client_address(request))
    request_live(node.layout, camera, live_width(width))
    if after is not None:
        deadline = time.monotonic() + LIVE_WAIT
        path = picture_path(node.layout.live, camera)
        while _mtime(path) <= after and time.monotonic() < deadline:
            await asyncio.sleep(LIVE_CHECK)
    frame = latest_live(node.layout, camera, max_age=LIVE_STALE)
    state = read_state(node.layout.live, camera)
    if frame is None:
        kind, why = _live_trouble(node, state)
        raise HTTPException(503, f"no live picture yet: {why}",
                            headers={"Retry-After": "1", "X-Live-State": kind})
    jpeg, captured = frame
    age = max(time.time() - captured, 0.0)
    return Response(jpeg, media_type="image/jpeg", headers={
        "Cache-Control": "no-store", "X-Capture-Time": f"{captured:.3f}",
        "X-Frame-Age": f"{age:.3f}",
        "X-Live-State": state.state if state is not None else State.LIVE,
        "X-Live-Fps": f"{state.fps:.1f}" if state is not None else "",
        # Headers are Latin-1; a stream's error text is the camera's or FFmpeg's.
        "X-Live-Detail": state.detail.encode("ascii", "replace").decode() if state else "",
    })


def _live_trouble(node: Node, state: LiveState | None) -> tuple[str, str]:
    """Why there is no fresh picture: a State value and a few words for the viewer."""
    if state is not None and state.state != State.LIVE:
        return state.state, state.detail
    if not node.live.running:
        return State.BUSY, "the live picture service is (re)starting"
    return State.STARTING, "the camera's live pictures are starting"


def _mtime(path: Path) -> float:
    # The picture's modification time is its capture time (custodes.redaction.live).
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


# -- timeline ------------------------------------------------------------------------------

def _range(zone: SiteZone, day: date | None, start: float | None,
           end: float | None) -> tuple[float, float]:
    if day is not None:
        if start is not None or end is not None:
            raise HTTPException(400, "give either day or start and end, not both")
        try:
            # The site's day, from its local midnight: 23 or 25 hours when the clocks change.
            return zone.day_range(day)
        except (OverflowError, ValueError):  # 9999-12-31 has no next day to end at
            raise HTTPException(400, f"day {day} is out of range") from None
    if start is None or end is None:
        raise HTTPException(400, "give day=YYYY-MM-DD (the site's day) or both start and end")
    if end <= start:
        raise HTTPException(400, "end must come after start")
    if end - start > TIMELINE_MAX:
        raise HTTPException(400, f"a timeline covers at most {TIMELINE_MAX / 86400:.0f} days")
    return start, end


@router.get("/api/cameras/{camera}/timeline")
def timeline(
    request: Request,
    actor: Player,
    camera: CameraName,
    *,
    day: Annotated[date | None, Query(description="A day in the site's time zone")] = None,
    start: Annotated[float | None, Query(ge=0, le=1e11)] = None,
    end: Annotated[float | None, Query(ge=0, le=1e11)] = None,
) -> dict[str, Any]:
    """Recorded spans (contiguous segments merged), gaps, motion spans and face times.

    Gaps end at the present: the future is not missing footage. Nor is the time before the
    camera was installed (its first state or recording, ``installed``): gaps start there.
    """
    node = get_node(request)
    require_camera(node, actor, camera)
    zone = site_zone(node.config.node.timezone)
    first, last = _range(zone, day, start, end)
    now = time.time()
    motion, events = schema.motion, schema.events
    with node.store.read() as conn:
        installed = installed_at(conn, camera)
        since = max(first, installed) if installed is not None else last
        spans, gaps = coverage(conn, camera, since, min(last, now)) if since < now else ([], [])
        moving = conn.execute(
            select(motion.c.start, motion.c.end, motion.c.peak)
            .where(motion.c.camera == camera, motion.c.start < last, motion.c.end > first)
            .order_by(motion.c.start).limit(TIMELINE_ROWS)
        ).all()
        # A motion span is stored when it ends; one still going is an open motion event.
        ongoing = conn.execute(
            select(events.c.start)
            .where(events.c.camera == camera, events.c.kind == "motion",
                   events.c.end.is_(None), events.c.start < last, events.c.start > now - 3600)
            .order_by(events.c.start.desc()).limit(1)
        ).all()
        faces = conn.execute(
            select(events.c.start, events.c.end)
            .where(events.c.camera == camera, events.c.kind == "face",
                   events.c.start < last, events.c.start >= first)
            .order_by(events.c.start).limit(TIMELINE_ROWS)
        ).all()
    return {
        "camera": camera, "start": first, "end": last, "now": now, "installed": installed,
        "timezone": zone.name,
        "coverage": [{"start": s.start, "end": s.end} for s in spans],
        "gaps": [{"start": g.start, "end": g.end} for g in gaps],
        "motion": [{"start": m.start, "end": m.end, "peak": m.peak} for m in moving]
        + [{"start": m.start, "end": min(now, last), "peak": None} for m in ongoing],
        "faces": [{"start": f.start, "end": f.end} for f in faces],
    }


# -- playback ------------------------------------------------------------------------------

@router.get("/api/cameras/{camera}/playback")
def playback(
    request: Request,
    actor: Player,
    camera: CameraName,
    *,
    at: Annotated[float, Query(ge=0, le=1e11, description="UTC epoch seconds")],
    redacted: Annotated[bool, Query(description="Ask for the redacted copy even when "
                                    "allowed the original")] = False,
) -> dict[str, Any]:
    """The segments from the one holding ``at`` onwards (or the next one after a gap), with
    the offset into the first. Roles without playback.unredacted get redacted copies."""
    node = get_node(request)
    require_camera(node, actor, camera)
    use_redacted = redacted or not actor.can(Permission.PLAYBACK_UNREDACTED)
    seg = schema.segments
    with node.store.read() as conn:
        rows = conn.execute(
            select(seg).where(seg.c.camera == camera, seg.c.end > at)
            .order_by(seg.c.start, seg.c.id).limit(PLAYBACK_SEGMENTS)
        ).all()
    found = [Segment.from_row(r) for r in rows]
    if not found:
        raise HTTPException(404, f"no recordings of {camera} at or after {_utc(at)}")
    offset = max(0.0, at - found[0].start)
    begins = 0.0  # where the first file starts, seconds into its segment
    if use_redacted:
        # The browser asks for the first copy at once: start it now, a round trip (and this
        # audit entry's write) earlier.
        begins = redacted_copies(request).start(node, found[0], offset)
    node.audit.record(actor.name, Action.PLAYBACK, camera, detail={
        "start": found[0].start + offset, "end": found[-1].end, "segments": len(found),
        "redacted": use_redacted,
    }, address=client_address(request))
    kind = "redacted" if use_redacted else "video"
    if use_redacted:
        copies = redacted_copies(request)
        for s in found[1:1 + PREFETCH]:
            copies.prefetch(node, s)
    return {
        "camera": camera, "at": at, "start": found[0].start + offset, "offset": offset,
        "redacted": use_redacted, "more": len(found) == PLAYBACK_SEGMENTS,
        "segments": [
            {"id": s.id, "start": s.start, "end": s.end, "duration": s.duration,
             "url": f"/api/segments/{s.id}/{kind}", "redacted": use_redacted, "from": 0.0}
            for s in found
        ] if not begins else [
            # A redacted tail: the file starts at `from` seconds into the segment.
            {"id": found[0].id, "start": found[0].start, "end": found[0].end,
             "duration": found[0].duration, "redacted": True, "from": begins,
             "url": f"/api/segments/{found[0].id}/redacted?from={begins:.6f}"},
            *({"id": s.id, "start": s.start, "end": s.end, "duration": s.duration,
               "url": f"/api/segments/{s.id}/redacted", "redacted": True, "from": 0.0}
              for s in found[1:]),
        ],
    }


@router.post("/api/cameras/{camera}/prefetch", status_code=202)
def prefetch(
    request: Request,
    actor: Player,
    camera: CameraName,
    *,
    at: Annotated[float, Query(ge=0, le=1e11, description="UTC epoch seconds")],
) -> dict[str, Any]:
    """The viewer's pointer rests on the timeline at ``at``: prepare the redacted copy a click
    there would get (custodes.redaction.copies, `hover`). One pending a viewer (session):
    each replaces the viewer's last, which is given up if nobody asked for it; below any
    viewer's request. Nothing is sent: the click's playback request is what is audited.
    ``from`` is where the copy begins in the segment, null when nothing was to be made."""
    node = get_node(request)
    require_camera(node, actor, camera)
    seg = schema.segments
    with node.store.read() as conn:
        row = conn.execute(
            select(seg).where(seg.c.camera == camera, seg.c.end > at)
            .order_by(seg.c.start, seg.c.id).limit(1)
        ).first()
    if row is None:
        raise HTTPException(404, f"no recordings of {camera} at or after {_utc(at)}")
    segment = Segment.from_row(row)
    try:
        begins = redacted_copies(request).hover(node, segment, max(0.0, at - segment.start),
                                                _viewer(request, actor))
    except FileNotFoundError:
        raise HTTPException(404, f"segment {segment.id} is indexed but its file is missing"
                            ) from None
    return {"segment": segment.id, "from": begins}


def _utc(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S") + "Z"


def _segment(node: Node, actor: Actor, segment_id: int) -> Segment:
    with node.store.read() as conn:
        row = conn.execute(
            select(schema.segments).where(schema.segments.c.id == segment_id)
        ).first()
    if row is None:
        raise HTTPException(404, f"no segment {segment_id} (deleted by retention?)")
    segment = Segment.from_row(row)
    require_camera(node, actor, segment.camera)
    return segment


@router.get("/api/segments/{segment_id}/video", response_class=FileResponse,
            responses={200: {"content": {"video/mp4": {}}}})
def segment_video(request: Request, actor: UnredactedPlayer,
                  segment_id: SegmentId) -> FileResponse:
    """A recorded segment exactly as recorded (MP4, H.264), with HTTP range requests.

    Every access to original footage is audited (``segment.original``), once per session and
    segment every ``ORIGINALS_AUDIT_EVERY`` seconds: a player's many range requests make one
    entry, and walking the sequential ids to pull an archive makes one per segment. The
    entry is written before the file is served; if it cannot be written, nothing is served.
    """
    node = get_node(request)
    segment = _segment(node, actor, segment_id)
    path = resolve_inside(node.layout.recordings, segment.path)
    if not path.is_file():
        raise HTTPException(404, f"segment {segment_id} is indexed but its file is missing")
    seen: OriginalsLog = _app_part(request, "originals_seen", OriginalsLog)
    if seen.due(_viewer(request, actor), str(segment_id), time.time()):
        node.audit.record(actor.name, Action.SEGMENT_ORIGINAL, str(segment_id), detail={
            "camera": segment.camera, "start": segment.start, "end": segment.end,
            "range": request.headers.get("range"),
        }, address=client_address(request))
    return FileResponse(path, media_type="video/mp4")


ORIGINALS_AUDIT_EVERY = 3600.0  # seconds: one "segment.original" per session and segment


def _viewer(request: Request, actor: Actor) -> str:
    """Who asks, per session (a bearer token, else the user)."""
    session = getattr(request.state, "session", None)
    token = getattr(request.state, "token", None)
    return (session.token_hash if session is not None
            else f"token:{token.id}" if token is not None else f"user:{actor.name}")


class OriginalsLog(WatchLog):
    """Who fetched which original segment, so that it is audited once per while."""

    def __init__(self) -> None:
        super().__init__(ORIGINALS_AUDIT_EVERY)


@router.get("/api/segments/{segment_id}/redacted", response_class=FileResponse,
            responses={200: {"content": {"video/mp4": {}}}})
async def segment_redacted(
    request: Request, actor: Player, segment_id: SegmentId,
    from_: Annotated[float, Query(alias="from", ge=0, le=86_400,
                                  description="seconds into the segment to start at")] = 0.0,
) -> Response:
    """A recorded segment with faces and privacy zones blurred. Made on first request and
    sent as it is made (fragmented MP4, no length, no byte ranges: a player must take it as a
    stream, e.g. through Media Source Extensions); once made, a file with HTTP range
    requests. With ``from``, while the whole copy is not made: a copy from the keyframe at
    or before it (custodes.redaction.copies, a tail); ``X-Copy-From`` says where the answer
    starts (seconds into the segment; its first frame is at time 0)."""
    node = get_node(request)
    segment = await run_in_threadpool(_segment, node, actor, segment_id)
    copies = redacted_copies(request)
    # Playback comes here segment after segment: start on the next ones meanwhile.
    for following in await run_in_threadpool(_following, node, segment):
        copies.prefetch(node, following)
    missing = f"segment {segment_id} is indexed but its file is missing"
    try:
        made, begins = await run_in_threadpool(copies.open, node, segment, from_)
    except FileNotFoundError:
        raise HTTPException(404, missing) from None
    where = {"X-Copy-From": f"{begins:.6f}"}
    if isinstance(made, Path):
        return FileResponse(made, media_type="video/mp4", headers=where)
    # The first bytes (the file's index) come with the first frame: an error before them is
    # still an HTTP error; one after them cuts the answer short, which no player takes for a
    # whole file.
    try:
        first = await anext(made)
    except FileNotFoundError:
        raise HTTPException(404, missing) from None
    except RedactionError as exc:
        raise HTTPException(500, f"segment {segment_id} could not be redacted: {exc}"
                            ) from None
    return StreamingResponse(_chained(first, made), media_type="video/mp4",
                             headers={"Cache-Control": "no-store", **where})


async def _chained(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        yield chunk


def _following(node: Node, segment: Segment) -> list[Segment]:
    """The PREFETCH segments of the same camera after ``segment``."""
    with node.store.read() as conn:
        rows = conn.execute(
            select(schema.segments)
            .where(schema.segments.c.camera == segment.camera,
                   schema.segments.c.start > segment.start)
            .order_by(schema.segments.c.start).limit(PREFETCH)
        ).all()
    return [Segment.from_row(row) for row in rows]


def redacted_copies(request: Request) -> RedactedCopies:
    return get_node(request).redacted_copies
