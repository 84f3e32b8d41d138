"""Holds asked for by a signed-in user (the timeline page, the API): who may, on what, audited.

custodes.record.holds keeps the table and what retention reads; this module is the gate in
front of it for people, the same rules for the page and the API:

- placing and releasing need ``holds.manage`` (operators, investigators), on a camera among
  the user's cameras; a hold on every camera is released only by someone who sees them all;
- a hold placed by a case's approval belongs to the case: it ends when the case is closed or
  expires, never by hand (that would let one person undo a second person's decision);
- a hold needs a reason, and covers at most ``MAX_SPAN_DAYS`` of footage;
- every placement and release, and every refusal, is in the audit log.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, NoReturn

from sqlalchemy import select

from custodes.audit.actions import Action
from custodes.audit.log import AuditLog
from custodes.auth.roles import Actor, Permission
from custodes.privacy.policy import Refused
from custodes.record.holds import Hold, add_hold, is_active, release_hold
from custodes.store import schema
from custodes.store.db import Store

MAX_SPAN_DAYS: Final = 31  # the retention ceiling's order: a hold is for an incident, not a year
MAX_REASON: Final = 500


class HoldError(ValueError):
    """A hold that cannot be placed or released as asked, with the reason (a 4xx)."""


@dataclass(frozen=True)
class HoldView:
    hold: Hold
    case_id: int | None  # the case whose approval placed it; None: placed by hand

    def public(self) -> dict[str, Any]:
        h = self.hold
        return {"id": h.id, "camera": h.camera, "start": h.start, "end": h.end,
                "reason": h.reason, "created_at": h.created_at, "created_by": h.created_by,
                "expires_at": h.expires_at, "released_at": h.released_at,
                "released_by": h.released_by, "case": self.case_id}


class HoldDesk:
    def __init__(self, store: Store, audit: AuditLog,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.audit = audit
        self.clock = clock

    def list(self, actor: Actor, *, camera: str | None = None, start: float | None = None,
             end: float | None = None) -> list[HoldView]:
        """Active holds ``actor`` may see (those on their cameras; one on every camera only
        if they see every camera), optionally on ``camera`` and overlapping [start, end)."""
        self._require(actor, Action.ACCESS, "holds")
        h, ch = schema.holds, schema.case_holds
        query = (select(h, ch.c.case_id).outerjoin(ch, ch.c.hold_id == h.c.id)
                 .where(is_active(self.clock())).order_by(h.c.start))
        if camera is not None:
            query = query.where((h.c.camera == camera) | h.c.camera.is_(None))
        if start is not None:
            query = query.where(h.c.end > start)
        if end is not None:
            query = query.where(h.c.start < end)
        with self.store.read() as conn:
            rows = conn.execute(query).all()
        views = []
        for row in rows:
            values = row._asdict()
            case_id = values.pop("case_id")
            view = HoldView(Hold(**values), case_id)
            if _sees(actor, view.hold):
                views.append(view)
        return views

    def place(self, actor: Actor, *, camera: str, start: float, end: float, reason: str,
              expires_at: float | None = None) -> HoldView:
        target = camera
        detail: dict[str, Any] = {"start": start, "end": end, "reason": reason,
                                  "expires_at": expires_at}
        self._require(actor, Action.HOLD_ADD, target)
        if not actor.sees_camera(camera):
            self._refuse(actor, Action.HOLD_ADD, target, "not among the user's cameras", detail)
        now = self.clock()
        reason = reason.strip()
        if not reason:
            raise HoldError("a hold needs a reason (the incident, complaint or case it is for)")
        if len(reason) > MAX_REASON:
            raise HoldError(f"a hold's reason has at most {MAX_REASON} characters")
        if end <= start:
            raise HoldError("a hold must end after it starts")
        if end - start > MAX_SPAN_DAYS * 86400:
            raise HoldError(f"a hold covers at most {MAX_SPAN_DAYS} days of footage")
        if start > now:
            raise HoldError("a hold starts in the past: there is no footage after now yet")
        if expires_at is not None and expires_at <= now:
            raise HoldError("a hold cannot expire in the past")
        try:
            hold_id = add_hold(self.store, camera=camera, start=start, end=end, reason=reason,
                               created_by=actor.name, expires_at=expires_at, now=now)
        except ValueError as exc:
            raise HoldError(str(exc)) from None
        self.audit.record(actor.name, Action.HOLD_ADD, target, address=actor.address,
                          detail={"hold": hold_id, **detail, "reason": reason})
        return self._get(hold_id)

    def release(self, actor: Actor, hold_id: int, note: str = "") -> HoldView:
        target = str(hold_id)
        self._require(actor, Action.HOLD_RELEASE, target)
        try:
            view = self._get(hold_id)
        except KeyError:
            raise HoldError(f"there is no hold {hold_id}") from None
        detail = {"hold": view.public(), "note": note.strip()}
        if not _sees(actor, view.hold):
            self._refuse(actor, Action.HOLD_RELEASE, target,
                         "the hold covers cameras outside the user's cameras", detail)
        if view.case_id is not None:
            self._refuse(actor, Action.HOLD_RELEASE, target,
                         f"hold {hold_id} belongs to case {view.case_id}: it ends when the "
                         "case is closed or expires", detail)
        h = view.hold
        now = self.clock()
        if h.released_at is not None or (h.expires_at is not None and h.expires_at <= now):
            raise HoldError(f"hold {hold_id} is no longer in force")
        try:
            release_hold(self.store, hold_id, by=actor.name, now=now)
        except ValueError as exc:
            raise HoldError(str(exc)) from None
        self.audit.record(actor.name, Action.HOLD_RELEASE, target, address=actor.address,
                          detail=detail)
        return self._get(hold_id)

    # -- internals ---------------------------------------------------------------------------

    def _get(self, hold_id: int) -> HoldView:
        h, ch = schema.holds, schema.case_holds
        with self.store.read() as conn:
            row = conn.execute(select(h, ch.c.case_id).outerjoin(ch, ch.c.hold_id == h.c.id)
                               .where(h.c.id == hold_id)).first()
        if row is None:
            raise KeyError(hold_id)
        values = row._asdict()
        case_id = values.pop("case_id")
        return HoldView(Hold(**values), case_id)

    def _require(self, actor: Actor, action: Action, target: str) -> None:
        if not actor.can(Permission.HOLDS_MANAGE):
            self._refuse(actor, action, target,
                         f"the {actor.role.value} role lacks the permission "
                         f"{Permission.HOLDS_MANAGE.value!r}")

    def _refuse(self, actor: Actor, action: Action, target: str, reason: str,
                detail: dict[str, Any] | None = None) -> NoReturn:
        self.audit.record_refusal(actor.name, action, target, reason, detail=detail,
                                  address=actor.address)
        raise Refused(action, reason)


def _sees(actor: Actor, hold: Hold) -> bool:
    return actor.cameras is None if hold.camera is None else actor.sees_camera(hold.camera)
