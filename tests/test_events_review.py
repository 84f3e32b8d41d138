"""Events that a caretaker can live with: one per visit, motion spans that end, camera-offline
alerts, snapshots that exist or say why not, and the review queue (acknowledge)."""

from __future__ import annotations

import itertools
import json
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from sqlalchemy import insert, select

from custodes.analytics.motion import MotionDetector, MotionTracker, SpanEnd
from custodes.analytics.worker import (
    CameraAnalysis,
    FaceTrack,
    Message,
    MotionEnded,
    MotionStarted,
    VisitEnded,
    WorkerSpec,
)
from custodes.app import Node
from custodes.audit.actions import Action
from custodes.auth.roles import Role
from custodes.capture.supervisor import CaptureSupervisor, State
from custodes.config import AnalyticsConfig, FacesConfig, MotionConfig
from custodes.events.bus import EventBus
from custodes.events.maintainer import EventMaintainer
from custodes.events.types import Event, EventKind
from custodes.sim import SimServer, prepare_clip
from custodes.store import schema
from custodes.store.db import Store
from custodes.vision.decode import file_frames
from test_auth import add_user, audit_entries, make_app, open_node, signed_in

HAMILTON = "video/face_recognition_short_hamilton_clip.mp4"
WALKING = "video/opencv_vtest_reencoded_480x360.avi"


class Outbox(list[Message]):
    def put(self, message: Message) -> None:
        self.append(message)


def analyse(clip: Path, config: AnalyticsConfig, snapshots: Path,
            repeat: int = 1) -> Outbox:
    """The clip through one camera's real analysis, ``repeat`` times back to back."""
    out = Outbox()
    analysis = CameraAnalysis(WorkerSpec("stage", "unused", config, snapshots), out)
    offset = 0.0
    for _ in range(repeat):
        last = 0.0
        for frame in file_frames(clip, 5, 640):
            frame.t += offset
            last = frame.t
            analysis.process(frame)
        offset = last + 0.2
    analysis.flush()
    return out


def store_all(store: Store, messages: list[Message]) -> list[Event]:
    bus = EventBus()
    with bus.subscribe(maxsize=10_000) as published:
        maintainer = EventMaintainer(store, bus, {"stage": "school"}, queue.Queue())
        for message in messages:
            maintainer.handle(message)
        out = []
        while (event := published.get(timeout=0.1)) is not None:
            out.append(event)
    return out


def events_of(store: Store, kind: EventKind) -> list[Any]:
    ev = schema.events
    with store.read() as conn:
        return list(conn.execute(select(ev).where(ev.c.kind == kind.value).order_by(ev.c.id)))


# -- one event per visit ----------------------------------------------------------------------


@pytest.mark.slow
def test_a_clip_full_of_faces_gives_a_handful_of_events_not_one_per_track(
    shared_data: Path, tmp_path: Path
) -> None:
    # The Hamilton clip played three times in a row: a stage and an audience, 30 s of faces.
    out = analyse(shared_data / HAMILTON, AnalyticsConfig(), tmp_path / "snapshots", repeat=3)
    tracks = [m for m in out if isinstance(m, FaceTrack)]
    visits = [m for m in out if isinstance(m, VisitEnded)]
    assert len(tracks) >= 30  # what used to be 30+ events ...
    assert 1 <= len(visits) <= 3  # ... is one visit per stretch of faces
    assert sum(v.tracks for v in visits) == len(tracks)
    assert sum(v.detections for v in visits) == sum(t.detections for t in tracks)
    # One picture per visit, not per track: no file that no event names.
    assert sum(1 for t in tracks if t.snapshot) == len(visits)

    with Store(tmp_path / "node.db") as store:
        published = store_all(store, out)
        rows = events_of(store, EventKind.FACE)
        with store.read() as conn:
            faces = conn.execute(select(schema.faces.c.event_id)).scalars().all()
    assert len(rows) == len(visits)
    assert all(r.end is not None for r in rows)  # every visit ended
    assert len(faces) == len(tracks)  # each track is still a row of its own, for search
    assert set(faces) == {r.id for r in rows}
    data = json.loads(rows[0].data)
    assert data["tracks"] == visits[0].tracks
    assert rows[0].snapshot is not None
    assert (tmp_path / "snapshots" / rows[0].snapshot).is_file()
    # On the bus (and so on MQTT): once when the visit starts, once when it ends.
    faces_out = [e for e in published if e.kind == EventKind.FACE]
    assert len(faces_out) == 2 * len(visits)
    assert [e.end is None for e in faces_out[:2]] == [True, False]


