"""The hub with its real parts: nats-server (JetStream) and PostgreSQL started by the tests,
light sites (real node databases, keys and audit logs) published by the real uplink, a TCP
proxy between a site and the hub that cuts the link, and the witness's alarms."""

from __future__ import annotations

import asyncio
import gc
import random
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from custodes.audit.actions import Action
from custodes.auth.roles import Role
from custodes.auth.users import Users
from custodes.cli import app
from custodes.hub.alarms import AlarmKind
from custodes.hub.demo import LightSite
from custodes.hub.demo_nodes import start_real_node
from custodes.hub.service import Hub
from custodes.hub.web import HubAccounts, create_hub_app
from custodes.keys import NodeKeys
from custodes.uplink.outbox import Outbox
from custodes.uplink.wire import Message, Stream, inbox_prefix, subject
from custodes.uplink.worker import ACK_TIMEOUT
from hub_env import (
    NATS_SOCKET_WARNINGS,
    Proxy,
    hub_audit,
    new_site,
    open_alarms,
    q,
    running_hub,
    site_audit,
    tls_of,
    wait_for,
)

with warnings.catch_warnings():
    # Starlette deprecates driving its test client with httpx; the replacement is not installed.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

pytestmark = [pytest.mark.slow, NATS_SOCKET_WARNINGS]


@pytest.fixture(autouse=True)
def _collect_after() -> Iterator[None]:
    yield
    gc.collect()


@pytest.fixture(scope="module")
def hub() -> Iterator[Hub]:
    with running_hub() as h:
        yield h


def test_a_cut_link_loses_nothing_and_counts_nothing_twice(hub: Hub, tmp_path: Path) -> None:
    rng = random.Random(1)
    proxy = Proxy(int(hub.nats_urls[0].rsplit(":", 1)[1]))
    cut_site, _ = new_site(hub, tmp_path, "cut-school", url=proxy.url)
    steady, _ = new_site(hub, tmp_path, "steady-school", group="Brent")
    try:
        for _ in range(3):
            cut_site.activity(rng)
            steady.activity(rng)
        wait_for("the first reports", lambda: hub_audit(hub, "cut-school")
                 == site_audit(cut_site) and hub_audit(hub, "steady-school")
                 == site_audit(steady))

        proxy.cut()
        for _ in range(10):  # the site works on while the link is down
            cut_site.activity(rng)
            steady.activity(rng)
        # Longer than the hub waits before calling a site silent.
        wait_for("the cut site called silent", lambda: AlarmKind.SILENT.value
                 in open_alarms(hub, "cut-school"), timeout=60)
        assert len(hub_audit(hub, "cut-school")) < len(site_audit(cut_site))
        assert cut_site.uplink is not None
        assert cut_site.uplink.outbox.backlog()["audit"] > 0
        assert AlarmKind.SILENT.value not in open_alarms(hub, "steady-school")

        proxy.restore()
        wait_for("the backlog drained", lambda: hub_audit(hub, "cut-school")
                 == site_audit(cut_site), timeout=120)
        wait_for("the silent alarm cleared", lambda: AlarmKind.SILENT.value
                 not in open_alarms(hub, "cut-school"), timeout=30)
        assert cut_site.uplink.outbox.backlog()["audit"] == 0

        # Row by row against the sites' own tables: no gap, nothing twice.
        for site in (cut_site, steady):
            with site.store.read() as conn:
                events = [(int(r[0]), r[1], float(r[2])) for r in conn.execute(text(
                    "SELECT id, camera, start FROM events ORDER BY id"))]
                states = [(int(r[0]), r[1], r[2]) for r in conn.execute(text(
                    "SELECT id, camera, state FROM camera_states ORDER BY id"))]
                checkpoints = [(int(r[0]), int(r[1]), r[2]) for r in conn.execute(text(
                    "SELECT id, seq, hash FROM audit_checkpoints ORDER BY id"))]
            assert events
            wait_for("events and states", lambda s=site, e=events, st=states: [  # type: ignore[misc]
                (int(r[0]), r[1], float(r[2])) for r in q(
                    hub, "SELECT seq, camera, start_at FROM events WHERE site = %s ORDER BY seq",
                    s.name)] == e and [(int(r[0]), r[1], r[2]) for r in q(
                    hub, "SELECT seq, camera, state FROM camera_states WHERE site = %s "
                    "ORDER BY seq", s.name)] == st)
            held = [(int(r[0]), int(r[1]), r[2], r[3], r[4]) for r in q(
                hub, "SELECT seq, entry_seq, hash, signature_ok, matched FROM checkpoints "
                "WHERE site = %s ORDER BY seq", site.name)]
            assert [(a, b, c) for a, b, c, _, _ in held] == checkpoints
            assert all(ok and matched for _, _, _, ok, matched in held)
            verified = q(hub, "SELECT audit_verified_seq, chain_broken_at FROM sites "
                         "WHERE name = %s", site.name)[0]
            assert verified == (site_audit(site)[-1][0], None)
            assert open_alarms(hub, site.name) == set()
    finally:
        cut_site.close()
        steady.close()
        proxy.close()


