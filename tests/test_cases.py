"""Cases: who may open and decide them, and that a face search never leaves an approved case.

Subjects are real photos (faces/labels.csv); the recorded faces searched are descriptors of other
real photos of the same and of a different person, sealed into `faces` rows as the event
maintainer stores them.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import insert, select
from typer.testing import CliRunner

from conftest import require
from custodes.audit.actions import Action
from custodes.audit.log import AuditLog, Entry
from custodes.auth.roles import Actor, Role
from custodes.auth.users import Users
from custodes.commands import cli_actor
from custodes.commands import parse_time as parse_iso
from custodes.commands.case import case_app
from custodes.config import load_config
from custodes.faces.calibration import MatchLevel
from custodes.faces.descriptors import FaceDescriptors
from custodes.faces.photos import describe_photo, read_image
from custodes.keys import NodeKeys
from custodes.privacy.cases import (
    UNKNOWN_GAP,
    Case,
    CaseError,
    Cases,
    CaseStatus,
    SearchOutcome,
    SubjectPhoto,
)
from custodes.privacy.policy import Profile, Refused
from custodes.record.holds import active_holds
from custodes.record.layout import Layout
from custodes.store import schema
from custodes.store.db import Store
from custodes.vision.embedding import MATCH_THRESHOLD, FaceEmbedder
from people import F32, People

NOW = 1_800_000_000.0
HOUR = 3600.0
DAY = 24 * HOUR
SCOPE = (NOW - 2 * DAY, NOW - DAY)  # the footage a case covers: yesterday's day before

ALICE = Actor("alice", Role.INVESTIGATOR)  # opens cases
CAROL = Actor("carol", Role.INVESTIGATOR)  # a colleague of alice's
BOB = Actor("bob", Role.APPROVER)  # the data-protection officer
VIEWER = Actor("victor", Role.VIEWER)


# -- set-up shared with test_watchlist ---------------------------------------------------------


@dataclass
class Clock:
    now: float = NOW

    def __call__(self) -> float:
        return self.now


@dataclass
class Env:
    store: Store
    keys: NodeKeys
    audit: AuditLog
    descriptors: FaceDescriptors
    embedder: FaceEmbedder
    clock: Clock = field(default_factory=Clock)

    def cases(self, profile: Profile, descriptors_off: dict[str, str] | None = None) -> Cases:
        return Cases(self.store, self.keys, self.audit, profile, self.clock,
                     known_cameras=["cam1", "cam2", "cam3"], embedder=self.embedder,
                     descriptors=self.descriptors, descriptors_off=descriptors_off)

    def add_face(self, camera: str, start: float, vector: F32 | None, *, length: float = 4.0,
                 snapshot: str | None = None) -> int:
        """A face track as the event maintainer stores it: event row, sealed descriptor (none
        when ``vector`` is None, as from a camera that stores no descriptors)."""
        sealed = None if vector is None else self.descriptors.seal(
            np.asarray(vector, np.float32).tobytes(), camera, start)

        def write(conn: Any) -> int:
            event_id = conn.execute(insert(schema.events).values(
                camera=camera, kind="face", start=start, end=start + length, data="{}",
                snapshot=snapshot).returning(schema.events.c.id)).scalar_one()
            return int(conn.execute(insert(schema.faces).values(
                camera=camera, start=start, end=start + length, detections=5,
                box="[0, 0, 80, 80]", quality=0.9, embedding=None, sealed=sealed,
                event_id=event_id).returning(schema.faces.c.id)).scalar_one())

        return self.store.write(write)

    def entries(self, action: Action | None = None) -> list[Entry]:
        with self.store.read() as conn:
            rows = conn.execute(select(schema.audit_log).order_by(schema.audit_log.c.seq))
            found = [Entry.from_row(r) for r in rows]
        return [e for e in found if action is None or e.action == action]


def no_vectors_in(entries: list[Entry]) -> bool:
    """No audit detail holds a list of numbers (a descriptor)."""
    return not any(isinstance(value, list) and any(isinstance(x, float) for x in value)
                   for entry in entries for value in entry.detail.values())


def add_users(store: Store, *people: Actor) -> None:
    """Accounts for the test's actors: a case's members must be enabled users."""
    def write(conn: Any) -> None:
        for actor in people:
            conn.execute(insert(schema.users).values(
                name=actor.name, role=actor.role.value,
                cameras=None if actor.cameras is None else json.dumps(sorted(actor.cameras)),
                password_hash="-", disabled=0, created_at=0.0, password_changed_at=0.0))

    store.write(write)


@pytest.fixture
def env(tmp_path: Path, embedder: FaceEmbedder) -> Iterator[Env]:
    keys = NodeKeys.load_or_create(tmp_path / "keys")
    with Store(tmp_path / "node.db") as store:
        add_users(store, ALICE, CAROL, BOB, VIEWER)
        yield Env(store, keys, AuditLog(store, keys), FaceDescriptors(store, keys), embedder)


def open_case(cases: Cases, people: People, actor: Actor = ALICE, **changes: Any) -> Case:
    fields: dict[str, Any] = {
        "reference": "court order 2026/17", "legal_basis": "Code of criminal procedure §100",
        "purpose": "find the missing person", "cameras": ["cam1", "cam2"],
        "start": SCOPE[0], "end": SCOPE[1], "expires_at": NOW + 7 * DAY,
        "photos": [SubjectPhoto("missing person", p) for p in people.subject_photos],
        "members": ["carol"],  # alice's colleague works the case with her
    }
    return cases.open(actor, **{**fields, **changes})


# -- profiles and roles --------------------------------------------------------------------------


def test_the_school_profile_refuses_cases_and_search_and_audits_it(env: Env,
                                                                   people: People) -> None:
    school = env.cases(Profile.SCHOOL)
    with pytest.raises(Refused, match="the school profile does not allow face search"):
        open_case(school, people)
    with pytest.raises(Refused, match="the school profile does not allow face search"):
        school.search(ALICE, 1)
    refused = [(e.action, e.outcome, e.actor) for e in env.entries()]
    assert refused == [("case.open", "refused", "alice"), ("face.search", "refused", "alice")]
    with env.store.read() as conn:
        assert conn.execute(select(schema.cases)).first() is None
        assert conn.execute(select(schema.case_subjects)).first() is None


def test_watchlists_need_the_police_profile(env: Env, people: People) -> None:
    with pytest.raises(Refused, match="municipal profile does not allow live watchlist"):
        open_case(env.cases(Profile.MUNICIPAL), people, watchlist=True)
    assert env.entries(Action.CASE_OPEN)[-1].outcome == "refused"
    assert open_case(env.cases(Profile.POLICE), people, watchlist=True).watchlist


def test_only_investigators_open_cases_and_only_approvers_decide(env: Env,
                                                                 people: People) -> None:
    cases = env.cases(Profile.MUNICIPAL)
    with pytest.raises(Refused, match="the viewer role cannot open cases"):
        open_case(cases, people, actor=VIEWER)
    case = open_case(cases, people)
    assert case.status is CaseStatus.PENDING
    assert case.opened_by == "alice"
    assert [s.label for s in case.subjects] == ["missing person"] * 2
    with pytest.raises(Refused, match="the investigator role cannot approve"):
        cases.approve(CAROL, case.id)
    # alice, later given the approver role, still cannot approve her own case.
    with pytest.raises(Refused, match="cannot be approved by the user who opened it"):
        cases.approve(Actor("alice", Role.APPROVER), case.id)
    assert cases.approve(BOB, case.id, note="order checked").status is CaseStatus.APPROVED
    with pytest.raises(Refused, match="only a pending case can be decided"):
        cases.reject(Actor("dora", Role.APPROVER), case.id)
    outcomes = [(e.action, e.outcome) for e in env.entries() if e.action.startswith("case.")]
    assert outcomes == [("case.open", "refused"), ("case.open", "ok"),
                        ("case.approve", "refused"), ("case.approve", "refused"),
                        ("case.approve", "ok"), ("case.reject", "refused")]
    assert env.entries(Action.CASE_APPROVE)[1].detail["reason"] == (
        "a case cannot be approved by the user who opened it")


def test_a_photo_without_exactly_one_face_is_not_a_subject(env: Env, people: People,
                                                          shared_data: Path) -> None:
    dogs = shared_data / "crowds" / "dlib_dogs.jpg"
    require(dogs.is_file(), "crowds/dlib_dogs.jpg")
    with pytest.raises(CaseError, match="no face found"):
        open_case(env.cases(Profile.MUNICIPAL), people,
                  photos=[SubjectPhoto("dog", dogs.read_bytes())])
    with pytest.raises(CaseError, match="a case needs at least one camera"):
        open_case(env.cases(Profile.MUNICIPAL), people, cameras=[])
    with pytest.raises(CaseError, match="unknown camera"):
        open_case(env.cases(Profile.MUNICIPAL), people, cameras=["cam9"])


# -- when a search is allowed --------------------------------------------------------------------


def test_no_search_outside_an_approved_unexpired_open_case(env: Env, people: People) -> None:
    cases = env.cases(Profile.MUNICIPAL)
    env.add_face("cam1", SCOPE[0] + HOUR, people.same[0])
    pending = open_case(cases, people)
    rejected = open_case(cases, people)
    cases.reject(BOB, rejected.id, note="no court order attached")
    closed = open_case(cases, people)
    cases.approve(BOB, closed.id)
    cases.close(ALICE, closed.id)
    expiring = open_case(cases, people, expires_at=NOW + HOUR)
    cases.approve(BOB, expiring.id)
    approved = open_case(cases, people)
    cases.approve(BOB, approved.id)
    assert len(cases.search(CAROL, approved.id).hits) == 1
    env.clock.now = NOW + HOUR  # the moment it expires, before expire_due has run
    for case, reason in ((pending, "has not been approved"), (rejected, "was rejected"),
                         (closed, "is closed"), (expiring, "has expired")):
        with pytest.raises(Refused, match=reason):
            cases.search(ALICE, case.id)
    with pytest.raises(Refused, match="the approver role cannot search for faces"):
        cases.search(BOB, approved.id)
    with pytest.raises(Refused, match="there is no case 99"):
        cases.search(ALICE, 99)
    searches = env.entries(Action.FACE_SEARCH)
    assert [e.outcome for e in searches] == ["ok"] + ["refused"] * 6
    assert searches[0].detail["hits"] == 1


# -- what a search returns -----------------------------------------------------------------------


def test_search_returns_the_subject_inside_the_scope_and_nothing_outside(
        env: Env, people: People) -> None:
    cases = env.cases(Profile.MUNICIPAL)
    same, other = people.same, people.other
    match, possible = people.same_at(MatchLevel.MATCH), people.same_at(MatchLevel.POSSIBLE)
    t0, t1 = SCOPE
    matched = {
        env.add_face("cam1", t0 + HOUR, match[0], snapshot="cam1/a.jpg"),
        env.add_face("cam2", t1 - 10, match[1], length=5),
    }
    possibly = env.add_face("cam2", t0 + 5 * HOUR, possible[0], snapshot="cam2/b.jpg")
    inside = matched | {possibly}
    outside = {
        env.add_face("cam3", t0 + HOUR, same[0]),  # a camera not in scope
        env.add_face("cam1", t0 - HOUR, same[1]),  # before the window
        env.add_face("cam2", t1 + HOUR, same[2]),  # after it
        env.add_face("cam1", t0 - 2, same[3]),  # a track that began just before it
        env.add_face("cam2", t1 - 2, same[4]),  # and one that ran past its end
    }
    strangers = {env.add_face("cam1", t0 + 2 * HOUR + i, v) for i, v in enumerate(other)}
    case = open_case(cases, people)
    cases.approve(BOB, case.id)

    result = cases.search(ALICE, case.id, k=50)
    found = {h.face_id for h in result.hits}
    assert found == inside
    assert not found & (outside | strangers)
    assert all(h.distance < MATCH_THRESHOLD for h in result.hits)
    assert [h.distance for h in result.hits] == sorted(h.distance for h in result.hits)
    assert all(case.covers(h.camera, h.start, h.end) for h in result.hits)
    assert {h.snapshot for h in result.hits} == {"cam1/a.jpg", "cam2/b.jpg", None}
    assert {h.subject_id for h in result.hits} <= {s.id for s in case.subjects}
    assert all(h.event_id is not None for h in result.hits)
    # Every hit is ranked; only those under the calibrated distance are matches.
    assert {h.face_id: h.level for h in result.hits} == {
        **dict.fromkeys(matched, MatchLevel.MATCH), possibly: MatchLevel.POSSIBLE}
    assert all(h.meaning.startswith("Possible match only") for h in result.hits
               if h.level is MatchLevel.POSSIBLE)

    entry = env.entries(Action.FACE_SEARCH)[-1]
    assert entry.target == f"case {case.id}"
    assert entry.actor == "alice"
    # Tracks outside the scope are not counted among those searched.
    assert entry.detail == {"cameras": ["cam1", "cam2"], "searched": ["cam1", "cam2"],
                            "start": t0, "end": t1, "k": 50, "hits": 3, "matches": 2,
                            "tracks": 3 + len(strangers), "searchable": 3 + len(strangers),
                            "outcome": "found"}
    assert (result.outcome, result.tracks, result.searchable) == (
        SearchOutcome.FOUND, 3 + len(strangers), 3 + len(strangers))
    assert all(c.reason is None for c in result.coverage)


# -- what a search could search ------------------------------------------------------------------

EMBEDDINGS_OFF = "cameras.cam1.analytics.faces.embeddings is off in the config: faces are ..."


def test_a_search_over_tracks_without_descriptors_says_nothing_could_be_searched(
        env: Env, people: People) -> None:
    """The municipal demo's complaint: 408 tracks, none with a descriptor, answered as if
    nobody near enough had been found."""
    cases = env.cases(Profile.MUNICIPAL, descriptors_off={"cam1": EMBEDDINGS_OFF})
    t0, _ = SCOPE
    for i in range(5):
        env.add_face("cam1", t0 + HOUR + 10 * i, None)
    env.add_face("cam2", t0 + 2 * HOUR, None)  # its config stores them: the cause is unknown
    env.add_face("cam1", t0 - HOUR, None)  # before the scope: not counted
    case = open_case(cases, people)
    cases.approve(BOB, case.id)

    result = cases.search(ALICE, case.id)
    assert result.hits == ()
    assert result.outcome is SearchOutcome.NOTHING_SEARCHABLE
    assert (result.tracks, result.searchable, result.missing) == (6, 0, 6)
    assert [(c.camera, c.tracks, c.searchable, c.reason) for c in result.coverage] == [
        ("cam1", 5, 0, EMBEDDINGS_OFF), ("cam2", 1, 0, UNKNOWN_GAP)]
    assert result.summary.startswith("Nothing could be searched: 6 face tracks recorded in "
                                     "the searched window, none with a face descriptor "
                                     f"(cam1: 5 without, because {EMBEDDINGS_OFF}; cam2: 1 ")
    assert "near enough" not in result.summary
    assert "None is within" not in result.summary
    entry = env.entries(Action.FACE_SEARCH)[-1]
    assert (entry.detail["tracks"], entry.detail["searchable"], entry.detail["outcome"]) == (
        6, 0, "nothing_searchable")

    # Narrowed to a camera that recorded no face at all: a third answer.
    quiet = cases.search(ALICE, case.id, cameras=["cam2"], start=t0, end=t0 + HOUR)
    assert quiet.outcome is SearchOutcome.NO_TRACKS
    assert (quiet.tracks, quiet.searchable) == (0, 0)
    assert quiet.summary == ("No face track was recorded on cam2 in the searched window: "
                             "there was nothing to search.")


def test_a_search_that_compared_faces_says_how_many_and_what_none_near_means(
        env: Env, people: People) -> None:
    cases = env.cases(Profile.MUNICIPAL, descriptors_off={"cam1": EMBEDDINGS_OFF})
    t0, _ = SCOPE
    strangers = [env.add_face("cam2", t0 + HOUR + i, v) for i, v in enumerate(people.other)]
    env.add_face("cam1", t0 + 3 * HOUR, None)
    env.add_face("cam1", t0 + 4 * HOUR, None)
    case = open_case(cases, people)
    cases.approve(BOB, case.id)

    result = cases.search(ALICE, case.id)
    assert result.hits == ()
    assert result.outcome is SearchOutcome.NONE_NEAR
    assert (result.tracks, result.searchable, result.missing) == (
        len(strangers) + 2, len(strangers), 2)
    assert result.summary.startswith(
        f"Searched {len(strangers)} face tracks: None is within 0.60 of a subject, not even a "
        "possible match. That is no proof of absence:")
    # The tracks left out are said, with their cause.
    assert result.summary.endswith(f" 2 of the {len(strangers) + 2} face tracks could not "
                                   "be searched, "
                                   f"having no face descriptor (cam1: 2 without, because "
                                   f"{EMBEDDINGS_OFF}).")

    # The subject recorded beside them is still found, and the gap still reported.
    found = env.add_face("cam2", t0 + 5 * HOUR, people.same_at(MatchLevel.MATCH)[0])
    result = cases.search(ALICE, case.id)
    assert [h.face_id for h in result.hits] == [found]
    assert result.outcome is SearchOutcome.FOUND
    assert (result.tracks, result.searchable) == (len(strangers) + 3, len(strangers) + 1)
    assert result.summary.startswith(
        f"1 hit (1 match) among {len(strangers) + 1} face tracks searched. 2 of the ")


def test_a_narrower_request_is_honoured_and_a_wider_one_refused(env: Env,
                                                                people: People) -> None:
    cases = env.cases(Profile.MUNICIPAL)
    t0, t1 = SCOPE
    on_cam1 = env.add_face("cam1", t0 + HOUR, people.same[0])
    later_cam1 = env.add_face("cam1", t0 + 10 * HOUR, people.same[1])
    env.add_face("cam2", t0 + HOUR, people.same[2])
    env.add_face("cam3", t0 + HOUR, people.same[3])
    case = open_case(cases, people)
    cases.approve(BOB, case.id)

    assert {h.face_id for h in cases.search(ALICE, case.id, cameras=["cam1"]).hits} == {
        on_cam1, later_cam1}
    narrow = cases.search(ALICE, case.id, cameras=["cam1"], start=t0, end=t0 + 2 * HOUR)
    assert [h.face_id for h in narrow.hits] == [on_cam1]
    with pytest.raises(Refused, match="camera\\(s\\) cam3 outside the case's scope"):
        cases.search(ALICE, case.id, cameras=["cam1", "cam3"])
    with pytest.raises(Refused, match="outside the case's scope"):
        cases.search(ALICE, case.id, start=t0 - 1)
    with pytest.raises(Refused, match="outside the case's scope"):
        cases.search(ALICE, case.id, end=t1 + DAY)
    refused = [e for e in env.entries(Action.FACE_SEARCH) if e.outcome == "refused"]
    assert refused[0].detail["cameras"] == ["cam1", "cam3"]


def test_a_case_needs_every_one_of_its_cameras(env: Env, people: People) -> None:
    """Per-camera limits hold for cases: a user limited to cam2 neither approves, sees,
    lists, searches nor reads the subject crops of a case that also covers cam1, and cannot
    be made a member of one."""
    cases = env.cases(Profile.MUNICIPAL)
    env.add_face("cam1", SCOPE[0] + HOUR, people.same[0])
    erin = Actor("erin", Role.INVESTIGATOR, cameras=frozenset({"cam2"}))
    bert = Actor("bert", Role.APPROVER, cameras=frozenset({"cam2"}))
    add_users(env.store, erin, bert)
    with pytest.raises(Refused, match="erin has no access to every camera of the case"):
        open_case(cases, people, members=["erin"])
    case = open_case(cases, people)
    hidden = "has no access to camera[(]s[)] cam1 of case"
    with pytest.raises(Refused, match=f"bert {hidden}"):
        cases.approve(bert, case.id)
    assert cases.list_cases(bert) == []
    cases.approve(BOB, case.id)
    subject = case.subjects[0].id
    for attempt in (lambda: cases.search(erin, case.id), lambda: cases.get(erin, case.id),
                    lambda: cases.subject_crop(erin, case.id, subject),
                    lambda: cases.subject_crop(bert, case.id, subject)):
        with pytest.raises(Refused, match=hidden):
            attempt()
    assert cases.list_cases(erin) == []
    assert [c.id for c in cases.list_cases(BOB)] == [case.id]
    assert cases.subject_crop(CAROL, case.id, subject)  # a member seeing every camera


def test_only_a_case_s_own_people_and_oversight_see_it(env: Env, people: People) -> None:
    """An investigator who is not a member neither lists, reads, searches nor sees the
    subjects of a colleague's case; a member decides nothing in it."""
    cases = env.cases(Profile.MUNICIPAL)
    dave = Actor("dave", Role.INVESTIGATOR)
    ines = Actor("ines", Role.INSPECTOR)
    member_approver = Actor("mona", Role.APPROVER)
    add_users(env.store, dave, ines, member_approver)
    case = open_case(cases, people, members=["carol", "mona"])
    assert case.members == ("carol", "mona")
    with pytest.raises(Refused, match="cannot be decided by one of its own members"):
        cases.approve(member_approver, case.id)
    cases.approve(BOB, case.id)
    assert cases.list_cases(dave) == []
    for attempt in (lambda: cases.get(dave, case.id), lambda: cases.search(dave, case.id),
                    lambda: cases.subject_crop(dave, case.id, case.subjects[0].id)):
        with pytest.raises(Refused, match="dave is not a member of case"):
            attempt()
    assert [c.id for c in cases.list_cases(ines)] == [case.id]
    assert [c.id for c in cases.list_cases(CAROL)] == [case.id]
    with pytest.raises(Refused, match="ghost is not an enabled user"):
        open_case(cases, people, members=["ghost"])
    with pytest.raises(Refused, match=re.escape("victor (role viewer) cannot work cases")):
        open_case(cases, people, members=["victor"])