def test_visits_end_after_a_quiet_gap_and_tracks_alone_stay_events(tmp_path: Path) -> None:
    def track(start: float, end: float, visit: int, snapshot: str | None = None) -> FaceTrack:
        return FaceTrack("door", start, end, 5, (1, 2, 30, 30), 0.6, None, snapshot,
                         visit=visit, no_snapshot="" if snapshot else "busy")

    with Store(tmp_path / "x.db") as store:
        store_all(store, [
            track(10, 12, 7, None), track(11, 15, 7, "door/a.jpg"), track(14, 18, 7),
            VisitEnded("door", 7, 10, 18, 3, 15),
            track(40, 41, 8), VisitEnded("door", 8, 40, 41, 1, 5),
            FaceTrack("door", 50, 51, 2, (0, 0, 20, 20), 0.3, None, None),  # no visit: alone
        ])
        rows = events_of(store, EventKind.FACE)
    assert [(r.start, r.end) for r in rows] == [(10, 18), (40, 41), (50, 51)]
    first, second, _ = (json.loads(r.data) for r in rows)
    assert (first["tracks"], first["detections"]) == (3, 15)
    assert rows[0].snapshot == "door/a.jpg"
    assert "no_snapshot" not in first
    assert second["no_snapshot"] == "busy"  # why there is no picture, said with the event


# -- motion spans that end ----------------------------------------------------------------------


def test_a_scene_that_never_goes_quiet_is_cut_into_spans_that_continue() -> None:
    tracker = MotionTracker(end_after=3.0, max_span=30.0)
    detector = MotionDetector(MotionConfig(), 64, 64)
    frame = np.zeros((64, 64), np.uint8)
    detector.update(frame)
    spans = []
    for i in range(1, 500):  # 100 s of motion at 5 fps
        frame[:] = 0
        frame[(i % 4) * 10:(i % 4) * 10 + 20, 20:40] = 255
        started, ended = tracker.update(i / 5, detector.update(frame))
        if ended is not None:
            spans.append(ended)
        if i > 1:
            assert started is None or ended is not None  # a new span only as one ends
    last = tracker.flush()
    assert last is not None
    spans.append(last)
    assert [s.ended for s in spans] == [SpanEnd.CEILING] * 3 + [SpanEnd.STREAM]
    assert all(s.last - s.start <= 30.0 + 1e-6 for s in spans)
    assert [s.continues for s in spans] == [False, True, True, True]
    for before, after in itertools.pairwise(spans):
        assert before.last == after.start  # contiguous: nothing falls between


@pytest.mark.slow
def test_busy_corridor_spans_close_and_are_stored_closed(shared_data: Path,
                                                         tmp_path: Path) -> None:
    # The walking clip: people in view for the whole 80 s, so motion never stops.
    config = AnalyticsConfig(motion=MotionConfig(max_span=20), faces=FacesConfig(detect=False))
    out = analyse(shared_data / WALKING, config, tmp_path / "snapshots")
    started = [m for m in out if isinstance(m, MotionStarted)]
    ended = [m for m in out if isinstance(m, MotionEnded)]
    assert len(ended) == len(started) >= 3
    assert SpanEnd.CEILING in {m.ended for m in ended}
    assert all(m.end - m.start <= 20.5 for m in ended)
    with Store(tmp_path / "node.db") as store:
        store_all(store, out)
        rows = events_of(store, EventKind.MOTION)
        with store.read() as conn:
            spans = conn.execute(select(schema.motion)).all()
    assert len(rows) == len(spans) == len(ended)
    assert all(r.end is not None for r in rows)
    datas = [json.loads(r.data) for r in rows]
    assert datas[0].get("continued")
    assert datas[1].get("continues")
    assert all(("no_snapshot" in d) != bool(r.snapshot) for d, r in zip(datas, rows,
                                                                      strict=True))