def test_a_link_that_swallows_everything_does_not_hold_the_site_s_stop(
        hub: Hub, tmp_path: Path) -> None:
    """A blackholed link never acks: the uplink waits ACK_TIMEOUT for an ack while it runs,
    but a node that stops must not wait with it (its stop has 10 s in all): a stop gives up
    the waits at once, and what was not acknowledged goes at the next start."""
    rng = random.Random(3)
    proxy = Proxy(int(hub.nats_urls[0].rsplit(":", 1)[1]))
    site, _ = new_site(hub, tmp_path, "hole-school", url=proxy.url)
    try:
        site.activity(rng)
        uplink = site.uplink
        assert uplink is not None
        # held by the hub, and their acks taken by the uplink (the hub can write a message
        # before the uplink has moved its cursor: the ack reaches both at once)
        wait_for("the first reports", lambda: hub_audit(hub, site.name) == site_audit(site)
                 and uplink.outbox.backlog()["audit"] == 0)
        proxy.blackhole()
        sent = uplink.status.sent
        site.activity(rng)  # a commit: a pass publishes it and waits for acks that never come
        time.sleep(2.0)
        assert uplink.status.sent == sent
        assert uplink.outbox.backlog()["audit"] > 0
        thread = uplink._thread
        assert thread is not None

        uplink.stop(timeout=ACK_TIMEOUT / 2)

        assert not thread.is_alive(), "the stop waited for acks"
    finally:
        site.close()
        proxy.close()


def test_a_message_delivered_twice_is_counted_once(hub: Hub, tmp_path: Path) -> None:
    site, password = new_site(hub, tmp_path, "twice-school")
    try:
        site.activity(random.Random(2))
        wait_for("delivery", lambda: hub_audit(hub, site.name) == site_audit(site))
        first = Outbox(site.store, site.name, site.cameras).pending(Stream.EVENT, 1)
        audit_first = Message(site.name, Stream.AUDIT, 1, _audit_body(site, 1))
        before = hub.counters.duplicates
        rows = len(hub_audit(hub, site.name))

        async def resend() -> None:
            nc = await nats.connect(hub.nats_urls[0], user=site.name, password=password,
                                    inbox_prefix=inbox_prefix(site.name), **tls_of(hub))
            js = nc.jetstream()
            # Other message ids than the uplink's: the server keeps them, the hub must not.
            for m in [audit_first, *first]:
                await js.publish(m.subject, m.encode(), headers={"Nats-Msg-Id": f"x-{m.msg_id}"})
            await nc.close()

        asyncio.run(resend())
        wait_for("the copies seen", lambda: hub.counters.duplicates >= before + 1 + len(first))
        assert len(hub_audit(hub, site.name)) == rows
        assert open_alarms(hub, site.name) == set()
    finally:
        site.close()


def _audit_body(site: LightSite, seq: int) -> dict[str, Any]:
    return Outbox(site.store, site.name, site.cameras)._rows(  # one entry, as the uplink sends it
        site.store.engine.connect(), Stream.AUDIT, seq - 1, 1, time.time())[0][1]


def test_a_site_cannot_speak_for_another(hub: Hub, tmp_path: Path) -> None:
    victim, _ = new_site(hub, tmp_path, "victim-school", connect=False)
    intruder, password = new_site(hub, tmp_path, "intruder-school", connect=False)
    errors: list[str] = []

    async def attempt() -> str:
        async def on_error(exc: Exception) -> None:
            errors.append(str(exc))

        nc = await nats.connect(hub.nats_urls[0], user=intruder.name, password=password,
                                inbox_prefix=inbox_prefix(intruder.name), error_cb=on_error,
                                **tls_of(hub))
        js = nc.jetstream()
        forged = Message(victim.name, Stream.AUDIT, 1, _audit_body(victim, 1))
        try:
            await js.publish(subject(victim.name, Stream.AUDIT), forged.encode(), timeout=3)
        except Exception as exc:
            return repr(exc)
        finally:
            await nc.close()
        return "accepted"

    try:
        outcome = asyncio.run(attempt())
        assert outcome != "accepted"
        assert any("permissions violation" in e.lower() for e in errors), errors
        time.sleep(1)
        assert hub_audit(hub, victim.name) == []
    finally:
        victim.close()
        intruder.close()


