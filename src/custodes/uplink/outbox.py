"""The node's SQLite as the uplink's outbox: what is still to be sent, read from the tables the
node keeps anyway, and a cursor per stream that moves only when the hub's server acknowledged.

Nothing is copied into a queue table: the audit log, camera states, events, deletion passes and
holds already carry increasing numbers, and coverage is computed per minute from the segment
index. A link down for days leaves the rows where they are; the next pass reads them in order.

Limits, said plainly:
- a row is sent once it is final: an event once it has ended (or has been open for
  ``OPEN_EVENT_SECONDS``), a deletion pass ``DELETION_SETTLE_SECONDS`` after it began (a pass
  updates its own row while it runs); a hold is sent when placed, its release is known to the
  hub through the audit entries only;
- coverage for minutes whose footage retention already deleted before the link came back is
  reported as what is left (zero): the hub cannot tell "not recorded" from "recorded, then
  deleted" for those minutes.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, func, select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from custodes.audit.actions import Action
from custodes.store import schema
from custodes.store.db import Store
from custodes.uplink.wire import Message, Stream

log = logging.getLogger(__name__)

OPEN_EVENT_SECONDS = 600.0
DELETION_SETTLE_SECONDS = 300.0
# Coverage of a minute is reported once its segments are surely indexed (a segment is indexed
# when it closes), and never for more than this far back on a first start.
COVERAGE_FIRST_SECONDS = 24 * 3600.0
# Only what an event says about itself: no picture, no face box, no descriptor.
EVENT_FIELDS = ("peak", "detections", "quality")

DURABLE = (Stream.AUDIT, Stream.CHECKPOINT, Stream.CONFIG, Stream.CAMERA_STATE,
           Stream.COVERAGE, Stream.EVENT, Stream.DELETION, Stream.HOLD)


class Outbox:
    def __init__(self, store: Store, site: str, cameras: Iterable[str], *,
                 coverage_lag: float = 150.0) -> None:
        self.store = store
        self.site = site
        self.cameras = sorted(cameras)
        self.coverage_lag = coverage_lag

    # -- cursors ----------------------------------------------------------------------------

    def cursors(self) -> dict[Stream, int]:
        with self.store.read() as conn:
            return _cursors(conn)

    def advance(self, stream: Stream, seq: int, hash_: str | None = None) -> None:
        """Record that the server acknowledged everything of ``stream`` up to ``seq`` (for the
        audit log: entry ``seq`` with hash ``hash_``)."""
        def write(conn: Connection) -> None:
            stmt = sqlite_insert(schema.uplink_cursors).values(
                stream=stream.value, seq=seq, hash=hash_, at=time.time())
            conn.execute(stmt.on_conflict_do_update(
                index_elements=["stream"],
                set_={"seq": seq, "hash": hash_, "at": stmt.excluded.at}))
        self.store.write(write)

    def acknowledged(self, messages: list[Message]) -> None:
        """Move the cursor past ``messages``, the leading run the server acknowledged."""
        self.acknowledged_runs([messages])

    def acknowledged_runs(self, runs: list[list[Message]]) -> None:
        """``acknowledged`` for several streams' runs, in one write transaction."""
        rows = [{"stream": run[-1].stream.value, "seq": run[-1].seq, "at": time.time(),
                 "hash": str(run[-1].body["hash"]) if run[-1].stream == Stream.AUDIT else None}
                for run in runs if run]
        if not rows:
            return

        def write(conn: Connection) -> None:
            for row in rows:
                stmt = sqlite_insert(schema.uplink_cursors).values(**row)
                conn.execute(stmt.on_conflict_do_update(
                    index_elements=["stream"],
                    set_={"seq": stmt.excluded.seq, "hash": stmt.excluded.hash,
                          "at": stmt.excluded.at}))
        self.store.write(write)

    # -- what is pending --------------------------------------------------------------------

    def pending(self, stream: Stream, limit: int, now: float | None = None) -> list[Message]:
        """Up to ``limit`` messages of ``stream`` after its cursor, in order."""
        now = time.time() if now is None else now
        with self.store.read() as conn:
            return self._pending(conn, stream, _cursors(conn).get(stream), limit, now)

    def pending_all(self, limit: int, now: float | None = None, *,
                    total: int | None = None) -> dict[Stream, list[Message]]:
        """``pending`` of every durable stream that has something, read on one connection
        (a pass of the uplink opens one, not two per stream); with ``total``, no more than
        that many in all, the streams taken in their order (the rest at the next pass)."""
        now = time.time() if now is None else now
        out: dict[Stream, list[Message]] = {}
        budget = total if total is not None else limit * len(DURABLE)
        with self.store.read() as conn:
            cursors = _cursors(conn)
            for stream in DURABLE:
                if budget <= 0:
                    break
                found = self._pending(conn, stream, cursors.get(stream), min(limit, budget),
                                      now)
                if found:
                    out[stream] = found
                    budget -= len(found)
        return out

    def _pending(self, conn: Connection, stream: Stream, cursor: int | None, limit: int,
                 now: float) -> list[Message]:
        if stream == Stream.COVERAGE:
            return self._coverage(conn, cursor, limit, now)
        start = cursor or 0
        if stream == Stream.AUDIT:
            start = self._audit_start(conn, start)
        rows = self._rows(conn, stream, start, limit, now)
        return [Message(self.site, stream, seq, body) for seq, body in rows]

    def backlog(self, now: float | None = None) -> dict[str, int]:
        """How many messages each durable stream still has to send (coverage: minutes)."""
        now = time.time() if now is None else now
        out: dict[str, int] = {}
        with self.store.read() as conn:
            cursors = _cursors(conn)
            for stream, (table, key) in _TABLES.items():
                query = select(func.count()).select_from(table).where(
                    key > cursors.get(stream, 0))
                if stream == Stream.CONFIG:
                    query = query.where(table.c.action == Action.NODE_START.value)
                out[stream.value] = int(conn.execute(query).scalar_one())
        last = int((now - self.coverage_lag) // 60) - 1
        first = cursors.get(Stream.COVERAGE)
        out[Stream.COVERAGE.value] = max(0, last - first) if first is not None else 0
        return out

    def audit_head(self) -> int:
        with self.store.read() as conn:
            return int(conn.execute(select(func.coalesce(func.max(schema.audit_log.c.seq), 0)))
                       .scalar_one())

    def retention(self, now: float | None = None) -> dict[str, float]:
        """Hours of footage kept per camera: the age of its oldest indexed segment."""
        now = time.time() if now is None else now
        s = schema.segments
        with self.store.read() as conn:
            rows = conn.execute(select(s.c.camera, func.min(s.c.start)).group_by(s.c.camera))
            return {str(cam): round((now - float(start)) / 3600, 2) for cam, start in rows}

    # -- per stream -------------------------------------------------------------------------

    def _audit_start(self, conn: Connection, cursor: int) -> int:
        """The cursor, unless the entry it points at is gone or is not the one sent: a log cut
        back or rewritten. The uplink then sends the whole log again: the hub drops what it
        holds already and flags every entry that comes back under a known number with
        another hash (it keeps the version it received first)."""
        if cursor == 0:
            return 0
        sent = conn.execute(select(schema.uplink_cursors.c.hash).where(
            schema.uplink_cursors.c.stream == Stream.AUDIT.value)).scalar()
        now = conn.execute(select(schema.audit_log.c.hash).where(
            schema.audit_log.c.seq == cursor)).scalar()
        if sent is not None and now == sent:
            return cursor
        log.error("uplink: audit entry %d, sent to the hub, is %s: the log was cut back or "
                  "rewritten; sending it all again for the hub to compare", cursor,
                  "gone" if now is None else "not the one sent")
        self.advance(Stream.AUDIT, 0)
        return 0

    def _rows(self, conn: Connection, stream: Stream, start: int, limit: int,
              now: float) -> list[tuple[int, dict[str, Any]]]:
        table, key = _TABLES[stream]
        query = select(table).where(key > start).order_by(key).limit(limit)
        if stream == Stream.CONFIG:
            query = query.where(table.c.action == Action.NODE_START.value)
        out: list[tuple[int, dict[str, Any]]] = []
        for row in conn.execute(query):
            m = row._mapping
            if stream == Stream.AUDIT:
                body = {k: m[k] for k in ("at", "actor", "address", "action", "target",
                                          "outcome", "detail", "prev_hash", "hash")}
            elif stream == Stream.CHECKPOINT:
                body = {"seq": m["seq"], "hash": m["hash"], "at": m["at"],
                        "signature": base64.b64encode(m["signature"]).decode("ascii")}
            elif stream == Stream.CONFIG:
                detail = json.loads(m["detail"])
                body = {"at": m["at"], "profile": detail.get("profile"),
                        "cameras": detail.get("cameras", []),
                        "digest": detail.get("config", {})}
            elif stream == Stream.CAMERA_STATE:
                body = {k: m[k] for k in ("camera", "at", "state", "reason")}
            elif stream == Stream.EVENT:
                if m["end"] is None and m["start"] > now - OPEN_EVENT_SECONDS:
                    break  # in order: nothing after an event still open
                data = json.loads(m["data"] or "{}")
                body = {"camera": m["camera"], "kind": m["kind"], "start": m["start"],
                        "end": m["end"],
                        "data": {k: data[k] for k in EVENT_FIELDS if k in data}}
            elif stream == Stream.DELETION:
                if m["at"] > now - DELETION_SETTLE_SECONDS:
                    break
                body = {"at": m["at"], "trigger": m["trigger"], "segments": m["segments"],
                        "bytes": m["bytes"], "details": json.loads(m["details"])}
            else:  # HOLD
                body = {k: m[k] for k in ("camera", "start", "end", "reason", "created_at",
                                          "created_by", "expires_at")}
            out.append((int(m[key.name]), body))
        return out

    def _coverage(self, conn: Connection, cursor: int | None, limit: int,
                  now: float) -> list[Message]:
        last = int((now - self.coverage_lag) // 60) - 1
        if cursor is None:
            s = schema.segments
            oldest = conn.execute(select(func.min(s.c.start))).scalar()
            first = int(max(now - COVERAGE_FIRST_SECONDS, oldest if oldest is not None
                            else now) // 60)
            cursor = first - 1
        first = cursor + 1
        end = min(last, cursor + limit)
        if end < first:
            return []
        seconds: dict[int, dict[str, float]] = defaultdict(dict)
        s = schema.segments
        lo, hi = first * 60.0, (end + 1) * 60.0
        for cam, start, stop in conn.execute(
            select(s.c.camera, s.c.start, s.c.end).where(s.c.end > lo, s.c.start < hi)
        ):
            minute = int(max(start, lo) // 60)
            while minute * 60 < min(stop, hi):
                a, b = max(start, minute * 60.0), min(stop, minute * 60.0 + 60)
                covered = seconds[minute]
                covered[cam] = covered.get(cam, 0.0) + max(0.0, b - a)
                minute += 1
        return [
            Message(self.site, Stream.COVERAGE, minute, {"cameras": {
                cam: round(min(60.0, seconds[minute].get(cam, 0.0)), 2)
                for cam in sorted({*self.cameras, *seconds[minute]})
            }})
            for minute in range(first, end + 1)
        ]


def _cursors(conn: Connection) -> dict[Stream, int]:
    rows = conn.execute(select(schema.uplink_cursors.c.stream,
                               schema.uplink_cursors.c.seq)).all()
    found = {str(r[0]): int(r[1]) for r in rows}
    return {s: found[s.value] for s in DURABLE if s.value in found}


_TABLES = {
    Stream.AUDIT: (schema.audit_log, schema.audit_log.c.seq),
    Stream.CHECKPOINT: (schema.audit_checkpoints, schema.audit_checkpoints.c.id),
    Stream.CONFIG: (schema.audit_log, schema.audit_log.c.seq),
    Stream.CAMERA_STATE: (schema.camera_states, schema.camera_states.c.id),
    Stream.EVENT: (schema.events, schema.events.c.id),
    Stream.DELETION: (schema.deletion_passes, schema.deletion_passes.c.id),
    Stream.HOLD: (schema.holds, schema.holds.c.id),
}
