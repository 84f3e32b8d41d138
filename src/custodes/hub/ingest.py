"""Writing what sites send into the hub's tables, idempotently, with the witness in the same
transaction.

``write_batch`` takes messages as the JetStream consumer fetched them: each row is inserted
``ON CONFLICT DO NOTHING`` on (site, seq), so a message delivered twice (a node that resent
after a lost ack, a hub killed between its commit and its ack) is counted once. After the
batch, the witness (``custodes.hub.witness``) walks each site's audit chain as far as it is
contiguous. The caller acks the messages only after the commit.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from custodes.audit.anchor import checkpoint_message
from custodes.hub import witness
from custodes.hub.alarms import AlarmKind, raise_alarm
from custodes.keys import verify_signature
from custodes.uplink.wire import Message, Stream, WireError

log = logging.getLogger(__name__)


@dataclass
class BatchResult:
    stored: int = 0
    duplicates: int = 0
    conflicts: int = 0
    rejected: int = 0


@dataclass(frozen=True)
class Received:
    subject: str
    data: bytes


def write_batch(conn: psycopg.Connection[Any], batch: Sequence[Received],
                now: float | None = None, *, safe: bool = False) -> BatchResult:
    """Write ``batch`` in one transaction (the caller's); return what happened to it.

    A message that does not parse is refused before any SQL runs for it. The rest go in one
    multi-row INSERT per table (a round trip per table, not per message: a site back from
    days offline sends tens of thousands), and of a site's health reports only the newest is
    written (older ones would change nothing). One that the database refuses (a value out of
    a column's range) aborts the transaction: the caller rolls back and calls again with
    ``safe``, which writes each message alone in a savepoint (several round trips per message,
    so not the default).
    """
    now = time.time() if now is None else now
    result = BatchResult()
    parsed: list[tuple[Received, Message]] = []
    for item in batch:
        try:
            parsed.append((item, Message.decode(item.subject, item.data)))
        except WireError as exc:
            _reject(conn, item.subject, exc, now, result)
    names = sorted({m.site for _, m in parsed})
    # The sites' rows locked first, in name order: the health consumer and the durable
    # one write concurrently, and rows locked in another order would deadlock them.
    known = {str(r[0]): str(r[1]) for r in conn.execute(
        "SELECT name, public_key FROM sites WHERE name = ANY(%s::text[]) ORDER BY name "
        "FOR UPDATE", (names,))}
    if safe:
        heard, audited = _write_each(conn, parsed, known, now, result)
    else:
        heard, audited = _write_bulk(conn, parsed, known, now, result)
    if heard:
        conn.execute("UPDATE sites SET last_heard = GREATEST(COALESCE(last_heard, 0), %s) "
                     "WHERE name = ANY(%s::text[])", (now, sorted(heard)))
    if audited:
        sites = sorted(audited)
        conn.execute("UPDATE sites SET audit_max_seq = GREATEST(audit_max_seq, v.top) FROM "
                     "unnest(%s::text[], %s::bigint[]) AS v(name, top) "
                     "WHERE sites.name = v.name", (sites, [audited[s] for s in sites]))
        witness.advance_many(conn, sites)
    return result


_REFUSED = (WireError, KeyError, TypeError, ValueError, binascii.Error)


def _reject(conn: psycopg.Connection[Any], subject: str, exc: Exception, now: float,
            result: BatchResult) -> None:
    # Refused, with the reason on record; never dropped silently, never a crash of the
    # consumer (that would stop every other site).
    conn.execute("INSERT INTO rejected (subject, reason, received_at) VALUES (%s, %s, %s)",
                 (subject, str(exc)[:500], now))
    log.warning("hub: rejected a message on %s: %s", subject, exc)
    result.rejected += 1


def _count(result: BatchResult, outcome: str) -> None:
    if outcome == "stored":
        result.stored += 1
    elif outcome == "duplicate":
        result.duplicates += 1
    else:
        result.conflicts += 1


def _write_each(conn: psycopg.Connection[Any], parsed: list[tuple[Received, Message]],
                known: dict[str, str], now: float,
                result: BatchResult) -> tuple[set[str], dict[str, int]]:
    """One message at a time, each in a savepoint: one bad message does not undo the rest."""
    audited: dict[str, int] = {}
    heard: set[str] = set()
    for item, msg in parsed:
        try:
            if msg.site not in known:
                raise WireError(f"site {msg.site!r} is not enrolled")
            with conn.transaction():
                outcome = _write(conn, msg, known[msg.site], now)
        except (*_REFUSED, psycopg.DataError) as exc:
            _reject(conn, item.subject, exc, now, result)
            continue
        heard.add(msg.site)
        if msg.stream == Stream.AUDIT:
            audited[msg.site] = max(audited.get(msg.site, 0), msg.seq)
        _count(result, outcome)
    return heard, audited


@dataclass
class _Sorted:
    """A batch sorted by where it goes, each row's values already made (and so checked)."""

    rows: dict[Stream, list[tuple[Message, tuple[Any, ...]]]] = field(default_factory=dict)
    checkpoints: list[tuple[Received, Message]] = field(default_factory=list)
    health: dict[str, tuple[float, Message]] = field(default_factory=dict)  # newest per site
    heard: set[str] = field(default_factory=set)
    audited: dict[str, int] = field(default_factory=dict)  # top entry per site


def _write_bulk(conn: psycopg.Connection[Any], parsed: list[tuple[Received, Message]],
                known: dict[str, str], now: float,
                result: BatchResult) -> tuple[set[str], dict[str, int]]:
    """Every table's rows of the batch in one statement each, in the order: audit entries,
    checkpoints (matched against the entries just written), the other tables, health."""
    batch = _sort(conn, parsed, known, now, result)
    if Stream.AUDIT in batch.rows:
        _audit_many(conn, batch.rows.pop(Stream.AUDIT), now, result)
    for item, msg in batch.checkpoints:
        try:
            outcome = _write(conn, msg, known[msg.site], now)
        except _REFUSED as exc:
            _reject(conn, item.subject, exc, now, result)
            continue
        batch.heard.add(msg.site)
        _count(result, outcome)
    for stream, group in batch.rows.items():
        table, columns = _TABLES[stream]
        inserted = _insert_many(conn, table, columns, [v for _, v in group])
        result.duplicates += len(_not_inserted(group, inserted, result))
    if batch.health:
        _health_many(conn, {site: msg.body for site, (_at, msg) in batch.health.items()})
    return batch.heard, batch.audited


def _sort(conn: psycopg.Connection[Any], parsed: list[tuple[Received, Message]],
          known: dict[str, str], now: float, result: BatchResult) -> _Sorted:
    out = _Sorted()
    for item, msg in parsed:
        try:
            if msg.site not in known:
                raise WireError(f"site {msg.site!r} is not enrolled")
            if msg.stream == Stream.CHECKPOINT:
                out.checkpoints.append((item, msg))  # signature checked, and counted, later
                continue
            if msg.stream == Stream.HEALTH:
                at = float(msg.body["at"])
                if msg.site not in out.health or out.health[msg.site][0] < at:
                    out.health[msg.site] = (at, msg)
                result.stored += 1
            elif msg.stream == Stream.AUDIT:
                out.rows.setdefault(msg.stream, []).append((msg, _audit_values(msg, now)))
                out.audited[msg.site] = max(out.audited.get(msg.site, 0), msg.seq)
            else:
                out.rows.setdefault(msg.stream, []).append(
                    (msg, _plain_values(msg.stream, msg.site, msg.seq, msg.body)))
        except _REFUSED as exc:
            _reject(conn, item.subject, exc, now, result)
            continue
        out.heard.add(msg.site)
    return out


def _insert_many(conn: psycopg.Connection[Any], table: str, columns: tuple[str, ...],
                 values: list[tuple[Any, ...]]) -> set[tuple[str, int]]:
    """INSERT ... ON CONFLICT DO NOTHING of every row; return the (site, seq) inserted.

    The rows travel as one JSON document read by ``jsonb_to_recordset``: one parameter and
    one query text whatever the batch holds (a VALUES list per batch size made psycopg parse
    and PostgreSQL plan a new statement each time, and arrays of JSON cost a regex per
    element: most of the ingest's CPU when profiled). A float goes through JSON as its
    shortest repr and comes back as the same double."""
    if not values:
        return set()
    spec = ", ".join(f'"{c}" {_TYPES[c]}' for c in columns)
    names = ", ".join(f'"{c}"' for c in columns)
    sql = (f"INSERT INTO {table} ({names}) SELECT {names} FROM "  # noqa: S608 - constants
           f"jsonb_to_recordset(%s::jsonb) AS v({spec}) ON CONFLICT DO NOTHING "
           "RETURNING site, seq")
    doc = [{c: v.obj if isinstance(v, Jsonb) else v for c, v in zip(columns, row, strict=True)}
           for row in values]
    return {(str(r[0]), int(r[1])) for r in conn.execute(sql, (Jsonb(doc),))}


# The SQL type of each column the bulk writer fills (the tables of migration 0001).
_TYPES = {
    **dict.fromkeys(("site", "profile", "camera", "state", "reason", "kind", "trigger",
                     "created_by", "actor", "address", "action", "target", "outcome",
                     "detail", "prev_hash", "hash"), "text"),
    **dict.fromkeys(("seq", "segments", "bytes"), "bigint"),
    **dict.fromkeys(("at", "start_at", "end_at", "created_at", "expires_at", "received_at"),
                    "double precision"),
    **dict.fromkeys(("cameras", "digest", "data", "details"), "jsonb"),
}


def _audit_many(conn: psycopg.Connection[Any], group: list[tuple[Message, tuple[Any, ...]]],
                now: float, result: BatchResult) -> None:
    inserted = _insert_many(conn, "audit_entries", _AUDIT_COLUMNS, [v for _, v in group])
    # Not inserted: the same entry again (a duplicate), or another one under a number the
    # hub holds (a rewritten log: flagged, the first version kept).
    for msg in _not_inserted(group, inserted, result):
        _count(result, _audit_not_inserted(conn, msg, now))


def _not_inserted(group: list[tuple[Message, tuple[Any, ...]]], inserted: set[tuple[str, int]],
                  result: BatchResult) -> list[Message]:
    """Count the messages whose row was inserted as stored; return the others."""
    others: list[Message] = []
    for msg, _ in group:
        key = (msg.site, msg.seq)
        if key in inserted:
            inserted.discard(key)  # a second copy in the same batch was not inserted
            result.stored += 1
        else:
            others.append(msg)
    return others


def _write(conn: psycopg.Connection[Any], msg: Message, public_key: str, now: float) -> str:
    b, site, seq = msg.body, msg.site, msg.seq
    stream = msg.stream
    if stream == Stream.AUDIT:
        return _audit(conn, msg, now)
    if stream == Stream.HEALTH:
        _health(conn, site, b)
        return "stored"
    if stream == Stream.CHECKPOINT:
        entry_seq, hash_, at = int(b["seq"]), str(b["hash"]), float(b["at"])
        try:
            signature = base64.b64decode(str(b["signature"]), validate=True)
        except binascii.Error as exc:
            raise WireError(f"checkpoint signature is not base64: {exc}") from None
        ok = verify_signature(public_key.encode(), checkpoint_message(entry_seq, hash_, at),
                              signature)
        cur = conn.execute(
            "INSERT INTO checkpoints (site, seq, entry_seq, hash, at, signature, signature_ok, "
            "received_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (site, seq, entry_seq, hash_, at, signature, ok, now))
        if cur.rowcount and not ok:
            raise_alarm(conn, site, AlarmKind.BAD_SIGNATURE,
                        f"the checkpoint over entry {entry_seq} is not signed by the key "
                        "registered for this site")
        if cur.rowcount:
            witness.match_checkpoints(conn, site)
        return "stored" if cur.rowcount else "duplicate"
    sql, values = _plain(stream, site, seq, b)
    cur = conn.execute(sql, values)
    return "stored" if cur.rowcount else "duplicate"


_TABLES: dict[Stream, tuple[str, tuple[str, ...]]] = {
    Stream.CONFIG: ("configs", ("site", "seq", "at", "profile", "cameras", "digest")),
    Stream.CAMERA_STATE: ("camera_states", ("site", "seq", "camera", "at", "state", "reason")),
    Stream.COVERAGE: ("coverage", ("site", "seq", "cameras")),
    Stream.EVENT: ("events", ("site", "seq", "camera", "kind", "start_at", "end_at", "data")),
    Stream.DELETION: ("deletion_passes", ("site", "seq", "at", "trigger", "segments", "bytes",
                                          "details")),
    Stream.HOLD: ("holds", ("site", "seq", "camera", "start_at", "end_at", "reason",
                            "created_at", "created_by", "expires_at")),
}
_AUDIT_COLUMNS = ("site", "seq", "at", "actor", "address", "action", "target", "outcome",
                  "detail", "prev_hash", "hash", "received_at")


def _plain(stream: Stream, site: str, seq: int, b: dict[str, Any]) -> tuple[Any, tuple[Any, ...]]:
    if stream not in _TABLES:
        raise WireError(f"no table for stream {stream.value}")
    table, columns = _TABLES[stream]
    return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES "  # noqa: S608 - constants
            f"({', '.join(['%s'] * len(columns))}) ON CONFLICT DO NOTHING",
            _plain_values(stream, site, seq, b))


def _plain_values(stream: Stream, site: str, seq: int, b: dict[str, Any]) -> tuple[Any, ...]:
    """The row of ``stream``'s table, in ``_TABLES``' column order; raises on a bad body."""
    if stream == Stream.CONFIG:
        return (site, seq, float(b["at"]), b.get("profile"), Jsonb(list(b["cameras"])),
                Jsonb(dict(b["digest"])))
    if stream == Stream.CAMERA_STATE:
        return (site, seq, str(b["camera"]), float(b["at"]), str(b["state"]), str(b["reason"]))
    if stream == Stream.COVERAGE:
        return (site, seq, Jsonb({str(k): float(v) for k, v in dict(b["cameras"]).items()}))
    if stream == Stream.EVENT:
        end = b.get("end")
        return (site, seq, str(b["camera"]), str(b["kind"]), float(b["start"]),
                None if end is None else float(end), Jsonb(dict(b["data"])))
    if stream == Stream.DELETION:
        return (site, seq, float(b["at"]), str(b["trigger"]), int(b["segments"]),
                int(b["bytes"]), Jsonb(dict(b["details"])))
    if stream == Stream.HOLD:
        expires = b.get("expires_at")
        return (site, seq, b.get("camera"), float(b["start"]), float(b["end"]),
                str(b["reason"]), float(b["created_at"]), str(b["created_by"]),
                None if expires is None else float(expires))
    raise WireError(f"no table for stream {stream.value}")


def _audit_values(msg: Message, now: float) -> tuple[Any, ...]:
    b = msg.body
    values = (msg.site, msg.seq, float(b["at"]), str(b["actor"]),
              None if b.get("address") is None else str(b["address"]), str(b["action"]),
              str(b["target"]), str(b["outcome"]), str(b["detail"]), str(b["prev_hash"]),
              str(b["hash"]), now)
    json.loads(values[8])  # the detail must be JSON, as the site hashed it
    return values


def _audit(conn: psycopg.Connection[Any], msg: Message, now: float) -> str:
    values = _audit_values(msg, now)
    cur = conn.execute(
        f"INSERT INTO audit_entries ({', '.join(_AUDIT_COLUMNS)}) VALUES "  # noqa: S608 - constants
        f"({', '.join(['%s'] * len(_AUDIT_COLUMNS))}) ON CONFLICT DO NOTHING", values)
    if cur.rowcount:
        return "stored"
    return _audit_not_inserted(conn, msg, now)


def _audit_not_inserted(conn: psycopg.Connection[Any], msg: Message, now: float) -> str:
    """An entry the table already held under its number: the same one, or another."""
    b = msg.body
    held = conn.execute("SELECT hash FROM audit_entries WHERE site = %s AND seq = %s",
                        (msg.site, msg.seq)).fetchone()
    if held is not None and held[0] == b["hash"]:
        return "duplicate"
    conn.execute("INSERT INTO audit_conflicts (site, seq, hash, entry, received_at) VALUES "
                 "(%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                 (msg.site, msg.seq, str(b["hash"]), Jsonb(b), now))
    raise_alarm(conn, msg.site, AlarmKind.REWRITTEN,
                f"entry {msg.seq} arrived again with another hash: the site's audit log was "
                "cut back or rewritten (the hub keeps the version it received first)")
    return "conflict"


def _health_many(conn: psycopg.Connection[Any], bodies: dict[str, dict[str, Any]]) -> None:
    """``_health`` of each site's newest report in one UPDATE (health is most of the
    traffic: a statement per site and batch was most of the hub's statements)."""
    # One JSON document, not arrays: psycopg escapes each element of a jsonb[] with a regex
    # (a third of the ingest's time when profiled).
    doc = [{"name": site, "body": body, "at": float(body["at"])}
           for site, body in sorted(bodies.items())]
    updated = conn.execute(
        "UPDATE sites SET health = v.body, health_at = v.at FROM jsonb_to_recordset(%s::jsonb) "
        "AS v(name text, body jsonb, at double precision) WHERE sites.name = v.name "
        "AND (sites.health_at IS NULL OR sites.health_at < v.at) "
        "RETURNING sites.name, sites.audit_max_seq", (Jsonb(doc),)).fetchall()
    short = [(str(site), bodies[site]) for site, held in updated
             if isinstance(bodies[site].get("audit_head"), int)
             and bodies[site]["audit_head"] < int(held)]
    if short:
        _truncated(conn, short)


# An entry is "held before a report" when the site wrote it this long before the report: an
# entry committed while the report was being made is not yet in its head.
_REPORT_MARGIN = 5.0


def _truncated(conn: psycopg.Connection[Any], reports: list[tuple[str, dict[str, Any]]]) -> None:
    """Raise the truncation alarm for each report whose site wrote, before the report, an
    entry past the head it reports (the hub holds it: the site deleted it). Entries written
    after the report do not count: health has its own consumer and may be written after
    entries the site wrote later."""
    doc = [{"name": site, "head": int(b["audit_head"]), "at": float(b["at"])}
           for site, b in reports]
    for site, head, held in conn.execute(
            "SELECT v.name, v.head, s.audit_max_seq FROM jsonb_to_recordset(%s::jsonb) AS "
            "v(name text, head bigint, at double precision) JOIN sites s ON s.name = v.name "
            "JOIN audit_entries a ON a.site = v.name AND a.seq = v.head + 1 "
            "WHERE a.at < v.at - %s", (Jsonb(doc), _REPORT_MARGIN)).fetchall():
        raise_alarm(conn, str(site), AlarmKind.TRUNCATED,
                    f"the site reports its audit log ending at entry {head}, but the hub "
                    f"holds entries up to {held}: entries were deleted at the site")


def _health(conn: psycopg.Connection[Any], site: str, b: dict[str, Any]) -> None:
    at = float(b["at"])
    cur = conn.execute("UPDATE sites SET health = %s, health_at = %s WHERE name = %s AND "
                       "(health_at IS NULL OR health_at < %s)", (Jsonb(b), at, site, at))
    head = b.get("audit_head")
    # Only the newest report counts: an older one delivered again says nothing about now.
    if cur.rowcount and isinstance(head, int):
        _truncated(conn, [(site, b)])