def test_a_cut_back_log_is_flagged(hub: Hub, tmp_path: Path) -> None:
    site, _ = new_site(hub, tmp_path, "cut-back-school")
    rng = random.Random(3)
    try:
        for _ in range(4):
            site.activity(rng)
        wait_for("delivery", lambda: hub_audit(hub, site.name) == site_audit(site))
        head = site_audit(site)[-1][0]

        def cut_back(conn: Any) -> None:  # someone with the database file drops its tail
            conn.execute(text("DROP TRIGGER audit_log_no_delete"))
            conn.execute(text("DELETE FROM audit_log WHERE seq > :s"), {"s": head - 4})

        site.store.write(cut_back)
        wait_for("the truncation alarm", lambda: AlarmKind.TRUNCATED.value
                 in open_alarms(hub, site.name))
        for _ in range(3):  # and writes on under the old numbers
            site.audit.record("caretaker", Action.PLAYBACK, "cam01")
        wait_for("the rewrite alarm", lambda: AlarmKind.REWRITTEN.value
                 in open_alarms(hub, site.name))
        # The hub keeps what it received first.
        assert [s for s, _ in hub_audit(hub, site.name)][-1] == head
        result = CliRunner().invoke(app, ["hub", "verify", "--data", str(hub.settings.data)])
        assert result.exit_code == 1, result.output
        assert "cut-back-school: FAILED" in result.output
        assert "arrived again with another hash" in result.output
    finally:
        site.close()


def test_a_rewritten_entry_breaks_the_chain(hub: Hub, tmp_path: Path) -> None:
    site, password = new_site(hub, tmp_path, "rewrite-school", connect=False)
    try:
        site.activity(random.Random(4))
        for _ in range(6):
            site.audit.record("caretaker", Action.PLAYBACK, "cam02")

        def rewrite(conn: Any) -> None:  # an entry changed before the uplink sent it
            conn.execute(text("DROP TRIGGER audit_log_no_update"))
            conn.execute(text("UPDATE audit_log SET actor = 'nobody' WHERE seq = 3"))

        site.store.write(rewrite)
        site.connect(hub.nats_urls, password, health_seconds=1, ca=hub.site_ca)
        wait_for("the chain alarm", lambda: AlarmKind.CHAIN_BREAK.value
                 in open_alarms(hub, site.name))
        assert q(hub, "SELECT audit_verified_seq, chain_broken_at FROM sites WHERE name = %s",
                 site.name)[0] == (2, 3)
    finally:
        site.close()


def test_enrolling_again_with_another_key_raises_an_alarm(hub: Hub, tmp_path: Path) -> None:
    keys = NodeKeys.load_or_create(tmp_path / "k1")
    hub.enrol("rekey-school", "Calder", keys.public_pem)
    hub.enrol("rekey-school", "Calder", keys.public_pem)  # a new credential, same key
    assert AlarmKind.KEY_CHANGED.value not in open_alarms(hub, "rekey-school")
    other = NodeKeys.load_or_create(tmp_path / "k2")
    assert hub.enrol("rekey-school", "Calder", other.public_pem).key_changed
    assert AlarmKind.KEY_CHANGED.value in open_alarms(hub, "rekey-school")


def test_add_site_prints_the_uplink_section_and_refuses_a_bad_key(
        hub: Hub, tmp_path: Path) -> None:
    keys = NodeKeys.load_or_create(tmp_path / "keys")
    pub = tmp_path / "signing.pub"
    pub.write_bytes(keys.public_pem)
    runner = CliRunner()
    result = runner.invoke(app, ["hub", "add-site", "cli-school", "--group", "Dunmore",
                                 "--key", str(pub), "--data", str(hub.settings.data)])
    assert result.exit_code == 0, result.output
    assert "uplink:\n  site: cli-school\n" in result.output
    assert "CUSTODES_UPLINK_PASSWORD=" in result.output
    hashed = q(hub, "SELECT password_hash FROM sites WHERE name = %s", "cli-school")[0][0]
    assert hashed.startswith("$2")  # the hub keeps only a bcrypt hash
    bad = tmp_path / "bad.pub"
    bad.write_text("not a key")
    result = runner.invoke(app, ["hub", "add-site", "bad-school", "--group", "Dunmore",
                                 "--key", str(bad), "--data", str(hub.settings.data)])
    assert result.exit_code == 2
    assert "refused" in result.output
    result = runner.invoke(app, ["hub", "add-site", "Bad Name", "--group", "Dunmore",
                                 "--key", str(pub), "--data", str(hub.settings.data)])
    assert result.exit_code == 2


