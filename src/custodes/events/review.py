"""The review queue: events an operator has looked at are acknowledged, with who and when.

An event is acknowledged once: a second acknowledgement changes nothing and says who did it
first. Every acknowledgement is written to the audit log (one entry per request, the event
ids in its detail), so "who saw the alarm, and when" is answerable later. An actor limited
to some cameras can acknowledge only their events; a request naming any other camera's event
is refused whole, and the refusal recorded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Connection, select, update

from custodes.audit.actions import Action
from custodes.audit.log import AuditLog
from custodes.auth.roles import Actor
from custodes.store import schema
from custodes.store.db import Store

MAX_IDS = 500  # events acknowledged by one request at most: a page shows at most that many
WRITING_GRACE = 60.0  # seconds a snapshot may take to be redacted and written


class ReviewError(Exception):
    """A request the review queue turns away; ``status`` is the HTTP status it maps to."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Acknowledged:
    acknowledged: list[int] = field(default_factory=list)  # by this request
    already: list[int] = field(default_factory=list)  # by someone before (left as they were)
    at: float = 0.0


def acknowledge(store: Store, audit: AuditLog, actor: Actor, ids: list[int]) -> Acknowledged:
    """Mark the events ``ids`` as reviewed by ``actor``. ReviewError: 404 for an unknown id,
    403 (audited) for an event of a camera the actor may not see, 400 for too many."""
    wanted = sorted(set(ids))
    if not wanted:
        raise ReviewError(400, "name at least one event")
    if len(wanted) > MAX_IDS:
        raise ReviewError(400, f"at most {MAX_IDS} events at once")
    ev = schema.events
    with store.read() as conn:
        rows = conn.execute(select(ev.c.id, ev.c.camera)
                            .where(ev.c.id.in_(wanted))).all()
    found = {row.id: row.camera for row in rows}
    missing = [i for i in wanted if i not in found]
    if missing:
        raise ReviewError(404, f"no event {', '.join(map(str, missing[:10]))}")
    hidden = sorted({camera for camera in found.values() if not actor.sees_camera(camera)})
    if hidden:
        reason = "not among the user's cameras"
        audit.record_refusal(actor.name, Action.EVENT_ACKNOWLEDGE, ",".join(hidden), reason,
                             detail={"events": wanted[:MAX_IDS]}, address=actor.address)
        raise ReviewError(403, f"you have no access to camera {hidden[0]!r}")
    at = time.time()

    def write(conn: Connection) -> tuple[list[int], list[int]]:
        done = conn.execute(
            update(ev).where(ev.c.id.in_(wanted), ev.c.acknowledged_at.is_(None))
            .values(acknowledged_at=at, acknowledged_by=actor.name).returning(ev.c.id)
        ).scalars().all()
        fresh = sorted(int(i) for i in done)
        return fresh, [i for i in wanted if i not in set(fresh)]

    fresh, already = store.write(write)
    if fresh:
        audit.record(actor.name, Action.EVENT_ACKNOWLEDGE, ",".join(sorted(set(
            found[i] for i in fresh))), detail={"events": fresh}, address=actor.address)
    return Acknowledged(fresh, already, at)


def snapshot_problem(snapshots: Path, relative: str | None, data: dict[str, object], *,
                     start: float, end: float | None, now: float) -> str | None:
    """Why an event shows no picture, or None when its snapshot file is there to show.

    Said in words so that the page never asks for a picture that is not there.
    """
    if relative is None:
        why = data.get("no_snapshot")
        if isinstance(why, str) and why:
            return why
        if end is None:
            return "taken when the event ends"
        return "this kind of event has no picture"
    try:
        present = (snapshots / relative).is_file()
    except OSError as exc:
        return f"cannot be read: {exc.strerror}"
    if present:
        return None
    if now - (end if end is not None else start) < WRITING_GRACE:
        return "being redacted; shown in a moment"
    return "not written: its redaction failed or it was deleted (see the node's log)"
