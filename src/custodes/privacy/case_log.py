"""The use log of face identification in a case: what an AI-Act-style record needs.

For each use (a face search): when it started and ended, who ran it, the reference database
searched (the cameras, the window, which recorded faces existed then, the descriptor and its
thresholds), the input (the case subjects compared) and every result returned, in order. For
each result: who verified it and what they concluded, each person separately (the rule for
remote biometric identification is that no decision rests on a result that two people have
not separately confirmed: `Result.confirmed`). For the case: the reference and time of the
authorisation it rests on, given by an approver from the authority's decision.

Cases.search writes the use (custodes.privacy.cases); this module reads it back and records
verifications and authorisations. Everything here is also in the audit log.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final, NoReturn

from sqlalchemy import func, insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from custodes.audit.actions import Action
from custodes.auth.roles import Actor, Permission
from custodes.faces.calibration import MATCH_DISTANCE, POSSIBLE_DISTANCE
from custodes.privacy.policy import Refused
from custodes.store import schema

if TYPE_CHECKING:
    from custodes.audit.log import AuditLog
    from custodes.privacy.cases import Case, CaseHit, Cases, CaseSearchResult
    from custodes.store.db import Store

DESCRIPTOR: Final = "dlib ResNet face descriptor, 128-d (face-recognition-models 0.3.0)"
CONFIRMING: Final = 2  # separate people who must find a result the same person


class UseKind(StrEnum):
    SEARCH = "search"


class Verdict(StrEnum):
    SAME_PERSON = "same_person"
    NOT_SAME_PERSON = "not_same_person"
    CANNOT_TELL = "cannot_tell"


class LogError(ValueError):
    """A request about something that does not exist (no such use or result)."""


@dataclass(frozen=True)
class Verification:
    verified_by: str
    verified_at: float
    verdict: Verdict
    note: str | None


@dataclass(frozen=True)
class Result:
    rank: int
    face_id: int | None
    camera: str
    start: float
    distance: float
    level: str
    subject_id: int | None
    verifications: tuple[Verification, ...]

    @property
    def confirmed(self) -> bool:
        """Separately found the same person by CONFIRMING people, and by nobody found not."""
        same = {v.verified_by for v in self.verifications if v.verdict is Verdict.SAME_PERSON}
        against = any(v.verdict is Verdict.NOT_SAME_PERSON for v in self.verifications)
        return len(same) >= CONFIRMING and not against


@dataclass(frozen=True)
class Use:
    id: int
    case_id: int
    kind: UseKind
    actor: str
    started_at: float
    ended_at: float
    reference_db: dict[str, Any]
    input: dict[str, Any]
    outcome: str
    results: tuple[Result, ...]


@dataclass(frozen=True)
class Authorisation:
    reference: str
    authorised_at: float
    recorded_by: str
    recorded_at: float


def record_search(conn: Connection, case: Case, actor: Actor, *, started: float, ended: float,
                  result: CaseSearchResult, searched: Sequence[str],
                  subjects: Sequence[int]) -> int:
    """Write one search to the use log, inside the writer's transaction; its id."""
    faces = conn.execute(select(func.count(), func.max(schema.faces.c.id))).one()
    labels = {s.id: s.label for s in case.subjects}
    use_id = int(conn.execute(insert(schema.case_uses).values(
        case_id=case.id, kind=UseKind.SEARCH.value, actor=actor.name, started_at=started,
        ended_at=ended,
        reference_db=json.dumps({
            "database": "face tracks recorded by this node",
            "cameras": list(searched), "start": result.start, "end": result.end,
            # Which recorded faces existed when it ran: the database's version for this use.
            "faces_recorded": int(faces[0]), "newest_face_id": faces[1],
            "tracks_in_window": result.tracks, "searchable": result.searchable,
            "descriptor": DESCRIPTOR,
            "thresholds": {"match": MATCH_DISTANCE, "possible": POSSIBLE_DISTANCE},
        }),
        input=json.dumps({"subjects": [{"id": s, "label": labels.get(s, "")}
                                       for s in subjects], "k": result.k}),
        outcome=result.outcome.value, results=len(result.hits),
    ).returning(schema.case_uses.c.id)).scalar_one())
    for rank, hit in enumerate(result.hits, 1):
        conn.execute(insert(schema.case_use_results).values(_result_row(use_id, rank, hit)))
    return use_id


