"""The live watchlist: alerts only inside an approved police watchlist case, confirmed by two.

Face tracks go through the real event maintainer (which stores them sealed and calls the
watchlist), carrying descriptors of real photos of the case subject and of someone else.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select

from custodes.analytics.worker import FaceTrack, Message
from custodes.audit.actions import Action
from custodes.audit.log import AuditLog
from custodes.auth.roles import Actor, Role
from custodes.events.bus import EventBus, Subscription
from custodes.events.maintainer import EventMaintainer
from custodes.events.types import Event, EventKind
from custodes.faces.calibration import MATCH_DISTANCE, MatchLevel
from custodes.faces.descriptors import FaceDescriptors
from custodes.faces.watchlist import DEDUP_SECONDS, AlertStatus, Watchlist
from custodes.keys import NodeKeys
from custodes.privacy.cases import Case
from custodes.privacy.policy import Profile, Refused
from custodes.store import schema
from custodes.store.db import Store
from custodes.vision.embedding import FaceEmbedder
from people import People
from test_cases import (
    ALICE,
    BOB,
    CAROL,
    DAY,
    HOUR,
    NOW,
    VIEWER,
    Env,
    add_users,
    no_vectors_in,
    open_case,
)

# A watchlist case watches the coming week.
LIVE: dict[str, Any] = {"start": NOW - HOUR, "end": NOW + 7 * DAY}


class Node:
    """The parts of a node the watchlist lives among: cases, maintainer, bus."""

    def __init__(self, env: Env, profile: Profile) -> None:
        self.env = env
        self.cases = env.cases(profile)
        self.bus = EventBus()
        self.events: Subscription = self.bus.subscribe()
        self.watchlist = Watchlist(self.cases, env.store, env.audit, self.bus,
                                   sites={"cam1": "school-1"})
        source: queue.Queue[Message] = queue.Queue()
        self.maintainer = EventMaintainer(env.store, self.bus, {"cam1": "school-1"}, source,
                                          descriptors=env.descriptors,
                                          on_face=self.watchlist.on_face)

    def face(self, camera: str, vector: Any, at: float = NOW,
             samples: list[Any] | None = None) -> None:
        """A track seen on `camera`: its stored descriptor, and the descriptors of its best
        faces (`samples`, the stored one first) when the worker sent several."""
        embedding = np.asarray(vector, dtype=np.float32).tobytes()
        several = None if samples is None else np.stack(samples).astype(np.float32).tobytes()
        self.maintainer.handle(FaceTrack(camera, at, at + 3.0, 6, (10, 10, 90, 90), 0.9,
                                         embedding, f"{camera}/face.jpg", several))

    def watchlist_events(self) -> list[Event]:
        found = []
        while (event := self.events.get(timeout=0)) is not None:
            if event.kind is EventKind.WATCHLIST:
                found.append(event)
        return found

    def alert_rows(self) -> int:
        with self.env.store.read() as conn:
            return int(conn.execute(
                select(func.count()).select_from(schema.case_alerts)).scalar_one())


@pytest.fixture
def env(tmp_path: Path, embedder: FaceEmbedder,
        caplog: pytest.LogCaptureFixture) -> Iterator[Env]:
    keys = NodeKeys.load_or_create(tmp_path / "keys")
    with Store(tmp_path / "node.db") as store:
        add_users(store, ALICE, CAROL, BOB, VIEWER)
        yield Env(store, keys, AuditLog(store, keys), FaceDescriptors(store, keys), embedder)
    # The maintainer logs and swallows what a face listener raises: a broken watchlist would
    # look like one that found nothing.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def watch_case(node: Node, people: People, **changes: Any) -> Case:
    case = open_case(node.cases, people, **{"watchlist": True, **LIVE, **changes})
    return node.cases.approve(BOB, case.id)


def test_the_subject_on_a_watched_camera_is_a_candidate_until_a_second_person_confirms(
        env: Env, people: People) -> None:
    node = Node(env, Profile.POLICE)
    case = watch_case(node, people)
    match = people.same_at(MatchLevel.MATCH)
    node.face("cam1", match[0])

    (alert,) = node.watchlist.alerts(CAROL, case.id)
    assert alert.status is AlertStatus.CANDIDATE
    assert (alert.case_id, alert.camera, alert.seen_at) == (case.id, "cam1", NOW)
    assert alert.subject_id in {s.id for s in case.subjects}
    assert alert.distance < MATCH_DISTANCE
    assert alert.level is MatchLevel.MATCH
    assert alert.meaning.startswith("Match (distance below 0.40)")
    assert alert.face_id is not None
    (event,) = node.watchlist_events()
    assert (event.camera, event.site, event.snapshot) == ("cam1", "school-1", None)
    assert event.data == {"alert": alert.id, "case": case.id, "status": "candidate",
                          "level": "match"}
    assert event.to_json()["has_snapshot"] is False
    (entry,) = env.entries(Action.WATCHLIST_ALERT)
    assert (entry.actor, entry.target) == ("system", f"case {case.id}")
    assert no_vectors_in(env.entries())

    with pytest.raises(Refused, match="second person, not the user who opened the case"):
        node.watchlist.confirm(ALICE, alert.id)
    with pytest.raises(Refused, match="the viewer role cannot confirm"):
        node.watchlist.confirm(VIEWER, alert.id)
    assert node.watchlist.alerts(CAROL, case.id)[0].status is AlertStatus.CANDIDATE
    confirmed = node.watchlist.confirm(CAROL, alert.id)
    assert (confirmed.status, confirmed.decided_by) == (AlertStatus.CONFIRMED, "carol")
    with pytest.raises(Refused, match="already confirmed"):
        node.watchlist.dismiss(BOB, alert.id)

    node.face("cam2", match[1], at=NOW + 60)
    second = node.watchlist.alerts(BOB, case.id)[0]
    assert node.watchlist.dismiss(BOB, second.id).status is AlertStatus.DISMISSED
    outcomes = [(e.action, e.outcome) for e in env.entries() if e.action.startswith("alert.")]
    assert outcomes == [("alert.confirm", "refused"), ("alert.confirm", "refused"),
                        ("alert.confirm", "ok"), ("alert.dismiss", "refused"),
                        ("alert.dismiss", "ok")]


def test_no_alert_ever_happens_outside_an_active_watchlist_case(env: Env,
                                                                people: People) -> None:
    node = Node(env, Profile.POLICE)
    subject = people.same_at(MatchLevel.MATCH)[0]  # would raise an alert inside a case
    node.face("cam1", subject)  # no case at all
    pending = open_case(node.cases, people, watchlist=True, **LIVE)
    node.face("cam1", subject)  # a case not yet approved
    searching = open_case(node.cases, people, cameras=["cam3"], **LIVE)
    node.cases.approve(BOB, searching.id)
    node.face("cam3", subject)  # an approved case, but for search only
    case = node.cases.approve(BOB, pending.id)
    node.face("cam1", people.other[0])  # someone else
    node.face("cam3", subject)  # a camera outside the case
    node.face("cam1", subject, at=NOW - 2 * HOUR)  # before the case's window
    node.cases.close(ALICE, case.id)
    node.face("cam1", subject)  # after the case closed
    assert node.watchlist._subjects == {}  # its descriptors left memory with it
    short = watch_case(node, people, expires_at=NOW + HOUR)
    env.clock.now = NOW + HOUR
    node.face("cam1", subject, at=NOW + HOUR)  # the moment the case expired
    assert node.cases.get(BOB, short.id).status.value == "expired"

    assert node.alert_rows() == 0
    assert node.watchlist_events() == []
    assert env.entries(Action.WATCHLIST_ALERT) == []


def test_a_face_only_possibly_the_subject_raises_no_alert(env: Env, people: People) -> None:
    """Within dlib's 0.6 but not a calibrated match: against a few hundred people most
    strangers come that close, so it must not reach anyone as an alert."""
    node = Node(env, Profile.POLICE)
    case = watch_case(node, people)
    possible = people.same_at(MatchLevel.POSSIBLE)
    assert all(MATCH_DISTANCE <= people.nearest_subject(v) <= 0.6 for v in possible)
    for i, vector in enumerate(possible):
        node.face("cam1", vector, at=NOW + i)
    node.face("cam1", people.other[0], at=NOW + 30)
    assert node.alert_rows() == 0
    assert node.watchlist_events() == []
    assert env.entries(Action.WATCHLIST_ALERT) == []
    # The same case does alert on a match: the silence above is the level, not the case.
    node.face("cam1", people.same_at(MatchLevel.MATCH)[0], at=NOW + 60)
    assert [a.level for a in node.watchlist.alerts(BOB, case.id)] == [MatchLevel.MATCH]


def test_no_profile_but_police_watches_at_all(env: Env, people: People) -> None:
    node = Node(env, Profile.MUNICIPAL)
    case = open_case(node.cases, people)
    node.cases.approve(BOB, case.id)
    assert not node.watchlist.enabled
    node.face("cam1", people.same_at(MatchLevel.MATCH)[0], at=case.scope_start + HOUR)
    assert node.alert_rows() == 0
    assert node.watchlist_events() == []


def test_alerts_of_an_ended_case_cannot_be_confirmed(env: Env, people: People) -> None:
    node = Node(env, Profile.POLICE)
    case = watch_case(node, people)
    node.face("cam1", people.same_at(MatchLevel.MATCH)[1])
    (alert,) = node.watchlist.alerts(BOB, case.id)
    node.cases.close(BOB, case.id)
    with pytest.raises(Refused, match="the case is closed"):
        node.watchlist.confirm(CAROL, alert.id)
    erin = Actor("erin", Role.INVESTIGATOR, cameras=frozenset({"cam2"}))
    with pytest.raises(Refused, match="erin has no access to camera"):
        node.watchlist.alerts(erin, case.id)


def test_a_subject_who_stays_in_view_raises_one_alert_per_camera(env: Env,
                                                                 people: People) -> None:
    """A person standing at a door is many tracks: one candidate per subject and camera
    within DEDUP_SECONDS, not one per track for the people checking them to wade through."""
    node = Node(env, Profile.POLICE)
    case = watch_case(node, people)
    match = people.same_at(MatchLevel.MATCH)
    for i in range(5):
        node.face("cam1", match[i % len(match)], at=NOW + 20 * i)
    assert node.alert_rows() == 1
    node.face("cam2", match[0], at=NOW + 30)  # another camera: another alert
    node.face("cam1", match[0], at=NOW + DEDUP_SECONDS + 100)  # back much later: another
    alerts = node.watchlist.alerts(BOB, case.id)
    assert sorted((a.camera, a.seen_at) for a in alerts) == [
        ("cam1", NOW), ("cam1", NOW + DEDUP_SECONDS + 100), ("cam2", NOW + 30)]
    assert len(env.entries(Action.WATCHLIST_ALERT)) == 3
    assert len(node.watchlist_events()) == 3


def test_a_track_names_the_subject_only_when_several_of_its_faces_agree(
        env: Env, people: People) -> None:
    """Per track, not per frame: one face at match level among strangers' faces is a lucky
    frame, not an identification."""
    node = Node(env, Profile.POLICE)
    case = watch_case(node, people)
    match = people.same_at(MatchLevel.MATCH)
    assert len(match) >= 2, "two photos of the subject at match level"
    # The best face looks like the subject, the track's two other faces are someone else's.
    node.face("cam1", match[0], samples=[match[0], people.other[0], people.other[1]])
    assert node.watchlist.alerts(CAROL, case.id) == []
    assert node.alert_rows() == 0
    # Two of three faces agree: the track is the subject's.
    node.face("cam1", match[0], at=NOW + 60, samples=[match[0], match[1], people.other[0]])
    (alert,) = node.watchlist.alerts(CAROL, case.id)
    assert alert.level is MatchLevel.MATCH
    assert alert.seen_at == NOW + 60
