"""The hub as the off-box witness of every site's audit log.

As entries arrive (in any order: a resent batch can overtake), ``advance`` walks the site's
chain from the last entry it verified, as far as the entries are contiguous: each must follow
from the one before (its ``prev_hash``) and hash to what it says (the node's own
``Entry.computed_hash``). A gap is not an error while it lasts: the rest is still to come. An
entry that does not follow is: the chain is marked broken at it and an alarm raised, and
verification stops there for good (the site cannot repair what the hub witnessed).

Checkpoints are checked against the key registered at enrolment when they arrive, and against
the entry they sign as soon as both are held (``match_checkpoints``).

``verify_site`` re-checks everything the hub holds for one site from the first entry, for
``custodes hub verify``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import psycopg

from custodes.audit.anchor import checkpoint_message
from custodes.audit.log import GENESIS, Entry
from custodes.hub.alarms import AlarmKind, raise_alarm
from custodes.keys import verify_signature

_STEP = 5000


def _entry(row: Any) -> Entry:
    seq, at, actor, address, action, target, outcome, detail, prev_hash, hash_ = row
    return Entry(int(seq), float(at), actor, address, action, target, outcome,
                 json.loads(detail), prev_hash, hash_)


_COLUMNS = "seq, at, actor, address, action, target, outcome, detail, prev_hash, hash"


def advance(conn: psycopg.Connection[Any], site: str) -> int:
    """Verify the site's chain as far as it is contiguous; return the entry verified up to."""
    row = conn.execute("SELECT audit_verified_seq, audit_verified_hash, chain_broken_at FROM "
                       "sites WHERE name = %s FOR UPDATE", (site,)).fetchone()
    if row is None:
        return 0
    seq, hash_, broken = int(row[0]), str(row[1]), row[2]
    if broken is not None:
        return seq
    start = seq
    while True:
        rows = conn.execute(f"SELECT {_COLUMNS} FROM audit_entries WHERE site = %s "  # noqa: S608 - a constant
                            "AND seq > %s ORDER BY seq LIMIT %s", (site, seq, _STEP)).fetchall()
        seq, hash_, problem, walked = _walk(rows, seq, hash_)
        if problem is None and walked == _STEP:
            continue
        break
    if problem is not None:
        conn.execute("UPDATE sites SET chain_broken_at = %s WHERE name = %s",
                     (problem[0], site))
        raise_alarm(conn, site, AlarmKind.CHAIN_BREAK, problem[1])
    if seq != start:
        conn.execute("UPDATE sites SET audit_verified_seq = %s, audit_verified_hash = %s "
                     "WHERE name = %s", (seq, hash_, site))
        match_checkpoints(conn, site)
    return seq


def advance_many(conn: psycopg.Connection[Any], sites: list[str]) -> None:
    """``advance`` for several sites in a few statements, not four per site: a batch of the
    city's traffic holds an audit entry of dozens of sites, and the per-site statements were
    most of the ingest's time. Same walk, same outcome as ``advance`` site by site."""
    rows = conn.execute("SELECT name, audit_verified_seq, audit_verified_hash, chain_broken_at "
                        "FROM sites WHERE name = ANY(%s::text[]) ORDER BY name FOR UPDATE",
                        (sorted(sites),)).fetchall()
    start = {str(r[0]): (int(r[1]), str(r[2])) for r in rows if r[3] is None}
    if not start:
        return
    names = sorted(start)
    found: dict[str, list[Any]] = {name: [] for name in names}
    for r in conn.execute(
            f"SELECT v.name, a.* FROM unnest(%s::text[], %s::bigint[]) AS v(name, seq) "  # noqa: S608 - a constant
            f"CROSS JOIN LATERAL (SELECT {_COLUMNS} FROM audit_entries WHERE site = v.name "
            "AND seq > v.seq ORDER BY seq LIMIT %s) AS a",
            (names, [start[n][0] for n in names], _STEP)):
        found[str(r[0])].append(r[1:])
    moved: dict[str, tuple[int, str]] = {}
    again: list[str] = []  # a full step walked without a gap: the rest the slow way
    for name in names:
        seq, hash_, problem, walked = _walk(found[name], *start[name])
        if problem is not None:
            conn.execute("UPDATE sites SET chain_broken_at = %s WHERE name = %s",
                         (problem[0], name))
            raise_alarm(conn, name, AlarmKind.CHAIN_BREAK, problem[1])
        if seq != start[name][0]:
            moved[name] = (seq, hash_)
        if problem is None and walked == _STEP:
            again.append(name)
    if moved:
        done = sorted(moved)
        conn.execute("UPDATE sites SET audit_verified_seq = v.seq, audit_verified_hash = v.hash "
                     "FROM unnest(%s::text[], %s::bigint[], %s::text[]) AS v(name, seq, hash) "
                     "WHERE sites.name = v.name",
                     (done, [moved[n][0] for n in done], [moved[n][1] for n in done]))
        match_checkpoints_many(conn, done)
    for name in again:
        advance(conn, name)


