"""Subject access requests: a person asks for their own footage, and two people answer.

Without this, one officer alone could upload anybody's photo and receive a video in which that
person alone is visible: identification of anyone, by one person, even in a school. So an
answer goes through a recorded request:

1. An officer (``subject_access``) records it: the request's reference, the requester, how
   their identity was checked, by whom and when, one camera and a span of footage, and the
   requester's photo (sealed with the node's biometric key, bound to the row).
2. A second officer, neither the one who recorded it nor the one who checked the identity,
   looks at the photo beside the identity check and approves or rejects it. A rejection wipes
   the photo.
3. The recorder or the decider starts the export once; the photo is opened for it and wiped
   in the same transaction, so a request yields one export at most.

Each request is limited by the profile (custodes.privacy.policy.Limits): the span of footage,
how many requests one requester and one officer may have in a period, and how long a request
stays valid (after which it lapses and its photo is wiped). Every step, and every refusal, is
audited; requests are listed in the inspection pack (by reference: never the requester's name
or photo).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, NoReturn

from sqlalchemy import Connection, Row, func, insert, select, update

from custodes.audit.actions import Action
from custodes.audit.log import SYSTEM, AuditLog
from custodes.auth.roles import Actor, Permission
from custodes.keys import NodeKeys
from custodes.privacy import policy
from custodes.privacy.policy import DAY, Profile, Refused, allows, limits
from custodes.store import schema
from custodes.store.db import Store

MAX_TEXT: Final = 500


class RequestStatus(StrEnum):
    PENDING = "pending"  # recorded, waiting for a second officer
    APPROVED = "approved"  # may be exported, once
    REJECTED = "rejected"
    EXPORTED = "exported"  # its one export was started; the photo is gone
    EXPIRED = "expired"  # not exported in time; the photo is gone


_LIVE = (RequestStatus.PENDING.value, RequestStatus.APPROVED.value)


class RequestError(ValueError):
    """A malformed request (not a refusal): an empty field, a span that ends before it starts."""


@dataclass(frozen=True)
class AccessRequest:
    id: int
    reference: str
    requester: str
    identity_check: str
    identity_checked_by: str
    identity_checked_at: float
    camera: str
    start: float
    end: float
    recorded_by: str
    recorded_at: float
    status: RequestStatus  # as of when read: a live request past expires_at is EXPIRED
    decided_by: str | None
    decided_at: float | None
    decision_note: str | None
    expires_at: float
    export_id: str | None
    exported_at: float | None
    has_photo: bool

    def answers(self, name: str) -> bool:
        """Whether ``name`` is one of the two officers who answer it (recorder, decider)."""
        return name in (self.recorded_by, self.decided_by)

    def describe(self) -> dict[str, Any]:
        """What the audit log keeps: the request, never the requester's name or photo."""
        return {
            "reference": self.reference, "camera": self.camera, "from": self.start,
            "to": self.end, "identity_check": self.identity_check,
            "identity_checked_by": self.identity_checked_by,
            "identity_checked_at": self.identity_checked_at,
        }


def requester_key(name: str) -> str:
    """The requester's name as the rate limit counts it: case and spacing do not make a new
    person."""
    return " ".join(name.casefold().split())


def _context(request_id: int) -> bytes:
    return f"subject_access:{request_id}:photo".encode()


