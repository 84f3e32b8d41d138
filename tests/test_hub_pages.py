"""The hub's events page, its overview sums and its user command line, with real parts: a real
nats-server and PostgreSQL (tests/test_hub.py's ``hub``), light sites whose own databases the
real uplink publishes, the hub's web app on the node's sign-in code."""

from __future__ import annotations

import gc
import random
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import Connection, insert, text
from typer.testing import CliRunner

from custodes.auth.roles import Role
from custodes.auth.users import Users
from custodes.cli import app
from custodes.hub import db, fleet
from custodes.hub.demo import LightSite
from custodes.hub.ingest import Received, write_batch
from custodes.hub.service import Hub
from custodes.hub.web import HubAccounts, create_hub_app
from custodes.sitetime import SiteZone, ZoneSource
from custodes.store import schema
from custodes.uplink.wire import Message, Stream
from hub_env import NATS_SOCKET_WARNINGS, q, running_hub, wait_for

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # as in tests/test_hub.py
    from starlette.testclient import TestClient

pytestmark = [pytest.mark.slow, NATS_SOCKET_WARNINGS]

ROW = re.compile(r'<tr data-site="([^"]+)" data-seq="(\d+)" data-camera="([^"]+)" '
                 r'data-kind="([^"]+)"')
PASSWORD = "a-long-enough-password"


@dataclass
class ZonedSite(LightSite):
    """A light site whose health names its zone, as a node's does (node.timezone)."""

    zone: str = "UTC"

    def health(self) -> dict[str, object]:
        return {**super().health(), "timezone": self.zone}


Event = tuple[str, int, str, str, float]  # site, seq, camera, kind, start


@pytest.fixture(scope="module")
def hub() -> Iterator[Hub]:
    with running_hub() as h:
        yield h


@pytest.fixture(autouse=True)
def _collect_after() -> Iterator[None]:
    yield
    gc.collect()  # see hub_env.NATS_SOCKET_WARNINGS


