"""Events (motion, face seen) with their redacted snapshots, for those who hold events.view.

A snapshot was redacted when the analytics wrote it (every face pixelated and blurred), so it
is served as it is. Listing events is not audited (it would grow with every page turned, and
shows no picture); the snapshots are pictures but already anonymised.
"""

from __future__ import annotations

import json
import time
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import and_, or_, select

from custodes.api.deps import get_node, require, require_camera
from custodes.api.routes.video import CameraName, resolve_inside
from custodes.auth.roles import Actor, Permission
from custodes.events.review import MAX_IDS, ReviewError, acknowledge, snapshot_problem
from custodes.events.types import EventKind
from custodes.store import schema

router = APIRouter(prefix="/api/events", tags=["events"])

Reader = Annotated[Actor, Depends(require(Permission.EVENTS_VIEW))]
Reviewer = Annotated[Actor, Depends(require(Permission.EVENTS_ACKNOWLEDGE))]
EventId = Annotated[int, Path(ge=1, le=2**62)]
Time = Annotated[float | None, Query(ge=0, le=1e11, description="UTC epoch seconds")]


def _event(row: Any, snapshots: FilePath, now: float) -> dict[str, Any]:
    data = json.loads(row.data)
    # The page asks only for pictures that are there; for the others it shows why not.
    problem = snapshot_problem(snapshots, row.snapshot, data, start=row.start,
                               end=row.end, now=now)
    return {
        "id": row.id, "camera": row.camera, "kind": row.kind, "start": row.start,
        "end": row.end, "data": data,
        "snapshot_url": f"/api/events/{row.id}/snapshot.jpg" if problem is None else None,
        "no_snapshot": problem,
        "acknowledged_at": row.acknowledged_at, "acknowledged_by": row.acknowledged_by,
    }


@router.get("")
def list_events(
    request: Request,
    actor: Reader,
    *,
    camera: Annotated[CameraName | None, Query()] = None,
    kind: EventKind | None = None,
    start: Time = None,
    end: Time = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    unacknowledged: Annotated[bool, Query(description="Only events nobody acknowledged")] = False,
    before: Annotated[int | None, Query(
        ge=1, le=2**62, description="Cursor: the `next` of the page before")] = None,
) -> dict[str, Any]:
    """Events newest first (by start time), filtered; ``next`` pages on to older ones."""
    node = get_node(request)
    ev = schema.events
    conds = []
    if camera is not None:
        require_camera(node, actor, camera)
        conds.append(ev.c.camera == camera)
    elif actor.cameras is not None:
        conds.append(ev.c.camera.in_(sorted(actor.cameras)))
    if kind is not None:
        conds.append(ev.c.kind == kind.value)
    if start is not None:
        conds.append(ev.c.start >= start)
    if end is not None:
        conds.append(ev.c.start < end)
    if unacknowledged:
        conds.append(ev.c.acknowledged_at.is_(None))
    with node.store.read() as conn:
        if before is not None:
            cursor = conn.execute(select(ev.c.start).where(ev.c.id == before)).scalar()
            if cursor is None:
                raise HTTPException(400, f"no event {before} to page from")
            # Same start time: the id breaks the tie, as in the ordering.
            conds.append(or_(ev.c.start < cursor, and_(ev.c.start == cursor, ev.c.id < before)))
        rows = list(conn.execute(
            select(ev).where(*conds).order_by(ev.c.start.desc(), ev.c.id.desc()).limit(limit)
        ))
    now = time.time()
    return {
        "events": [_event(r, node.layout.snapshots, now) for r in rows],
        "next": rows[-1].id if len(rows) == limit else None,
    }


@router.get("/{event_id}/snapshot.jpg", response_class=FileResponse)
def snapshot(request: Request, actor: Reader,
             event_id: EventId) -> FileResponse:
    """The event's redacted snapshot (JPEG)."""
    node = get_node(request)
    with node.store.read() as conn:
        row = conn.execute(
            select(schema.events.c.camera, schema.events.c.snapshot)
            .where(schema.events.c.id == event_id)
        ).first()
    if row is None:
        raise HTTPException(404, f"no event {event_id}")
    require_camera(node, actor, row.camera)
    if not row.snapshot:
        raise HTTPException(404, f"event {event_id} has no snapshot")
    path = resolve_inside(node.layout.snapshots, row.snapshot)
    if not path.is_file():
        raise HTTPException(404, f"the snapshot of event {event_id} is gone (deleted with "
                                 "its footage, or never written)")
    return FileResponse(path, media_type="image/jpeg")


class Acknowledge(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ids: list[Annotated[int, Field(ge=1, le=2**62)]] = Field(
        min_length=1, max_length=MAX_IDS, description="The events to acknowledge")


def _acknowledged(request: Request, actor: Actor, ids: list[int]) -> dict[str, Any]:
    node = get_node(request)
    try:
        done = acknowledge(node.store, node.audit, actor, ids)
    except ReviewError as exc:
        raise HTTPException(exc.status, exc.reason) from None
    return {"acknowledged": done.acknowledged, "already": done.already, "at": done.at,
            "by": actor.name}


@router.post("/acknowledge")
def acknowledge_many(request: Request, actor: Reviewer, body: Acknowledge) -> dict[str, Any]:
    """Acknowledge several events (e.g. every event a page shows); audited."""
    return _acknowledged(request, actor, body.ids)


@router.post("/{event_id}/acknowledge")
def acknowledge_one(request: Request, actor: Reviewer, event_id: EventId) -> dict[str, Any]:
    """Acknowledge one event: marked as reviewed, by whom and when; audited."""
    return _acknowledged(request, actor, [event_id])
