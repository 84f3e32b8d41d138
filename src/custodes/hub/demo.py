"""`custodes hub demo`: an embedded hub and simulated sites reporting to it.

A light site is a real node database (the node's migrations, its keys, its audit log signed
every few entries) written by a small simulator instead of cameras, and published by the real
uplink: everything the hub sees went through the same outbox, NATS and ingest code as a real
node's. A few sites are real nodes recording simulated cameras (RTSP on loopback, ffmpeg).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy import Connection, insert

from custodes.audit.actions import Action
from custodes.audit.log import SYSTEM, AuditLog
from custodes.commands import console
from custodes.config import UplinkConfig
from custodes.hub.config import HubSettings
from custodes.hub.demo_nodes import start_real_node
from custodes.hub.service import Hub
from custodes.keys import NodeKeys
from custodes.sitetime import site_zone
from custodes.store import schema
from custodes.store.db import Store
from custodes.uplink.worker import Uplink

log = logging.getLogger(__name__)

MUNICIPALITIES = ["Ashby", "Brent", "Calder", "Dunmore", "Eastleigh", "Fenwick", "Garth",
                  "Holm", "Irvine", "Jarrow", "Kells", "Lowther"]
SEGMENT = 60.0


@dataclass
class LightSite:
    """A node's database and keys, written by a simulator, published by the real uplink."""

    name: str
    folder: Path
    cameras: list[str]
    store: Store
    keys: NodeKeys
    audit: AuditLog
    uplink: Uplink | None = None
    last_segment: float | None = None  # where the simulated recording has got to

    @classmethod
    def create(cls, folder: Path, name: str, cameras: int = 7,
               checkpoint_every: int = 20) -> LightSite:
        folder.mkdir(parents=True, exist_ok=True)
        keys = NodeKeys.load_or_create(folder / "keys")
        store = Store(folder / "custodes.db")
        store.open()
        audit = AuditLog(store, keys, checkpoint_every=checkpoint_every)
        cams = [f"cam{i:02d}" for i in range(1, cameras + 1)]
        site = cls(name, folder, cams, store, keys, audit)
        audit.record(SYSTEM, Action.NODE_START, name, detail={
            "profile": "school", "cameras": cams, "config": {"node": "demo"}})
        return site

    def connect(self, urls: list[str], password: str, health_seconds: float = 2.0,
                coverage_lag: float = 5.0, *, ca: str | None = None,
                tls_first: bool = True) -> None:
        """``coverage_lag``: the simulator writes a minute's segment when the minute ends;
        a test that compares coverage gives it more than its writer can be late. ``ca``:
        the hub's CA (`Hub.site_ca`), as enrolment gives it to a node."""
        config = UplinkConfig(site=self.name, urls=urls, password=SecretStr(password),
                              health_seconds=health_seconds, ca=ca, tls_first=tls_first)
        self.uplink = Uplink(self.store, config, self.cameras, health=self.health,
                             coverage_lag=coverage_lag)
        self.uplink.start()

    def health(self) -> dict[str, object]:
        return {"node": self.name, "profile": "school",
                # as a node without node.timezone: the machine's zone (UTC without one)
                "timezone": site_zone(None).name,
                "cameras": {c: {"recording": True, "state": "online"} for c in self.cameras},
                "retention_limit_hours": dict.fromkeys(self.cameras, 72.0),
                "disk": {"total": 4 * 10**12, "used": 10**12, "free": 3 * 10**12}}

    def activity(self, rng: random.Random, now: float | None = None) -> None:
        """A few seconds of a school's life: segments, events, a state change, audit entries."""
        now = time.time() if now is None else now
        rows_segments = []
        if self.last_segment is None or now - self.last_segment >= SEGMENT:
            # One minute-long segment per camera per minute, end to end, as a recorder does.
            start = now - SEGMENT if self.last_segment is None else self.last_segment
            rows_segments = [{"camera": cam, "start": start, "end": start + SEGMENT,
                              "duration": SEGMENT, "bytes": 30_000_000,
                              "path": f"{self.name}/{cam}/{start:.3f}.mp4"}
                             for cam in self.cameras]
            self.last_segment = start + SEGMENT
        events = [{"camera": rng.choice(self.cameras), "kind": "motion",
                   "start": now - rng.uniform(5, 50), "end": now - 1,
                   "data": json.dumps({"peak": round(rng.random(), 3)}), "snapshot": None}
                  for _ in range(rng.randint(0, 3))]

        def write(c: Connection) -> None:
            if rows_segments:
                c.execute(insert(schema.segments), rows_segments)
            if events:
                c.execute(insert(schema.events), events)
            if rng.random() < 0.2:
                c.execute(insert(schema.camera_states).values(
                    camera=rng.choice(self.cameras), at=now,
                    state=rng.choice(["offline", "online"]), reason="simulated"))

        self.store.write(write)
        for _ in range(rng.randint(1, 4)):
            self.audit.record(rng.choice(["caretaker", "dpo", "inspector"]),
                              rng.choice([Action.LIVE_VIEW, Action.PLAYBACK, Action.LOGIN]),
                              rng.choice(self.cameras), address="127.0.0.1")

    def close(self) -> None:
        if self.uplink is not None:
            self.uplink.stop()
        self.store.close()


