"""What analytics wrote about footage goes when the footage goes.

Retention deletes segments; the events, motion spans and redacted snapshots that describe
them are personal data too (who passed which door, when) and must not outlive them. A row
goes when no segment of its camera overlaps it and the camera has newer footage (so what is
being recorded right now stays), or, for a camera without any footage, once it is older than
a grace period. Face rows follow the same rule in custodes.faces.descriptors.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Final

from sqlalchemy import (
    ColumnElement,
    Connection,
    Table,
    and_,
    delete,
    exists,
    func,
    literal,
    or_,
    select,
)

from custodes.events.types import EventKind
from custodes.record.layout import Layout
from custodes.store import schema
from custodes.store.db import Store

log = logging.getLogger(__name__)

BATCH: Final = 500  # rows per write, so that other writers never wait long
NO_FOOTAGE_GRACE: Final = 3600.0
# A camera's outages describe no one, and no footage covers them (that is what they say):
# they are kept for the longest retention allowed (30 days), then deleted.
CAMERA_STATES: Final = (EventKind.CAMERA_OFFLINE.value, EventKind.CAMERA_ONLINE.value)
CAMERA_STATES_KEPT: Final = 30 * 86400.0


def _gone(table: Table, now: float) -> ColumnElement[bool]:
    s = table.c
    seg = schema.segments.c
    # An event still open (no end yet) lasts until now.
    end = func.coalesce(s.end, literal(now))
    newest = select(func.max(seg.end)).where(seg.camera == s.camera).scalar_subquery()
    overlapping = exists().where(seg.camera == s.camera, seg.start < end, seg.end > s.start)
    return and_(
        ~overlapping,
        (newest.is_not(None) & (end < newest))
        | (newest.is_(None) & (end < now - NO_FOOTAGE_GRACE)),
    )


def _delete_ids(table: Table, ids: list[int], conn: Connection) -> None:
    conn.execute(delete(table).where(table.c.id.in_(ids)))


def forget_without_footage(store: Store, layout: Layout, now: float | None = None) -> int:
    """Delete events (with their snapshot files) and motion spans whose footage is gone."""
    now = time.time() if now is None else now
    total = 0
    events, motion = schema.events, schema.motion

    while True:
        with store.read() as conn:
            rows = conn.execute(
                select(events.c.id, events.c.snapshot).where(or_(
                    and_(events.c.kind.not_in(CAMERA_STATES), _gone(events, now)),
                    and_(events.c.kind.in_(CAMERA_STATES),
                         func.coalesce(events.c.end, literal(now)) < now - CAMERA_STATES_KEPT),
                )).limit(BATCH)
            ).all()
        if not rows:
            break
        # Files first, then rows: a crash in between leaves rows the next run deletes, never
        # a picture no row points to.
        for row in rows:
            if row.snapshot:
                (layout.snapshots / row.snapshot).unlink(missing_ok=True)
        ids = [row.id for row in rows]
        store.write(functools.partial(_delete_ids, events, ids))
        total += len(ids)

    def motion_batch(conn: Connection) -> int:
        ids = select(motion.c.id).where(_gone(motion, now)).limit(BATCH).scalar_subquery()
        return int(conn.execute(delete(motion).where(motion.c.id.in_(ids))).rowcount)

    while done := store.write(motion_batch):
        total += done
    if total:
        log.info("deleted %d events and motion spans whose footage is gone", total)
    return total