@pytest.fixture(scope="module")
def sites(hub: Hub) -> Iterator[dict[str, ZonedSite]]:
    """Four sites in two municipalities and two zones; their events at known times."""
    root = Path(tempfile.mkdtemp(prefix="custodes-hub-pages-"))
    base = float(int(time.time() // 60 * 60) - 2 * 86400)
    made: dict[str, ZonedSite] = {}
    plan = [("north-school", "Ashby", "Europe/Oslo", 12),
            ("east-school", "Ashby", "Europe/Oslo", 9),
            ("south-school", "Brent", "America/New_York", 10),
            ("busy-school", "Brent", "America/New_York", 230)]
    rng = random.Random(12)
    try:
        for i, (name, group, zone, count) in enumerate(plan):
            site = ZonedSite.create(root / name, name, cameras=3, checkpoint_every=5)
            assert isinstance(site, ZonedSite)
            site.zone = zone
            kinds = ["motion", "face", "camera_offline", "camera_online"]
            # Two events at each start on the busy site: pages must not lose or repeat a tie.
            rows = [{"camera": rng.choice(site.cameras), "kind": rng.choice(kinds),
                     "start": base + (j // 2 if name == "busy-school" else j) * 600 + i * 7,
                     "end": base + j * 600 + i * 7 + 5, "data": '{"peak": 0.5}',
                     "snapshot": f"/never/sent/{j}.jpg"} for j in range(count)]
            site.store.write(partial(add_events, rows=rows))
            password = hub.enrol(name, group, site.keys.public_pem).password
            site.connect(hub.nats_urls, password, health_seconds=1, ca=hub.site_ca)
            made[name] = site
        for site in made.values():
            wait_for(f"{site.name}'s events and zone at the hub", partial(arrived, hub, site))
        yield made
    finally:
        for site in made.values():
            site.close()
        shutil.rmtree(root, ignore_errors=True)


def add_events(conn: Connection, rows: list[dict[str, object]]) -> None:
    conn.execute(insert(schema.events), rows)


def arrived(hub: Hub, site: ZonedSite) -> bool:
    events = q(hub, "SELECT count(*) FROM events WHERE site = %s", site.name)[0][0]
    zone = q(hub, "SELECT health->>'timezone' FROM sites WHERE name = %s", site.name)[0][0]
    return bool(events == len(site_events(site)) and zone == site.zone)


def site_events(site: LightSite) -> list[Event]:
    """What the site itself holds: the truth the hub's page is compared with."""
    with site.store.read() as conn:
        return [(site.name, int(r[0]), str(r[1]), str(r[2]), float(r[3])) for r in conn.execute(
            text("SELECT id, camera, kind, start FROM events ORDER BY id"))]


def shown(page: str) -> list[tuple[str, int, str, str]]:
    return [(s, int(n), c, k) for s, n, c, k in ROW.findall(page)]


def newest_first(events: list[Event]) -> list[tuple[str, int, str, str]]:
    return [(s, n, c, k) for s, n, c, k, _ in
            sorted(events, key=lambda e: (e[4], e[0], e[1]), reverse=True)]


def sign_in(client: TestClient, name: str) -> None:
    done = client.post("/api/auth/login", json={"name": name, "password": PASSWORD})
    assert done.status_code == 200, done.text


@pytest.fixture(scope="module")
def accounts(hub: Hub) -> Iterator[HubAccounts]:
    folder = Path(tempfile.mkdtemp(prefix="custodes-hub-web-"))
    accounts = HubAccounts.open(folder)
    users = Users(accounts.store)
    users.add("watcher", Role.VIEWER, PASSWORD)
    users.add("inspector", Role.INSPECTOR, PASSWORD)
    users.add("limited", Role.VIEWER, PASSWORD, cameras=["cam01"])
    try:
        yield accounts
    finally:
        accounts.store.close()
        shutil.rmtree(folder, ignore_errors=True)


def test_the_events_page_filters_what_the_sites_sent(
        hub: Hub, sites: dict[str, ZonedSite], accounts: HubAccounts) -> None:
    everything = [e for s in sites.values() for e in site_events(s)]
    client = TestClient(create_hub_app(hub, accounts), follow_redirects=False)
    assert client.get("/events").status_code == 303  # not signed in: to the sign-in page
    sign_in(client, "watcher")

    def page(**asked: str) -> str:
        got = client.get("/events?" + urlencode(asked))
        assert got.status_code == 200, got.text[-2000:]
        return str(got.text)

    def expect(events: list[Event]) -> list[tuple[str, int, str, str]]:
        return newest_first(events)[:fleet.EVENTS_PAGE]

    first = page()
    assert 'data-nav="events"' in first
    assert "/never/sent/" not in first  # metadata only: no snapshot left any site
    assert shown(first) == expect(everything)

    ashby = page(group="Ashby")
    assert shown(ashby) == expect([e for e in everything if e[0] in ("north-school",
                                                                     "east-school")])
    assert "From (Europe/Oslo)" in ashby  # both Ashby sites report Oslo
    assert "From (UTC)" in first  # the fleet has two zones: typed in UTC

    south = page(site="south-school")
    assert shown(south) == expect([e for e in everything if e[0] == "south-school"])
    assert "From (America/New_York)" in south
    camera = page(site="north-school", camera="cam02")
    assert shown(camera) == expect([e for e in everything
                                    if e[0] == "north-school" and e[2] == "cam02"])
    faces = page(kind="face")
    assert shown(faces) == expect([e for e in everything if e[3] == "face"])
    assert shown(page(group="Ashby", site="south-school")) == []  # not in that group

    # A time range typed in the site's own zone, 24-hour, end excluded.
    north = [e for e in everything if e[0] == "north-school"]
    oslo = SiteZone("Europe/Oslo", ZoneSource.CONFIG)
    lo, hi = sorted(e[4] for e in north)[3], sorted(e[4] for e in north)[8]
    ranged = page(site="north-school", start=oslo.text(lo), end=oslo.text(hi))
    assert shown(ranged) == expect([e for e in north if lo <= e[4] < hi])
    assert len(shown(ranged)) == 5
    newest = max(north, key=lambda e: e[4])
    assert oslo.text(newest[4], zone=True) in page(site="north-school")
    # The same range written with an explicit offset means the same instants.
    utc = SiteZone("UTC", ZoneSource.CONFIG)
    same = page(site="north-school", start=utc.text(lo).replace(" ", "T") + "Z",
                end=utc.text(hi).replace(" ", "T") + "+00:00")
    assert shown(same) == shown(ranged)

    # Pages: every event of the busy site once, newest first, however many share a start.
    busy = [e for e in everything if e[0] == "busy-school"]
    seen: list[tuple[str, int, str, str]] = []
    target = "/events?" + urlencode({"site": "busy-school"})
    while target:
        got = client.get(target)
        assert got.status_code == 200
        seen += shown(got.text)
        more = re.search(r'<a id="older" href="([^"]+)"', got.text)
        target = more.group(1).replace("&amp;", "&") if more else ""
    assert seen == newest_first(busy)
    assert len(busy) > 2 * fleet.EVENTS_PAGE

    # Bad input: refused with the reason, never a 500 and never a guess.
    for asked, reason in (({"start": "yesterday"}, "is not a time"),
                          ({"start": "2026-13-01 10:00"}, "is not a time"),
                          ({"kind": "dancing"}, "is not one of"),
                          ({"start": "2026-03-02 10:00", "end": "2026-03-01 10:00"},
                           "not after its start"),
                          ({"before": "x:y"}, "is not a page key"),
                          ({"camera": "c" * 500}, "longer than")):
        got = client.get("/events?" + urlencode(asked))
        assert got.status_code == 400, (asked, got.status_code)
        assert reason in got.text, (asked, got.text[-1500:])

    # An inspector's role does not hold events.view: refused, on record, and no menu entry.
    client.post("/api/auth/logout", headers={"X-CSRF-Token": client.cookies["custodes_csrf"]})
    sign_in(client, "inspector")
    assert client.get("/events").status_code == 403
    assert 'data-nav="events"' not in client.get("/").text
    with accounts.store.read() as conn:
        refused = [(r[0], r[1]) for r in conn.execute(text(
            "SELECT actor, target FROM audit_log WHERE action = 'access' "
            "AND outcome = 'refused'"))]
    assert ("inspector", "/events") in refused

    # A node account limited to some cameras: "cam01" names no site's camera on the hub.
    client.post("/api/auth/logout", headers={"X-CSRF-Token": client.cookies["custodes_csrf"]})
    sign_in(client, "limited")
    denied = client.get("/events")
    assert denied.status_code == 403
    assert "limited to some cameras" in denied.text


def test_the_overview_sums_count_each_minute_once(hub: Hub, tmp_path: Path) -> None:
    """The hourly sums and the gaps the pages read (migration 0002) equal what summing every
    minute gives, for minutes delivered twice too."""
    from custodes.keys import NodeKeys  # noqa: PLC0415

    keys = NodeKeys.load_or_create(tmp_path / "keys")
    hub.enrol("rollup-school", "Calder", keys.public_pem)
    rng = random.Random(7)
    now = time.time()
    first = int(now // 60) - 30 * 60
    minutes = [Message("rollup-school", Stream.COVERAGE, m, {"cameras": {
        cam: rng.choice([60.0, 60.0, 60.0, 59.5, 42.25, 0.0]) for cam in ("cam01", "cam02")}})
        for m in range(first, int(now // 60) - 1)]
    batch = [Received(m.subject, m.encode()) for m in minutes]
    again = rng.sample(batch, 200)  # delivered twice: a lost ack, a restarted hub
    with db.connect(hub.db_url) as conn:
        write_batch(conn, batch[:900])
        conn.commit()
        write_batch(conn, batch[900:] + again)
        conn.commit()
    site = "rollup-school"
    hourly = q(hub, "SELECT hour, seconds, camera_minutes FROM coverage_hourly "
               "WHERE site = %s ORDER BY hour", site)
    naive = q(hub, "SELECT c.seq / 60, sum(e.value::numeric), count(*) FROM coverage c, "
              "jsonb_each_text(c.cameras) e WHERE c.site = %s GROUP BY 1 ORDER BY 1", site)
    assert [(h, int(n)) for h, _, n in hourly] == [(h, int(n)) for h, _, n in naive]
    assert all(abs(a[1] - float(b[1])) < 1e-6 for a, b in zip(hourly, naive, strict=True))
    gaps = q(hub, "SELECT minute, camera, seconds FROM coverage_gaps WHERE site = %s "
             "ORDER BY 1, 2", site)
    expected = sorted((m.seq, cam, s) for m in minutes for cam, s in m.body["cameras"].items()
                      if s < 55)
    assert gaps == expected
    assert gaps  # the data has gaps: the comparison above compared something
    with db.connect(hub.db_url) as conn:
        row = fleet.sites(conn, 120, site, now=now)[0]
        detail = fleet.site_detail(conn, site)
    window = [s for m in minutes if m.seq >= int(now // 60) - fleet.DAY_MINUTES
              for s in m.body["cameras"].values()]
    assert row.coverage_24h == pytest.approx(sum(window) / (60 * len(window)))
    assert [(g["minute"] // 60, g["camera"]) for g in detail["gaps"]] == [
        (m, c) for m, c, _ in sorted(expected, key=lambda g: (-g[0], g[1]))[:50]]


def test_hub_user_commands(hub: Hub, tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    """`custodes hub user`: the node's accounts for the hub, passwords printed once and
    changed at the first sign-in, the two-person rule for an administrator."""
    folder = tmp_path / "hub-data"
    runner = CliRunner()

    def hub_user(*args: str, user: str = "ops1") -> tuple[int, str]:
        monkeypatch.setenv("LOGNAME", user)  # the local account the command acts as
        done = runner.invoke(app, ["hub", "user", *args, "--data", str(folder)])
        return done.exit_code, done.output

    code, out = hub_user("list")  # a hub without users gets its admin, as at its first start
    assert code == 0, out
    assert re.search(r"password for admin: \S{20}", out)
    code, out = hub_user("add", "ana", "--role", "viewer")
    assert code == 0, out
    found = re.search(r"password for ana: (\S+)", out)
    assert found is not None, out
    first_password = found.group(1)
    code, out = hub_user("list")
    assert "ana" in out
    assert "viewer" in out
    assert "must choose a password" in out

    accounts = HubAccounts.open(folder)
    try:
        client = TestClient(create_hub_app(hub, accounts), follow_redirects=False)
        html = {"Accept": "text/html"}
        assert client.post("/api/auth/login", json={
            "name": "ana", "password": first_password}).status_code == 200
        forced = client.get("/", headers=html)  # nothing but the password page until then
        assert forced.status_code == 303
        assert forced.headers["location"].startswith("/account/password")
        changed = client.post("/api/auth/password", json={
            "old_password": first_password, "new_password": PASSWORD},
            headers={"X-CSRF-Token": client.cookies["custodes_csrf"]})
        assert changed.status_code == 200, changed.text
        assert client.get("/", headers=html).status_code == 200

        code, out = hub_user("disable", "ana")
        assert code == 0, out
        assert client.get("/", headers=html).status_code == 303  # her session ended
        assert client.post("/api/auth/login", json={
            "name": "ana", "password": PASSWORD}).status_code == 401
        assert hub_user("enable", "ana")[0] == 0
        code, out = hub_user("passwd", "ana")
        assert code == 0, out
        found = re.search(r"password for ana: (\S+)", out)
        assert found is not None
        assert found.group(1) != first_password
        assert client.post("/api/auth/login", json={
            "name": "ana", "password": PASSWORD}).status_code == 401  # the old one is gone
        assert client.post("/api/auth/login", json={
            "name": "ana", "password": found.group(1)}).status_code == 200
        assert client.get("/", headers=html).status_code == 303  # to be changed again

        # An administrator waits for a second one: not the account that asked.
        code, out = hub_user("add", "boss", "--role", "admin")
        assert code == 0, out
        grant = re.search(r"grant (\d+): add boss \(admin\) waits", out)
        assert grant is not None, out
        assert Users(accounts.store).get("boss") is None
        code, out = hub_user("confirm", grant.group(1))
        assert code == 3, out
        assert "different administrator" in out
        code, out = hub_user("confirm", grant.group(1), user="ops2")
        assert code == 0, out
        assert re.search(r"password for boss: \S+", out)
        boss = Users(accounts.store).get("boss")
        assert boss is not None
        assert boss.role is Role.ADMIN
        assert boss.must_change_password

        assert hub_user("add", "bad name", "--role", "viewer")[0] == 2
        assert hub_user("add", "cleo", "--role", "emperor")[0] == 2
        code, out = hub_user("disable", "nobody")
        assert code == 2
        assert "no user named" in out
        with accounts.store.read() as conn:
            actions = {str(r[0]) for r in conn.execute(text("SELECT action FROM audit_log"))}
        assert {"user.add", "user.update", "user.reset_password", "user.grant_request",
                "user.grant_confirm"} <= actions
    finally:
        accounts.store.close()


def coverage_minutes(site: str, minutes: range, rng: random.Random) -> list[Message]:
    return [Message(site, Stream.COVERAGE, m, {"cameras": {
        cam: rng.choice([60.0, 60.0, 59.5, 42.25, 0.0]) for cam in ("cam01", "cam02")}})
        for m in minutes]


def deliver(hub: Hub, messages: list[Message]) -> None:
    with db.connect(hub.db_url) as conn:
        write_batch(conn, [Received(m.subject, m.encode()) for m in messages])
        conn.commit()


Figures = tuple[list[tuple[Any, ...]], float | None, list[dict[str, Any]], list[tuple[Any, ...]]]


def figures(hub: Hub, site: str, now: float) -> Figures:
    """What the pages show of a site's coverage: its hourly sums, its overview row, its gaps."""
    with db.connect(hub.db_url) as conn:
        row = fleet.sites(conn, 120, site, now=now)[0]
        gaps = fleet.site_detail(conn, site)["gaps"]
    hourly = q(hub, "SELECT hour, seconds, camera_minutes FROM coverage_hourly WHERE site = %s "
               "ORDER BY hour", site)
    every_gap = q(hub, "SELECT minute, camera, seconds FROM coverage_gaps WHERE site = %s "
                  "ORDER BY 1, 2", site)
    return hourly, row.coverage_24h, gaps, every_gap


def test_compaction_keeps_the_figures_and_counts_a_late_minute_once(
        hub: Hub, tmp_path: Path) -> None:
    """Minute rows past the window are deleted; the hourly sums, the overview and the site's
    gaps read the same afterwards; a minute delivered again for a compacted hour is not
    counted twice, and one never received before is counted once."""
    from custodes.hub import compaction  # noqa: PLC0415
    from custodes.keys import NodeKeys  # noqa: PLC0415

    site = "old-school"
    hub.enrol(site, "Dunmore", NodeKeys.load_or_create(tmp_path / "keys").public_pem)
    rng = random.Random(3)
    now = time.time()
    old_hour = int((now - 40 * 86400) // 3600)
    hole = old_hour * 60 + 17  # a minute of an old hour the site has not sent yet
    old = [m for m in coverage_minutes(site, range(old_hour * 60, old_hour * 60 + 180), rng)
           if m.seq != hole]
    recent = coverage_minutes(site, range(int(now // 60) - 26 * 60, int(now // 60) - 1), rng)
    deliver(hub, old + recent)
    before = figures(hub, site, now)
    assert before[3]  # the data has gaps in both periods: the comparison compares something

    with db.connect(hub.db_url) as conn:
        bounded = compaction.compact(conn, now=now, budget=50, batch=20)
        assert not bounded.done  # a pass stops at its budget: more at the next one
        assert bounded.deleted <= 50
        compaction.compact(conn, now=now)
        again = compaction.compact(conn, now=now)
    assert again.deleted == 0  # idempotent: nothing left to do
    assert q(hub, "SELECT count(*) FROM coverage WHERE site = %s AND seq < %s", site,
             old_hour * 60 + 180)[0][0] == 0
    assert q(hub, "SELECT count(*) FROM coverage WHERE site = %s", site)[0][0] == len(recent)
    assert figures(hub, site, now) == before

    # The old minutes delivered again (an outbox replayed): not counted a second time.
    deliver(hub, rng.sample(old, 40) + rng.sample(recent, 40))
    assert figures(hub, site, now) == before
    # The minute the site had never sent: counted once, however often it comes.
    late = coverage_minutes(site, range(hole, hole + 1), random.Random(9))[0]
    late.body["cameras"] = {"cam01": 30.0, "cam02": 60.0}
    deliver(hub, [late])
    deliver(hub, [late])
    hourly = {h: (s, n) for h, s, n in figures(hub, site, now)[0]}
    was = {h: (s, n) for h, s, n in before[0]}
    assert hourly[old_hour] == (was[old_hour][0] + 90.0, was[old_hour][1] + 2)
    assert {h: v for h, v in hourly.items() if h != old_hour} == {
        h: v for h, v in was.items() if h != old_hour}
    with db.connect(hub.db_url) as conn:
        # The replayed rows went back into the table (not into the sums): deleted again.
        assert compaction.compact(conn, now=now).deleted == 40 + 1
    deliver(hub, [late])  # and after that minute was compacted too
    assert {h: (s, n) for h, s, n in figures(hub, site, now)[0]} == hourly
    assert (hole, "cam01", 30.0) in figures(hub, site, now)[3]


def test_a_user_limited_to_a_municipality_sees_only_its_sites(
        hub: Hub, sites: dict[str, ZonedSite], accounts: HubAccounts) -> None:
    """Attacks of a user of Ashby on Brent's sites: the site page, the events through every
    filter, the alarms, the metrics. Without groups a user sees every site."""
    from custodes.hub import scope  # noqa: PLC0415

    users = Users(accounts.store)
    if users.get("ashby-admin") is None:
        users.add("ashby-admin", Role.ADMIN, PASSWORD)  # system.view for /metrics too
    scope.set_groups(accounts.store, accounts.audit, "test", "ashby-admin", ["Ashby"])
    ashby = {n for n, s in sites.items() if n in ("north-school", "east-school")}
    brent = set(sites) - ashby
    with db.connect(hub.db_url) as conn:
        for name in brent:  # an open alarm at each Brent site
            conn.execute("INSERT INTO alarms (site, kind, raised_at, detail) "
                         "VALUES (%s, 'silent', %s, 'test')", (name, time.time()))
        conn.commit()
    client = TestClient(create_hub_app(hub, accounts), follow_redirects=False)
    sign_in(client, "ashby-admin")

    overview = client.get("/").text
    listed = set(re.findall(r'<tr data-site="([^"]+)"', overview))
    assert ashby <= listed
    assert not listed & brent
    assert "south-school" not in overview  # nor in the open alarms above the table

    for name in brent:
        refused = client.get(f"/sites/{name}")
        assert refused.status_code == 403
    # A name no site has reads as another municipality's site: no probing for names.
    unknown = client.get("/sites/no-such-school")
    assert unknown.status_code == 403
    assert unknown.text.count("may see") == refused.text.count("may see")
    assert client.get("/sites/north-school").status_code == 200
    with accounts.store.read() as conn:
        audited = {str(r[0]) for r in conn.execute(text(
            "SELECT target FROM audit_log WHERE actor = 'ashby-admin' "
            "AND outcome = 'refused'"))}
    assert {f"/sites/{n}" for n in brent} <= audited

    everything = [e for s in sites.values() for e in site_events(s)]
    mine = newest_first([e for e in everything if e[0] in ashby])[:fleet.EVENTS_PAGE]
    assert shown(client.get("/events").text) == mine
    for asked in ({"group": "Brent"}, {"site": "south-school"},
                  {"site": "busy-school", "camera": "cam01"}, {"kind": "face", "group": "Brent"},
                  {"before": f"{time.time()}:busy-school:999"}):
        got = client.get("/events?" + urlencode(asked))
        assert got.status_code == 200, (asked, got.text[-500:])
        assert not {r[0] for r in shown(got.text)} & brent, asked
    assert "busy-school" not in client.get("/events").text  # not even in the filter's choices

    alarms_page = client.get("/alarms").text
    assert not any(f"/sites/{n}" in alarms_page for n in brent)

    metrics = dict(line.split(" ") for line in client.get("/metrics").text.splitlines()
                   if not line.startswith("#"))
    assert float(metrics["custodes_hub_sites"]) == len(ashby)
    assert float(metrics["custodes_hub_events"]) == len([e for e in everything
                                                         if e[0] in ashby])
    assert "custodes_hub_ingested_total" not in metrics  # the whole hub's counters

    # Without groups: every site, as before this limit existed.
    scope.set_groups(accounts.store, accounts.audit, "test", "ashby-admin", None)
    every = set(re.findall(r'<tr data-site="([^"]+)"', client.get("/").text))
    assert set(sites) <= every
    assert client.get("/sites/south-school").status_code == 200
    whole = dict(line.split(" ") for line in client.get("/metrics").text.splitlines()
                 if not line.startswith("#"))
    assert float(whole["custodes_hub_events"]) == float(q(
        hub, "SELECT count(*) FROM events")[0][0])
    with db.connect(hub.db_url) as conn:
        conn.execute("UPDATE alarms SET cleared_at = %s WHERE detail = 'test'", (time.time(),))
        conn.commit()


def test_hub_user_groups_on_the_command_line(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """`custodes hub user add NAME --role R --group G` (repeatable), `user groups`, `list`."""
    from custodes.hub import scope  # noqa: PLC0415

    folder = tmp_path / "hub-data"
    runner = CliRunner()
    monkeypatch.setenv("LOGNAME", "ops1")

    def hub_user(*args: str) -> tuple[int, str]:
        done = runner.invoke(app, ["hub", "user", *args, "--data", str(folder)])
        return done.exit_code, done.output

    code, out = hub_user("add", "carla", "--role", "viewer", "--group", "Calder",
                         "--group", "Ashby")
    assert code == 0, out
    code, out = hub_user("list")
    assert "Ashby, Calder" in out
    assert hub_user("add", "dora", "--role", "viewer", "--group", " ")[0] == 2
    assert hub_user("groups", "nobody", "--group", "Ashby")[0] == 2
    accounts = HubAccounts.open(folder)
    try:
        assert scope.scope_of(accounts.store, "carla").groups == frozenset({"Ashby", "Calder"})
        assert Users(accounts.store).get("dora") is None  # refused before being created
        assert hub_user("groups", "carla", "--group", "Brent")[0] == 0
        assert scope.scope_of(accounts.store, "carla").groups == frozenset({"Brent"})
        assert hub_user("groups", "carla")[0] == 0
        assert scope.scope_of(accounts.store, "carla").groups is None  # every group
        with accounts.store.read() as conn:
            changes = [str(r[0]) for r in conn.execute(text(
                "SELECT detail FROM audit_log WHERE action = 'user.update' "
                "AND target = 'carla'"))]
        assert len(changes) == 3
        assert "Calder" in changes[0]
    finally:
        accounts.store.close()


def test_an_administrator_sets_a_users_municipalities_on_the_users_page(
        hub: Hub, sites: dict[str, ZonedSite], accounts: HubAccounts) -> None:
    """`/users` and `PUT /api/users/{name}/groups`, under the command line's rule: an
    administrator narrows a user's views; a viewer, a request without its CSRF token, an
    administrator on their own groups and one limited to a municipality reaching beyond it
    are refused; every change and refusal is in the hub's audit log."""
    from custodes.api.deps import CSRF_HEADER  # noqa: PLC0415
    from custodes.hub import scope  # noqa: PLC0415

    users = Users(accounts.store)
    for name, role in (("hub-admin", Role.ADMIN), ("brent-admin", Role.ADMIN),
                       ("clerk", Role.VIEWER), ("brent-clerk", Role.VIEWER)):
        if users.get(name) is None:
            users.add(name, role, PASSWORD)
    scope.set_groups(accounts.store, accounts.audit, "test", "brent-admin", ["Brent"])
    scope.set_groups(accounts.store, accounts.audit, "test", "brent-clerk", ["Brent"])
    ashby = {"north-school", "east-school"}
    assert ashby < set(sites)
    app_ = create_hub_app(hub, accounts)

    def signed_in(name: str) -> tuple[TestClient, dict[str, str]]:
        client = TestClient(app_, follow_redirects=False)
        me = client.post("/api/auth/login", json={"name": name, "password": PASSWORD})
        assert me.status_code == 200, me.text
        return client, {CSRF_HEADER: me.json()["csrf"]}

    def put(client: TestClient, user: str, body: object, **headers: str) -> Any:
        return client.put(f"/api/users/{user}/groups", json=body, headers=headers)

    def listed(client: TestClient) -> set[str]:
        return set(re.findall(r'<tr data-site="([^"]+)"', client.get("/").text))

    clerk, clerk_csrf = signed_in("clerk")
    assert set(sites) <= listed(clerk)  # no groups yet: every site
    # A viewer: no page, no change (with a valid CSRF token), no menu entry.
    assert clerk.get("/users").status_code == 403
    assert put(clerk, "clerk", {"groups": ["Brent"]}, **clerk_csrf).status_code == 403
    assert 'href="/users"' not in clerk.get("/").text

    admin, admin_csrf = signed_in("hub-admin")
    page = admin.get("/users")
    assert page.status_code == 200
    assert 'href="/users"' in page.text
    assert '<tr data-user="clerk">' in page.text
    for group in ("Ashby", "Brent"):  # the enrolled municipalities are offered
        assert f'value="{group}"' in page.text
    # A forged request (no CSRF token: another site's form) changes nothing.
    forged = put(admin, "clerk", {"groups": ["Ashby"]})
    assert forged.status_code == 403
    assert "CSRF" in forged.json()["detail"]
    assert scope.scope_of(accounts.store, "clerk").groups is None

    done = put(admin, "clerk", {"groups": ["Ashby"]}, **admin_csrf)
    assert (done.status_code, done.json()) == (200, {"name": "clerk", "groups": ["Ashby"]})
    # The clerk's views narrow at once, on their existing session.
    assert listed(clerk) == ashby
    assert clerk.get("/sites/south-school").status_code == 403
    assert clerk.get("/sites/north-school").status_code == 200
    assert "Ashby" in admin.get("/users").text.split('<tr data-user="clerk">')[1]

    # Bad input: 4xx with the reason, nothing changed.
    assert put(admin, "clerk", {"groups": [" "]}, **admin_csrf).status_code == 400
    assert put(admin, "clerk", {"groups": ["x" * 201]}, **admin_csrf).status_code == 422
    assert put(admin, "clerk", {"groups": [], "role": "admin"}, **admin_csrf).status_code == 422
    assert put(admin, "nobody", {"groups": ["Ashby"]}, **admin_csrf).status_code == 404
    assert scope.scope_of(accounts.store, "clerk").groups == frozenset({"Ashby"})
    # Nobody changes their own (a limited administrator would widen themselves).
    own = put(admin, "hub-admin", {"groups": ["Brent"]}, **admin_csrf)
    assert own.status_code == 403
    assert "their own" in own.json()["detail"]

    # An administrator limited to Brent: sees and changes Brent's users only, to Brent only.
    brent, brent_csrf = signed_in("brent-admin")
    rows = set(re.findall(r'<tr data-user="([^"]+)"', brent.get("/users").text))
    assert rows == {"brent-admin", "brent-clerk"}
    assert 'value="Ashby"' not in brent.get("/users").text
    for user, body in (("clerk", {"groups": ["Brent"]}),  # another municipality's user
                       ("hub-admin", {"groups": ["Brent"]}),  # one who sees everything
                       ("brent-clerk", {"groups": None}),  # widen to every municipality
                       ("brent-clerk", {"groups": ["Brent", "Ashby"]}),
                       ("brent-admin", {"groups": None}),  # themselves
                       ("nobody", {"groups": ["Brent"]})):  # as a user beyond theirs
        r = put(brent, user, body, **brent_csrf)
        assert r.status_code == 403, (user, body, r.text)
    assert scope.scope_of(accounts.store, "brent-clerk").groups == frozenset({"Brent"})
    assert scope.scope_of(accounts.store, "brent-admin").groups == frozenset({"Brent"})
    assert put(brent, "brent-clerk", {"groups": ["Brent"]}, **brent_csrf).status_code == 200

    with accounts.store.read() as conn:
        log = [(str(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4])) for r in conn.execute(
            text("SELECT actor, action, target, outcome, detail FROM audit_log "
                 "WHERE actor IN ('clerk', 'hub-admin', 'brent-admin') ORDER BY seq"))]
    changes = [e for e in log if e[1] == "user.update" and e[3] == "ok"]
    assert [(a, t) for a, _, t, _, _ in changes] == [("hub-admin", "clerk"),
                                                     ("brent-admin", "brent-clerk")]
    assert "Ashby" in changes[0][4]
    refused = [(a, act, t) for a, act, t, outcome, _ in log if outcome == "refused"]
    assert ("clerk", "access", "/users") in refused
    assert ("clerk", "access", "/api/users/clerk/groups") in refused
    assert ("hub-admin", "access", "/api/users/clerk/groups") in refused  # the forgery
    assert ("hub-admin", "user.update", "hub-admin") in refused
    assert len([r for r in refused if r[0] == "brent-admin"]) == 6
    scope.set_groups(accounts.store, accounts.audit, "test", "clerk", None)
