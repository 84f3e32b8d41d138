"""A fleet at one hub: two real nodes (`custodes run`'s Node, recording simulated RTSP cameras
with ffmpeg) and a dozen light sites (real node databases and audit logs, a simulator instead
of cameras) all publishing through the real uplink, nats-server and PostgreSQL.

The link of one real node goes through a TCP proxy that blackholes it: nothing passes, nothing
is refused, only timeouts tell. It stays dead for longer than the node's uplink needs to give
its connection up and try again, and than the hub needs to call the site silent; the node
records on and its log grows. Restored, the hub ends up with every row of every site's own
tables (audit entries, checkpoints, configs, camera states, events, coverage per minute),
compared row by row: no gap, nothing twice, nothing else.
"""

from __future__ import annotations

import gc
import time

import pytest

from custodes.audit.actions import Action
from custodes.hub.alarms import AlarmKind
from custodes.hub.demo import MUNICIPALITIES, LightSite
from custodes.hub.demo_nodes import RealSite, start_real_node
from custodes.keys import NodeKeys
from hub_env import (
    LIGHT_COVERAGE_LAG,
    NATS_SOCKET_WARNINGS,
    Activity,
    Proxy,
    converge,
    differences,
    hub_audit,
    open_alarms,
    q,
    running_hub,
    site_audit,
    table_rows,
    wait_for,
)

pytestmark = [pytest.mark.slow, NATS_SOCKET_WARNINGS]

LIGHT_SITES = 12
CUT, STEADY = "node-cut", "node-steady"


