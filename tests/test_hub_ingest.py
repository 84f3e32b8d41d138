"""The hub's batched writer (one multi-row INSERT per table per batch) against its one message
at a time path (``safe``), on a real PostgreSQL: the same rows whichever way a batch is
written, each message counted once however often and in whatever batch it comes, an entry
rewritten inside one batch caught, a bad message refused alone."""

from __future__ import annotations

import base64
import json
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from custodes.audit.anchor import checkpoint_message
from custodes.audit.log import GENESIS, Entry
from custodes.hub import db
from custodes.hub.alarms import AlarmKind
from custodes.hub.ingest import BatchResult, Received, write_batch
from custodes.hub.postgres import EmbeddedPostgres
from custodes.hub.sites import add_site
from custodes.keys import NodeKeys
from custodes.uplink.wire import Message, Stream

pytestmark = pytest.mark.slow

TABLES = {  # what each table holds of a message, without the site and the time received
    "audit_entries": "seq, at, actor, address, action, target, outcome, detail, prev_hash, hash",
    "checkpoints": "seq, entry_seq, hash, at, signature, signature_ok, matched",
    "configs": "seq, at, profile, cameras, digest",
    "camera_states": "seq, camera, at, state, reason",
    "coverage": "seq, cameras",
    "events": "seq, camera, kind, start_at, end_at, data",
    "deletion_passes": "seq, at, trigger, segments, bytes, details",
    "holds": "seq, camera, start_at, end_at, reason, created_at, created_by, expires_at",
}


