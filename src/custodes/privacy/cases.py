"""Cases: the only context in which anyone may look for a person's face.

An investigator opens a case (reference, legal basis, purpose, scope: cameras and a time window,
subject photos); a second, different person with the approver role approves or rejects it.
Only inside an approved case that has neither expired nor closed can anyone search the
recordings for a subject's face, or (police profile) be alerted live when one appears
(custodes.faces.watchlist). Searches never reach beyond the case's scope: a narrower request is
honoured, a wider one refused, and the hits are checked against the scope once more.

Approval places holds on the footage in scope; they are released, and the subjects' biometric
data wiped, when the case is rejected, closed or expires. Every decision, every search and every
refusal is in the audit log, with its parameters but never a descriptor or a picture.

The deployment's profile comes first (policy.require): a school may do none of this at all.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final, NoReturn

import numpy as np
import numpy.typing as npt
from sqlalchemy import Connection, Row, and_, insert, select, update

from custodes.audit.actions import Action
from custodes.audit.log import SYSTEM, AuditLog
from custodes.auth.roles import Actor, Permission, Role, can
from custodes.faces.calibration import MatchLevel, meaning, no_hit_meaning, track_level
from custodes.faces.descriptors import FaceDescriptors, FaceHit
from custodes.faces.photos import PhotoError, describe_photo, read_image
from custodes.keys import NodeKeys
from custodes.privacy import case_log, policy
from custodes.privacy.policy import DAY, Profile, Refused, allows, limits
from custodes.store import schema
from custodes.store.db import Store
from custodes.vision.embedding import FaceEmbedder

if TYPE_CHECKING:
    from custodes.config import Config

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]

MAX_K: Final = 200  # hits one search may ask for
MAX_MEMBERS: Final = 20  # colleagues named on one case besides its opener
DESCRIPTOR_BYTES: Final = 128 * 4


class CaseStatus(StrEnum):
    PENDING = "pending"  # opened, waiting for a second person's decision
    APPROVED = "approved"  # search (and, police, watchlist) allowed until it expires
    REJECTED = "rejected"
    CLOSED = "closed"
    EXPIRED = "expired"  # its expiry passed (stored once expire_due has ended it)


_OPEN_STATUSES = (CaseStatus.PENDING.value, CaseStatus.APPROVED.value)


class CaseError(ValueError):
    """A request that is malformed (not a refusal): no such case, a photo without a face..."""


@dataclass(frozen=True)
class SubjectPhoto:
    """A photo of a case subject, as uploaded: any image format OpenCV reads."""

    label: str  # how the case refers to the subject ("suspect 1"); free text
    data: bytes


@dataclass(frozen=True)
class Subject:
    id: int
    label: str
    added_by: str
    added_at: float
    wiped: bool  # the case ended and its descriptor and crop are gone


@dataclass(frozen=True)
class Case:
    id: int
    reference: str
    legal_basis: str
    purpose: str
    cameras: tuple[str, ...]
    scope_start: float
    scope_end: float
    watchlist: bool
    opened_by: str
    opened_at: float
    status: CaseStatus  # as of when it was read: an approved case past expires_at is EXPIRED
    decided_by: str | None
    decided_at: float | None
    decision_note: str | None
    expires_at: float
    closed_by: str | None
    closed_at: float | None
    hold_ids: tuple[int, ...]
    subjects: tuple[Subject, ...]
    members: tuple[str, ...] = ()  # named when opened, besides the opener (need to know)

    def works_on(self, name: str) -> bool:
        """Whether ``name`` is one of the case's own people: its opener or a member."""
        return name == self.opened_by or name in self.members

    def covers(self, camera: str, start: float, end: float) -> bool:
        """Whether footage of ``camera`` in [start, end] lies wholly inside the scope."""
        return (camera in self.cameras and self.scope_start <= start
                and end <= self.scope_end)

    def describe(self) -> dict[str, Any]:
        """What the audit log and an operator may see of the case: no biometric data."""
        return {
            "reference": self.reference, "legal_basis": self.legal_basis,
            "purpose": self.purpose, "cameras": list(self.cameras),
            "start": self.scope_start, "end": self.scope_end, "watchlist": self.watchlist,
            "expires_at": self.expires_at, "subjects": len(self.subjects),
            "members": list(self.members),
        }


@dataclass(frozen=True)
class CaseHit(FaceHit):
    subject_id: int  # the case subject it is nearest to (its crop: Cases.subject_crop)

    @property
    def level(self) -> MatchLevel:
        """Match or possible. A stored face track has one descriptor (its best face), so the
        track's level is that one comparison's, the kind the match distance is calibrated on.
        Only a match may be shown as the subject: a possible hit is ranked, unnamed."""
        return track_level([self.distance])

    @property
    def meaning(self) -> str:
        return meaning(self.level)