def test_the_fleet_pages_follow_the_nodes_rules(hub: Hub, tmp_path: Path) -> None:
    site, _ = new_site(hub, tmp_path, "page-school", group="Eastleigh")
    try:
        site.activity(random.Random(5))
        wait_for("a health report", lambda: q(
            hub, "SELECT health IS NOT NULL FROM sites WHERE name = %s", site.name)[0][0])
        accounts = HubAccounts.open(tmp_path / "hub-web")
        users = Users(accounts.store)
        users.add("inspector1", Role.INSPECTOR, "inspector-password-1")
        users.add("viewer1", Role.VIEWER, "viewer-password-12")
        client = TestClient(create_hub_app(hub, accounts), follow_redirects=False)

        assert client.get("/").status_code == 303  # not signed in: to the sign-in page
        assert client.get("/login").status_code == 200
        bad = client.post("/api/auth/login", json={"name": "viewer1", "password": "wrong-one"})
        assert bad.status_code == 401
        me = client.post("/api/auth/login", json={"name": "viewer1",
                                                   "password": "viewer-password-12"}).json()
        page = client.get("/")
        assert page.status_code == 200
        assert "Eastleigh" in page.text
        assert 'data-site="page-school"' in page.text
        assert client.get("/sites/page-school").status_code == 200
        assert client.get("/sites/no-such-school").status_code == 404
        assert client.get("/alarms").status_code == 200
        # A viewer may not read the metrics: refused, and on record.
        assert client.get("/metrics").status_code == 403
        # A state-changing request without the session's CSRF token is refused.
        assert client.post("/api/auth/logout").status_code == 403
        assert client.post("/api/auth/logout",
                           headers={"X-CSRF-Token": me["csrf"]}).status_code == 200

        client.post("/api/auth/login", json={"name": "inspector1",
                                             "password": "inspector-password-1"})
        metrics = client.get("/metrics")
        assert metrics.status_code == 200
        sites_line = next(line for line in metrics.text.splitlines()
                          if line.startswith("custodes_hub_sites "))
        assert float(sites_line.split()[1]) >= 1
        with accounts.store.read() as conn:
            actions = [(r[0], r[1]) for r in conn.execute(text(
                "SELECT action, outcome FROM audit_log ORDER BY seq"))]
        assert ("login", "failed") in actions
        assert ("access", "refused") in actions  # the metrics and the CSRF refusals
        accounts.store.close()
    finally:
        site.close()


def test_a_real_node_reports_its_cameras_coverage_and_log(hub: Hub) -> None:
    folder = Path(tempfile.mkdtemp(prefix="custodes-hub-node-"))
    keys = NodeKeys.load_or_create(folder / "keys")  # the node's own key, enrolled first
    password = hub.enrol("real-school", "Fenwick", keys.public_pem).password
    node = start_real_node(folder, "real-school", hub.nats_urls, password, ca=hub.site_ca)
    try:
        wait_for("the cameras online at the hub", lambda: {
            r[0] for r in q(hub, "SELECT camera FROM camera_states WHERE site = %s AND "
                            "state = 'online'", "real-school")} == {"cam01", "cam02"},
                 timeout=120)
        wait_for("a recorded minute", lambda: any(
            seconds > 0 for (cams,) in q(hub, "SELECT cameras FROM coverage WHERE site = %s",
                                         "real-school") for seconds in cams.values()),
                 timeout=180)
        configs = q(hub, "SELECT profile, cameras FROM configs WHERE site = %s", "real-school")
        assert configs == [("school", ["cam01", "cam02"])]
        health = q(hub, "SELECT health FROM sites WHERE name = %s", "real-school")[0][0]
        assert health["node"] == "real-school"
        assert set(health["cameras"]) == {"cam01", "cam02"}
        with node.node.store.read() as conn:
            head = int(conn.execute(text("SELECT max(seq) FROM audit_log")).scalar_one())
        wait_for("the node's log witnessed", lambda: q(
            hub, "SELECT audit_verified_seq FROM sites WHERE name = %s",
            "real-school")[0][0] >= head)
        assert open_alarms(hub, "real-school") == set()
    finally:
        node.stop()
        shutil.rmtree(folder, ignore_errors=True)
