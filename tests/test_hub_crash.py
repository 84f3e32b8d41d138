"""`custodes hub serve` killed with -9 in the middle of ingest, then started again: the site
never stops writing, and the hub ends up with every row once."""

from __future__ import annotations

import gc
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg
import pytest
import yaml
from sqlalchemy import text

from custodes.hub.demo import LightSite
from custodes.hub.nats_server import EmbeddedNats, free_port
from custodes.hub.postgres import EmbeddedPostgres
from hub_env import NATS_SOCKET_WARNINGS, wait_for

pytestmark = [pytest.mark.slow, NATS_SOCKET_WARNINGS]


def serve(config: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-m", "custodes", "hub", "serve", "--config",
                             str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    for line in proc.stdout:
        if "hub running" in line:
            break
        if time.monotonic() > deadline:
            break
    else:
        raise AssertionError(f"the hub did not start (exit {proc.wait()})")
    out = proc.stdout

    def drain() -> None:  # keep reading, or the hub blocks on a full pipe; close at its end
        for _ in out:
            pass
        out.close()

    threading.Thread(target=drain, daemon=True).start()
    return proc


def test_a_hub_killed_mid_ingest_loses_nothing_and_counts_nothing_twice() -> None:
    folder = Path(tempfile.mkdtemp(prefix="custodes-hub-crash-"))
    port = free_port()
    config = folder / "hub.yaml"
    config.write_text(yaml.safe_dump({"hub": {"data": "hub", "nats_port": port,
                                              "web_port": 0, "silent_after_seconds": 60}}))
    hub = serve(config)
    site: LightSite | None = None
    stop = threading.Event()
    pg = EmbeddedPostgres(folder / "hub" / "postgres")
    try:
        site = LightSite.create(folder / "site", "crash-school", cameras=2, checkpoint_every=10)
        (folder / "signing.pub").write_bytes(site.keys.public_pem)
        enrol = subprocess.run(
            [sys.executable, "-m", "custodes", "hub", "add-site", "crash-school", "--group",
             "Garth", "--key", str(folder / "signing.pub"), "--config", str(config)],
            capture_output=True, text=True, timeout=120, check=True)
        found = re.search(r"CUSTODES_UPLINK_PASSWORD=(\S+)", enrol.stdout)
        assert found is not None, enrol.stdout
        # The uplink section as add-site printed it: the hub's URL and its CA (TLS).
        section = yaml.safe_load(enrol.stdout.split("Add to the node's config:\n", 1)[1]
                                 .split("\n# and", 1)[0])["uplink"]
        assert section["urls"] == [f"tls://127.0.0.1:{port}"]
        site.connect(section["urls"], found.group(1), health_seconds=1, ca=section["ca"])
        rng = random.Random(9)
        writer = site

        def work() -> None:
            while not stop.is_set():
                writer.activity(rng)
                stop.wait(0.2)

        threading.Thread(target=work, daemon=True).start()

        def held() -> int:
            with psycopg.connect(pg.url) as conn:
                row = conn.execute("SELECT count(*) FROM audit_entries").fetchone()
            return int(row[0]) if row else 0

        wait_for("the first rows at the hub", lambda: held() > 20)
        os.kill(hub.pid, signal.SIGKILL)  # mid-ingest: the site is writing all along
        hub.wait()
        time.sleep(3)
        hub = serve(config)
        time.sleep(3)
        stop.set()

        def site_rows(sql: str) -> list[tuple[object, ...]]:
            assert site is not None
            with site.store.read() as conn:
                return [tuple(r) for r in conn.execute(text(sql))]

        def hub_rows(sql: bytes) -> list[tuple[object, ...]]:
            with psycopg.connect(pg.url) as conn:
                return [tuple(r) for r in conn.execute(sql)]

        audit = site_rows("SELECT seq, hash FROM audit_log ORDER BY seq")
        wait_for("every entry at the hub", lambda: hub_rows(
            b"SELECT seq, hash FROM audit_entries ORDER BY seq") == audit, timeout=180)
        events = site_rows("SELECT id, camera, start FROM events ORDER BY id")
        wait_for("every event at the hub", lambda: hub_rows(
            b"SELECT seq, camera, start_at FROM events ORDER BY seq") == events)
        verdict = hub_rows(b"SELECT audit_verified_seq, chain_broken_at FROM sites")
        assert verdict == [(audit[-1][0], None)]
        alarms = hub_rows(b"SELECT kind FROM alarms WHERE cleared_at IS NULL AND "
                          b"kind <> 'silent'")
        assert alarms == []
    finally:
        stop.set()
        if site is not None:
            site.close()
        hub.send_signal(signal.SIGTERM)
        try:
            hub.wait(60)
        except subprocess.TimeoutExpired:
            hub.kill()
        # Whatever a failed test left running: the server processes, by their pid files.
        EmbeddedNats(folder / "hub" / "nats")._end_orphan()
        if pg.running():
            pg.stop()
        gc.collect()
        shutil.rmtree(folder, ignore_errors=True)