class SearchOutcome(StrEnum):
    """What a search's answer means; an empty list of hits alone cannot tell these apart."""

    FOUND = "found"  # hits, among the tracks that could be searched
    NONE_NEAR = "none_near"  # tracks were compared, none near enough to a subject
    NOTHING_SEARCHABLE = "nothing_searchable"  # face tracks exist, none could be compared
    NO_TRACKS = "no_tracks"  # no face track recorded in the cameras and window searched


# Why a face track has no descriptor when its camera's config does not say: the config was
# changed since, or they were deleted (custodes.privacy.pinning wipes them on a profile change).
UNKNOWN_GAP: Final = ("recorded while the camera stored no face descriptors, or their "
                      "descriptors were deleted since (a change to a profile without face "
                      "search deletes them)")


@dataclass(frozen=True)
class CameraCoverage:
    """One camera's face tracks in a search's window and the case's scope."""

    camera: str
    tracks: int
    searchable: int  # with a descriptor: compared with the subjects
    reason: str | None  # why the others have none (None when every track has one)

    @property
    def missing(self) -> int:
        return self.tracks - self.searchable


@dataclass(frozen=True)
class CaseSearchResult:
    case_id: int
    cameras: tuple[str, ...]
    start: float
    end: float
    k: int
    hits: tuple[CaseHit, ...]  # nearest first
    coverage: tuple[CameraCoverage, ...]  # one per camera searched, tracks or not
    outcome: SearchOutcome
    summary: str  # the answer in a plain sentence or two, counts and reasons included
    use_id: int | None = None  # its entry in the case's use log (custodes.privacy.case_log)

    @property
    def tracks(self) -> int:
        return sum(c.tracks for c in self.coverage)

    @property
    def searchable(self) -> int:
        return sum(c.searchable for c in self.coverage)

    @property
    def missing(self) -> int:
        return self.tracks - self.searchable


def descriptor_gaps(config: Config) -> dict[str, str]:
    """For each configured camera that stores no face descriptors, why not: the profile or
    the setting to change. A search reports it for the tracks it could not compare."""
    gaps = {}
    for name, camera in config.cameras.items():
        if not allows(config.profile, policy.Action.EMBED):
            gaps[name] = f"the {config.profile.value} profile stores no face descriptors"
        elif not camera.analytics.faces.embeddings:
            gaps[name] = (f"cameras.{name}.analytics.faces.embeddings is off in the config: "
                          "faces are detected (to blur them) but no descriptor is stored")
    return gaps


def _context(case_id: int, subject_id: int, what: str) -> bytes:
    """What a sealed subject field is bound to: moving it to another row breaks it."""
    return f"case:{case_id}:subject:{subject_id}:{what}".encode()


