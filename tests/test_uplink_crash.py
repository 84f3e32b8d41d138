"""A site killed with -9 while its uplink publishes, then started again: it resumes from the
last acknowledged message, and the hub holds every row once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import text

from custodes.hub.service import Hub
from custodes.keys import NodeKeys
from custodes.store.db import Store
from hub_env import NATS_SOCKET_WARNINGS, running_hub, wait_for

pytestmark = [pytest.mark.slow, NATS_SOCKET_WARNINGS]

# A site in its own process: the real uplink over a real node database, writing bursts.
SITE = """
import random, sys, time
from pathlib import Path
from custodes.hub.demo import LightSite
folder, url, password, seconds = Path(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
ca = Path(sys.argv[5]).read_text()  # the hub's CA: its server speaks TLS only
site = LightSite.create(folder, "killed-school", cameras=3, checkpoint_every=10)
site.connect([url], password, health_seconds=1, ca=ca)
rng = random.Random()
end = time.monotonic() + seconds
while time.monotonic() < end:
    for _ in range(5):
        site.activity(rng)
    time.sleep(0.1)
site.close()
"""


@pytest.fixture
def hub() -> Iterator[Hub]:
    with running_hub(silent_after_seconds=60) as h:
        yield h


def test_a_site_killed_mid_publish_resumes_without_gap_or_double(hub: Hub) -> None:
    folder = hub.settings.data.parent / "site"
    keys = NodeKeys.load_or_create(folder / "keys")
    password = hub.enrol("killed-school", "Holm", keys.public_pem).password
    assert hub.site_ca is not None
    ca_file = hub.settings.data.parent / "hub-ca.pem"
    ca_file.write_text(hub.site_ca)

    def site(seconds: float) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-c", SITE, str(folder), hub.nats_urls[0],
                                 password, str(seconds), str(ca_file)])

    def held() -> list[tuple[int, str]]:
        with psycopg.connect(hub.db_url) as conn:
            return [(int(r[0]), str(r[1])) for r in conn.execute(
                "SELECT seq, hash FROM audit_entries WHERE site = 'killed-school' "
                "ORDER BY seq")]

    first = site(600)
    try:
        wait_for("the site publishing", lambda: len(held()) > 30)
        os.kill(first.pid, signal.SIGKILL)
    finally:
        first.kill()
        first.wait()
    second = site(8)
    assert second.wait(180) == 0
    store = Store(folder / "custodes.db")
    store.open()
    try:
        with store.read() as conn:
            audit = [(int(r[0]), str(r[1])) for r in conn.execute(text(
                "SELECT seq, hash FROM audit_log ORDER BY seq"))]
            events = [(int(r[0]), float(r[1])) for r in conn.execute(text(
                "SELECT id, start FROM events ORDER BY id"))]
            cursor = conn.execute(text(
                "SELECT seq FROM uplink_cursors WHERE stream = 'audit'")).scalar_one()
    finally:
        store.close()
    # What the second run did not get acknowledged before it stopped goes at the next start;
    # everything acknowledged is at the hub, once, in order, and the chain holds.
    wait_for("every acknowledged entry", lambda: held()[:cursor] == audit[:cursor])
    assert len(held()) >= cursor > 30
    with psycopg.connect(hub.db_url) as pg:
        hub_events = [(int(r[0]), float(r[1])) for r in pg.execute(
            "SELECT seq, start_at FROM events WHERE site = 'killed-school' ORDER BY seq")]
        verified, broken = pg.execute(
            "SELECT audit_verified_seq, chain_broken_at FROM sites WHERE name = "
            "'killed-school'").fetchone() or (0, 0)
        alarms = pg.execute("SELECT kind FROM alarms WHERE site = 'killed-school' AND "
                              "cleared_at IS NULL").fetchall()
    assert hub_events == events[:len(hub_events)]
    assert len(hub_events) > 0
    assert broken is None
    assert verified >= cursor
    assert alarms == []
