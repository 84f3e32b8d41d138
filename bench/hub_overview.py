"""The hub's pages with a year of the city's data: the fleet overview, a site's page and the
events across sites, timed through the real web app (sign-in, templates, a database
connection per request), before and after migration 0002 (hourly coverage sums, a gaps table,
the events' indexes), on the same data, in the same run.

    python bench/hub_overview.py [--sites 800 --cameras 1000 --days 365 --minute-days 3]
    python bench/hub_overview.py --quick     # smoke run: 40 sites, 14 days, well under 60 s

The data is written by the database itself (generate_series), as a year of a city would leave
it: per camera and day ``--events`` events (80 % motion, 15 % faces, 5 % camera down/up) and
2 camera state changes; per site and day ``--audit`` audit entries, a deletion pass, an alarm
every 15 days; 3 % of the sites silent with an open alarm; a camera-minute in 500 short of
55 s. Coverage: per minute for the last ``--minute-days`` days (the window the overview
reads, and what the baseline reads), and per hour before that, as the hourly sums hold it:
a year of per-minute rows for 1000 cameras (420 M rows) does not fit this box. So the
baseline's site page, which walks a site's minutes back until it has found 50 gaps, walks
only ``--minute-days`` days here: its figure is a lower bound.

"Ours" adds migration 0003 (the minutes' sums for the hour the 24 h start in, so the
overview expands no JSON; the counts /metrics reads) and the overview's rows written in
Python rather than by Jinja's loop.

"Baseline" is the hub as of migration 0001: the overview summing every camera-minute of the
last 24 h (1.15 M JSON values for the city), the site page expanding its minutes to find gaps,
the events on the one index 0001 made (start time). The figures of both are compared, to show
the sums change nothing but the time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlencode

import psycopg

from custodes.auth.roles import Role
from custodes.auth.users import Users
from custodes.hub import db, fleet
from custodes.hub.config import HubSettings
from custodes.hub.postgres import EmbeddedPostgres
from custodes.hub.service import Hub
from custodes.hub.web import HubAccounts, create_hub_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's test client on httpx: deprecation only
    from starlette.testclient import TestClient

GOAL_MS = 300.0
GROUPS = ["Ashby", "Brent", "Calder", "Dunmore", "Eastleigh", "Fenwick", "Garth", "Holm",
          "Irvine", "Jarrow", "Kells", "Lowther"]
PASSWORD = "bench-password-123"


# -- the data ---------------------------------------------------------------------------------

def fill(conn: psycopg.Connection[Any], a: argparse.Namespace, now: float) -> dict[str, int]:
    """A year (``a.days``) of the city in the 0001 tables; returns rows per table."""
    t0 = now - a.days * 86400.0
    m1 = int(now // 60)
    m0 = (m1 - a.minute_days * 1440) // 60 * 60  # from a whole hour: the sums start there
    p: dict[str, Any] = {
        "sites": a.sites, "base": a.cameras // a.sites, "extra": a.cameras % a.sites,
        "groups": GROUPS, "now": now, "t0": t0, "days": a.days, "ev": a.events,
        "au": a.audit, "m0": m0, "m1": m1, "gap": 0.002,
    }
    steps = [
        ("sites", "CREATE TABLE bench_sites AS SELECT format('site-%%s', lpad(i::text, 4, '0')) "
         "AS name, (%(groups)s::text[])[1 + i %% 12] AS grp, "
         "%(base)s + (CASE WHEN i <= %(extra)s THEN 1 ELSE 0 END) AS ncam "
         "FROM generate_series(1, %(sites)s) i"),
        ("sites", "INSERT INTO sites (name, grp, public_key, password_hash, enrolled_at, "
         "last_heard, health, health_at, audit_verified_seq, audit_verified_hash, "
         "audit_max_seq) SELECT b.name, b.grp, 'bench', 'bench', %(t0)s, "
         "CASE WHEN random() < 0.03 THEN %(now)s - 3600 - random() * 86400 "
         "ELSE %(now)s - random() * 10 END, jsonb_build_object("
         "'node', b.name, 'profile', 'school', 'timezone', 'Europe/Oslo', 'at', %(now)s, "
         "'cameras', (SELECT jsonb_object_agg(format('cam%%s', lpad(c::text, 2, '0')), "
         "  jsonb_build_object('recording', c > 1 OR random() > 0.02, 'state', 'online')) "
         "  FROM generate_series(1, b.ncam) c), "
         "'retention_hours', (SELECT jsonb_object_agg(format('cam%%s', lpad(c::text, 2, '0')),"
         "  71.5) FROM generate_series(1, b.ncam) c), "
         "'retention_limit_hours', (SELECT jsonb_object_agg(format('cam%%s', "
         "  lpad(c::text, 2, '0')), 72) FROM generate_series(1, b.ncam) c), "
         "'disk', jsonb_build_object('total', 4000000000000, 'used', 1000000000000, "
         "  'free', 3000000000000), 'backlog', jsonb_build_object('audit', 0, 'event', 0)), "
         "%(now)s, %(days)s * %(au)s, md5(b.name), %(days)s * %(au)s FROM bench_sites b"),
        ("coverage", "INSERT INTO coverage (site, seq, cameras) SELECT b.name, m, "
         "(SELECT jsonb_object_agg(format('cam%%s', lpad(c::text, 2, '0')), "
         "  CASE WHEN random() < %(gap)s AND m > 0 THEN round((random() * 50)::numeric, 2) "
         "  ELSE 60 END) FROM generate_series(1, b.ncam) c) "
         "FROM bench_sites b, generate_series(%(m0)s, %(m1)s) m"),
        ("events", "INSERT INTO events (site, seq, camera, kind, start_at, end_at, data) "
         "SELECT b.name, g, format('cam%%s', lpad((1 + g %% b.ncam)::text, 2, '0')), "
         "CASE WHEN x.r < 0.80 THEN 'motion' WHEN x.r < 0.95 THEN 'face' "
         "WHEN x.r < 0.975 THEN 'camera_offline' ELSE 'camera_online' END, "
         "x.st, x.st + 5 + 60 * random(), '{\"peak\": 0.4}'::jsonb "
         "FROM bench_sites b, LATERAL generate_series(1, b.ncam * %(days)s * %(ev)s) g, "
         "LATERAL (SELECT random() AS r, %(t0)s + (g - 1) * (86400.0 / (b.ncam * %(ev)s)) "
         "  + 30 * random() AS st) x"),
        ("audit_entries", "INSERT INTO audit_entries (site, seq, at, actor, address, action, "
         "target, outcome, detail, prev_hash, hash, received_at) SELECT b.name, g, "
         "%(t0)s + g * (86400.0 / %(au)s), 'caretaker', '10.0.0.7', 'live.view', 'cam01', "
         "'ok', '{}', md5(b.name || (g - 1)), md5(b.name || g), %(t0)s + g * (86400.0 / %(au)s)"
         " FROM bench_sites b, generate_series(1, %(days)s * %(au)s) g"),
        ("camera_states", "INSERT INTO camera_states (site, seq, camera, at, state, reason) "
         "SELECT b.name, g, format('cam%%s', lpad((1 + g %% b.ncam)::text, 2, '0')), "
         "%(t0)s + g * (43200.0 / b.ncam), CASE WHEN g %% 2 = 0 THEN 'online' "
         "ELSE 'offline' END, 'bench' FROM bench_sites b, "
         "LATERAL generate_series(1, b.ncam * %(days)s * 2) g"),
        ("deletion_passes", "INSERT INTO deletion_passes (site, seq, at, trigger, segments, "
         "bytes, details) SELECT b.name, g, %(t0)s + g * 86400.0, 'retention', 1400, "
         "40000000000, '{}' FROM bench_sites b, generate_series(1, %(days)s) g"),
        ("configs", "INSERT INTO configs (site, seq, at, profile, cameras, digest) "
         "SELECT b.name, g, %(t0)s + g * 86400.0 * 30, 'school', '[\"cam01\"]', "
         "'{\"node\": \"x\"}' FROM bench_sites b, generate_series(1, %(days)s / 30 + 1) g"),
        ("alarms", "INSERT INTO alarms (site, kind, raised_at, detail, cleared_at) "
         "SELECT b.name, 'silent', %(t0)s + g * 86400.0 * 15, 'nothing heard', "
         "%(t0)s + g * 86400.0 * 15 + 900 FROM bench_sites b, "
         "generate_series(0, %(days)s / 15) g"),
        ("alarms", "INSERT INTO alarms (site, kind, raised_at, detail) SELECT name, 'silent', "
         "last_heard + 120, 'nothing heard' FROM sites WHERE last_heard < %(now)s - 3600"),
    ]
    # The one index of 0001 on events, built once after the rows rather than row by row.
    conn.execute("DROP INDEX events_start")
    for table, statement in steps:
        started = time.monotonic()
        conn.execute(statement.encode(), p)
        conn.commit()
        print(f"  {table}: {time.monotonic() - started:.0f} s", flush=True)
    conn.execute("CREATE INDEX events_start ON events (start_at)")
    conn.execute("DROP TABLE bench_sites")
    conn.commit()
    return counts(conn, ["sites", "coverage", "events", "audit_entries", "camera_states",
                         "deletion_passes", "configs", "alarms"])


def fill_history(conn: psycopg.Connection[Any], a: argparse.Namespace, now: float) -> None:
    """Before the per-minute days: the hourly sums and the gaps, as the trigger of 0002 would
    have left them (a camera-minute in 500 short)."""
    m0 = (int(now // 60) - a.minute_days * 1440) // 60 * 60
    p = {"h0": int((now - a.days * 86400) // 3600), "h1": m0 // 60 - 1, "gap": 0.002}
    conn.execute(
        "CREATE TEMP TABLE bench_cams AS SELECT s.name, count(*) AS ncam FROM sites s, "
        "jsonb_object_keys(s.health->'cameras') k GROUP BY s.name")
    conn.execute(
        "INSERT INTO coverage_hourly (site, hour, seconds, camera_minutes) "
        "SELECT b.name, h, 3600 * b.ncam * (1 - %(gap)s / 2), 60 * b.ncam "
        "FROM bench_cams b, generate_series(%(h0)s, %(h1)s) h", p)
    conn.execute(
        "INSERT INTO coverage_gaps (site, minute, camera, seconds) "
        "SELECT b.name, m, format('cam%%s', lpad((1 + m %% b.ncam)::text, 2, '0')), 20 "
        "FROM bench_cams b, generate_series(%(h0)s * 60, %(h1)s * 60 + 59, "
        "(1 / %(gap)s)::int) m ON CONFLICT DO NOTHING", p)
    conn.commit()


def counts(conn: psycopg.Connection[Any], tables: list[str]) -> dict[str, int]:
    # The tables' names are this function's own constants, never input.
    return {t: int(conn.execute(f"SELECT count(*) FROM {t}".encode()).fetchone()[0])  # type: ignore[index]
            for t in tables}


def apply_first_migration(url: str) -> None:
    """Migration 0001 only: the hub as it was before 0002."""
    number, name, sql = db.migrations()[0]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (number INTEGER PRIMARY "
                     "KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
        with conn.transaction():
            conn.execute(sql.encode())
            conn.execute("INSERT INTO schema_migrations (number, name) VALUES (%s, %s)",
                         (number, name))


def analyze(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


# -- the hub as of migration 0001 (commit 69e9204), for the baseline ---------------------------

def baseline_sites(conn: psycopg.Connection[Any], silent_after: float,
                   name: str | None = None, now: float | None = None,
                   groups: list[str] | None = None) -> list[fleet.SiteRow]:
    """fleet.sites before 0002: every camera-minute of the last 24 h summed at each request
    (the bench's user sees every group: ``groups`` is None)."""
    now = time.time() if now is None else now
    first_minute = int(now // 60) - fleet.DAY_MINUTES
    rows = conn.execute(
        "SELECT s.name, s.grp, s.last_heard, s.health, s.audit_verified_seq, s.audit_max_seq, "
        "s.chain_broken_at, "
        "(SELECT count(*) FROM alarms a WHERE a.site = s.name AND a.cleared_at IS NULL), "
        "(SELECT sum(v::numeric) FROM coverage c, jsonb_each_text(c.cameras) AS e(k, v) "
        " WHERE c.site = s.name AND c.seq >= %s), "
        "(SELECT sum((SELECT count(*) FROM jsonb_object_keys(c.cameras))) FROM coverage c "
        " WHERE c.site = s.name AND c.seq >= %s) "
        "FROM sites s WHERE (%s::text IS NULL OR s.name = %s) ORDER BY s.grp, s.name",
        (first_minute, first_minute, name, name)).fetchall()
    out = []
    for (site, grp, heard, health, verified, held, broken, alarms, seconds,
         camera_minutes) in rows:
        h: dict[str, Any] = health or {}
        cams: dict[str, Any] = h.get("cameras") or {}
        recording = sum(1 for c in cams.values() if c.get("recording")
                        and c.get("state") == "online")
        kept = h.get("retention_hours") or {}
        limits = h.get("retention_limit_hours") or {}
        disk = h.get("disk") or {}
        out.append(fleet.SiteRow(
            name=site, group=grp, last_heard=heard,
            online=heard is not None and now - heard <= silent_after,
            cameras=len(cams), recording=recording, down=len(cams) - recording,
            backlog=sum(int(v) for v in (h.get("backlog") or {}).values()),
            coverage_24h=(float(seconds) / (60.0 * float(camera_minutes))
                          if seconds is not None and camera_minutes else None),
            retention_hours=max(kept.values()) if kept else None,
            retention_limit=max(limits.values()) if limits else None,
            disk_used=(disk["used"] / disk["total"]) if disk.get("total") else None,
            alarms=int(alarms), audit_verified=int(verified), audit_held=int(held),
            chain_broken_at=broken, profile=h.get("profile"),
        ))
    return out


def baseline_site_detail(conn: psycopg.Connection[Any], site: str) -> dict[str, Any]:
    """fleet.site_detail before 0002: the gaps found by expanding the site's minutes."""
    def rows(sql: Any, keys: tuple[str, ...]) -> list[dict[str, Any]]:
        return [dict(zip(keys, r, strict=True)) for r in conn.execute(sql, (site,))]

    return {
        "states": rows("SELECT camera, at, state, reason FROM camera_states WHERE site = %s "
                       "ORDER BY seq DESC LIMIT 50", ("camera", "at", "state", "reason")),
        "deletions": rows("SELECT at, trigger, segments, bytes FROM deletion_passes WHERE "
                          "site = %s ORDER BY seq DESC LIMIT 50",
                          ("at", "trigger", "segments", "bytes")),
        "holds": rows("SELECT camera, start_at, end_at, reason, created_by FROM holds WHERE "
                      "site = %s ORDER BY seq DESC LIMIT 50",
                      ("camera", "start_at", "end_at", "reason", "created_by")),
        "configs": rows("SELECT at, profile, digest FROM configs WHERE site = %s "
                        "ORDER BY seq DESC LIMIT 20", ("at", "profile", "digest")),
        "gaps": rows("SELECT c.seq * 60, e.key, e.value::numeric FROM coverage c, "
                     "jsonb_each_text(c.cameras) e WHERE c.site = %s AND e.value::numeric < 55 "
                     "ORDER BY c.seq DESC LIMIT 50", ("minute", "camera", "seconds")),
        "events": rows("SELECT camera, kind, start_at, end_at FROM events WHERE site = %s "
                       "ORDER BY seq DESC LIMIT 50", ("camera", "kind", "start_at", "end_at")),
    }


def baseline_metrics(conn: psycopg.Connection[Any], silent_after: float,
                     groups: list[str] | None = None) -> dict[str, float]:
    """fleet.metrics before 0003: every event and audit entry counted at each scrape."""
    rows = baseline_sites(conn, silent_after)
    counted = {str(r[0]): float(r[1]) for r in conn.execute(
        "SELECT 'audit_entries', count(*) FROM audit_entries UNION ALL "
        "SELECT 'events', count(*) FROM events UNION ALL "
        "SELECT 'rejected', count(*) FROM rejected UNION ALL "
        "SELECT 'open_alarms', count(*) FROM alarms WHERE cleared_at IS NULL")}
    return {"custodes_hub_sites": float(len(rows)), **counted}


@contextmanager
def as_before() -> Iterator[None]:
    with mock.patch.object(fleet, "sites", baseline_sites), \
            mock.patch.object(fleet, "site_detail", baseline_site_detail), \
            mock.patch.object(fleet, "metrics", baseline_metrics):
        yield


# -- timing -----------------------------------------------------------------------------------

def pages(now: float) -> list[tuple[str, str]]:
    day = time.strftime("%Y-%m-%d", time.gmtime(now - 40 * 86400))
    return [
        ("overview (/)", "/"),
        ("site page", "/sites/site-0007"),
        ("events, all sites", "/events"),
        ("events, one municipality", "/events?group=Calder"),
        ("events, camera down, all sites", "/events?kind=camera_offline"),
        ("events, one site, one day", "/events?" + urlencode({
            "site": "site-0011", "start": f"{day} 00:00", "end": f"{day} 23:59:59"})),
        ("metrics (baseline: counts every event and entry; no goal)", "/metrics"),
    ]


def timed(client: TestClient, path: str, n: int, warm: int) -> list[float]:
    for _ in range(warm):  # the first request of a page compiles its template
        check(client.get(path), path)
    out = []
    for _ in range(n):
        started = time.perf_counter()
        answer = client.get(path)
        out.append((time.perf_counter() - started) * 1000)
        check(answer, path)
    return out


def check(answer: Any, path: str) -> None:
    if answer.status_code != 200:
        raise SystemExit(f"{path}: HTTP {answer.status_code}: {answer.text[-500:]}")


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def measure(client: TestClient, now: float, n: int, warm: int) -> dict[str, list[float]]:
    return {label: timed(client, path, n, warm) for label, path in pages(now)}


def same_figures(url: str, now: float) -> str:
    """The overview's figures from the sums against those from every minute."""
    with db.connect(url) as conn:
        ours = {r.name: r.coverage_24h for r in fleet.sites(conn, 120, now=now)}
        before = {r.name: r.coverage_24h for r in baseline_sites(conn, 120, now=now)}
    worst = max((abs((ours[k] or 0) - (v or 0)) for k, v in before.items()), default=0.0)
    agree = ours.keys() == before.keys() and worst < 1e-9
    return f"{'yes' if agree else 'NO'} ({len(ours)} sites, largest difference {worst:.1e})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sites", type=int, default=800)
    parser.add_argument("--cameras", type=int, default=1000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--minute-days", type=int, default=3)
    parser.add_argument("--events", type=int, default=20, help="per camera and day")
    parser.add_argument("--audit", type=int, default=10, help="audit entries per site and day")
    parser.add_argument("--requests", type=int, default=30, help="timed requests per page")
    parser.add_argument("--baseline-requests", type=int, default=5,
                        help="timed requests per page of the baseline (seconds each)")
    parser.add_argument("--quick", action="store_true")
    a = parser.parse_args()
    if a.quick:
        a.sites, a.cameras, a.days, a.minute_days, a.requests = 40, 50, 14, 2, 5
        a.baseline_requests = 3
    print(f"load average at start: {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)")
    folder = Path(tempfile.mkdtemp(prefix="custodes-bench-overview-"))
    pg = EmbeddedPostgres(folder / "postgres")
    try:
        pg.start()
        apply_first_migration(pg.url)
        now = time.time()
        started = time.monotonic()
        with psycopg.connect(pg.url) as conn:
            conn.execute("SET synchronous_commit = off")
            rows = fill(conn, a, now)
        analyze(pg.url)
        print(f"filled in {time.monotonic() - started:.0f} s (load average "
              f"{os.getloadavg()[0]:.1f}): {a.sites} sites, {a.cameras} "
              f"cameras, {a.days} days; " + ", ".join(f"{k} {v:,}" for k, v in rows.items()))

        hub = Hub(HubSettings(data=folder / "hub", nats_port=0, web_port=0))
        hub.db_url = pg.url
        accounts = HubAccounts.open(folder / "hub")
        Users(accounts.store).add("bench", Role.ADMIN, PASSWORD)
        client = TestClient(create_hub_app(hub, accounts))
        login = client.post("/api/auth/login", json={"name": "bench", "password": PASSWORD})
        check(login, "/api/auth/login")

        with as_before():
            before = measure(client, now, a.baseline_requests, 1)
        print(f"load average after the baseline: {os.getloadavg()[0]:.1f}")
        started = time.monotonic()
        applied = db.migrate(pg.url)
        migrated = time.monotonic() - started
        with psycopg.connect(pg.url) as conn:
            fill_history(conn, a, now)
            sums = counts(conn, ["coverage_hourly", "coverage_gaps"])
        analyze(pg.url)
        print(f"migrations {', '.join(applied)} applied in {migrated:.1f} s (hourly sums and "
              f"gaps of the per-minute days); with the history before them: "
              + ", ".join(f"{k} {v:,}" for k, v in sums.items()))
        ours = measure(client, now, a.requests, 2)
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")
        print()
        print(f"timed requests per page: baseline {a.baseline_requests}, ours {a.requests}")
        print("| page | baseline median ms | baseline p95 ms | ours median ms | ours p95 ms "
              "| faster |")
        print("|---|---:|---:|---:|---:|---:|")
        for label, _path in pages(now):
            b, o = before[label], ours[label]
            print(f"| {label} | {statistics.median(b):.1f} | {p95(b):.1f} | "
                  f"{statistics.median(o):.1f} | {p95(o):.1f} | "
                  f"{statistics.median(b) / statistics.median(o):.1f}x |")
        print()
        overview = ours["overview (/)"]
        verdict = "met" if p95(overview) <= GOAL_MS else "NOT met"
        print(f"goal: overview <= {GOAL_MS:.0f} ms: {verdict} (median "
              f"{statistics.median(overview):.0f} ms, p95 {p95(overview):.0f} ms, "
              f"{a.requests} requests)")
        print(f"same coverage figures from the sums as from every minute: "
              f"{same_figures(pg.url, now)}")
        accounts.store.close()
    finally:
        pg.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
