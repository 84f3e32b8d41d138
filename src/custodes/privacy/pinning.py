"""The deployment profile, pinned in the database: a config cannot switch it, a command can.

The profile decides what no user of a deployment may do (custodes.privacy.policy). Read from
the config alone it would be one edit, one environment variable (``profile: ${P}``) or one
second config pointed at the same storage away from "police", so the first start pins it in
``node_settings``; from then on a node, or a command that touches biometric data, whose
config names another profile refuses to run. ``custodes profile set`` is the one way to change
it: explicit, with a reason, audited.

A profile that allows less also keeps less: moving to it (and every start under it) deletes
the biometric data it does not allow (face descriptors, gallery, case subjects) and ends the
cases it cannot have, with a ``biometric.wipe`` entry in the audit log as the deletion record.
"""

from __future__ import annotations

import time
from typing import Any, Final

from sqlalchemy import Connection, delete, func, insert, select, update

from custodes.audit.actions import Action
from custodes.audit.log import SYSTEM, AuditLog
from custodes.privacy import policy
from custodes.privacy.policy import Profile, allows
from custodes.store import schema
from custodes.store.db import Store

PROFILE_KEY: Final = "profile"
_OPEN = ("pending", "approved")


class ProfileMismatch(RuntimeError):
    """The config names another profile than the one pinned in the database."""

    def __init__(self, pinned: Profile, configured: Profile) -> None:
        super().__init__(
            f"this storage is pinned to the {pinned.value} profile, the config says "
            f"{configured.value}; a config cannot change the profile: run `custodes profile "
            f"set {configured.value} --reason ...` to change it (audited), or fix the config")
        self.pinned = pinned
        self.configured = configured


def pinned_profile(store: Store) -> Profile | None:
    with store.read() as conn:
        value = conn.execute(select(schema.node_settings.c.value)
                             .where(schema.node_settings.c.key == PROFILE_KEY)).scalar()
    return None if value is None else Profile(value)


def check_profile(store: Store, configured: Profile) -> None:
    """Raise ProfileMismatch unless ``configured`` is the pinned profile (or none is pinned
    yet: a command before the first start, which will pin it)."""
    pinned = pinned_profile(store)
    if pinned is not None and pinned is not configured:
        raise ProfileMismatch(pinned, configured)


def pin_profile(store: Store, audit: AuditLog, configured: Profile) -> Profile:
    """At a node's start: pin ``configured`` when nothing is pinned, else insist on it."""
    now = time.time()

    def write(conn: Connection) -> Profile | None:
        value = conn.execute(select(schema.node_settings.c.value)
                             .where(schema.node_settings.c.key == PROFILE_KEY)).scalar()
        if value is not None:
            return Profile(value)
        conn.execute(insert(schema.node_settings).values(
            key=PROFILE_KEY, value=configured.value, set_at=now, set_by=SYSTEM))
        return None

    pinned = store.write(write)
    if pinned is None:
        audit.record(SYSTEM, Action.PROFILE_PIN, configured.value,
                     detail={"profile": configured.value, "first_start": True})
        return configured
    if pinned is not configured:
        audit.record_refusal(SYSTEM, Action.PROFILE_PIN, configured.value,
                             "the config names another profile than the one pinned",
                             detail={"pinned": pinned.value, "configured": configured.value})
        raise ProfileMismatch(pinned, configured)
    return pinned


def change_profile(store: Store, audit: AuditLog, new: Profile, *, by: str,
                   reason: str) -> dict[str, int]:
    """Pin ``new``, audited with ``reason``; wipe what it does not allow (see wipe_for)."""
    if not reason.strip():
        raise ValueError("a profile change needs a reason")
    before = pinned_profile(store)
    now = time.time()

    def write(conn: Connection) -> None:
        conn.execute(delete(schema.node_settings)
                     .where(schema.node_settings.c.key == PROFILE_KEY))
        conn.execute(insert(schema.node_settings).values(
            key=PROFILE_KEY, value=new.value, set_at=now, set_by=by))

    store.write(write)
    audit.record(by, Action.PROFILE_CHANGE, new.value, detail={
        "from": None if before is None else before.value, "to": new.value,
        "reason": reason.strip()})
    return wipe_for(store, audit, new, by=by, reason=f"profile changed to {new.value}")


def wipe_for(store: Store, audit: AuditLog, profile: Profile, *, by: str = SYSTEM,
             reason: str = "") -> dict[str, int]:
    """Delete the biometric data ``profile`` does not allow, end the cases it cannot have,
    and record what went (an audit entry ``biometric.wipe``). Returns the counts, all zero
    when there was nothing to delete (then nothing is recorded)."""
    now = time.time()
    embed, enroll, search = (allows(profile, a) for a in (
        policy.Action.EMBED, policy.Action.ENROLL, policy.Action.SEARCH))

    def write(conn: Connection) -> dict[str, int]:
        counts = {"face_descriptors": 0, "gallery_people": 0, "cases_ended": 0,
                  "case_subjects": 0}
        f = schema.faces
        if not embed:
            counts["face_descriptors"] = int(conn.execute(
                update(f).where(f.c.sealed.is_not(None) | f.c.embedding.is_not(None))
                .values(sealed=None, embedding=None)).rowcount)
        if not enroll:
            g = schema.gallery_people
            counts["gallery_people"] = _count(conn, g)
            conn.execute(delete(schema.gallery_photos))
            conn.execute(delete(g))
        if not search:
            c, s = schema.cases, schema.case_subjects
            open_ids = [int(i) for i in conn.execute(
                select(c.c.id).where(c.c.status.in_(_OPEN))).scalars()]
            held = select(schema.case_holds.c.hold_id).where(
                schema.case_holds.c.case_id.in_(open_ids))
            conn.execute(update(schema.holds).where(schema.holds.c.id.in_(held),
                                                    schema.holds.c.released_at.is_(None))
                         .values(released_at=now, released_by=by))
            conn.execute(update(c).where(c.c.id.in_(open_ids)).values(
                status="closed", closed_by=by, closed_at=now,
                decision_note=f"ended: {reason or 'the profile does not allow cases'}"))
            counts["cases_ended"] = len(open_ids)
            counts["case_subjects"] = int(conn.execute(
                update(s).where(s.c.descriptor.is_not(None) | s.c.crop.is_not(None))
                .values(descriptor=None, crop=None, wiped_at=now)).rowcount)
        return counts

    counts = store.write(write)
    if any(counts.values()):
        detail: dict[str, Any] = {"profile": profile.value, **counts}
        if reason:
            detail["reason"] = reason
        audit.record(by, Action.BIOMETRIC_WIPE, profile.value, detail=detail)
    return counts


def _count(conn: Connection, table: Any) -> int:
    return int(conn.execute(select(func.count()).select_from(table)).scalar_one())