class Cases:
    """Opens, decides, ends and searches cases; the one gate to face search."""

    def __init__(self, store: Store, keys: NodeKeys, audit: AuditLog, profile: Profile,
                 clock: Callable[[], float] = time.time, *,
                 known_cameras: Collection[str] | None = None,
                 embedder: FaceEmbedder | None = None,
                 descriptors: FaceDescriptors | None = None,
                 descriptors_off: Mapping[str, str] | None = None) -> None:
        self.store = store
        self.keys = keys
        self.audit = audit
        self.profile = profile
        self.clock = clock
        self.known_cameras = None if known_cameras is None else frozenset(known_cameras)
        self._embedder = embedder
        # The node passes its own: the descriptor index is one per process.
        self._descriptors = descriptors or FaceDescriptors(store, keys)
        # camera -> why its config stores no descriptors (descriptor_gaps), for search answers
        self.descriptors_off = dict(descriptors_off or {})

    # -- opening ---------------------------------------------------------------------------

    def open(self, actor: Actor, *, reference: str, legal_basis: str, purpose: str,
             cameras: Sequence[str], start: float, end: float, expires_at: float,
             photos: Sequence[SubjectPhoto], watchlist: bool = False,
             members: Sequence[str] = ()) -> Case:
        """Open a pending case; it does nothing until a second person approves it.

        ``members`` are the colleagues who work the case with its opener: only they (and the
        oversight roles) see it, search it and download its unredacted exports.
        """
        action = Action.CASE_OPEN
        target = f"reference {reference}"
        detail: dict[str, Any] = {"reference": reference, "cameras": list(cameras),
                                  "start": start, "end": end, "watchlist": watchlist,
                                  "expires_at": expires_at, "members": list(members)}
        if not actor.can(Permission.CASE_OPEN):
            self._refuse(actor, action, target, f"the {actor.role.value} role cannot open cases",
                         detail)
        self._require_search_profile(actor, action, target, detail)
        if watchlist and not allows(self.profile, policy.Action.WATCHLIST):
            self._refuse(actor, action, target, f"the {self.profile.value} profile does not "
                         "allow live watchlist alerts", detail)
        hidden = [c for c in cameras if not actor.sees_camera(c)]
        if hidden:
            self._refuse(actor, action, target, f"{actor.name} has no access to camera(s) "
                         f"{', '.join(hidden)}", detail)
        now = self.clock()
        for name, value in (("reference", reference), ("legal basis", legal_basis),
                            ("purpose", purpose)):
            if not value.strip():
                raise CaseError(f"a case needs a {name}")
        if not cameras:
            raise CaseError("a case needs at least one camera in its scope")
        unknown = sorted(set(cameras) - self.known_cameras) if self.known_cameras else []
        if unknown:
            raise CaseError(f"unknown camera(s) {', '.join(unknown)}")
        if end <= start:
            raise CaseError(f"the scope must end after it starts ({start} .. {end})")
        if expires_at <= now:
            raise CaseError("a case must expire in the future")
        reach = self._reach_problem(cameras, start, end, expires_at, now)
        if reach is not None:
            self._refuse(actor, action, target, reach, detail)
        team = sorted({m.strip() for m in members if m.strip()} - {actor.name})
        problem = self._members_problem(team, cameras)
        if problem is not None:
            self._refuse(actor, action, target, problem, detail)
        if not photos:
            raise CaseError("a case needs at least one photo of its subject")
        described = [self._describe(i, photo) for i, photo in enumerate(photos, 1)]

        def write(conn: Connection) -> int:
            case_id = int(conn.execute(insert(schema.cases).values(
                reference=reference.strip(), legal_basis=legal_basis.strip(),
                purpose=purpose.strip(), cameras=json.dumps(sorted(set(cameras))),
                scope_start=start, scope_end=end, watchlist=int(watchlist),
                opened_by=actor.name, opened_at=now, status=CaseStatus.PENDING.value,
                expires_at=expires_at,
            ).returning(schema.cases.c.id)).scalar_one())
            for label, vector, crop in described:
                self._insert_subject(conn, case_id, label=label, vector=vector, crop=crop,
                                     by=actor.name, now=now)
            for name in team:
                conn.execute(insert(schema.case_members).values(
                    case_id=case_id, name=name, added_by=actor.name, added_at=now))
            return case_id

        case_id = self.store.write(write)
        case = self._load(case_id)
        self.audit.record(actor.name, action, f"case {case_id}", detail=case.describe(),
                          address=actor.address)
        log.info("case %d (%s) opened by %s", case_id, reference, actor.name)
        return case

    def _reach_problem(self, cameras: Sequence[str], start: float, end: float,
                       expires_at: float, now: float) -> str | None:
        """Why a case of this scope and expiry is beyond the profile's limits, or None."""
        limit = limits(self.profile)
        if expires_at - now > limit.case_days * DAY:
            return (f"a case may run at most {limit.case_days:g} days under the "
                    f"{self.profile.value} profile")
        if end - start > limit.case_scope_days * DAY:
            return (f"a case may cover at most {limit.case_scope_days:g} days of footage under "
                    f"the {self.profile.value} profile")
        if len(set(cameras)) > limit.case_cameras:
            return (f"a case may cover at most {limit.case_cameras} cameras under the "
                    f"{self.profile.value} profile")
        return None

    def _members_problem(self, team: Sequence[str], cameras: Sequence[str]) -> str | None:
        """Why these users cannot be members, or None: each must be an enabled user whose
        role works cases and who sees every camera of the scope. (Named users only: a name
        kept for an account created later would hand the case to whoever creates it.)"""
        if len(team) > MAX_MEMBERS:
            return f"a case has at most {MAX_MEMBERS} members besides its opener"
        if not team:
            return None
        u = schema.users.c
        with self.store.read() as conn:
            rows = {r.name: r for r in conn.execute(
                select(u.name, u.role, u.cameras, u.disabled).where(u.name.in_(team)))}
        for name in team:
            row = rows.get(name)
            if row is None or row.disabled:
                return f"{name} is not an enabled user and cannot be a member of a case"
            if not can(Role(row.role), Permission.CASE_VIEW):
                return f"{name} (role {row.role}) cannot work cases"
            allowed = None if row.cameras is None else set(json.loads(row.cameras))
            if allowed is not None and not set(cameras) <= allowed:
                return f"{name} has no access to every camera of the case"
        return None

    def add_subject(self, actor: Actor, case_id: int, photo: SubjectPhoto) -> Case:
        """Add a subject photo to a pending case: approval covers every subject it shows."""
        action, target = Action.CASE_ADD_SUBJECT, f"case {case_id}"
        case = self._get(actor, action, case_id)
        if not actor.can(Permission.CASE_OPEN) or actor.name != case.opened_by:
            self._refuse(actor, action, target, "only the user who opened a case can add "
                         "subjects to it")
        if case.status is not CaseStatus.PENDING:
            self._refuse(actor, action, target, f"subjects can only be added to a pending "
                         f"case (this one is {case.status.value})")
        label, vector, crop = self._describe(1, photo)
        now = self.clock()

        def write(conn: Connection) -> int:
            return self._insert_subject(conn, case_id, label=label, vector=vector, crop=crop,
                                        by=actor.name, now=now)

        subject_id = self.store.write(write)
        self.audit.record(actor.name, action, target, detail={"subject": subject_id},
                          address=actor.address)
        return self._load(case_id)

    def _describe(self, number: int, photo: SubjectPhoto) -> tuple[str, F32, bytes]:
        if not photo.label.strip():
            raise CaseError(f"subject photo {number} has no label")
        if self._embedder is None:
            self._embedder = FaceEmbedder("onnx", threads=1)
        try:
            face = describe_photo(read_image(photo.data), embedder=self._embedder)
        except PhotoError as exc:
            raise CaseError(f"subject photo {number} ({photo.label}): {exc}") from exc
        return photo.label.strip(), face.vector, face.crop_jpeg

    def _insert_subject(self, conn: Connection, case_id: int, *, label: str, vector: F32,
                        crop: bytes, by: str, now: float) -> int:
        # The id is part of the seal's context, so the row exists before its sealed fields.
        subject_id = int(conn.execute(insert(schema.case_subjects).values(
            case_id=case_id, label=label, added_by=by, added_at=now,
        ).returning(schema.case_subjects.c.id)).scalar_one())
        raw = np.asarray(vector, dtype=np.float32).tobytes()
        conn.execute(update(schema.case_subjects)
                     .where(schema.case_subjects.c.id == subject_id)
                     .values(descriptor=self.keys.seal(raw, _context(case_id, subject_id,
                                                                     "descriptor")),
                             crop=self.keys.seal(crop, _context(case_id, subject_id, "crop"))))
        return subject_id

    # -- deciding ----------------------------------------------------------------------------

    def approve(self, actor: Actor, case_id: int, *, note: str = "",
                expires_at: float | None = None) -> Case:
        """Approve a pending case (a different user than its opener); holds its footage.

        ``expires_at`` may bring the expiry forward, never push it back.
        """
        return self._decide(actor, case_id, CaseStatus.APPROVED, note, expires_at)

    def reject(self, actor: Actor, case_id: int, *, note: str = "") -> Case:
        """Reject a pending case; its subjects' biometric data is wiped at once."""
        return self._decide(actor, case_id, CaseStatus.REJECTED, note, None)

    def _decide(self, actor: Actor, case_id: int, decision: CaseStatus, note: str,
                expires_at: float | None) -> Case:
        action = (Action.CASE_APPROVE if decision is CaseStatus.APPROVED
                  else Action.CASE_REJECT)
        target = f"case {case_id}"
        # A profile that identifies nobody (school) decides nothing: an approval would place
        # holds and give a case a life its profile forbids.
        self._require_search_profile(actor, action, target)
        case = self._get(actor, action, case_id, Permission.CASE_APPROVE,
                         "cannot approve or reject cases")
        if actor.name == case.opened_by:
            self._refuse(actor, action, target,
                         "a case cannot be approved by the user who opened it")
        if any(actor.name == s.added_by for s in case.subjects):
            self._refuse(actor, action, target,
                         "a case cannot be approved by a user who added a subject to it")
        if actor.name in case.members:
            self._refuse(actor, action, target,
                         "a case cannot be decided by one of its own members")
        now = self.clock()
        if expires_at is not None and not now < expires_at <= case.expires_at:
            raise CaseError("an approval may only bring the expiry forward, to a future time")
        expiry = case.expires_at if expires_at is None else expires_at
        if decision is CaseStatus.APPROVED:
            # Checked again at approval: a case pending since before the limits (or for long)
            # must not hold footage beyond them; the approver may bring the expiry forward.
            reach = self._reach_problem(case.cameras, case.scope_start, case.scope_end,
                                        expiry, now)
            if reach is not None:
                self._refuse(actor, action, target, reach)

        def write(conn: Connection) -> str | None:
            # Checked again in the writer's transaction: two approvers at once decide once.
            row = conn.execute(select(schema.cases).where(schema.cases.c.id == case_id)).one()
            status = _status(row, now)
            if status is not CaseStatus.PENDING:
                return f"only a pending case can be decided (this one is {status.value})"
            conn.execute(update(schema.cases).where(schema.cases.c.id == case_id).values(
                status=decision.value, decided_by=actor.name, decided_at=now,
                decision_note=note.strip() or None, expires_at=expiry,
            ))
            if decision is CaseStatus.APPROVED:
                for camera in case.cameras:
                    self._hold(conn, case, camera, expires_at=expiry, by=actor.name, now=now)
            else:
                _wipe_subjects(conn, case_id, now)
            return None

        problem = self.store.write(write)
        if problem is not None:
            self._refuse(actor, action, target, problem)
        decided = self._load(case_id)
        self.audit.record(actor.name, action, target, address=actor.address, detail={
            "note": note.strip(), "expires_at": decided.expires_at,
            "holds": list(decided.hold_ids),
        })
        log.info("case %d %s by %s", case_id, decision.value, actor.name)
        return decided

    def _hold(self, conn: Connection, case: Case, camera: str, *, expires_at: float, by: str,
              now: float) -> None:
        # Written in the approval's own transaction (not through holds.add_hold, which takes a
        # write of its own), so that an approved case without its holds cannot exist. The hold
        # lapses with the case even if expire_due never runs.
        hold_id = int(conn.execute(insert(schema.holds).values(
            camera=camera, start=case.scope_start, end=case.scope_end,
            reason=f"case {case.reference}", created_at=now, created_by=by,
            expires_at=expires_at,
        ).returning(schema.holds.c.id)).scalar_one())
        conn.execute(insert(schema.case_holds).values(case_id=case.id, hold_id=hold_id))

    # -- ending ------------------------------------------------------------------------------

    def close(self, actor: Actor, case_id: int, *, note: str = "") -> Case:
        """End a case (its opener, or an approver): holds released, subjects wiped."""
        action, target = Action.CASE_CLOSE, f"case {case_id}"
        case = self._get(actor, action, case_id)
        opener = actor.can(Permission.CASE_OPEN) and actor.name == case.opened_by
        if not (opener or actor.can(Permission.CASE_APPROVE)):
            self._refuse(actor, action, target,
                         "only the case's opener or an approver can close a case")
        now = self.clock()

        def write(conn: Connection) -> str | None:
            row = conn.execute(select(schema.cases).where(schema.cases.c.id == case_id)).one()
            status = _status(row, now)
            if status not in (CaseStatus.PENDING, CaseStatus.APPROVED):
                return f"the case is already {status.value}"
            conn.execute(update(schema.cases).where(schema.cases.c.id == case_id).values(
                status=CaseStatus.CLOSED.value, closed_by=actor.name, closed_at=now,
                decision_note=row.decision_note if not note.strip() else note.strip(),
            ))
            _end(conn, case_id, actor.name, now)
            return None

        problem = self.store.write(write)
        if problem is not None:
            self._refuse(actor, action, target, problem)
        closed = self._load(case_id)
        self.audit.record(actor.name, action, target, address=actor.address,
                          detail={"note": note.strip(), "holds": list(closed.hold_ids)})
        log.info("case %d closed by %s", case_id, actor.name)
        return closed

    def expire_due(self, now: float | None = None) -> list[int]:
        """End every case whose expiry has passed; the node calls this periodically."""
        now = self.clock() if now is None else now

        def write(conn: Connection) -> list[int]:
            due = [int(r.id) for r in conn.execute(
                select(schema.cases.c.id).where(schema.cases.c.status.in_(_OPEN_STATUSES),
                                                schema.cases.c.expires_at <= now))]
            for case_id in due:
                conn.execute(update(schema.cases).where(schema.cases.c.id == case_id)
                             .values(status=CaseStatus.EXPIRED.value))
                _end(conn, case_id, SYSTEM, now)
            return due

        expired = self.store.write(write)
        for case_id in expired:
            self.audit.record(SYSTEM, Action.CASE_EXPIRE, f"case {case_id}",
                              detail={"holds": list(self._load(case_id).hold_ids)})
            log.info("case %d expired", case_id)
        return expired

    # -- reading -----------------------------------------------------------------------------

    def get(self, actor: Actor, case_id: int) -> Case:
        return self._get(actor, Action.CASE_VIEW, case_id)

    def list_cases(self, actor: Actor) -> list[Case]:
        """Every case, newest first (case metadata only: no biometric data)."""
        if not actor.can(Permission.CASE_VIEW):
            self._refuse(actor, Action.CASE_LIST, "cases",
                         f"the {actor.role.value} role cannot view cases")
        with self.store.read() as conn:
            ids = [int(r.id) for r in conn.execute(
                select(schema.cases.c.id).order_by(schema.cases.c.id.desc()))]
        cases = (self._load(case_id) for case_id in ids)
        return [c for c in cases if self.access_problem(actor, c) is None]

    @staticmethod
    def access_problem(actor: Actor, case: Case) -> str | None:
        """Why ``actor`` may not see ``case`` at all, or None.

        Every camera of its scope (a case shows where and when someone was looked for), and
        either a part in it (opener, member, decider) or an oversight role: the approvers who
        decide cases and the inspectors who check them.
        """
        hidden = [c for c in case.cameras if not actor.sees_camera(c)]
        if hidden:
            return (f"{actor.name} has no access to camera(s) {', '.join(hidden)} of case "
                    f"{case.id}")
        if case.works_on(actor.name) or actor.name == case.decided_by:
            return None
        if actor.can(Permission.CASE_APPROVE) or actor.can(Permission.AUDIT_VIEW):
            return None
        return f"{actor.name} is not a member of case {case.id}"

    def _get(self, actor: Actor, action: Action, case_id: int,
             permission: Permission = Permission.CASE_VIEW,
             cannot: str = "cannot view cases") -> Case:
        """The case, once ``actor`` holds ``permission`` and the case exists (else refused)."""
        target = f"case {case_id}"
        if not actor.can(permission):
            self._refuse(actor, action, target, f"the {actor.role.value} role {cannot}")
        try:
            case = self._load(case_id)
        except CaseError as exc:
            self._refuse(actor, action, target, str(exc))
        problem = self.access_problem(actor, case)
        if problem is not None:
            self._refuse(actor, action, target, problem)
        return case

    def _load(self, case_id: int) -> Case:
        now = self.clock()
        with self.store.read() as conn:
            row = conn.execute(select(schema.cases).where(schema.cases.c.id == case_id)).first()
            if row is None:
                raise CaseError(f"there is no case {case_id}")
            holds = tuple(int(r.hold_id) for r in conn.execute(
                select(schema.case_holds.c.hold_id).where(schema.case_holds.c.case_id == case_id)
                .order_by(schema.case_holds.c.hold_id)))
            subjects = tuple(
                Subject(int(r.id), r.label, r.added_by, r.added_at, r.wiped_at is not None)
                for r in conn.execute(
                    select(schema.case_subjects.c.id, schema.case_subjects.c.label,
                           schema.case_subjects.c.added_by, schema.case_subjects.c.added_at,
                           schema.case_subjects.c.wiped_at)
                    .where(schema.case_subjects.c.case_id == case_id)
                    .order_by(schema.case_subjects.c.id)))
            members = tuple(r.name for r in conn.execute(
                select(schema.case_members.c.name)
                .where(schema.case_members.c.case_id == case_id)
                .order_by(schema.case_members.c.name)))
        return Case(
            id=int(row.id), reference=row.reference, legal_basis=row.legal_basis,
            purpose=row.purpose, cameras=tuple(json.loads(row.cameras)),
            scope_start=row.scope_start, scope_end=row.scope_end, watchlist=bool(row.watchlist),
            opened_by=row.opened_by, opened_at=row.opened_at, status=_status(row, now),
            decided_by=row.decided_by, decided_at=row.decided_at,
            decision_note=row.decision_note, expires_at=row.expires_at,
            closed_by=row.closed_by, closed_at=row.closed_at, hold_ids=holds, subjects=subjects,
            members=members,
        )

    # -- searching ---------------------------------------------------------------------------

    def search(self, actor: Actor, case_id: int, *, cameras: Collection[str] | None = None,
               start: float | None = None, end: float | None = None,
               k: int = 20) -> CaseSearchResult:
        """The recorded faces nearest to the case's subjects, within the case's scope.

        ``cameras``, ``start`` and ``end`` may narrow the scope; asking for anything outside it
        is refused rather than quietly cut down, so the request on record is what was searched.
        """
        started = self.clock()
        action, target = Action.FACE_SEARCH, f"case {case_id}"
        request: dict[str, Any] = {
            "cameras": None if cameras is None else sorted(cameras), "start": start,
            "end": end, "k": k,
        }
        self._require_search_profile(actor, action, target, request)
        case = self._get(actor, action, case_id, Permission.FACE_SEARCH,
                         "cannot search for faces")
        self._require_active(actor, action, case, request)
        self.require_investigating_side(actor, action, case, request)
        if not 1 <= k <= MAX_K:
            raise CaseError(f"k must be between 1 and {MAX_K}")
        wanted = case.cameras if cameras is None else tuple(sorted(set(cameras)))
        outside = [c for c in wanted if c not in case.cameras]
        if outside:
            self._refuse(actor, action, target, f"camera(s) {', '.join(outside)} outside the "
                         "case's scope", request)
        t0 = case.scope_start if start is None else start
        t1 = case.scope_end if end is None else end
        if t0 < case.scope_start or t1 > case.scope_end:
            self._refuse(actor, action, target, "the time asked for is outside the case's "
                         "scope", request)
        if t1 <= t0:
            raise CaseError("the search window must end after it starts")
        visible = [c for c in wanted if actor.sees_camera(c)]

        best: dict[int, CaseHit] = {}
        subjects = self.descriptors_for_matching(case.id) if visible else []
        for subject_id, vector in subjects:
            for hit in self._descriptors.search(vector[np.newaxis, :], cameras=visible,
                                                start=t0, end=t1, k=k):
                if not self._in_scope(case, hit, visible, t0, t1):
                    continue
                known = best.get(hit.face_id)
                if known is None or hit.distance < known.distance:
                    best[hit.face_id] = CaseHit(**vars(hit), subject_id=subject_id)
        hits = tuple(sorted(best.values(), key=lambda h: (h.distance, h.face_id))[:k])
        coverage = self._coverage(case, visible, t0, t1)
        outcome, summary = _answer(hits, coverage, has_subjects=bool(subjects))
        self.audit.record(actor.name, action, target, address=actor.address, detail={
            "cameras": list(wanted), "searched": visible, "start": t0, "end": t1, "k": k,
            "hits": len(hits),
            "matches": sum(h.level is MatchLevel.MATCH for h in hits),
            "tracks": sum(c.tracks for c in coverage),
            "searchable": sum(c.searchable for c in coverage) if subjects else 0,
            "outcome": outcome.value,
        })
        result = CaseSearchResult(case.id, tuple(wanted), t0, t1, k, hits, coverage, outcome,
                                  summary)
        ended = self.clock()
        # The use log an AI-Act-style record needs: when, what was searched, with what input,
        # every result in order (to be verified by two people: custodes.privacy.case_log).
        use_id = self.store.write(lambda conn: case_log.record_search(
            conn, case, actor, started=started, ended=ended, result=result, searched=visible,
            subjects=[subject for subject, _ in subjects]))
        return dataclasses.replace(result, use_id=use_id)

    def _coverage(self, case: Case, cameras: Sequence[str], start: float,
                  end: float) -> tuple[CameraCoverage, ...]:
        """The face tracks a search over ``cameras`` and [start, end] could return (those
        _in_scope keeps), and how many of them have a descriptor to compare."""
        counts = self._descriptors.coverage(cameras=cameras, start=start, end=end,
                                            within=(case.scope_start, case.scope_end))
        out = []
        for camera in cameras:
            tracks, searchable = counts.get(camera, (0, 0))
            reason = None
            if searchable < tracks:
                reason = self.descriptors_off.get(camera, UNKNOWN_GAP)
            out.append(CameraCoverage(camera, tracks, searchable, reason))
        return tuple(out)

    @staticmethod
    def _in_scope(case: Case, hit: FaceHit, cameras: Collection[str], start: float,
                  end: float) -> bool:
        """Defence in depth: whether a hit lies inside what was asked and inside the scope."""
        if hit.camera not in cameras or hit.end < start or hit.start > end:
            log.warning("case %d: the descriptor search returned face %d from outside the "
                        "request (%s %.0f-%.0f); dropped", case.id, hit.face_id, hit.camera,
                        hit.start, hit.end)
            return False
        # The index returns tracks that overlap the window; one that began before the scope
        # or ran past it shows footage (and maybe a snapshot) from outside it, so it is left
        # out. A search window narrower than the scope keeps tracks that overlap it.
        return case.covers(hit.camera, hit.start, hit.end)

    def subject_crop(self, actor: Actor, case_id: int, subject_id: int) -> bytes:
        """A subject's face crop (JPEG), opened only to show it to someone working the case."""
        action, target = Action.CASE_SUBJECT_CROP, f"case {case_id}"
        # A school keeps no case subjects to show: even one left over from another profile
        # (custodes.privacy.pinning wipes them) is not opened.
        self._require_search_profile(actor, action, target)
        if not any(actor.can(p) for p in (Permission.FACE_SEARCH, Permission.CASE_APPROVE,
                                          Permission.ALERT_CONFIRM)):
            self._refuse(actor, action, target,
                         f"the {actor.role.value} role cannot see case subjects")
        case = self._get(actor, action, case_id)
        if case.status not in (CaseStatus.PENDING, CaseStatus.APPROVED):
            self._refuse(actor, action, target, f"the case is {case.status.value}; its "
                         "subjects' data is gone")
        with self.store.read() as conn:
            sealed = conn.execute(select(schema.case_subjects.c.crop).where(and_(
                schema.case_subjects.c.id == subject_id,
                schema.case_subjects.c.case_id == case_id))).scalar()
        if sealed is None:
            self._refuse(actor, action, target, f"case {case_id} has no subject {subject_id}")
        crop = self.keys.open(sealed, _context(case_id, subject_id, "crop"))
        self.audit.record(actor.name, action, target, detail={"subject": subject_id},
                          address=actor.address)
        return crop

    # -- for the node's own matching (never handed to a user) ------------------------------

    def watching(self, camera: str, at: float) -> list[Case]:
        """Approved, unexpired watchlist cases whose scope holds ``camera`` at time ``at``."""
        now = self.clock()
        with self.store.read() as conn:
            ids = [int(r.id) for r in conn.execute(select(schema.cases.c.id).where(
                schema.cases.c.status == CaseStatus.APPROVED.value,
                schema.cases.c.watchlist == 1, schema.cases.c.expires_at > now,
                schema.cases.c.scope_start <= at, schema.cases.c.scope_end > at))]
        cases = [self._load(case_id) for case_id in ids]
        return [c for c in cases if c.status is CaseStatus.APPROVED and camera in c.cameras]

    def descriptors_for_matching(self, case_id: int) -> list[tuple[int, F32]]:
        """(subject id, descriptor) of a case's subjects, decrypted for in-process matching."""
        with self.store.read() as conn:
            rows = conn.execute(
                select(schema.case_subjects.c.id, schema.case_subjects.c.descriptor).where(
                    schema.case_subjects.c.case_id == case_id,
                    schema.case_subjects.c.descriptor.is_not(None))
                .order_by(schema.case_subjects.c.id)).all()
        out = []
        for row in rows:
            raw = self.keys.open(row.descriptor, _context(case_id, int(row.id), "descriptor"))
            if len(raw) != DESCRIPTOR_BYTES:
                raise ValueError(f"case {case_id} subject {row.id}: a descriptor of "
                                 f"{len(raw)} bytes")
            out.append((int(row.id), np.frombuffer(raw, dtype=np.float32).copy()))
        return out

    # -- refusals ----------------------------------------------------------------------------

    def _require_search_profile(self, actor: Actor, action: Action, target: str,
                                detail: dict[str, Any] | None = None) -> None:
        if not allows(self.profile, policy.Action.SEARCH):
            self._refuse(actor, action, target,
                         f"the {self.profile.value} profile does not allow face search", detail)

    def require_investigating_side(self, actor: Actor, action: Action, case: Case,
                                   detail: dict[str, Any] | None = None) -> None:
        """Refuse the person who decided ``case`` anything on its investigating side (search,
        unredacted export): one name never holds both sides of one case, even after a role
        change made it an investigator."""
        if case.decided_by is not None and actor.name == case.decided_by:
            self._refuse(actor, action, f"case {case.id}", f"{actor.name} decided this case "
                         "and cannot also work it", detail)

    def _require_active(self, actor: Actor, action: Action, case: Case,
                        detail: dict[str, Any]) -> None:
        reason = {
            CaseStatus.PENDING: "the case has not been approved",
            CaseStatus.REJECTED: "the case was rejected",
            CaseStatus.CLOSED: "the case is closed",
            CaseStatus.EXPIRED: "the case has expired",
        }.get(case.status)
        if reason is not None:
            self._refuse(actor, action, f"case {case.id}", reason, detail)

    def _refuse(self, actor: Actor, action: Action, target: str, reason: str,
                detail: dict[str, Any] | None = None) -> NoReturn:
        self.audit.record_refusal(actor.name, action, target, reason, detail=detail,
                                  address=actor.address)
        raise Refused(action, reason)