def match_checkpoints_many(conn: psycopg.Connection[Any], sites: list[str]) -> None:
    """``match_checkpoints`` for several sites in one query (and one update when any)."""
    rows = conn.execute(
        "SELECT c.site, c.seq, c.entry_seq, c.hash, a.hash FROM checkpoints c JOIN "
        "audit_entries a ON a.site = c.site AND a.seq = c.entry_seq WHERE "
        "c.site = ANY(%s::text[]) AND c.matched IS NULL", (sites,)).fetchall()
    if not rows:
        return
    conn.execute("UPDATE checkpoints SET matched = v.ok FROM unnest(%s::text[], %s::bigint[], "
                 "%s::boolean[]) AS v(site, seq, ok) WHERE checkpoints.site = v.site AND "
                 "checkpoints.seq = v.seq",
                 ([str(r[0]) for r in rows], [int(r[1]) for r in rows],
                  [r[3] == r[4] for r in rows]))
    for site, _cp, entry_seq, signed, held in rows:
        if signed != held:
            raise_alarm(conn, str(site), AlarmKind.CHECKPOINT_MISMATCH,
                        f"the site signed entry {entry_seq} with a hash other than the entry "
                        "the hub holds")


def _walk(rows: list[Any], seq: int, hash_: str
          ) -> tuple[int, str, tuple[int, str] | None, int]:
    """Follow the chain from (``seq``, ``hash_``) over ``rows`` (entries after it, in order)
    up to a gap or a broken link: where it got to, the problem if one, the entries walked."""
    walked = 0
    for r in rows:
        entry = _entry(r)
        if entry.seq != seq + 1:
            break  # a gap: the rest is still on its way
        problem = _link_problem(entry, seq, hash_)
        if problem is not None:
            return seq, hash_, problem, walked
        seq, hash_ = entry.seq, entry.hash
        walked += 1
    return seq, hash_, None, walked


def _link_problem(entry: Entry, seq: int, hash_: str) -> tuple[int, str] | None:
    if entry.prev_hash != hash_:
        return entry.seq, (f"entry {entry.seq} does not follow from entry {seq}: its previous "
                           "hash is not that entry's hash")
    if entry.computed_hash() != entry.hash:
        return entry.seq, f"entry {entry.seq} was altered: its content does not hash to its hash"
    return None


def match_checkpoints(conn: psycopg.Connection[Any], site: str) -> None:
    """Compare each checkpoint not yet matched with the entry it signs, once that is held."""
    rows = conn.execute(
        "SELECT c.seq, c.entry_seq, c.hash, a.hash FROM checkpoints c JOIN audit_entries a "
        "ON a.site = c.site AND a.seq = c.entry_seq WHERE c.site = %s AND c.matched IS NULL",
        (site,)).fetchall()
    for cp_seq, entry_seq, signed, held in rows:
        ok = signed == held
        conn.execute("UPDATE checkpoints SET matched = %s WHERE site = %s AND seq = %s",
                     (ok, site, cp_seq))
        if not ok:
            raise_alarm(conn, site, AlarmKind.CHECKPOINT_MISMATCH,
                        f"the site signed entry {entry_seq} with a hash other than the entry "
                        "the hub holds")


@dataclass(frozen=True)
class SiteVerdict:
    site: str
    entries: int
    verified_to: int
    checkpoints: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_site(conn: psycopg.Connection[Any], site: str) -> SiteVerdict:
    """Re-verify from scratch everything the hub holds of ``site``'s audit log."""
    key_row = conn.execute("SELECT public_key FROM sites WHERE name = %s", (site,)).fetchone()
    if key_row is None:
        return SiteVerdict(site, 0, 0, 0, [f"site {site!r} is not enrolled"])
    problems: list[str] = []
    seq, hash_, count = 0, GENESIS, 0
    hashes: dict[int, str] = {}
    with conn.cursor(name=f"verify_{site}") as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM audit_entries WHERE site = %s "  # noqa: S608 - a constant
                    "ORDER BY seq",
                    (site,))
        for r in cur:
            entry = _entry(r)
            count += 1
            hashes[entry.seq] = entry.hash
            if problems:
                continue
            if entry.seq != seq + 1:
                problems.append(f"entries {seq + 1}..{entry.seq - 1} missing after entry {seq}")
                continue
            link = _link_problem(entry, seq, hash_)
            if link is not None:
                problems.append(link[1])
                continue
            seq, hash_ = entry.seq, entry.hash
    keys = [str(r[0]) for r in conn.execute(
        "SELECT public_key FROM site_keys WHERE site = %s ORDER BY id", (site,))]
    cps = conn.execute("SELECT entry_seq, hash, at, signature FROM checkpoints WHERE site = %s "
                       "ORDER BY seq", (site,)).fetchall()
    for entry_seq, signed, at, signature in cps:
        message = checkpoint_message(int(entry_seq), signed, float(at))
        if not any(verify_signature(k.encode(), message, bytes(signature)) for k in keys):
            problems.append(f"the checkpoint over entry {entry_seq} carries no signature of a "
                            "key registered for the site")
        elif entry_seq in hashes and hashes[entry_seq] != signed:
            problems.append(f"the checkpoint over entry {entry_seq} signs another hash than "
                            "the entry held")
    conflicts = conn.execute("SELECT count(*) FROM audit_conflicts WHERE site = %s",
                             (site,)).fetchone()
    if conflicts is not None and int(conflicts[0]):
        problems.append(f"{conflicts[0]} entries arrived again with another hash (a log cut "
                        "back or rewritten at the site)")
    return SiteVerdict(site, count, seq, len(cps), problems)