def test_a_fleet_with_a_blackholed_node_loses_nothing_and_counts_nothing_twice() -> None:
    # Silent after 15 s: inside the blackhole (the uplink needs 20-30 s to call a silent
    # connection dead), well above a busy machine's hiccups for the sites that are fine.
    with running_hub(silent_after_seconds=15) as hub:
        root = hub.settings.data.parent
        proxy = Proxy(int(hub.nats_urls[0].rsplit(":", 1)[1]))
        real: dict[str, RealSite] = {}
        light: list[LightSite] = []
        activity: Activity | None = None
        try:
            # Every site enrolled before any connects: each enrolment reloads nats-server's
            # accounts, and a connection made during a reload can stay up without acks until
            # the uplink gives it up (README, hub limits). That is not what this test is about.
            passwords: dict[str, str] = {}
            for name, group in ((CUT, "Ashby"), (STEADY, "Brent")):
                keys = NodeKeys.load_or_create(root / name / "keys")  # the node's own key
                passwords[name] = hub.enrol(name, group, keys.public_pem).password
            for i in range(LIGHT_SITES):
                site = LightSite.create(root / f"light-{i + 1:02d}", f"light-{i + 1:02d}",
                                        cameras=2, checkpoint_every=5)
                passwords[site.name] = hub.enrol(site.name, MUNICIPALITIES[i % 4],
                                                 site.keys.public_pem).password
                light.append(site)
            for name, urls in ((CUT, [proxy.url]), (STEADY, hub.nats_urls)):
                real[name] = start_real_node(root / name, name, urls, passwords[name],
                                             ca=hub.site_ca)
            for site in light:
                site.connect(hub.nats_urls, passwords[site.name], health_seconds=1,
                             coverage_lag=LIGHT_COVERAGE_LAG, ca=hub.site_ca)
            activity = Activity(light, seed=12, every=1.0, name="light-sites")
            cut = real[CUT].node
            assert cut.uplink is not None

            def online(name: str) -> set[str]:
                return {str(r[0]) for r in q(hub, "SELECT camera FROM camera_states WHERE "
                                             "site = %s AND state = 'online'", name)}

            wait_for("both nodes' cameras online at the hub",
                     lambda: all(online(n) == {"cam01", "cam02"} for n in real), timeout=180)
            wait_for("every site's log witnessed", lambda: q(
                hub, "SELECT count(*) FROM sites WHERE audit_verified_seq > 0")[0][0]
                == LIGHT_SITES + 2, timeout=120)

            proxy.blackhole()
            holed_at = time.monotonic()
            for _ in range(5):  # the node's own log grows while its link is dead
                cut.audit.record("caretaker", Action.PLAYBACK, "cam01")
            wait_for("the hub calling the cut node silent", lambda: AlarmKind.SILENT.value
                     in open_alarms(hub, CUT), timeout=120)
            # The uplink has given its dead connection up (pings unanswered) and tries again,
            # into the hole: the connection is accepted and nothing ever answers.
            wait_for("the cut node trying a new connection", lambda: proxy.swallowed >= 1,
                     timeout=120)
            for _ in range(5):
                cut.audit.record("dpo", Action.PLAYBACK, "cam02")
            assert not cut.uplink.status.connected
            assert cut.uplink.outbox.backlog()["audit"] >= 10
            assert len(hub_audit(hub, CUT)) < len(site_audit(cut.store))
            assert AlarmKind.SILENT.value not in open_alarms(hub, STEADY)
            hole = time.monotonic() - holed_at

            proxy.restore()
            restored_at = time.time()
            activity.end()
            # What each real node held when its link came back, the hub must get, at least:
            # events up to the first one still open (an open event is sent once it ends), and
            # coverage up to the last minute that was final then.
            floors: dict[str, dict[str, int]] = {}
            for name, node in real.items():
                rows = {t: mine for t, (mine, _) in table_rows(
                    node.node.store, hub, name).items()}
                floors[name] = {t: len(r) for t, r in rows.items()}
                floors[name]["events"] = next(
                    (i for i, r in enumerate(rows["events"]) if r[4] is None),
                    len(rows["events"]))
                uplink = node.node.uplink
                assert uplink is not None
                floors[name]["coverage"] = int(
                    (restored_at - uplink.outbox.coverage_lag) // 60) - 1

            def problems() -> list[str]:
                found: list[str] = []
                for site in light:  # stopped writing: every row, exactly
                    found += differences(hub, site.name, site.store, site.cameras)
                for name, node in real.items():  # still recording: at least the floor
                    found += differences(hub, name, node.node.store,
                                         sorted(node.node.config.cameras),
                                         at_least=floors[name])
                return found

            converge("the hub holds every site's rows, once, in order", problems, timeout=240)
            wait_for("the cut node's backlog sent", lambda: cut.uplink is not None
                     and cut.uplink.outbox.backlog()["audit"] == 0, timeout=60)
            wait_for("the silent alarm cleared", lambda: AlarmKind.SILENT.value
                     not in open_alarms(hub, CUT), timeout=60)

            # Nothing counted twice or refused anywhere; every chain verified to its head.
            assert hub.counters.conflicts == 0
            assert hub.counters.rejected == 0
            assert q(hub, "SELECT count(*) FROM rejected") == [(0,)]
            assert q(hub, "SELECT count(*) FROM audit_conflicts") == [(0,)]
            assert q(hub, "SELECT DISTINCT kind FROM alarms WHERE kind <> %s",
                     AlarmKind.SILENT.value) == []
            names = [s.name for s in light] + list(real)
            for name in names:
                verified, broken = q(hub, "SELECT audit_verified_seq, chain_broken_at FROM "
                                     "sites WHERE name = %s", name)[0]
                assert broken is None, name
                assert verified == hub_audit(hub, name)[-1][0], name
            # A site of a busy machine may be called silent for a moment: it must not stay so,
            # and no other alarm may be raised at all.
            wait_for("no alarm open at any site", lambda: all(
                open_alarms(hub, n) == set() for n in names), timeout=120)
            for site in light:
                assert q(hub, "SELECT audit_verified_seq FROM sites WHERE name = %s",
                         site.name)[0][0] == site_audit(site)[-1][0]
            recorded = sum(float(s) for (cams,) in q(
                hub, "SELECT cameras FROM coverage WHERE site = %s", CUT)
                for s in cams.values())
            assert recorded > 0  # the node's recording reached the hub as coverage
            print(f"\nblackhole held {hole:.0f} s; hub stored {hub.counters.stored} messages "
                  f"from {len(names)} sites, {hub.counters.duplicates} copies dropped")
        finally:
            if activity is not None:
                activity.halt()
            for site in light:
                site.close()
            for node in real.values():
                node.stop()
            proxy.close()
            gc.collect()
