"""The gallery: people enrolled for matching, each with a legal basis and an expiry.

    gallery = Gallery(store, keys, audit, config.profile)
    person_id = gallery.enroll(actor, "case 2025/17 subject A", [jpeg_bytes, ...],
                               legal_basis=LegalBasis("case", "2025/17"), expires_at=t)
    found = gallery.match(vector)        # (Person, distance) or None
    gallery.purge_expired()              # expired entries go, audited as the system

A person is enrolled only where the profile allows enrollment (never in a school), by an actor
with the gallery permission, under a legal basis (a case or a consent record) and with an expiry
no further than MAX_ENROLL_DAYS ahead. The basis is checked, not taken on trust, and one person
alone never makes an entry that counts: a case basis must name an approved, active case (whose
approver is the second person, and whose expiry the entry cannot outlive); a consent entry is
matched only once an approver (not its enroller) has approved it (``approve``). New photos or
a new basis need that approval again. Every enrollment, update and deletion, and every refusal,
is on the audit log, with the reference, photo count, legal basis and expiry only: nothing
biometric. Descriptors and face crops are stored sealed with the biometric key, bound to their
person; they are decrypted only in memory, for matching or for showing the crop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, NoReturn

import numpy as np
import numpy.typing as npt
from sqlalchemy import Connection, Row, delete, func, insert, select, update

from custodes.audit.actions import Action
from custodes.audit.log import SYSTEM, AuditLog, Outcome
from custodes.auth.roles import Actor, Permission
from custodes.faces.calibration import MATCH_DISTANCE
from custodes.faces.index import DIM, VectorIndex
from custodes.faces.photos import DescribedFace, PhotoError, describe_photo, read_image
from custodes.keys import NodeKeys
from custodes.privacy import policy
from custodes.privacy.policy import Profile, Refused, require
from custodes.store import schema
from custodes.store.db import Store
from custodes.vision.embedding import FaceEmbedder

F32 = npt.NDArray[np.float32]

# An enrollment lapses within a year at most; a longer need is a renewal, with its own audit.
MAX_ENROLL_DAYS: Final = 365
MAX_PHOTOS: Final = 20


class BasisKind(StrEnum):
    CASE = "case"  # an approved case (its reference)
    CONSENT = "consent"  # a consent record of the person (its reference)


@dataclass(frozen=True)
class LegalBasis:
    kind: BasisKind | str
    reference: str

    def as_detail(self) -> dict[str, str]:
        return {"kind": str(self.kind), "reference": self.reference}


@dataclass(frozen=True)
class Person:
    id: int
    reference: str
    legal_basis: LegalBasis
    expires_at: float
    created_at: float
    created_by: str
    updated_at: float
    updated_by: str
    photos: int
    case_id: int | None = None  # the approved case a case basis rests on
    approved_by: str | None = None  # the second person; None: pending, never matched
    approved_at: float | None = None

    @property
    def approved(self) -> bool:
        return self.approved_at is not None


@dataclass(frozen=True)
class _Approval:
    """What a checked basis brings: its case, and the approval it already carries."""

    case_id: int | None
    approved_by: str | None
    approved_at: float | None
    case_expires_at: float | None


def descriptor_context(person_id: int) -> bytes:
    return f"gallery.descriptor\0{person_id}".encode()


def crop_context(person_id: int) -> bytes:
    return f"gallery.crop\0{person_id}".encode()


class Gallery:
    """Enrolled people, stored sealed; see the module doc."""

    def __init__(self, store: Store, keys: NodeKeys, audit: AuditLog, profile: Profile, *,
                 embedder: FaceEmbedder | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.keys = keys
        self.audit = audit
        self.profile = profile
        self.embedder = embedder
        self.clock = clock
        self._lock = threading.Lock()
        self._cache: tuple[tuple[Any, ...], VectorIndex, dict[int, Person]] | None = None

    # -- changes ------------------------------------------------------------------------

    def enroll(self, actor: Actor, reference: str, photos: Sequence[bytes], *,
               legal_basis: LegalBasis | None, expires_at: float | None) -> int:
        """Add a person; return their id. Refused (audited) unless every condition holds."""
        action = Action.GALLERY_ENROLL
        detail = _detail(reference, len(photos), legal_basis, expires_at)
        self._check(actor, action, "", detail)
        basis = self._check_basis(actor, action, "", detail, legal_basis)
        expiry = self._check_expiry(actor, action, "", detail, expires_at)
        approval = self._approval(actor, action, "", detail, basis=basis, expires_at=expiry)
        if not reference.strip():
            self._refuse(actor, action, "", detail, "a reference for the person is required")
        faces = self._describe(actor, action, "", detail, photos)
        now = self.clock()

        def write(conn: Connection) -> int:
            person_id = int(conn.execute(insert(schema.gallery_people).values(
                reference=reference.strip(), basis_kind=str(basis.kind),
                basis_reference=basis.reference.strip(), expires_at=expiry, created_at=now,
                created_by=actor.name, updated_at=now, updated_by=actor.name,
                case_id=approval.case_id, approved_by=approval.approved_by,
                approved_at=approval.approved_at,
            ).returning(schema.gallery_people.c.id)).scalar_one())
            self._insert_photos(conn, person_id, faces)
            return person_id

        person_id = self.store.write(write)
        self.audit.record(actor.name, action, f"person:{person_id}", address=actor.address,
                          detail={**detail, "approved_by": approval.approved_by})
        return person_id

    def approve(self, actor: Actor, person_id: int, *, note: str = "") -> Person:
        """Approve a pending (consent) entry as a second person: an approver who neither
        enrolled nor last changed it. Only then is it matched."""
        action, target = Action.GALLERY_APPROVE, f"person:{person_id}"
        try:
            require(self.profile, policy.Action.ENROLL)
        except Refused as exc:
            self._refuse(actor, action, target, {}, exc.reason)
        if not actor.can(Permission.CASE_APPROVE):
            self._refuse(actor, action, target, {},
                         f"the {actor.role.value} role cannot approve gallery entries")
        with self.store.read() as conn:
            person = _people(conn, person_id).get(person_id)
        if person is None:
            self._refuse(actor, action, target, {}, f"there is no enrolled person {person_id}")
        detail = _person_detail(person)
        if actor.name in (person.created_by, person.updated_by):
            self._refuse(actor, action, target, detail, "an entry must be approved by a "
                         "second person, not by the one who enrolled or changed it")
        if person.approved:
            self._refuse(actor, action, target, detail,
                         f"the entry was approved already by {person.approved_by}")
        now = self.clock()

        def write(conn: Connection) -> int:
            people = schema.gallery_people
            # Only as it was read: an update in between needs its own approval.
            return int(conn.execute(update(people).where(
                people.c.id == person_id, people.c.approved_at.is_(None),
                people.c.updated_at == person.updated_at,
            ).values(approved_by=actor.name, approved_at=now)).rowcount)

        if not self.store.write(write):
            self._refuse(actor, action, target, detail, "the entry changed meanwhile; "
                         "look at it again")
        self.audit.record(actor.name, action, target, address=actor.address,
                          detail={**detail, "note": note.strip()})
        with self.store.read() as conn:
            return _people(conn, person_id)[person_id]

    def update(self, actor: Actor, person_id: int, *, reference: str | None = None,
               photos: Sequence[bytes] | None = None, legal_basis: LegalBasis | None = None,
               expires_at: float | None = None) -> None:
        """Change what is given; new ``photos`` replace the old ones. Audited like enroll."""
        action, target = Action.GALLERY_UPDATE, f"person:{person_id}"
        detail = _detail(reference, None if photos is None else len(photos), legal_basis,
                         expires_at)
        self._check(actor, action, target, detail)
        with self.store.read() as conn:
            current = _people(conn, person_id).get(person_id)
        values: dict[str, Any] = {}
        if legal_basis is not None:
            basis = self._check_basis(actor, action, target, detail, legal_basis)
            values.update(basis_kind=str(basis.kind), basis_reference=basis.reference.strip())
        if expires_at is not None:
            values["expires_at"] = self._check_expiry(actor, action, target, detail, expires_at)
        if current is not None and (legal_basis is not None or photos is not None
                                    or expires_at is not None):
            # New photos or a new basis are a new entry as far as approval goes; a new expiry
            # must still lie within the case's.
            approval = self._approval(
                actor, action, target, detail, basis=legal_basis or current.legal_basis,
                expires_at=values.get("expires_at", current.expires_at))
            if legal_basis is not None or photos is not None:
                values.update(case_id=approval.case_id, approved_by=approval.approved_by,
                              approved_at=approval.approved_at)
        if reference is not None:
            if not reference.strip():
                self._refuse(actor, action, target, detail, "the reference must not be empty")
            values["reference"] = reference.strip()
        faces = None if photos is None else self._describe(actor, action, target, detail,
                                                           photos)
        values.update(updated_at=self.clock(), updated_by=actor.name)

        def write(conn: Connection) -> bool:
            people = schema.gallery_people
            changed = conn.execute(update(people).where(people.c.id == person_id)
                                   .values(values)).rowcount
            if changed and faces is not None:
                conn.execute(delete(schema.gallery_photos)
                             .where(schema.gallery_photos.c.person_id == person_id))
                self._insert_photos(conn, person_id, faces)
            return bool(changed)

        if not self.store.write(write):
            self.audit.record(actor.name, action, target, outcome=Outcome.FAILED,
                              detail={**detail, "reason": "no such person"},
                              address=actor.address)
            raise KeyError(f"no enrolled person {person_id}")
        self.audit.record(actor.name, action, target, detail=detail, address=actor.address)

    def delete(self, actor: Actor, person_id: int) -> None:
        """Remove a person and their sealed photos."""
        action, target = Action.GALLERY_DELETE, f"person:{person_id}"
        self._check(actor, action, target, {})
        person = self._delete(person_id)
        if person is None:
            self.audit.record(actor.name, action, target, outcome=Outcome.FAILED,
                              detail={"reason": "no such person"}, address=actor.address)
            raise KeyError(f"no enrolled person {person_id}")
        self.audit.record(actor.name, action, target, detail=_person_detail(person),
                          address=actor.address)

    def purge_expired(self, now: float | None = None) -> int:
        """Delete every person whose enrollment has expired (audited as the system)."""
        now = self.clock() if now is None else now
        people = schema.gallery_people
        with self.store.read() as conn:
            ids = list(conn.execute(select(people.c.id).where(people.c.expires_at <= now))
                       .scalars())
        purged = 0
        for person_id in ids:
            person = self._delete(person_id, expired_by=now)
            if person is not None:
                self.audit.record(SYSTEM, Action.GALLERY_EXPIRE, f"person:{person_id}",
                                  detail=_person_detail(person))
                purged += 1
        return purged

    # -- reading ------------------------------------------------------------------------

    def list(self, actor: Actor) -> list[Person]:
        """Everyone enrolled, soonest expiry first (audited: who is watched for is sensitive)."""
        self._check(actor, Action.GALLERY_LIST, "", {})
        with self.store.read() as conn:
            people = _people(conn)
        self.audit.record(actor.name, Action.GALLERY_LIST, "", detail={"people": len(people)},
                          address=actor.address)
        return sorted(people.values(), key=lambda p: (p.expires_at, p.id))

    def crops(self, actor: Actor, person_id: int) -> tuple[bytes, ...]:
        """The person's face crops (JPEG), decrypted, e.g. to confirm a match (audited)."""
        action, target = Action.GALLERY_VIEW, f"person:{person_id}"
        self._check(actor, action, target, {})
        photos = schema.gallery_photos
        with self.store.read() as conn:
            sealed = list(conn.execute(select(photos.c.crop).where(
                photos.c.person_id == person_id).order_by(photos.c.id)).scalars())
        self.audit.record(actor.name, action, target, detail={"photos": len(sealed)},
                          address=actor.address)
        return tuple(self.keys.open(blob, crop_context(person_id)) for blob in sealed)

    def match(self, vector: npt.ArrayLike, *,
              max_distance: float = MATCH_DISTANCE) -> tuple[Person, float] | None:
        """The enrolled (unexpired) person nearest to ``vector`` if within ``max_distance``:
        by default a calibrated match (`custodes.faces.calibration`), the only level that may
        name someone; dlib's 0.6 would name most strangers against a gallery of hundreds.

        Not audited here: the caller (a watchlist alert, a search) records what it does with a
        match.
        """
        require(self.profile, policy.Action.ENROLL)
        q = np.asarray(vector, dtype=np.float32).reshape(1, DIM)
        now = self.clock()
        with self._lock:
            index, owners = self._index()
            # Every photo of a person may be nearer than another person's: ask for enough.
            hits = index.search(q, min(len(index), 64)) if len(index) else [[]]
        for photo_id, distance in hits[0]:
            person = owners[photo_id]
            if distance > max_distance:
                break
            # An entry no second person approved is kept, but names nobody.
            if person.expires_at > now and person.approved:
                return person, distance
        return None

    # -- internals ----------------------------------------------------------------------

    def _check(self, actor: Actor, action: Action, target: str, detail: dict[str, Any]) -> None:
        try:
            require(self.profile, policy.Action.ENROLL)
        except Refused as exc:
            self._refuse(actor, action, target, detail, exc.reason)
        if not actor.can(Permission.GALLERY_MANAGE):
            self._refuse(actor, action, target, detail,
                         f"the {actor.role.value} role may not manage the gallery")

    def _check_basis(self, actor: Actor, action: Action, target: str, detail: dict[str, Any],
                     basis: LegalBasis | None) -> LegalBasis:
        if basis is None or not basis.reference.strip():
            self._refuse(actor, action, target, detail,
                         "a legal basis (a case or a consent record reference) is required")
        if str(basis.kind) not in {k.value for k in BasisKind}:
            self._refuse(actor, action, target, detail,
                         f"the legal basis must be a case or a consent, not {basis.kind!r}")
        return basis

    def _check_expiry(self, actor: Actor, action: Action, target: str, detail: dict[str, Any],
                      expires_at: float | None) -> float:
        now = self.clock()
        if expires_at is None:
            self._refuse(actor, action, target, detail, "an expiry is required")
        if expires_at <= now:
            self._refuse(actor, action, target, detail, "the expiry is in the past")
        if expires_at > now + MAX_ENROLL_DAYS * 86400:
            self._refuse(actor, action, target, detail,
                         f"the expiry is more than {MAX_ENROLL_DAYS} days ahead")
        return float(expires_at)

    def _approval(self, actor: Actor, action: Action, target: str, detail: dict[str, Any], *,
                  basis: LegalBasis, expires_at: float) -> _Approval:
        """The approval a basis brings. A case basis: an approved, active case of that
        reference, whose approver counts as the second person; an entry for it ends no later
        than the case. A consent basis: none yet (``approve``)."""
        if str(basis.kind) != BasisKind.CASE.value:
            return _Approval(None, None, None, None)
        now = self.clock()
        c = schema.cases.c
        with self.store.read() as conn:
            row = conn.execute(
                select(c.id, c.decided_by, c.decided_at, c.expires_at, c.opened_by).where(
                    c.reference == basis.reference.strip(), c.status == "approved",
                    c.expires_at > now, c.closed_at.is_(None))
                .order_by(c.expires_at.desc()).limit(1)).first()
        if row is None:
            self._refuse(actor, action, target, detail, f"a case basis must name an approved, "
                         f"active case: there is none with reference {basis.reference.strip()!r}")
        if actor.name == row.decided_by:
            self._refuse(actor, action, target, detail, f"{actor.name} approved case "
                         f"{row.id} and cannot also enroll people under it")
        if expires_at > row.expires_at:
            self._refuse(actor, action, target, detail, f"the entry would outlive case "
                         f"{row.id}, which expires at {row.expires_at:.0f}")
        return _Approval(int(row.id), row.decided_by, row.decided_at, row.expires_at)

    def _refuse(self, actor: Actor, action: Action, target: str, detail: dict[str, Any],
                reason: str) -> NoReturn:
        self.audit.record_refusal(actor.name, action, target, reason, detail=detail,
                                  address=actor.address)
        raise Refused(action, reason)

    def _describe(self, actor: Actor, action: Action, target: str, detail: dict[str, Any],
                  photos: Sequence[bytes]) -> tuple[DescribedFace, ...]:
        if not photos or len(photos) > MAX_PHOTOS:
            reason = f"between 1 and {MAX_PHOTOS} photos are needed, got {len(photos)}"
            self._fail(actor, action, target, detail, reason)
        faces = []
        for number, data in enumerate(photos, 1):
            try:
                faces.append(describe_photo(read_image(data), embedder=self.embedder))
            except PhotoError as exc:
                self._fail(actor, action, target, detail, f"photo {number}: {exc}")
        return tuple(faces)

    def _fail(self, actor: Actor, action: Action, target: str, detail: dict[str, Any],
              reason: str) -> NoReturn:
        self.audit.record(actor.name, action, target, outcome=Outcome.FAILED,
                          detail={**detail, "reason": reason}, address=actor.address)
        raise PhotoError(reason)

    def _insert_photos(self, conn: Connection, person_id: int,
                       faces: Sequence[DescribedFace]) -> None:
        conn.execute(insert(schema.gallery_photos), [{
            "person_id": person_id,
            "descriptor": self.keys.seal(face.vector.tobytes(), descriptor_context(person_id)),
            "crop": self.keys.seal(face.crop_jpeg, crop_context(person_id)),
        } for face in faces])

    def _delete(self, person_id: int, expired_by: float | None = None) -> Person | None:
        def write(conn: Connection) -> Person | None:
            person = _people(conn, person_id).get(person_id)
            if person is None or (expired_by is not None and person.expires_at > expired_by):
                return None  # gone, or renewed since it was found expired
            people = schema.gallery_people
            conn.execute(delete(people).where(people.c.id == person_id))  # photos cascade
            return person

        return self.store.write(write)

    def _index(self) -> tuple[VectorIndex, dict[int, Person]]:
        """The gallery's descriptors in memory, rebuilt when the gallery changed (any process)."""
        people, photos = schema.gallery_people, schema.gallery_photos
        with self.store.read() as conn:
            # Any enrollment, update, approval or deletion changes one of these.
            version = (*conn.execute(select(func.count(), func.max(people.c.updated_at),
                                            func.count(people.c.approved_at),
                                            func.max(people.c.approved_at))
                                     .select_from(people)).one(),
                       *conn.execute(select(func.count(), func.max(photos.c.id))
                                     .select_from(photos)).one())
            if self._cache is not None and self._cache[0] == version:
                return self._cache[1], self._cache[2]
            everyone = _people(conn)
            rows = conn.execute(select(photos.c.id, photos.c.person_id, photos.c.descriptor))
            ids, vectors, owners = [], [], {}
            for row in rows:
                ids.append(row.id)
                vectors.append(np.frombuffer(
                    self.keys.open(row.descriptor, descriptor_context(row.person_id)),
                    dtype=np.float32))
                owners[row.id] = everyone[row.person_id]
        index = VectorIndex()
        if ids:
            index.add(np.array(ids, dtype=np.int64), np.stack(vectors))
        self._cache = (version, index, owners)
        return index, owners