def test_events_left_open_by_a_killed_node_are_closed_at_the_next_start(
    tmp_path: Path
) -> None:
    with Store(tmp_path / "x.db") as store:
        ev = schema.events

        def open_rows(conn: Any) -> None:
            for kind in (EventKind.MOTION, EventKind.FACE, EventKind.CAMERA_OFFLINE):
                conn.execute(insert(ev).values(camera="door", kind=kind.value, start=100.0,
                                               end=None, data="{}", snapshot=None))

        store.write(open_rows)
        maintainer = EventMaintainer(store, EventBus(), {"door": "s"}, queue.Queue())
        # A recorder of this run may report its camera down before the maintainer starts:
        # that alert is this run's and stays open.
        maintainer.camera_state("door", State.OFFLINE, "refused", at=200.0)
        assert maintainer.close_open(now=300.0) == 3
        with store.read() as conn:
            rows = conn.execute(select(ev).order_by(ev.c.id)).all()
    assert [(r.kind, r.end) for r in rows] == [
        ("motion", 100.0), ("face", 100.0), ("camera_offline", 300.0), ("camera_offline", None)]
    assert all(json.loads(r.data)["ended"] == "restart" for r in rows[:3])


def test_spans_and_visits_of_a_crashed_analysis_process_are_closed_by_the_next(
    tmp_path: Path
) -> None:
    def track(start: float, visit: int) -> FaceTrack:
        return FaceTrack("door", start, start + 1, 3, (1, 2, 30, 30), 0.6, None, None,
                         visit=visit)

    with Store(tmp_path / "x.db") as store:
        # The process died after opening span 1 and visit 5; its successor starts afresh.
        store_all(store, [MotionStarted("door", 1, 100.0), track(101.0, 5),
                          MotionStarted("door", 1, 160.0), track(161.0, 9),
                          MotionEnded("door", 1, 160.0, 170.0, 0.1, None),
                          VisitEnded("door", 9, 161.0, 162.0, 1, 3)])
        motion, faces = events_of(store, EventKind.MOTION), events_of(store, EventKind.FACE)
    assert [(r.start, r.end, json.loads(r.data)["ended"]) for r in motion] == [
        (100.0, 160.0, "lost"), (160.0, 170.0, "quiet")]
    assert [(r.start, r.end) for r in faces] == [(101.0, 161.0), (161.0, 162.0)]
    assert json.loads(faces[0].data)["ended"] == "lost"


# -- camera offline alerts ---------------------------------------------------------------------


@pytest.fixture
def sim_camera(shared_data: Path, tmp_path: Path) -> Iterator[tuple[SimServer, str]]:
    clip = prepare_clip(shared_data / WALKING, tmp_path / "clips", width=320, height=240,
                        bitrate_kbps=300)
    with SimServer() as sim:
        yield sim, sim.add_camera("door", clip)


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


