"""Live watchlist (police profile only): alert when a case subject appears on a camera.

The event maintainer hands every stored face track to `Watchlist.on_face`. A track is compared
only with the subjects of approved, unexpired watchlist cases whose scope holds the track's
camera and time; outside such a case nothing is compared at all, and under any other profile
the call returns at once. Only a calibrated match (custodes.faces.calibration: a stranger named
in at most ~0.1 % of searches against 1000 people) becomes an alert row with status
"candidate", an event on the bus (ids only: no picture, no descriptor) and an audit entry; a
"possible" face (up to the old 0.6) raises nothing, since at that level most strangers would be
named once a case holds a few hundred people. A candidate stays a candidate until a second
person, not the case's opener, confirms or dismisses it.

The decision is per track, not per frame: the worker sends the descriptors of a track's best
faces (up to three, `FaceTrack.samples`; only the best one is stored), and
`calibration.track_level` names a subject only when at least two of them, and most, are at
match level. A track with a single face (seen once) is judged on it alone: the strict match
distance is calibrated on exactly such one-photo comparisons.

The subjects' descriptors are decrypted once per case and kept in memory while the case is
active; which cases are active is read from the database on every track (a few rows), so an
approval or closing made by another process (the CLI) takes effect at the next face.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NoReturn

import numpy as np
import numpy.typing as npt
from sqlalchemy import Connection, insert, select, update

from custodes.analytics.worker import FaceTrack
from custodes.audit.actions import Action
from custodes.audit.log import SYSTEM, AuditLog
from custodes.auth.roles import Actor, Permission
from custodes.events.bus import EventBus
from custodes.events.types import Event, EventKind
from custodes.faces.calibration import MatchLevel, level, meaning, track_level
from custodes.privacy import policy
from custodes.privacy.cases import Case, Cases, CaseStatus
from custodes.privacy.policy import Refused, allows
from custodes.store import schema
from custodes.store.db import Store

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]

# A subject who stays in view is seen as many tracks (they turn away, are hidden a moment):
# one alert per subject and camera within this many seconds, not one per track, so that a
# person standing at a door does not flood the people who must check each candidate.
DEDUP_SECONDS = 600.0


class AlertStatus(StrEnum):
    CANDIDATE = "candidate"  # a machine's guess: nobody may act on it yet
    CONFIRMED = "confirmed"  # a second person looked and agrees
    DISMISSED = "dismissed"


@dataclass(frozen=True)
class Alert:
    id: int
    case_id: int
    subject_id: int
    face_id: int | None  # None once retention has deleted the face
    camera: str
    seen_at: float
    distance: float
    created_at: float
    status: AlertStatus
    decided_by: str | None
    decided_at: float | None

    @property
    def level(self) -> MatchLevel:
        """Judged from the distance when read, so an alert raised under an older, looser
        threshold shows as the "possible" it is now known to be."""
        return level(self.distance)

    @property
    def meaning(self) -> str:
        return meaning(self.level)


@dataclass(frozen=True)
class _Subjects:
    ids: tuple[int, ...]
    vectors: F32  # (n, 128)


class Watchlist:
    """Matches live face tracks against active watchlist cases; confirms and dismisses."""

    def __init__(self, cases: Cases, store: Store, audit: AuditLog, bus: EventBus, *,
                 sites: Mapping[str, str] | None = None) -> None:
        self.cases = cases
        self.store = store
        self.audit = audit
        self.bus = bus
        self.sites = dict(sites or {})
        self._subjects: dict[int, _Subjects] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return allows(self.cases.profile, policy.Action.WATCHLIST)

    # -- matching (the event maintainer's thread) -------------------------------------------

    def on_face(self, face_id: int, track: FaceTrack) -> None:
        """The event maintainer's hook (which logs what it raises and carries on)."""
        self.match(face_id, track)

    def match(self, face_id: int, track: FaceTrack) -> list[Alert]:
        """Compare a stored face track with the subjects of the cases watching its camera."""
        if not self.enabled or track.embedding is None:
            return []
        watching = self.cases.watching(track.camera, track.start)
        with self._lock:
            # Descriptors of cases that ended leave memory with the next face.
            for gone in set(self._subjects) - {c.id for c in watching}:
                del self._subjects[gone]
        if not watching:
            return []
        # The track's best faces (several when the worker sent them), the stored one first.
        vectors = np.frombuffer(track.samples or track.embedding,
                                dtype=np.float32).reshape(-1, 128)
        alerts = []
        for case in watching:
            subjects = self._case_subjects(case.id)
            if not subjects.ids:
                continue
            # (faces, subjects): the subject nearest to most of the track's faces is the
            # candidate; the track names them only if several of its faces agree.
            distances = np.linalg.norm(vectors[:, None, :] - subjects.vectors[None], axis=2)
            nearest = int(np.argmin(np.median(distances, axis=0)))
            column = [float(d) for d in distances[:, nearest]]
            if track_level(column) is MatchLevel.MATCH:
                alert = self._alert(case, subjects.ids[nearest], min(column), face_id, track)
                if alert is not None:
                    alerts.append(alert)
        return alerts

    def _case_subjects(self, case_id: int) -> _Subjects:
        with self._lock:
            known = self._subjects.get(case_id)
        if known is not None:
            return known
        pairs = self.cases.descriptors_for_matching(case_id)
        subjects = _Subjects(tuple(i for i, _ in pairs),
                             np.stack([v for _, v in pairs]) if pairs
                             else np.empty((0, 128), dtype=np.float32))
        with self._lock:
            self._subjects[case_id] = subjects
        return subjects

    def _alert(self, case: Case, subject_id: int, distance: float, face_id: int,
               track: FaceTrack) -> Alert | None:
        """A new candidate, or None when the same person was already raised on this camera
        within DEDUP_SECONDS (checked in the writer's transaction, so two tracks at once
        raise one). A person is a subject label: a case may hold several photos of one."""
        now = self.cases.clock()
        a, subject = schema.case_alerts.c, schema.case_subjects.c
        label = select(subject.label).where(subject.id == subject_id).scalar_subquery()
        same_person = select(subject.id).where(subject.case_id == case.id,
                                               subject.label == label)

        def write(conn: Connection) -> int | None:
            recent = conn.execute(select(a.id).where(
                a.case_id == case.id, a.subject_id.in_(same_person), a.camera == track.camera,
                a.seen_at > track.start - DEDUP_SECONDS,
                a.seen_at < track.start + DEDUP_SECONDS).limit(1)).first()
            if recent is not None:
                return None
            return int(conn.execute(insert(schema.case_alerts).values(
                case_id=case.id, subject_id=subject_id, face_id=face_id, camera=track.camera,
                seen_at=track.start, distance=distance, created_at=now,
                status=AlertStatus.CANDIDATE.value,
            ).returning(schema.case_alerts.c.id)).scalar_one())

        alert_id = self.store.write(write)
        if alert_id is None:
            log.debug("case %d: subject %d seen on %s again within %.0f s; no new alert",
                      case.id, subject_id, track.camera, DEDUP_SECONDS)
            return None
        self.audit.record(SYSTEM, Action.WATCHLIST_ALERT, f"case {case.id}", detail={
            "alert": alert_id, "subject": subject_id, "face": face_id, "camera": track.camera,
            "seen_at": track.start, "distance": round(distance, 4),
            "level": MatchLevel.MATCH.value,
        })
        self.bus.publish(Event(
            track.camera, self.sites.get(track.camera, ""), EventKind.WATCHLIST, track.start,
            end=track.end, data={"alert": alert_id, "case": case.id,
                                 "status": AlertStatus.CANDIDATE.value,
                                 "level": MatchLevel.MATCH.value},
        ))
        log.info("case %d: watchlist candidate %d on %s", case.id, alert_id, track.camera)
        return self._load(alert_id)

    # -- people ------------------------------------------------------------------------------

    def confirm(self, actor: Actor, alert_id: int) -> Alert:
        """A second person (not the case's opener) agrees the candidate is the subject."""
        return self._decide(actor, alert_id, AlertStatus.CONFIRMED)

    def dismiss(self, actor: Actor, alert_id: int) -> Alert:
        return self._decide(actor, alert_id, AlertStatus.DISMISSED)

    def alerts(self, actor: Actor, case_id: int) -> list[Alert]:
        """A case's alerts, newest first, for someone who may confirm them."""
        self.cases.get(actor, case_id)  # refused (and audited) without CASE_VIEW
        with self.store.read() as conn:
            rows = conn.execute(select(schema.case_alerts)
                                .where(schema.case_alerts.c.case_id == case_id)
                                .order_by(schema.case_alerts.c.id.desc())).all()
        return [a for a in map(_alert_from_row, rows) if actor.sees_camera(a.camera)]

    def _decide(self, actor: Actor, alert_id: int, decision: AlertStatus) -> Alert:
        action = (Action.ALERT_CONFIRM if decision is AlertStatus.CONFIRMED
                  else Action.ALERT_DISMISS)
        target = f"alert {alert_id}"
        if not actor.can(Permission.ALERT_CONFIRM):
            self._refuse(actor, action, target,
                         f"the {actor.role.value} role cannot confirm or dismiss alerts")
        try:
            alert = self._load(alert_id)
        except LookupError as exc:
            self._refuse(actor, action, target, str(exc))
        case = self.cases.get(actor, alert.case_id)
        if actor.name == case.opened_by:
            self._refuse(actor, action, target, "an alert must be confirmed by a second "
                         "person, not the user who opened the case")
        if not actor.sees_camera(alert.camera):
            self._refuse(actor, action, target, f"{actor.name} has no access to camera "
                         f"{alert.camera}")
        if case.status is not CaseStatus.APPROVED:
            self._refuse(actor, action, target, f"the case is {case.status.value}")
        now = self.cases.clock()

        def write(conn: Connection) -> bool:
            # Checked in the transaction: of two people deciding at once, one decides.
            return bool(conn.execute(
                update(schema.case_alerts).where(
                    schema.case_alerts.c.id == alert_id,
                    schema.case_alerts.c.status == AlertStatus.CANDIDATE.value)
                .values(status=decision.value, decided_by=actor.name, decided_at=now)
            ).rowcount)

        if not self.store.write(write):
            self._refuse(actor, action, target,
                         f"the alert is already {self._load(alert_id).status.value}")
        self.audit.record(actor.name, action, target, address=actor.address,
                          detail={"case": alert.case_id, "camera": alert.camera})
        return self._load(alert_id)

    def _load(self, alert_id: int) -> Alert:
        with self.store.read() as conn:
            row = conn.execute(select(schema.case_alerts)
                               .where(schema.case_alerts.c.id == alert_id)).first()
        if row is None:
            raise LookupError(f"there is no alert {alert_id}")
        return _alert_from_row(row)

    def _refuse(self, actor: Actor, action: Action, target: str, reason: str) -> NoReturn:
        self.audit.record_refusal(actor.name, action, target, reason, address=actor.address)
        raise Refused(action, reason)


def _alert_from_row(row: Any) -> Alert:
    m = row._mapping
    return Alert(
        id=m["id"], case_id=m["case_id"], subject_id=m["subject_id"], face_id=m["face_id"],
        camera=m["camera"], seen_at=m["seen_at"], distance=m["distance"],
        created_at=m["created_at"], status=AlertStatus(m["status"]),
        decided_by=m["decided_by"], decided_at=m["decided_at"],
    )