def run_demo(folder: Path, *, sites: int, nodes: int, seconds: float, web_port: int) -> None:
    """Start a hub, enrol ``sites`` sites, run them until Ctrl-C or ``seconds``."""

    hub = Hub(HubSettings(data=folder / "hub", nats_port=0, web_port=web_port,
                          silent_after_seconds=30))
    hub.start()
    light: list[LightSite] = []
    real: list[object] = []
    stop = threading.Event()
    try:
        passwords: dict[str, tuple[str, str]] = {}
        for i in range(sites):
            name = f"school-{i + 1:02d}"
            group = MUNICIPALITIES[i % len(MUNICIPALITIES)]
            keys = NodeKeys.load_or_create(folder / "sites" / name / "keys")
            passwords[name] = (group, hub.enrol(name, group, keys.public_pem).password)
        for i, (name, (_group, password)) in enumerate(sorted(passwords.items())):
            if i < nodes:
                real.append(start_real_node(folder / "sites" / name, name, hub.nats_urls,
                                            password, ca=hub.site_ca))
                continue
            site = LightSite.create(folder / "sites" / name, name)
            site.connect(hub.nats_urls, password, ca=hub.site_ca)
            light.append(site)
        console.print(f"[bold]custodes hub demo[/bold]: {sites} sites ({len(real)} real nodes "
                      f"with simulated cameras) in {min(sites, len(MUNICIPALITIES))} groups")
        console.print(f"  hub web pages: {hub.web.url if hub.web else '-'}")
        console.print(f"  first hub admin password: {hub.first_admin_password or '(set before)'}")
        console.print(f"  verify:        custodes hub verify --data {folder / 'hub'}")
        console.print("  stop:          Ctrl-C")
        rng = random.Random(7)  # noqa: S311 - simulated activity, not a secret
        deadline = time.monotonic() + seconds if seconds else None

        def until_stopped() -> None:
            while not stop.is_set():
                for site in light:
                    site.activity(rng)
                if stop.wait(5.0):
                    return

        worker = threading.Thread(target=until_stopped, name="demo-activity", daemon=True)
        worker.start()
        try:
            while deadline is None or time.monotonic() < deadline:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        stop.set()
        worker.join(10)
        c = hub.counters
        console.print(f"hub ingested {c.stored} messages ({c.duplicates} duplicates ignored, "
                      f"{c.rejected} rejected) from {sites} sites")
    finally:
        stop.set()
        for site in light:
            site.close()
        for node in real:
            node.stop()  # type: ignore[attr-defined]
        hub.stop()
