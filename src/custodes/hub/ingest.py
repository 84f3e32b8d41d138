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
from dataclasses import dataclass
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

    A message that does not parse is refused before any SQL runs for it. One that the
    database refuses (a value out of a column's range) aborts the transaction: the caller
    rolls back and calls again with ``safe``, which puts each message in a savepoint (two
    more round trips per message, so not the default).
    """
    now = time.time() if now is None else now
    result = BatchResult()
    known = {str(r[0]): str(r[1]) for r in conn.execute("SELECT name, public_key FROM sites")}
    audited: dict[str, int] = {}
    heard: set[str] = set()
    for item in batch:
        try:
            msg = Message.decode(item.subject, item.data)
            if msg.site not in known:
                raise WireError(f"site {msg.site!r} is not enrolled")
            if safe:
                with conn.transaction():  # a savepoint: one bad message does not undo the rest
                    outcome = _write(conn, msg, known[msg.site], now)
            else:
                outcome = _write(conn, msg, known[msg.site], now)
        except (WireError, KeyError, TypeError, ValueError, psycopg.DataError) as exc:
            if isinstance(exc, psycopg.DataError) and not safe:
                raise
            # Refused, with the reason on record; never dropped silently, never a crash of
            # the consumer (that would stop every other site).
            conn.execute("INSERT INTO rejected (subject, reason, received_at) VALUES "
                         "(%s, %s, %s)", (item.subject, str(exc)[:500], now))
            log.warning("hub: rejected a message on %s: %s", item.subject, exc)
            result.rejected += 1
            continue
        heard.add(msg.site)
        if msg.stream == Stream.AUDIT:
            audited[msg.site] = max(audited.get(msg.site, 0), msg.seq)
        if outcome == "stored":
            result.stored += 1
        elif outcome == "duplicate":
            result.duplicates += 1
        else:
            result.conflicts += 1
    for site in sorted(heard):
        conn.execute("UPDATE sites SET last_heard = GREATEST(COALESCE(last_heard, 0), %s) "
                     "WHERE name = %s", (now, site))
    for site, top in sorted(audited.items()):
        conn.execute("UPDATE sites SET audit_max_seq = GREATEST(audit_max_seq, %s) "
                     "WHERE name = %s", (top, site))
        witness.advance(conn, site)
    return result


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


def _plain(stream: Stream, site: str, seq: int, b: dict[str, Any]) -> tuple[Any, tuple[Any, ...]]:
    if stream == Stream.CONFIG:
        return ("INSERT INTO configs (site, seq, at, profile, cameras, digest) VALUES "
                "(%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (site, seq, float(b["at"]), b.get("profile"), Jsonb(list(b["cameras"])),
                 Jsonb(dict(b["digest"]))))
    if stream == Stream.CAMERA_STATE:
        return ("INSERT INTO camera_states (site, seq, camera, at, state, reason) VALUES "
                "(%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (site, seq, str(b["camera"]), float(b["at"]), str(b["state"]),
                 str(b["reason"])))
    if stream == Stream.COVERAGE:
        cams = {str(k): float(v) for k, v in dict(b["cameras"]).items()}
        return ("INSERT INTO coverage (site, seq, cameras) VALUES (%s, %s, %s) "
                "ON CONFLICT DO NOTHING", (site, seq, Jsonb(cams)))
    if stream == Stream.EVENT:
        end = b.get("end")
        return ("INSERT INTO events (site, seq, camera, kind, start_at, end_at, data) VALUES "
                "(%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (site, seq, str(b["camera"]), str(b["kind"]), float(b["start"]),
                 None if end is None else float(end), Jsonb(dict(b["data"]))))
    if stream == Stream.DELETION:
        return ("INSERT INTO deletion_passes (site, seq, at, trigger, segments, bytes, details) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (site, seq, float(b["at"]), str(b["trigger"]), int(b["segments"]),
                 int(b["bytes"]), Jsonb(dict(b["details"]))))
    if stream == Stream.HOLD:
        expires = b.get("expires_at")
        return ("INSERT INTO holds (site, seq, camera, start_at, end_at, reason, created_at, "
                "created_by, expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                (site, seq, b.get("camera"), float(b["start"]), float(b["end"]),
                 str(b["reason"]), float(b["created_at"]), str(b["created_by"]),
                 None if expires is None else float(expires)))
    raise WireError(f"no table for stream {stream.value}")


def _audit(conn: psycopg.Connection[Any], msg: Message, now: float) -> str:
    b = msg.body
    values = (msg.site, msg.seq, float(b["at"]), str(b["actor"]),
              None if b.get("address") is None else str(b["address"]), str(b["action"]),
              str(b["target"]), str(b["outcome"]), str(b["detail"]), str(b["prev_hash"]),
              str(b["hash"]), now)
    json.loads(values[8])  # the detail must be JSON, as the site hashed it
    cur = conn.execute(
        "INSERT INTO audit_entries (site, seq, at, actor, address, action, target, outcome, "
        "detail, prev_hash, hash, received_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, "
        "%s, %s, %s) ON CONFLICT DO NOTHING", values)
    if cur.rowcount:
        return "stored"
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


def _health(conn: psycopg.Connection[Any], site: str, b: dict[str, Any]) -> None:
    at = float(b["at"])
    cur = conn.execute("UPDATE sites SET health = %s, health_at = %s WHERE name = %s AND "
                       "(health_at IS NULL OR health_at < %s)", (Jsonb(b), at, site, at))
    head = b.get("audit_head")
    # Only the newest report counts: an older one delivered again says nothing about now.
    if cur.rowcount and isinstance(head, int):
        row = conn.execute("SELECT audit_max_seq FROM sites WHERE name = %s",
                           (site,)).fetchone()
        if row is not None and head < int(row[0]):
            raise_alarm(conn, site, AlarmKind.TRUNCATED,
                        f"the site reports its audit log ending at entry {head}, but the hub "
                        f"holds entries up to {row[0]}: entries were deleted at the site")