def test_a_case_s_lifetime_and_scope_are_limited_by_the_profile(env: Env,
                                                                people: People) -> None:
    """A five-year case (and its five-year holds) is refused, at opening and at approval."""
    municipal, police = env.cases(Profile.MUNICIPAL), env.cases(Profile.POLICE)
    five_years = NOW + 5 * 365 * DAY
    with pytest.raises(Refused, match="a case may run at most 90 days under the municipal"):
        open_case(municipal, people, expires_at=five_years)
    with pytest.raises(Refused, match="at most 180 days under the police profile"):
        open_case(police, people, expires_at=five_years)
    with pytest.raises(Refused, match="at most 31 days of footage under the municipal"):
        open_case(municipal, people, start=NOW - 60 * DAY, end=NOW - DAY)
    with pytest.raises(Refused, match="at most 16 cameras"):
        Cases(env.store, env.keys, env.audit, Profile.MUNICIPAL, env.clock,
              embedder=env.embedder, descriptors=env.descriptors).open(
            ALICE, reference="r", legal_basis="b", purpose="p",
            cameras=[f"cam{i}" for i in range(17)], start=SCOPE[0], end=SCOPE[1],
            expires_at=NOW + DAY, photos=[])
    assert [e.outcome for e in env.entries(Action.CASE_OPEN)] == ["refused"] * 4
    # A case opened within the limit, still pending later, is approved only within it too.
    case = open_case(municipal, people, expires_at=NOW + 90 * DAY)
    env.clock.now = NOW - DAY  # (as if opened a day earlier, the limit then runs from now)
    with pytest.raises(Refused, match="at most 90 days"):
        municipal.approve(BOB, case.id)
    approved = municipal.approve(BOB, case.id, expires_at=NOW + 30 * DAY)
    assert approved.expires_at == NOW + 30 * DAY
    with env.store.read() as conn:
        assert {h.expires_at for h in active_holds(conn, env.clock())} == {NOW + 30 * DAY}