def _result_row(use_id: int, rank: int, hit: CaseHit) -> dict[str, Any]:
    return {"use_id": use_id, "rank": rank, "face_id": hit.face_id, "camera": hit.camera,
            "start": hit.start, "distance": hit.distance, "level": hit.level.value,
            "subject_id": hit.subject_id if hit.level.names_subject else None}


class CaseLog:
    """Reads the use log; records verifications and authorisations (audited)."""

    def __init__(self, store: Store, audit: AuditLog, cases: Cases,
                 clock: Callable[[], float] = time.time) -> None:
        self.store, self.audit, self.cases, self.clock = store, audit, cases, clock

    def uses(self, actor: Actor, case_id: int) -> list[Use]:
        """The case's uses, oldest first, for whoever may see the case."""
        self.cases.get(actor, case_id)
        with self.store.read() as conn:
            return _uses(conn, case_id)

    def authorisation(self, actor: Actor, case_id: int) -> Authorisation | None:
        self.cases.get(actor, case_id)
        with self.store.read() as conn:
            return _authorisation(conn, case_id)

    def verify(self, actor: Actor, case_id: int, *, use_id: int, rank: int, verdict: Verdict,
               note: str = "") -> Result:
        """Record ``actor``'s verdict on one result: once per person and result."""
        target = f"case {case_id}"
        case = self.cases.get(actor, case_id)
        if not (case.works_on(actor.name) or actor.can(Permission.CASE_APPROVE)):
            self._refuse(actor, Action.CASE_VERIFY, target, "only the case's own people and "
                         "approvers verify its results")
        now = self.clock()

        def write(conn: Connection) -> str | None:
            found = conn.execute(
                select(schema.case_use_results.c.rank)
                .join(schema.case_uses, schema.case_uses.c.id == schema.case_use_results.c.use_id)
                .where(schema.case_uses.c.case_id == case_id,
                       schema.case_use_results.c.use_id == use_id,
                       schema.case_use_results.c.rank == rank)).first()
            if found is None:
                raise LogError(f"case {case_id} has no result {rank} of use {use_id}")
            try:
                conn.execute(insert(schema.case_verifications).values(
                    use_id=use_id, rank=rank, verified_by=actor.name, verified_at=now,
                    verdict=verdict.value, note=note.strip() or None))
            except IntegrityError:
                return f"{actor.name} has verified this result already"
            return None

        problem = self.store.write(write)
        if problem is not None:
            self._refuse(actor, Action.CASE_VERIFY, target, problem)
        self.audit.record(actor.name, Action.CASE_VERIFY, target, address=actor.address,
                          detail={"use": use_id, "rank": rank, "verdict": verdict.value})
        with self.store.read() as conn:
            [use] = [u for u in _uses(conn, case_id) if u.id == use_id]
        return next(r for r in use.results if r.rank == rank)

    def authorise(self, actor: Actor, case_id: int, *, reference: str,
                  authorised_at: float) -> Authorisation:
        """Record the authorisation the case rests on: by an approver who did not open it,
        once (a record of the law's requirement is not edited afterwards)."""
        target = f"case {case_id}"
        case = self.cases.get(actor, case_id)
        if not actor.can(Permission.CASE_APPROVE):
            self._refuse(actor, Action.CASE_AUTHORISATION, target,
                         f"the {actor.role.value} role cannot record authorisations")
        if case.works_on(actor.name):
            self._refuse(actor, Action.CASE_AUTHORISATION, target,
                         "a case's own people do not record its authorisation")
        now = self.clock()
        if authorised_at > now + 300:
            raise ValueError("the authorisation time is in the future")

        def write(conn: Connection) -> bool:
            try:
                conn.execute(insert(schema.case_authorisations).values(
                    case_id=case_id, reference=reference.strip(), authorised_at=authorised_at,
                    recorded_by=actor.name, recorded_at=now))
            except IntegrityError:
                return False
            return True

        if not self.store.write(write):
            self._refuse(actor, Action.CASE_AUTHORISATION, target,
                         "the case's authorisation is recorded already")
        self.audit.record(actor.name, Action.CASE_AUTHORISATION, target, address=actor.address,
                          detail={"reference": reference.strip(), "authorised_at": authorised_at})
        return Authorisation(reference.strip(), authorised_at, actor.name, now)

    def _refuse(self, actor: Actor, action: Action, target: str, reason: str) -> NoReturn:
        self.audit.record_refusal(actor.name, action, target, reason, address=actor.address)
        raise Refused(action.value, reason)