def _answer(hits: Sequence[CaseHit], coverage: Sequence[CameraCoverage], *,
            has_subjects: bool) -> tuple[SearchOutcome, str]:
    """What a search found, or why it found nothing, in plain words with the counts."""
    tracks = sum(c.tracks for c in coverage)
    searchable = sum(c.searchable for c in coverage)
    cameras = ", ".join(c.camera for c in coverage) or "no camera"
    if tracks == 0:
        return SearchOutcome.NO_TRACKS, (
            f"No face track was recorded on {cameras} in the searched window: there was "
            "nothing to search.")
    gaps = "; ".join(f"{c.camera}: {c.missing} without, because {c.reason}"
                     for c in coverage if c.missing)
    if not has_subjects:
        return SearchOutcome.NOTHING_SEARCHABLE, (
            f"Nothing could be searched: the case has no subject descriptor left to compare "
            f"{_tracks(tracks)} with.")
    if searchable == 0:
        return SearchOutcome.NOTHING_SEARCHABLE, (
            f"Nothing could be searched: {_tracks(tracks)} recorded in the searched window, "
            f"none with a face descriptor ({gaps}). No face was compared, so this says "
            "nothing about whether the subject is in the footage.")
    unsearched = (f" {tracks - searchable} of the {tracks} face tracks could not be searched, "
                  f"having no face descriptor ({gaps})." if searchable < tracks else "")
    if not hits:
        return SearchOutcome.NONE_NEAR, (
            f"Searched {_tracks(searchable)}: {no_hit_meaning()}{unsearched}")
    matches = sum(h.level is MatchLevel.MATCH for h in hits)
    return SearchOutcome.FOUND, (
        f"{len(hits)} hit{'' if len(hits) == 1 else 's'} ({matches} "
        f"match{'' if matches == 1 else 'es'}) among {_tracks(searchable)} searched."
        f"{unsearched}")


def _tracks(n: int) -> str:
    return f"{n} face track{'' if n == 1 else 's'}"


def _status(row: Row[Any], now: float) -> CaseStatus:
    status = CaseStatus(row.status)
    if status.value in _OPEN_STATUSES and now >= row.expires_at:
        return CaseStatus.EXPIRED
    return status


def _end(conn: Connection, case_id: int, by: str, now: float) -> None:
    """Release the case's holds and wipe its subjects' biometric data."""
    held = select(schema.case_holds.c.hold_id).where(schema.case_holds.c.case_id == case_id)
    conn.execute(update(schema.holds)
                 .where(schema.holds.c.id.in_(held), schema.holds.c.released_at.is_(None))
                 .values(released_at=now, released_by=by))
    _wipe_subjects(conn, case_id, now)


def _wipe_subjects(conn: Connection, case_id: int, now: float) -> None:
    conn.execute(update(schema.case_subjects)
                 .where(schema.case_subjects.c.case_id == case_id,
                        schema.case_subjects.c.wiped_at.is_(None))
                 .values(descriptor=None, crop=None, wiped_at=now))