@pytest.mark.slow
def test_a_camera_that_goes_down_raises_an_alert_and_one_when_it_is_back(
    sim_camera: tuple[SimServer, str], tmp_path: Path
) -> None:
    sim, url = sim_camera
    bus = EventBus()
    with Store(tmp_path / "x.db") as store, bus.subscribe() as published:
        maintainer = EventMaintainer(store, bus, {"door": "school"}, queue.Queue())
        states: list[State] = []
        lock = threading.Lock()

        def on_state(camera: str, state: State, reason: str) -> None:
            with lock:
                states.append(state)
            maintainer.camera_state(camera, state, reason)

        sup = CaptureSupervisor("door", url, tmp_path / "cache", 2,
                                on_segment=lambda _s: None, on_state=on_state)
        sup.start()
        try:
            wait_until(lambda: State.ONLINE in states, 60, "the camera to record")
            assert not events_of(store, EventKind.CAMERA_OFFLINE)  # starting is not news
            sim.stop_camera("door")
            wait_until(lambda: events_of(store, EventKind.CAMERA_OFFLINE), 60,
                       "the offline alert")
            down = events_of(store, EventKind.CAMERA_OFFLINE)
            assert len(down) == 1
            assert down[0].end is None
            assert json.loads(down[0].data)["reason"]
            sim.start_camera("door")
            wait_until(lambda: events_of(store, EventKind.CAMERA_ONLINE), 90,
                       "the back-online event")
        finally:
            sup.stop()
        down = events_of(store, EventKind.CAMERA_OFFLINE)
        back = events_of(store, EventKind.CAMERA_ONLINE)
        seen = []
        while (event := published.get(timeout=0.1)) is not None:
            seen.append(event)
    assert len(down) == 1  # however many retries in between
    assert len(back) == 1
    assert down[0].end == back[0].start
    assert json.loads(back[0].data)["offline_event"] == down[0].id
    # Published (MQTT forwards the bus) as metadata: no picture, the reason without URLs.
    kinds = [(e.kind, e.end is None) for e in seen]
    assert kinds == [(EventKind.CAMERA_OFFLINE, True), (EventKind.CAMERA_OFFLINE, False),
                     (EventKind.CAMERA_ONLINE, False)]
    assert all(e.to_json()["has_snapshot"] is False for e in seen)
    assert "rtsp://" not in json.dumps([e.to_json() for e in seen])


# -- the review queue --------------------------------------------------------------------------


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    yield from open_node(tmp_path)


@pytest.fixture
def app(node: Node) -> FastAPI:
    return make_app(node)


def add_event(node: Node, camera: str, start: float, snapshot: str | None = None,
              data: dict[str, Any] | None = None) -> int:
    values = {"camera": camera, "kind": "motion", "start": start, "end": start + 5,
              "data": json.dumps(data or {}), "snapshot": snapshot}
    return int(node.store.write(lambda conn: conn.execute(
        insert(schema.events).values(values).returning(schema.events.c.id)).scalar_one()))


def test_acknowledge_one_and_all_shown_with_who_and_when_audited(app: FastAPI,
                                                                  node: Node) -> None:
    ids = [add_event(node, "cam1", 1000.0 + i) for i in range(3)]
    other = add_event(node, "cam2", 1010.0)
    olga = signed_in(app, add_user(app, "olga", Role.OPERATOR))
    one = olga.post(f"/api/events/{ids[0]}/acknowledge")
    assert one.status_code == 200, one.text
    assert one.json()["acknowledged"] == [ids[0]]
    assert one.json()["by"] == "olga"
    again = signed_in(app, add_user(app, "otto", Role.OPERATOR)).post(
        f"/api/events/{ids[0]}/acknowledge")
    assert again.json() == {**again.json(), "acknowledged": [], "already": [ids[0]]}

    queue_page = olga.get("/api/events", params={"unacknowledged": "true"}).json()["events"]
    assert sorted(e["id"] for e in queue_page) == sorted([*ids[1:], other])
    everything = olga.post("/api/events/acknowledge", json={"ids": [e["id"] for e in queue_page]})
    assert everything.status_code == 200
    assert sorted(everything.json()["acknowledged"]) == sorted([*ids[1:], other])
    assert olga.get("/api/events", params={"unacknowledged": "true"}).json()["events"] == []
    listed = {e["id"]: e for e in olga.get("/api/events").json()["events"]}
    assert listed[ids[0]]["acknowledged_by"] == "olga"
    assert listed[ids[0]]["acknowledged_at"] >= time.time() - 60

    entries = [e for e in audit_entries(node, Action.EVENT_ACKNOWLEDGE) if e["outcome"] == "ok"]
    assert [e["actor"] for e in entries] == ["olga", "olga"]  # the repeat changed nothing
    assert sorted(json.loads(entries[1]["detail"])["events"]) == sorted([*ids[1:], other])


