"""Holds: footage protected from deletion for a case, a complaint or an incident.

A hold names a camera (or every camera) and a time range. While it is active, no retention
pass deletes a segment that overlaps it, whatever its age or the disk pressure. A hold stops
counting when it is released or when its expiry passes; its row is kept either way, so an
inspector can see why footage outlived the retention period.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, Row, and_, exists, insert, or_, select, update

from custodes.store.db import Store
from custodes.store.schema import holds, segments

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hold:
    id: int
    camera: str | None  # None: every camera
    start: float
    end: float
    reason: str
    created_at: float
    created_by: str
    expires_at: float | None  # None: until released
    released_at: float | None
    released_by: str | None

    @classmethod
    def from_row(cls, row: Row[Any]) -> Hold:
        return cls(**row._asdict())

    def covers(self, camera: str, start: float, end: float) -> bool:
        """Whether this hold protects footage of ``camera`` in [start, end)."""
        return (self.camera is None or self.camera == camera) and (
            start < self.end and end > self.start
        )


def add_hold(
    store: Store,
    *,
    camera: str | None,
    start: float,
    end: float,
    reason: str,
    created_by: str,
    expires_at: float | None,
    now: float | None = None,
) -> int:
    """Protect footage of ``camera`` (None: all cameras) in [start, end); return the hold id."""
    now = time.time() if now is None else now
    if end <= start:
        raise ValueError(f"a hold must end after it starts (start {start}, end {end})")
    if not reason.strip():
        raise ValueError("a hold needs a reason (the case, complaint or incident it is for)")
    if not created_by.strip():
        raise ValueError("a hold needs the name of whoever creates it")
    if expires_at is not None and expires_at <= now:
        raise ValueError(f"a hold cannot expire in the past (expires_at {expires_at}, now {now})")

    def insert_hold(conn: Connection) -> int:
        return int(conn.execute(
            insert(holds)
            .values(
                camera=camera, start=start, end=end, reason=reason.strip(), created_at=now,
                created_by=created_by, expires_at=expires_at,
            )
            .returning(holds.c.id)
        ).scalar_one())

    hold_id = store.write(insert_hold)
    log.info("hold %d added by %s on %s: %s", hold_id, created_by, camera or "all cameras", reason)
    return hold_id


def release_hold(store: Store, hold_id: int, *, by: str, now: float | None = None) -> None:
    """End a hold; its footage becomes subject to retention again at the next pass."""
    now = time.time() if now is None else now

    def release(conn: Connection) -> None:
        row = conn.execute(select(holds.c.released_at).where(holds.c.id == hold_id)).first()
        if row is None:
            raise ValueError(f"there is no hold {hold_id}")
        if row.released_at is not None:
            raise ValueError(f"hold {hold_id} was already released")
        conn.execute(
            update(holds).where(holds.c.id == hold_id).values(released_at=now, released_by=by)
        )

    store.write(release)
    log.info("hold %d released by %s", hold_id, by)


def is_active(now: float) -> ColumnElement[bool]:
    """SQL condition on ``holds``: not released and not expired at ``now``."""
    return and_(
        holds.c.released_at.is_(None),
        or_(holds.c.expires_at.is_(None), holds.c.expires_at > now),
    )


def active_holds(conn: Connection, now: float) -> list[Hold]:
    rows = conn.execute(select(holds).where(is_active(now)).order_by(holds.c.id))
    return [Hold.from_row(row) for row in rows]


def segment_is_held(now: float) -> ColumnElement[bool]:
    """SQL condition on ``segments``: the segment overlaps a hold active at ``now``.

    Retention adds ``~segment_is_held(now)`` to every query that picks segments to delete,
    so held footage is never even a candidate and batching by LIMIT stays correct.
    """
    return exists().where(
        is_active(now),
        or_(holds.c.camera.is_(None), holds.c.camera == segments.c.camera),
        holds.c.start < segments.c.end,
        holds.c.end > segments.c.start,
    )
