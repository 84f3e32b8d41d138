"""The uplink's outbox, without a hub: order, cursors that move only when told, coverage per
minute, and what an event may carry off the site."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import Connection, insert, text

from custodes.audit.actions import Action
from custodes.audit.log import AuditLog
from custodes.config import UplinkConfig
from custodes.keys import NodeKeys
from custodes.store import schema
from custodes.store.db import Store
from custodes.uplink.outbox import Outbox
from custodes.uplink.wire import Message, Stream, WireError, subject


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Store, AuditLog]]:
    store = Store(tmp_path / "custodes.db")
    store.open()
    keys = NodeKeys.load_or_create(tmp_path / "keys")
    yield store, AuditLog(store, keys, checkpoint_every=5)
    store.close()


def test_audit_goes_in_order_and_the_cursor_moves_only_on_ack(
        site: tuple[Store, AuditLog]) -> None:
    store, audit = site
    for i in range(12):
        audit.record("caretaker", Action.PLAYBACK, f"cam{i}")
    box = Outbox(store, "school-1", ["cam01"])
    first = box.pending(Stream.AUDIT, 5)
    assert [m.seq for m in first] == [1, 2, 3, 4, 5]
    assert box.pending(Stream.AUDIT, 5) == first  # nothing acknowledged: the same again
    box.acknowledged(first)
    assert [m.seq for m in box.pending(Stream.AUDIT, 100)] == list(range(6, 13))
    assert box.backlog()["audit"] == 7
    # The message id carries the hash: a rewritten entry is not a duplicate to the server.
    assert first[0].msg_id.startswith("school-1/audit/1/")
    assert [m.body["seq"] for m in box.pending(Stream.CHECKPOINT, 10)] == [5, 10]


def test_a_log_cut_back_below_the_cursor_is_sent_again_from_its_head(
        site: tuple[Store, AuditLog]) -> None:
    store, audit = site
    for i in range(8):
        audit.record("caretaker", Action.PLAYBACK, f"cam{i}")
    box = Outbox(store, "school-1", [])
    box.acknowledged(box.pending(Stream.AUDIT, 8))

    def cut(conn: Connection) -> None:
        conn.execute(text("DROP TRIGGER audit_log_no_delete"))
        conn.execute(text("DELETE FROM audit_log WHERE seq > 5"))

    store.write(cut)
    audit.record("caretaker", Action.PLAYBACK, "again")
    # Everything again: the hub keeps what it holds, and flags entry 6, now another one.
    assert [m.seq for m in box.pending(Stream.AUDIT, 10)] == [1, 2, 3, 4, 5, 6]


def test_events_carry_no_picture_and_wait_until_they_end(site: tuple[Store, AuditLog]) -> None:
    store, _ = site
    now = 1_800_000_000.0

    def write(conn: Connection) -> None:
        conn.execute(insert(schema.events), [
            {"camera": "cam01", "kind": "face", "start": now - 100, "end": now - 90,
             "data": json.dumps({"detections": 3, "quality": 0.8, "box": [1, 2, 3, 4]}),
             "snapshot": "snap/1.jpg"},
            {"camera": "cam01", "kind": "motion", "start": now - 50, "end": None,
             "data": "{}", "snapshot": None},
            {"camera": "cam02", "kind": "motion", "start": now - 40, "end": now - 30,
             "data": json.dumps({"peak": 0.5}), "snapshot": None},
        ])

    store.write(write)
    box = Outbox(store, "school-1", [])
    sent = box.pending(Stream.EVENT, 10, now=now)
    assert [m.seq for m in sent] == [1]  # the second is still open: nothing after it yet
    assert sent[0].body == {"camera": "cam01", "kind": "face", "start": now - 100,
                            "end": now - 90, "data": {"detections": 3, "quality": 0.8}}
    assert "snap" not in json.dumps(sent[0].body)
    later = box.pending(Stream.EVENT, 10, now=now + 3600)  # open too long: sent as it is
    assert [m.seq for m in later] == [1, 2, 3]


def test_coverage_per_minute_from_the_segment_index(site: tuple[Store, AuditLog]) -> None:
    store, _ = site
    minute = 30_000_000
    t0 = minute * 60.0

    def write(conn: Connection) -> None:
        conn.execute(insert(schema.segments), [
            {"camera": "cam01", "start": t0 + 10, "end": t0 + 70, "duration": 60.0,
             "bytes": 1, "path": "a.mp4"},
            {"camera": "cam01", "start": t0 + 70, "end": t0 + 100, "duration": 30.0,
             "bytes": 1, "path": "b.mp4"},
        ])

    store.write(write)
    box = Outbox(store, "school-1", ["cam01", "cam02"], coverage_lag=0)
    got = box.pending(Stream.COVERAGE, 10, now=t0 + 300)
    assert [m.seq for m in got][:2] == [minute, minute + 1]
    assert got[0].body == {"cameras": {"cam01": 50.0, "cam02": 0.0}}
    assert got[1].body == {"cameras": {"cam01": 40.0, "cam02": 0.0}}
    assert got[-1].seq == minute + 4  # the last minute over by `now`
    box.advance(Stream.COVERAGE, got[-1].seq)
    assert box.pending(Stream.COVERAGE, 10, now=t0 + 300) == []


def test_the_site_is_the_subjects_not_the_bodys() -> None:
    m = Message("school-1", Stream.HOLD, 4, {"camera": None})
    back = Message.decode(subject("school-2", Stream.HOLD), m.encode())
    assert back.site == "school-2"
    with pytest.raises(WireError):
        Message.decode("custodes.site.school-1.nonsense", m.encode())
    with pytest.raises(WireError):
        Message.decode(subject("school-1", Stream.HOLD), b'{"seq": -1, "body": {}}')


def test_uplink_config_wants_nats_urls() -> None:
    with pytest.raises(ValueError, match="NATS URL"):
        UplinkConfig(site="s", urls=["http://hub:4222"], password=SecretStr("x"))