def _people(conn: Connection, person_id: int | None = None) -> dict[int, Person]:
    people, photos = schema.gallery_people, schema.gallery_photos
    count = (select(func.count()).select_from(photos)
             .where(photos.c.person_id == people.c.id).scalar_subquery())
    query = select(people, count.label("photos"))
    if person_id is not None:
        query = query.where(people.c.id == person_id)
    return {row.id: _person(row) for row in conn.execute(query)}


def _person(row: Row[Any]) -> Person:
    return Person(row.id, row.reference, LegalBasis(BasisKind(row.basis_kind),
                                                    row.basis_reference),
                  row.expires_at, row.created_at, row.created_by, row.updated_at,
                  row.updated_by, row.photos, row.case_id, row.approved_by, row.approved_at)


def _detail(reference: str | None, photos: int | None, basis: LegalBasis | None,
            expires_at: float | None) -> dict[str, Any]:
    detail: dict[str, Any] = {}
    if reference is not None:
        detail["reference"] = reference
    if photos is not None:
        detail["photos"] = photos
    if basis is not None:
        detail["legal_basis"] = basis.as_detail()
    if expires_at is not None:
        detail["expires_at"] = expires_at
    return detail


def _person_detail(person: Person) -> dict[str, Any]:
    return _detail(person.reference, person.photos, person.legal_basis, person.expires_at)