# -- holds ---------------------------------------------------------------------------------------


def _active_holds(env: Env) -> list[tuple[str | None, float, float, str]]:
    with env.store.read() as conn:
        return [(h.camera, h.start, h.end, h.reason) for h in active_holds(conn, env.clock())]


def test_approval_holds_the_footage_in_scope_until_the_case_closes(env: Env,
                                                                   people: People) -> None:
    cases = env.cases(Profile.MUNICIPAL)
    rejected = open_case(cases, people)
    assert cases.reject(BOB, rejected.id).hold_ids == ()
    case = open_case(cases, people)
    assert _active_holds(env) == []
    approved = cases.approve(BOB, case.id)
    assert len(approved.hold_ids) == 2
    reason = "case court order 2026/17"
    assert _active_holds(env) == [("cam1", *SCOPE, reason), ("cam2", *SCOPE, reason)]
    assert env.entries(Action.CASE_APPROVE)[-1].detail["holds"] == list(approved.hold_ids)
    with pytest.raises(Refused, match="only the case's opener or an approver"):
        cases.close(CAROL, case.id)
    closed = cases.close(ALICE, case.id, note="found")
    assert closed.status is CaseStatus.CLOSED
    assert closed.closed_by == "alice"
    assert _active_holds(env) == []
    with pytest.raises(Refused, match="already closed"):
        cases.close(BOB, case.id)