@pytest.fixture(scope="module")
def keys() -> Iterator[NodeKeys]:
    folder = Path(tempfile.mkdtemp(prefix="custodes-ingest-keys-"))
    try:
        yield NodeKeys.load_or_create(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    folder = Path(tempfile.mkdtemp(prefix="custodes-ingest-"))
    server = EmbeddedPostgres(folder / "pg")
    server.start()
    try:
        db.migrate(server.url)
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def enrol(url: str, keys: NodeKeys, *names: str) -> None:
    with psycopg.connect(url) as conn:
        for name in names:
            add_site(conn, name, "Ashby", keys.public_pem)


def audit_body(entry: Entry) -> dict[str, Any]:
    body = {k: getattr(entry, k) for k in ("at", "actor", "address", "action", "target",
                                           "outcome", "prev_hash", "hash")}
    body["detail"] = json.dumps(entry.detail, sort_keys=True)
    return body


def chain(n: int, start: float = 1.7e9) -> list[Entry]:
    out, prev = [], GENESIS
    for seq in range(1, n + 1):
        entry = Entry(seq, start + seq, "caretaker", "10.0.0.7", "playback", "cam01", "ok",
                      {"from": seq}, prev)
        entry = Entry(**{**entry.__dict__, "hash": entry.computed_hash()})
        out.append(entry)
        prev = entry.hash
    return out


def a_day(site: str, keys: NodeKeys) -> list[Message]:
    """A bit of everything a site sends, in the order its uplink would."""
    t = 1.7e9
    entries = chain(30)
    out = [Message(site, Stream.AUDIT, e.seq, audit_body(e)) for e in entries]
    for i, e in enumerate(entries[9::10], start=1):
        out.append(Message(site, Stream.CHECKPOINT, i, {
            "seq": e.seq, "hash": e.hash, "at": t,
            "signature": base64.b64encode(keys.sign(checkpoint_message(e.seq, e.hash, t)))
            .decode()}))
    out.append(Message(site, Stream.CONFIG, 1, {"at": t, "profile": "school",
                                                "cameras": ["cam01"], "digest": {"a": 1}}))
    out += [Message(site, Stream.CAMERA_STATE, i, {"camera": "cam01", "at": t + i,
                                                   "state": "offline", "reason": "test"})
            for i in range(1, 4)]
    out += [Message(site, Stream.COVERAGE, int(t // 60) + i,
                    {"cameras": {"cam01": 60.0, "cam02": 12.5}}) for i in range(5)]
    out += [Message(site, Stream.EVENT, i, {"camera": "cam02", "kind": "motion",
                                            "start": t + i, "end": None if i == 4 else t + i + 5,
                                            "data": {"peak": 0.5}}) for i in range(1, 9)]
    out.append(Message(site, Stream.DELETION, 1, {"at": t, "trigger": "age", "segments": 3,
                                                  "bytes": 10**9, "details": {"cam01": 3}}))
    out.append(Message(site, Stream.HOLD, 1, {"camera": None, "start": t, "end": t + 60,
                                              "reason": "case 4", "created_at": t,
                                              "created_by": "dpo", "expires_at": None}))
    out += [Message(site, Stream.HEALTH, int((t + 5 * i) * 1000),
                    {"at": t + 5 * i, "audit_head": 30}) for i in range(4)]
    return out


def received(messages: list[Message]) -> list[Received]:
    return [Received(m.subject, m.encode()) for m in messages]


def write(url: str, batch: list[Received], *, safe: bool = False) -> BatchResult:
    with psycopg.connect(url) as conn, conn.transaction():
        return write_batch(conn, batch, now=1.8e9, safe=safe)


def rows(url: str, site: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(url) as conn:
        out = {t: conn.execute(f"SELECT {cols} FROM {t} WHERE site = %s ORDER BY seq",
                               (site,)).fetchall() for t, cols in TABLES.items()}
        out["sites"] = conn.execute(
            "SELECT audit_verified_seq, audit_verified_hash, audit_max_seq, chain_broken_at, "
            "health_at FROM sites WHERE name = %s", (site,)).fetchall()
    return out


def test_batched_and_one_by_one_write_the_same_rows(url: str, keys: NodeKeys) -> None:
    enrol(url, keys, "bulk-school", "each-school")
    rng = random.Random(5)
    totals = {}
    for site, safe in (("bulk-school", False), ("each-school", True)):
        messages = a_day(site, keys)
        # resent copies, in the same batch and in later ones, out of order
        sent = messages + rng.sample(messages, 20)
        rng.shuffle(sent)
        result = BatchResult()
        for i in range(0, len(sent), 17):
            r = write(url, received(sent[i:i + 17]), safe=safe)
            for k in ("stored", "duplicates", "conflicts", "rejected"):
                setattr(result, k, getattr(result, k) + getattr(r, k))
        totals[site] = result
    bulk, each = rows(url, "bulk-school"), rows(url, "each-school")
    assert bulk == each
    assert len(bulk["audit_entries"]) == 30
    assert bulk["sites"][0][0] == 30  # the witness verified the whole chain
    assert all(matched for *_, matched in bulk["checkpoints"])
    assert bulk["sites"][0][4] == 1.7e9 + 15  # the newest health report
    assert totals["bulk-school"].conflicts == totals["bulk-school"].rejected == 0
    # every copy of a row message is a duplicate, whichever batch it came in
    assert totals["bulk-school"].duplicates == totals["each-school"].duplicates


def test_an_entry_rewritten_within_one_batch_is_caught(url: str, keys: NodeKeys) -> None:
    enrol(url, keys, "rewrite-batch")
    first = chain(3)
    forged = Entry(**{**first[1].__dict__, "actor": "nobody"})
    forged = Entry(**{**forged.__dict__, "hash": forged.computed_hash()})
    batch = [Message("rewrite-batch", Stream.AUDIT, e.seq, audit_body(e))
             for e in (first[0], first[1], forged, first[1], first[2])]
    result = write(url, received(batch))
    assert (result.stored, result.duplicates, result.conflicts) == (3, 1, 1)
    with psycopg.connect(url) as conn:
        held = conn.execute("SELECT hash FROM audit_entries WHERE site = %s AND seq = 2",
                            ("rewrite-batch",)).fetchone()
        kept = conn.execute("SELECT hash FROM audit_conflicts WHERE site = %s",
                            ("rewrite-batch",)).fetchall()
        alarms = conn.execute("SELECT kind FROM alarms WHERE site = %s AND cleared_at IS NULL",
                              ("rewrite-batch",)).fetchall()
    assert held == (first[1].hash,)  # the first received is kept
    assert kept == [(forged.hash,)]
    assert (AlarmKind.REWRITTEN.value,) in alarms


def test_a_bad_message_is_refused_alone(url: str, keys: NodeKeys) -> None:
    enrol(url, keys, "bad-batch")
    good = [Message("bad-batch", Stream.EVENT, i, {"camera": "cam01", "kind": "motion",
                                                   "start": 1.0, "end": 2.0, "data": {}})
            for i in range(1, 4)]
    no_camera = Message("bad-batch", Stream.EVENT, 9, {"kind": "motion", "start": 1.0,
                                                       "end": 2.0, "data": {}})
    stranger = Message("nobody-enrolled", Stream.EVENT, 1, good[0].body)
    batch = [*received(good[:2]), *received([no_camera, stranger]),
             Received("custodes.site.bad-batch.event", b"{not json"), *received(good[2:])]
    result = write(url, batch)
    assert (result.stored, result.rejected) == (3, 3)
    assert [r[0] for r in rows(url, "bad-batch")["events"]] == [1, 2, 3]


def test_a_value_out_of_range_falls_back_to_one_message_at_a_time(
        url: str, keys: NodeKeys) -> None:
    enrol(url, keys, "range-school")
    ok = Message("range-school", Stream.DELETION, 1, {"at": 1.0, "trigger": "age",
                                                      "segments": 1, "bytes": 5,
                                                      "details": {}})
    huge = Message("range-school", Stream.DELETION, 2, {**ok.body, "bytes": 2**70})
    with pytest.raises(psycopg.DataError):
        write(url, received([ok, huge]))
    result = write(url, received([ok, huge]), safe=True)
    assert (result.stored, result.rejected) == (1, 1)
    assert [r[0] for r in rows(url, "range-school")["deletion_passes"]] == [1]


def test_a_health_report_of_a_shorter_log_raises_the_truncation_alarm(
        url: str, keys: NodeKeys) -> None:
    enrol(url, keys, "short-log", "long-log")
    for site in ("short-log", "long-log"):
        write(url, received([Message(site, Stream.AUDIT, e.seq, audit_body(e))
                             for e in chain(5)]))
    # in one batch: an old report, then the newest ones (the short log's says entry 3)
    # (the entries were written at 1.7e9 + 1..5, the newest reports a minute later)
    reports = [Message(site, Stream.HEALTH, n, {"at": 1.7e9 + n, "audit_head": head})
               for n, site, head in ((1, "short-log", 1), (60, "short-log", 3),
                                     (60, "long-log", 5))]
    write(url, received(reports))
    with psycopg.connect(url) as conn:
        alarms = conn.execute("SELECT site FROM alarms WHERE kind = %s AND cleared_at IS NULL "
                              "AND site LIKE %s", (AlarmKind.TRUNCATED.value, "%-log")).fetchall()
        at = conn.execute("SELECT health_at FROM sites WHERE name = 'short-log'").fetchone()
    assert alarms == [("short-log",)]
    assert at == (1.7e9 + 60,)


def test_a_report_older_than_the_entries_it_does_not_list_is_no_truncation(
        url: str, keys: NodeKeys) -> None:
    # Health has a consumer of its own: a report can be written after entries the site
    # wrote after it. Entry 4 was written after the report that ends the log at 3.
    enrol(url, keys, "late-report")
    write(url, received([Message("late-report", Stream.AUDIT, e.seq, audit_body(e))
                         for e in chain(5)]))
    write(url, received([Message("late-report", Stream.HEALTH, 1,
                                 {"at": 1.7e9 + 3.5, "audit_head": 3})]))
    with psycopg.connect(url) as conn:
        alarms = conn.execute("SELECT site FROM alarms WHERE site = 'late-report'").fetchall()
        at = conn.execute("SELECT health_at FROM sites WHERE name = 'late-report'").fetchone()
    assert alarms == []
    assert at == (1.7e9 + 3.5,)