@pytest.mark.parametrize("role", [Role.VIEWER, Role.APPROVER, Role.INSPECTOR, Role.ADMIN])
def test_roles_without_the_review_duty_cannot_acknowledge(app: FastAPI, node: Node,
                                                          role: Role) -> None:
    event = add_event(node, "cam1", 1000.0)
    who = signed_in(app, add_user(app, "someone", role))
    assert who.post(f"/api/events/{event}/acknowledge").status_code == 403
    assert who.post("/api/events/acknowledge", json={"ids": [event]}).status_code == 403
    with node.store.read() as conn:
        assert conn.execute(select(schema.events.c.acknowledged_at)).scalar() is None
    refused = [e for e in audit_entries(node) if e["outcome"] == "refused"]
    assert len(refused) == 2


def test_acknowledging_another_cameras_event_is_refused_whole_and_bad_input_is_4xx(
    app: FastAPI, node: Node
) -> None:
    mine, theirs = add_event(node, "cam1", 1000.0), add_event(node, "cam2", 1000.0)
    scoped = signed_in(app, add_user(app, "carl", Role.OPERATOR, ["cam1"]))
    refused = scoped.post("/api/events/acknowledge", json={"ids": [mine, theirs]})
    assert refused.status_code == 403
    with node.store.read() as conn:
        assert conn.execute(select(schema.events.c.acknowledged_at)
                            .where(schema.events.c.id == mine)).scalar() is None
    assert [e["outcome"] for e in audit_entries(node, Action.EVENT_ACKNOWLEDGE)] == ["refused"]
    assert scoped.post(f"/api/events/{theirs}/acknowledge").status_code == 403
    assert scoped.post("/api/events/999999/acknowledge").status_code == 404
    assert scoped.post("/api/events/acknowledge", json={"ids": []}).status_code == 422
    assert scoped.post("/api/events/acknowledge",
                       json={"ids": list(range(1, 600))}).status_code == 422
    assert scoped.post("/api/events/acknowledge", json={"ids": ["x"]}).status_code == 422
    assert scoped.post("/api/events/0/acknowledge").status_code == 422


def test_events_name_a_snapshot_only_when_it_exists_and_say_why_not(app: FastAPI,
                                                                    node: Node) -> None:
    folder = node.layout.snapshots / "cam1"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "there.jpg").write_bytes(b"\xff\xd8jpeg")
    old = time.time() - 3600
    there = add_event(node, "cam1", old, "cam1/there.jpg")
    gone = add_event(node, "cam1", old, "cam1/gone.jpg")
    skipped = add_event(node, "cam1", old, None, {"no_snapshot": "skipped: node busy"})
    fresh = add_event(node, "cam1", time.time(), "cam1/later.jpg")
    viewer = signed_in(app, add_user(app, "viktor", Role.VIEWER))
    listed = {e["id"]: e for e in viewer.get("/api/events").json()["events"]}
    assert listed[there]["snapshot_url"]
    assert listed[there]["no_snapshot"] is None
    assert viewer.get(listed[there]["snapshot_url"]).status_code == 200
    assert listed[gone]["snapshot_url"] is None
    assert "not written" in listed[gone]["no_snapshot"]
    assert listed[skipped]["no_snapshot"] == "skipped: node busy"
    assert listed[fresh]["snapshot_url"] is None
    assert "being redacted" in listed[fresh]["no_snapshot"]