def test_expiry_lifts_the_holds_and_is_audited_as_the_system(env: Env, people: People) -> None:
    cases = env.cases(Profile.MUNICIPAL)
    case = open_case(cases, people, expires_at=NOW + DAY)
    lasting = open_case(cases, people, expires_at=NOW + 30 * DAY)
    holds = cases.approve(BOB, case.id).hold_ids
    cases.approve(BOB, lasting.id)
    assert len(_active_holds(env)) == 4
    assert cases.expire_due() == []
    env.clock.now = NOW + DAY
    assert cases.get(BOB, case.id).status is CaseStatus.EXPIRED
    assert cases.expire_due() == [case.id]
    assert cases.expire_due() == []
    assert [h[0] for h in _active_holds(env)] == ["cam1", "cam2"]
    with env.store.read() as conn:
        released = conn.execute(select(schema.holds.c.released_by).where(
            schema.holds.c.id.in_(holds))).scalars().all()
    assert released == ["system", "system"]
    (entry,) = env.entries(Action.CASE_EXPIRE)
    assert (entry.actor, entry.target) == ("system", f"case {case.id}")


# -- the subjects' biometric data ---------------------------------------------------------------


def test_subject_data_is_sealed_shown_only_in_the_case_and_wiped_when_it_ends(
        env: Env, people: People) -> None:
    cases = env.cases(Profile.MUNICIPAL)
    case = open_case(cases, people)
    subject = case.subjects[0]
    expected = describe_photo(read_image(people.subject_photos[0]), embedder=env.embedder)
    with env.store.read() as conn:
        row = conn.execute(select(schema.case_subjects)
                           .where(schema.case_subjects.c.id == subject.id)).one()
    assert expected.vector.tobytes() not in row.descriptor
    assert expected.crop_jpeg[:64] not in row.crop
    assert no_vectors_in(env.entries())

    with pytest.raises(Refused, match="the viewer role cannot see case subjects"):
        cases.subject_crop(VIEWER, case.id, subject.id)
    assert cases.subject_crop(BOB, case.id, subject.id) == expected.crop_jpeg
    with pytest.raises(Refused, match=f"case {case.id} has no subject 99"):
        cases.subject_crop(BOB, case.id, 99)
    cases.approve(BOB, case.id)
    assert cases.subject_crop(ALICE, case.id, subject.id).startswith(b"\xff\xd8")
    cases.close(BOB, case.id)

    with pytest.raises(Refused, match="its subjects' data is gone"):
        cases.subject_crop(ALICE, case.id, subject.id)
    assert all(s.wiped for s in cases.get(ALICE, case.id).subjects)
    with env.store.read() as conn:
        sealed = conn.execute(select(schema.case_subjects.c.descriptor,
                                     schema.case_subjects.c.crop)).all()
    assert sealed == [(None, None), (None, None)]
    crops = env.entries(Action.CASE_SUBJECT_CROP)
    assert [e.outcome for e in crops] == ["refused", "ok", "refused", "ok", "refused"]


