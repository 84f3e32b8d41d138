"""Who may make and download an export for a case, and how long an export may live.

An export that names a case is evidence in it: the case must be approved and active, and the
user one of its own people (its opener or a member), whether the video is redacted or not.
An unredacted export also needs the case to cover its camera and range. The same rule holds
at download time, so an unredacted export dies with its case: once the case is closed,
rejected or expired nobody may download it, and the privacy upkeep deletes it (``prune``).

Nothing under ``<storage>/exports`` outlives the retention ceiling: every export, redacted or
not, is deleted once it is older than ``retention.ceiling_days``; a subject access export once
its request's validity has passed after it was made; a failed or unreadable export after a
day; a download's temporary zip after an hour. Each deletion is audited.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from sqlalchemy import Connection, Row, select

from custodes.audit.actions import Action
from custodes.audit.log import SYSTEM, AuditLog
from custodes.auth.roles import Actor
from custodes.privacy.policy import DAY, Profile, limits
from custodes.store import schema
from custodes.store.db import Store

log = logging.getLogger(__name__)

EXPORT_ID: Final = r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{8}$"
# A failed export or a folder without a readable record is kept this long for a look, then
# removed; a queued or running one younger than this is left to its job.
STALE_SECONDS: Final = DAY
DOWNLOAD_SECONDS: Final = 3600.0  # a download's temporary zip (normally removed once sent)


def _case(conn: Connection, case_id: int) -> Row[Any] | None:
    return conn.execute(select(schema.cases).where(schema.cases.c.id == case_id)).first()


def _works_on(conn: Connection, row: Row[Any], name: str) -> bool:
    if name == row.opened_by:
        return True
    m = schema.case_members.c
    return conn.execute(select(m.name).where(m.case_id == row.id, m.name == name)).first() \
        is not None


def _inactive(row: Row[Any], now: float) -> str | None:
    """Why the case is not approved and active at ``now``, or None."""
    if row.status == "approved" and row.closed_at is None and now < row.expires_at:
        return None
    state = "expired" if row.status in ("approved", "pending") else row.status
    return f"case {row.id} is not approved and active ({state})"


def case_problem(store: Store, actor: Actor, case_id: int, *, camera: str, start: float,
                 end: float, unredacted: bool, now: float | None = None) -> str | None:
    """Why ``actor`` may not make this export for case ``case_id``, or None."""
    now = time.time() if now is None else now
    with store.read() as conn:
        row = _case(conn, case_id)
        if row is None:
            return f"there is no case {case_id}"
        inactive = _inactive(row, now)
        if inactive is not None:
            return inactive
        if not _works_on(conn, row, actor.name):
            return f"{actor.name} is not a member of case {case_id}"
    if unredacted and (camera not in json.loads(row.cameras) or start < row.scope_start
                       or end > row.scope_end):
        return f"case {case_id} does not cover {camera} from {start:.0f} to {end:.0f}"
    return None


def download_problem(store: Store, actor: Actor, record: dict[str, Any],
                     now: float | None = None) -> str | None:
    """Why ``actor`` may not download the unredacted export ``record``, or None.

    (Redacted exports follow the role and camera rules alone.) A subject access export goes
    only to the two officers who answered its request; a case's, only to the case's own
    people while it is active.
    """
    now = time.time() if now is None else now
    if record.get("redacted", True):
        return None
    r = schema.subject_access_requests.c
    with store.read() as conn:
        if "subject_access" in record:
            request = conn.execute(select(r.recorded_by, r.decided_by).where(
                r.export_id == record["id"])).first()
            if request is None:
                return "this subject access export has no recorded request"
            if actor.name not in (request.recorded_by, request.decided_by):
                return ("a subject access export goes only to the officers who recorded and "
                        "decided its request")
            return None
        case_id = record.get("case")
        row = None if case_id is None else _case(conn, int(case_id))
        if row is None:
            return "this unredacted export belongs to no case"
        inactive = _inactive(row, now)
        if inactive is not None:
            return f"{inactive}: its unredacted exports can no longer be downloaded"
        if not _works_on(conn, row, actor.name):
            return f"{actor.name} is not a member of case {row.id}"
    return None


@dataclass(frozen=True)
class Pruned:
    export_id: str
    reason: str


def _lapsed(conn: Connection, record: dict[str, Any], *, folder_age: float, now: float,
            ceiling: float, profile: Profile) -> str | None:
    """Why an export must go now, or None."""
    created = float(record.get("created_at") or now - folder_age)
    state = record.get("state")
    if state in ("queued", "running") and now - created < STALE_SECONDS:
        return None  # its job may still be making it
    if now - created > ceiling:
        return "older than the retention ceiling"
    if state != "done" and now - created > STALE_SECONDS:
        return f"{state or 'unfinished'} more than a day ago"
    if "subject_access" in record:
        valid = limits(profile).access_valid_days * DAY
        if now - created > valid:
            return f"subject access export older than {valid / DAY:g} days"
        return None
    if not record.get("redacted", True) or record.get("case") is not None:
        case_id = record.get("case")
        row = None if case_id is None else _case(conn, int(case_id))
        if row is None:
            return "its case does not exist"
        if not record.get("redacted", True):
            inactive = _inactive(row, now)
            if inactive is not None:
                return inactive
    return None


def prune(store: Store, audit: AuditLog, root: Path, *, ceiling_days: float,
          profile: Profile, now: float | None = None) -> list[Pruned]:
    """Delete what under ``root`` (the exports folder) has outlived its case or retention."""
    now = time.time() if now is None else now
    if not root.is_dir():
        return []
    removed: list[Pruned] = []
    with store.read() as conn:
        for path in sorted(root.iterdir()):
            try:
                age = now - path.stat().st_mtime
            except FileNotFoundError:  # a download's zip removed as it was sent
                continue
            if path.is_file() and path.name.startswith(".download-"):
                if age > DOWNLOAD_SECONDS:
                    path.unlink(missing_ok=True)
                continue
            if not path.is_dir() or re.match(EXPORT_ID, path.name) is None:
                continue
            try:
                record: dict[str, Any] = json.loads((path / "export.json").read_text("utf-8"))
            except (OSError, ValueError):
                record = {}
            reason = (_lapsed(conn, record, folder_age=age, now=now,
                              ceiling=ceiling_days * DAY, profile=profile) if record
                      else ("no readable record" if age > STALE_SECONDS else None))
            if reason is not None:
                removed.append(Pruned(path.name, reason))
    for item in removed:
        shutil.rmtree(root / item.export_id, ignore_errors=True)
        audit.record(SYSTEM, Action.EXPORT_EXPIRE, item.export_id, detail={"reason": item.reason})
        log.info("export %s deleted: %s", item.export_id, item.reason)
    return removed