def _authorisation(conn: Connection, case_id: int) -> Authorisation | None:
    row = conn.execute(select(schema.case_authorisations)
                       .where(schema.case_authorisations.c.case_id == case_id)).first()
    return None if row is None else Authorisation(row.reference, row.authorised_at,
                                                  row.recorded_by, row.recorded_at)


def _uses(conn: Connection, case_id: int) -> list[Use]:
    u, r, v = schema.case_uses, schema.case_use_results, schema.case_verifications
    uses = conn.execute(select(u).where(u.c.case_id == case_id).order_by(u.c.id)).all()
    ids = [row.id for row in uses]
    results: dict[int, list[Any]] = {}
    for row in conn.execute(select(r).where(r.c.use_id.in_(ids)).order_by(r.c.use_id, r.c.rank)):
        results.setdefault(row.use_id, []).append(row)
    checks: dict[tuple[int, int], list[Verification]] = {}
    for row in conn.execute(select(v).where(v.c.use_id.in_(ids)).order_by(v.c.id)):
        checks.setdefault((row.use_id, row.rank), []).append(
            Verification(row.verified_by, row.verified_at, Verdict(row.verdict), row.note))
    return [Use(
        id=row.id, case_id=row.case_id, kind=UseKind(row.kind), actor=row.actor,
        started_at=row.started_at, ended_at=row.ended_at,
        reference_db=json.loads(row.reference_db), input=json.loads(row.input),
        outcome=row.outcome,
        results=tuple(Result(x.rank, x.face_id, x.camera, x.start, x.distance, x.level,
                             x.subject_id, tuple(checks.get((row.id, x.rank), ())))
                      for x in results.get(row.id, [])),
    ) for row in uses]


def log_json(uses: Sequence[Use], authorisation: Authorisation | None) -> dict[str, Any]:
    """The case's use log as the API, the case page and the case report show it."""
    return {
        "authorisation": None if authorisation is None else {
            "reference": authorisation.reference, "authorised_at": authorisation.authorised_at,
            "recorded_by": authorisation.recorded_by, "recorded_at": authorisation.recorded_at},
        "confirming": CONFIRMING,
        "uses": [{
            "id": use.id, "kind": use.kind.value, "actor": use.actor,
            "started_at": use.started_at, "ended_at": use.ended_at,
            "reference_db": use.reference_db, "input": use.input, "outcome": use.outcome,
            "results": [{
                "rank": x.rank, "face_id": x.face_id, "camera": x.camera, "start": x.start,
                "distance": round(x.distance, 4), "level": x.level, "subject_id": x.subject_id,
                "confirmed": x.confirmed,
                "verifications": [{"verified_by": c.verified_by, "verified_at": c.verified_at,
                                   "verdict": c.verdict.value, "note": c.note}
                                  for c in x.verifications],
            } for x in use.results],
        } for use in uses],
    }


CASE_LOG_FILE: Final = "case-log.json"


def case_record(conn: Connection, case_id: int) -> dict[str, Any] | None:
    """The case's legal record and use log, as an export of the case carries it (the caller
    has checked who asks); None when there is no such case."""
    row = conn.execute(select(schema.cases).where(schema.cases.c.id == case_id)).first()
    if row is None:
        return None
    return {
        "case": {
            "id": row.id, "reference": row.reference, "legal_basis": row.legal_basis,
            "purpose": row.purpose, "cameras": json.loads(row.cameras),
            "scope_start": row.scope_start, "scope_end": row.scope_end,
            "opened_by": row.opened_by, "opened_at": row.opened_at, "status": row.status,
            "decided_by": row.decided_by, "decided_at": row.decided_at,
            "expires_at": row.expires_at, "closed_at": row.closed_at,
        },
        **log_json(_uses(conn, case_id), _authorisation(conn, case_id)),
    }