def test_subjects_are_added_only_by_the_opener_while_pending(env: Env, people: People) -> None:
    cases = env.cases(Profile.MUNICIPAL)
    case = open_case(cases, people)
    photo = SubjectPhoto("missing person", people.subject_photos[0])
    with pytest.raises(Refused, match="only the user who opened a case"):
        cases.add_subject(CAROL, case.id, photo)
    assert len(cases.add_subject(ALICE, case.id, photo).subjects) == 3
    cases.approve(BOB, case.id)
    with pytest.raises(Refused, match="only be added to a pending case"):
        cases.add_subject(ALICE, case.id, photo)


# -- the command line ----------------------------------------------------------------------------


def test_the_command_line_acts_as_a_signed_in_user(tmp_path: Path, people: People,
                                                   embedder: FaceEmbedder) -> None:
    def config(profile: str) -> Path:
        path = tmp_path / f"{profile}.yaml"
        cameras = "".join(
            f"  {name}:\n    site: s\n    location: corridor\n    purpose: Test camera\n"
            f"    main_url: rtsp://127.0.0.1:8554/{name}\n" for name in ("cam1", "cam2"))
        path.write_text(f"profile: {profile}\nsites:\n  s:\n    name: Site\ncameras:\n"
                        f"{cameras}storage:\n  path: {tmp_path / 'var'}\n")
        return path

    municipal, school = config("municipal"), config("school")
    with Store(Layout(load_config(municipal).storage.path).database) as store:
        users = Users(store)
        users.add("alice", Role.INVESTIGATOR, "alice-password-1")
        users.add("bob", Role.APPROVER, "bob-password-123")
    photo = tmp_path / "subject.jpg"
    photo.write_bytes(people.subject_photos[0])
    runner = CliRunner()

    def run(cfg: Path, user: str, password: str, *args: str) -> Any:
        return runner.invoke(case_app, [args[0], "--config", str(cfg), "--user", user,
                                        *args[1:]], env={"CUSTODES_PASSWORD": password})

    opening = ("open", "--reference", "order 7", "--legal-basis", "court order",
               "--purpose", "missing child", "--camera", "cam1", "--from",
               "2026-11-01T00:00:00Z", "--to", "2026-11-02T00:00:00Z", "--expires",
               "2099-01-01T00:00:00Z", "--photo", str(photo))
    result = run(school, "alice", "alice-password-1", *opening)
    assert result.exit_code == 3
    assert "refused: the school profile does not allow face search" in result.output
    result = run(municipal, "alice", "alice-password-1", *opening)
    assert result.exit_code == 3
    assert "refused: a case may run at most 90 days under the municipal profile" in \
        result.output
    in_a_month = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 30 * DAY))
    opening = (*opening[:-3], in_a_month, *opening[-2:])
    result = run(municipal, "alice", "alice-password-1", *opening)
    assert result.exit_code == 0, result.output
    assert "case 1 opened" in result.output
    assert run(municipal, "bob", "wrong-password!", "approve", "1").exit_code == 3
    result = run(municipal, "bob", "bob-password-123", "approve", "1", "--note", "ok")
    assert result.exit_code == 0, result.output
    assert "approved" in result.output
    result = run(municipal, "alice", "alice-password-1", "search", "1", "--camera", "cam2")
    assert result.exit_code == 3
    assert "cam2 outside the case's scope" in result.output
    result = run(municipal, "alice", "alice-password-1", "search", "1")
    assert result.exit_code == 0, result.output
    assert "0 hits in cam1" in result.output
    assert "No face track was recorded on cam1" in result.output
    # Two recorded faces of the subject: one a match, one only possible (shown unnamed).
    cfg = load_config(municipal)
    with Store(Layout(cfg.storage.path).database) as store:
        keys = NodeKeys.load_or_create(cfg.key_dir)
        recorded = Env(store, keys, AuditLog(store, keys), FaceDescriptors(store, keys),
                       embedder)
        at = parse_iso("2026-11-01T12:00:00Z")
        # This case holds one photo of the subject.
        recorded.add_face("cam1", at, people.same_at(MatchLevel.MATCH, photos=1)[0])
        recorded.add_face("cam1", at + 60, people.same_at(MatchLevel.POSSIBLE, photos=1)[0])
    result = run(municipal, "alice", "alice-password-1", "search", "1")
    assert result.exit_code == 0, result.output
    assert "2 hits in cam1" in result.output
    rows = [line for line in result.output.splitlines() if line.startswith("│")]
    (match_row,) = [row for row in rows if " match " in row]
    (possible_row,) = [row for row in rows if " possible " in row]
    assert "not named" in possible_row
    assert "not named" not in match_row
    assert "Match (distance below 0.40)." in result.output
    assert "Possible match only" in result.output
    with Store(Layout(load_config(municipal).storage.path).database) as store, \
            store.read() as conn:
        logged = [(r.actor, r.action, r.outcome) for r in conn.execute(
            select(schema.audit_log).order_by(schema.audit_log.c.seq))]
    assert logged == [("alice", "case.open", "refused"), ("alice", "case.open", "refused"),
                      ("alice", "case.open", "ok"),
                      # A failed sign-in is the local account's, not the claimed user's.
                      (cli_actor().name, "login", "failed"), ("bob", "case.approve", "ok"),
                      ("alice", "face.search", "refused"), ("alice", "face.search", "ok"),
                      ("alice", "face.search", "ok")]
    # Each search is in the case's use log, with its results in order (issue 13).
    result = run(municipal, "alice", "alice-password-1", "log", "1")
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert [len(u["results"]) for u in record["uses"]] == [0, 2]
    assert [x["level"] for x in record["uses"][1]["results"]] == ["match", "possible"]
    assert record["uses"][1]["reference_db"]["cameras"] == ["cam1"]
    assert record["authorisation"] is None


def test_the_person_who_decided_a_case_never_works_it(env: Env, people: People) -> None:
    """Issue 10, item 7: one name never holds both sides of one case, even once a role change
    (confirmed by a second administrator) has made the approver an investigator."""
    cases = env.cases(Profile.MUNICIPAL)
    case = open_case(cases, people)
    cases.approve(BOB, case.id)
    bob_investigating = Actor("bob", Role.INVESTIGATOR)
    with pytest.raises(Refused, match="bob decided this case and cannot also work it"):
        cases.search(bob_investigating, case.id)
    assert env.entries(Action.FACE_SEARCH)[-1].outcome == "refused"