class SubjectAccess:
    """Records, decides, spends and lapses subject access requests."""

    def __init__(self, store: Store, keys: NodeKeys, audit: AuditLog, profile: Profile,
                 clock: Callable[[], float] = time.time, *,
                 known_cameras: Collection[str] | None = None) -> None:
        self.store = store
        self.keys = keys
        self.audit = audit
        self.profile = profile
        self.clock = clock
        self.known_cameras = None if known_cameras is None else frozenset(known_cameras)

    # -- recording ----------------------------------------------------------------------------

    def record(self, actor: Actor, *, reference: str, requester: str, identity_check: str,
               identity_checked_by: str, identity_checked_at: float, camera: str,
               start: float, end: float, photo: bytes) -> AccessRequest:
        """Record a request with the requester's photo (already checked to show a face)."""
        action, target = Action.SUBJECT_ACCESS_RECORD, f"reference {reference}"
        detail: dict[str, Any] = {"reference": reference, "camera": camera, "from": start,
                                  "to": end}
        self._require(actor, action, target, detail)
        for name, value in (("reference", reference), ("requester", requester),
                            ("identity check", identity_check),
                            ("identity checker", identity_checked_by)):
            if not value.strip():
                raise RequestError(f"a subject access request needs its {name}")
            if len(value) > MAX_TEXT:
                raise RequestError(f"the {name} is longer than {MAX_TEXT} characters")
        if self.known_cameras is not None and camera not in self.known_cameras:
            raise RequestError(f"unknown camera {camera}")
        if end <= start:
            raise RequestError("the span must end after it starts")
        now = self.clock()
        limit = limits(self.profile)
        if not now - limit.access_valid_days * DAY <= identity_checked_at <= now:
            raise RequestError(f"the identity must have been checked within the last "
                               f"{limit.access_valid_days:g} days")
        if not actor.sees_camera(camera):
            self._refuse(actor, action, target, f"{actor.name} has no access to camera "
                         f"{camera}", detail)
        if end - start > limit.access_seconds:
            self._refuse(actor, action, target, f"a subject access request covers at most "
                         f"{limit.access_seconds / 3600:g} hours under the "
                         f"{self.profile.value} profile", detail)
        if not self._is_user(identity_checked_by.strip()):
            self._refuse(actor, action, target, f"{identity_checked_by.strip()} is not an "
                         "enabled user: the identity check is signed by a named user", detail)
        key = requester_key(requester)
        since = now - limit.access_period_days * DAY
        r = schema.subject_access_requests.c

        def write(conn: Connection) -> int | str:
            # Counted in the writer's transaction: two requests at once cannot both be the
            # last one allowed. Rejected and lapsed requests count too, or fishing would be
            # free.
            per_requester = conn.execute(select(func.count()).where(
                r.requester_key == key, r.recorded_at >= since)).scalar_one()
            if per_requester >= limit.access_per_requester:
                return (f"this requester has had {per_requester} requests in the last "
                        f"{limit.access_period_days:g} days (at most "
                        f"{limit.access_per_requester})")
            per_officer = conn.execute(select(func.count()).where(
                r.recorded_by == actor.name, r.recorded_at >= since)).scalar_one()
            if per_officer >= limit.access_per_officer:
                return (f"{actor.name} has recorded {per_officer} requests in the last "
                        f"{limit.access_period_days:g} days (at most "
                        f"{limit.access_per_officer})")
            request_id = int(conn.execute(insert(schema.subject_access_requests).values(
                reference=reference.strip(), requester=requester.strip(), requester_key=key,
                identity_check=identity_check.strip(),
                identity_checked_by=identity_checked_by.strip(),
                identity_checked_at=identity_checked_at, camera=camera, scope_start=start,
                scope_end=end, recorded_by=actor.name, recorded_at=now,
                status=RequestStatus.PENDING.value,
                expires_at=now + limit.access_valid_days * DAY,
            ).returning(r.id)).scalar_one())
            # The id is part of the seal's context, so the row exists before its photo.
            conn.execute(update(schema.subject_access_requests).where(r.id == request_id)
                         .values(photo=self.keys.seal(photo, _context(request_id))))
            return request_id

        outcome = self.store.write(write)
        if isinstance(outcome, str):
            self._refuse(actor, action, target, outcome, detail)
        request = self._load(outcome)
        self.audit.record(actor.name, action, f"subject access {outcome}",
                          detail=request.describe(), address=actor.address)
        return request

    def _is_user(self, name: str) -> bool:
        u = schema.users.c
        with self.store.read() as conn:
            row = conn.execute(select(u.disabled).where(u.name == name)).first()
        return row is not None and not row.disabled

    # -- deciding -----------------------------------------------------------------------------

    def approve(self, actor: Actor, request_id: int, *, note: str = "") -> AccessRequest:
        return self._decide(actor, request_id, RequestStatus.APPROVED, note)

    def reject(self, actor: Actor, request_id: int, *, note: str = "") -> AccessRequest:
        """Reject a pending request; the requester's photo is wiped at once."""
        return self._decide(actor, request_id, RequestStatus.REJECTED, note)

    def _decide(self, actor: Actor, request_id: int, decision: RequestStatus,
                note: str) -> AccessRequest:
        action = (Action.SUBJECT_ACCESS_APPROVE if decision is RequestStatus.APPROVED
                  else Action.SUBJECT_ACCESS_REJECT)
        target = f"subject access {request_id}"
        request = self._get(actor, action, request_id)
        if actor.name == request.recorded_by:
            self._refuse(actor, action, target, "a subject access request must be decided by "
                         "a second person, not the one who recorded it")
        if actor.name == request.identity_checked_by:
            self._refuse(actor, action, target, "a subject access request cannot be decided "
                         "by the person who checked the requester's identity")
        now = self.clock()
        r = schema.subject_access_requests.c

        def write(conn: Connection) -> str | None:
            row = conn.execute(select(schema.subject_access_requests)
                               .where(r.id == request_id)).one()
            status = _status(row, now)
            if status is not RequestStatus.PENDING:
                return f"only a pending request can be decided (this one is {status.value})"
            values: dict[str, Any] = {"status": decision.value, "decided_by": actor.name,
                                      "decided_at": now, "decision_note": note.strip() or None}
            if decision is RequestStatus.REJECTED:
                values["photo"] = None
            conn.execute(update(schema.subject_access_requests).where(r.id == request_id)
                         .values(**values))
            return None

        problem = self.store.write(write)
        if problem is not None:
            self._refuse(actor, action, target, problem)
        self.audit.record(actor.name, action, target, address=actor.address,
                          detail={"reference": request.reference, "note": note.strip()})
        return self._load(request_id)

    def photo(self, actor: Actor, request_id: int) -> bytes:
        """The requester's photo, for the officer deciding (compared with the identity
        check); only while the request is pending."""
        action, target = Action.SUBJECT_ACCESS_PHOTO, f"subject access {request_id}"
        request = self._get(actor, action, request_id)
        if request.status is not RequestStatus.PENDING:
            self._refuse(actor, action, target, f"the request is {request.status.value}: its "
                         "photo is shown only while it waits for a decision")
        sealed = self._sealed_photo(request_id)
        if sealed is None:
            self._refuse(actor, action, target, "the request's photo is gone")
        self.audit.record(actor.name, action, target, address=actor.address,
                          detail={"reference": request.reference})
        return self.keys.open(sealed, _context(request_id))

    def _sealed_photo(self, request_id: int) -> bytes | None:
        r = schema.subject_access_requests.c
        with self.store.read() as conn:
            sealed: bytes | None = conn.execute(
                select(r.photo).where(r.id == request_id)).scalar()
        return sealed

    # -- exporting ----------------------------------------------------------------------------

    def exportable(self, actor: Actor, request_id: int) -> AccessRequest:
        """The request, once ``actor`` may start its export now (else refused, audited);
        ``spend`` checks again as it takes it."""
        action, target = Action.SUBJECT_ACCESS_EXPORT, f"subject access {request_id}"
        request = self._get(actor, action, request_id)
        if not request.answers(actor.name):
            self._refuse(actor, action, target, "only the officers who recorded and decided "
                         "the request may export it")
        problem = _unexportable(request.status, has_photo=request.has_photo)
        if problem is not None:
            self._refuse(actor, action, target, problem)
        return request

    def spend(self, actor: Actor, request_id: int, export_id: str) -> tuple[AccessRequest,
                                                                            bytes]:
        """The approved request and its photo, for its one export: marked exported and the
        photo wiped in one transaction, so a second export of it is refused."""
        action, target = Action.SUBJECT_ACCESS_EXPORT, f"subject access {request_id}"
        request = self.exportable(actor, request_id)
        now = self.clock()
        r = schema.subject_access_requests.c

        def write(conn: Connection) -> bytes | str:
            # Again in the writer's transaction: of two exports started at once, one is made.
            row = conn.execute(select(schema.subject_access_requests)
                               .where(r.id == request_id)).one()
            problem = _unexportable(_status(row, now), has_photo=row.photo is not None)
            if problem is not None:
                return problem
            conn.execute(update(schema.subject_access_requests).where(r.id == request_id)
                         .values(status=RequestStatus.EXPORTED.value, export_id=export_id,
                                 exported_at=now, photo=None))
            sealed: bytes = row.photo
            return sealed

        outcome = self.store.write(write)
        if isinstance(outcome, str):
            self._refuse(actor, action, target, outcome, {"export": export_id})
        self.audit.record(actor.name, action, target, address=actor.address,
                          detail={**request.describe(), "export": export_id})
        return self._load(request_id), self.keys.open(outcome, _context(request_id))

    def for_export(self, export_id: str) -> AccessRequest | None:
        """The request an export was made for, if any."""
        r = schema.subject_access_requests.c
        with self.store.read() as conn:
            request_id = conn.execute(select(r.id).where(r.export_id == export_id)).scalar()
        return None if request_id is None else self._load(int(request_id))

    # -- lapsing ------------------------------------------------------------------------------

    def expire_due(self, now: float | None = None) -> list[int]:
        """Lapse every live request past its expiry and wipe its photo (privacy upkeep)."""
        now = self.clock() if now is None else now
        r = schema.subject_access_requests.c

        def write(conn: Connection) -> list[int]:
            due = [int(x.id) for x in conn.execute(select(r.id).where(
                r.status.in_(_LIVE), r.expires_at <= now))]
            if due:
                conn.execute(update(schema.subject_access_requests).where(r.id.in_(due))
                             .values(status=RequestStatus.EXPIRED.value, photo=None))
            return due

        expired = self.store.write(write)
        for request_id in expired:
            self.audit.record(SYSTEM, Action.SUBJECT_ACCESS_EXPIRE,
                              f"subject access {request_id}")
        return expired

    # -- reading ------------------------------------------------------------------------------

    def get(self, actor: Actor, request_id: int) -> AccessRequest:
        return self._get(actor, Action.SUBJECT_ACCESS_VIEW, request_id)

    def list_requests(self, actor: Actor) -> list[AccessRequest]:
        """Requests of the cameras ``actor`` sees, newest first."""
        self._require(actor, Action.SUBJECT_ACCESS_LIST, "subject access")
        r = schema.subject_access_requests.c
        with self.store.read() as conn:
            ids = [int(x.id) for x in conn.execute(select(r.id).order_by(r.id.desc()))]
        found = (self._load(i) for i in ids)
        return [q for q in found if actor.sees_camera(q.camera)]

    def _get(self, actor: Actor, action: Action, request_id: int) -> AccessRequest:
        target = f"subject access {request_id}"
        self._require(actor, action, target)
        try:
            request = self._load(request_id)
        except LookupError as exc:
            self._refuse(actor, action, target, str(exc))
        if not actor.sees_camera(request.camera):
            self._refuse(actor, action, target, f"{actor.name} has no access to camera "
                         f"{request.camera}")
        return request

    def _load(self, request_id: int) -> AccessRequest:
        r = schema.subject_access_requests.c
        with self.store.read() as conn:
            row = conn.execute(select(schema.subject_access_requests)
                               .where(r.id == request_id)).first()
        if row is None:
            raise LookupError(f"there is no subject access request {request_id}")
        return AccessRequest(
            id=int(row.id), reference=row.reference, requester=row.requester,
            identity_check=row.identity_check, identity_checked_by=row.identity_checked_by,
            identity_checked_at=row.identity_checked_at, camera=row.camera,
            start=row.scope_start, end=row.scope_end, recorded_by=row.recorded_by,
            recorded_at=row.recorded_at, status=_status(row, self.clock()),
            decided_by=row.decided_by, decided_at=row.decided_at,
            decision_note=row.decision_note, expires_at=row.expires_at,
            export_id=row.export_id, exported_at=row.exported_at,
            has_photo=row.photo is not None,
        )

    # -- refusals -----------------------------------------------------------------------------

    def _require(self, actor: Actor, action: Action, target: str,
                 detail: dict[str, Any] | None = None) -> None:
        if not allows(self.profile, policy.Action.SUBJECT_ACCESS):
            self._refuse(actor, action, target, f"the {self.profile.value} profile does not "
                         "allow subject access", detail)
        if not actor.can(Permission.SUBJECT_ACCESS):
            self._refuse(actor, action, target, f"the {actor.role.value} role cannot answer "
                         "subject access requests", detail)

    def _refuse(self, actor: Actor, action: Action, target: str, reason: str,
                detail: dict[str, Any] | None = None) -> NoReturn:
        self.audit.record_refusal(actor.name, action, target, reason, detail=detail,
                                  address=actor.address)
        raise Refused(action, reason)


def _unexportable(status: RequestStatus, *, has_photo: bool) -> str | None:
    if status is not RequestStatus.APPROVED:
        return {
            RequestStatus.PENDING: "the request has not been approved",
            RequestStatus.EXPORTED: "the request's one export was made already",
        }.get(status, f"the request is {status.value}")
    return None if has_photo else "the request's photo is gone"


def _status(row: Row[Any], now: float) -> RequestStatus:
    status = RequestStatus(row.status)
    if status.value in _LIVE and now >= row.expires_at:
        return RequestStatus.EXPIRED
    return status
