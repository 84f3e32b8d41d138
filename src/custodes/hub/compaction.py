"""Minute rows of coverage past a window are deleted; their figures stay in the hourly sums and
the gaps (migration 0002's trigger kept them as each row arrived), which is all the pages read
past the last day. Each compacted hour remembers which minutes it summed (migration 0003), so
that a minute delivered again later (an outbox replayed) is not counted twice.

The job is bounded (``budget`` rows a pass, one site at a time, a transaction per site and
batch) and idempotent (a minute already deleted is not found again; the bits are OR-ed): it
runs every few minutes in the hub (``run``) and catches up on a hub upgraded with a year of
minutes over many passes, never holding a long transaction."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import psycopg

from custodes.hub import db

log = logging.getLogger(__name__)

KEEP_DAYS = 31  # minute rows kept: a month, longer than any retention profile's ceiling
PASS_SECONDS = 300.0  # between passes
# Between passes while a backlog remains (a hub upgraded with a year of minutes, ~420M rows for
# the city): a pass of BUDGET rows then a pause that leaves the database mostly to ingest.
BACKLOG_PAUSE = 15.0
BUDGET = 200_000  # minute rows deleted a pass at most (~3 s of the database on this box)
BATCH = 20_000  # a transaction: at most this many rows of one site

# One statement: the rows deleted and their bits recorded together, or neither.
_COMPACT = (
    "WITH gone AS ("
    " DELETE FROM coverage c WHERE c.site = %(site)s AND c.seq IN ("
    "  SELECT seq FROM coverage WHERE site = %(site)s AND seq < %(before)s "
    "  ORDER BY seq LIMIT %(limit)s) RETURNING c.seq), "
    "sums AS (DELETE FROM coverage_minutes m WHERE m.site = %(site)s "
    " AND m.minute IN (SELECT seq FROM gone) RETURNING 1), "
    "marked AS ("
    " INSERT INTO coverage_compacted (site, hour, minutes) "
    " SELECT %(site)s, seq / 60, bit_or(1::bigint << (seq %% 60)::int) FROM gone "
    " GROUP BY seq / 60 "
    " ON CONFLICT (site, hour) DO UPDATE SET "
    "  minutes = coverage_compacted.minutes | EXCLUDED.minutes RETURNING 1) "
    "SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM marked), "
    "(SELECT count(*) FROM sums)")


@dataclass
class Pass:
    deleted: int = 0
    sites: int = 0
    done: bool = True  # False: the budget ran out before every site was compacted


def compact(conn: psycopg.Connection[Any], now: float | None = None,
            keep_days: float = KEEP_DAYS, budget: int = BUDGET,
            batch: int = BATCH) -> Pass:
    """Delete the minute rows older than ``keep_days`` (at most ``budget``), recording each
    in coverage_compacted. ``conn`` is used in its own transactions."""
    now = time.time() if now is None else now
    before = int((now - keep_days * 86400) // 60)
    result = Pass()
    # The sites with old rows: min(seq) per site by the primary key, one index probe each.
    sites = [str(r[0]) for r in conn.execute(
        "SELECT s.name FROM sites s WHERE (SELECT min(c.seq) FROM coverage c "
        "WHERE c.site = s.name) < %s ORDER BY s.name", (before,))]
    conn.commit()
    for site in sites:
        result.sites += 1
        while True:
            limit = min(batch, budget - result.deleted)
            if limit <= 0:
                result.done = False
                return result
            with conn.transaction():
                row = conn.execute(_COMPACT, {"site": site, "before": before,
                                              "limit": limit}).fetchone()
            conn.commit()
            n = int(row[0]) if row else 0
            result.deleted += n
            if n < limit:
                break
    return result


def run(url: str, stop: threading.Event, every: float = PASS_SECONDS) -> None:
    """The hub's compaction thread: a pass every ``every`` seconds (every BACKLOG_PAUSE while
    a pass leaves rows for the next) until ``stop``; a pass that fails is logged and tried
    again at the next."""
    conn: psycopg.Connection[Any] | None = None
    pause = every
    while not stop.wait(pause):
        pause = every
        try:
            if conn is None:
                conn = db.connect(url)
            started = time.monotonic()
            done = compact(conn)
            if not done.done:
                pause = min(every, BACKLOG_PAUSE)
            if done.deleted:
                log.info("hub: compacted %d minute rows of %d sites in %.1f s%s", done.deleted,
                         done.sites, time.monotonic() - started,
                         "" if done.done else " (more at the next pass)")
        except Exception:
            log.exception("hub: coverage compaction failed; tried again in %.0f s", every)
            db.close_quietly(conn)
            conn = None
    if conn is not None:
        conn.close()
