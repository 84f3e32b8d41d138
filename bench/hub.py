"""Hub ingest: the batched writer (one transaction per fetched batch, the witness walking each
chain once per batch) against a naive ingester (one INSERT and commit per message), on the
same messages, in the same run, into the embedded PostgreSQL; then the delay from a site's
write to the hub's row through the whole path (uplink -> NATS JetStream -> ingest).

    python bench/hub.py [--sites 800 --minutes 10 --e2e-sites 30 --e2e-seconds 60]
    python bench/hub.py --quick      # smoke run: 20 sites, 2 minutes of traffic, 5 s end to end

Traffic per site and minute, as a school's node sends it: 12 health reports, one coverage
minute, ~1.25 camera-events per camera (the city: 1000 cameras at 800 sites), one audit entry,
a camera state change every 20 minutes. The city then sends about 200 messages per second:
"headroom" is the measured rate over that.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import psycopg

from custodes.audit.log import GENESIS, Entry
from custodes.hub import db
from custodes.hub.config import HubSettings
from custodes.hub.demo import LightSite
from custodes.hub.ingest import Received, write_batch
from custodes.hub.postgres import EmbeddedPostgres
from custodes.hub.service import Hub
from custodes.hub.sites import add_site
from custodes.keys import NodeKeys
from custodes.uplink.wire import Message, Stream

CITY_SITES, CITY_CAMERAS = 800, 1000
BATCH = 500


def traffic(sites: list[str], minutes: int, seed: int = 1) -> list[Received]:
    rng = random.Random(seed)
    cams_per_site = max(1, round(CITY_CAMERAS / CITY_SITES))
    out: list[Received] = []
    heads = dict.fromkeys(sites, (0, GENESIS))
    seqs: dict[tuple[str, Stream], int] = {}
    t0 = time.time() - minutes * 60

    def add(site: str, stream: Stream, body: dict[str, object], seq: int | None = None) -> None:
        n = seq if seq is not None else seqs.get((site, stream), 0) + 1
        seqs[(site, stream)] = n
        m = Message(site, stream, n, body)
        out.append(Received(m.subject, m.encode()))

    for minute in range(minutes):
        now = t0 + minute * 60
        for site in sites:
            cams = [f"cam{i}" for i in range(cams_per_site)]
            for k in range(12):
                at = now + 5 * k
                add(site, Stream.HEALTH, {"at": at, "audit_head": heads[site][0],
                                          "cameras": {c: {"recording": True, "state": "online"}
                                                      for c in cams}}, seq=int(at * 1000))
            add(site, Stream.COVERAGE, {"cameras": dict.fromkeys(cams, 60.0)},
                seq=int(now // 60))
            for _ in range(rng.choice([1, 1, 1, 2])):
                add(site, Stream.EVENT, {"camera": rng.choice(cams), "kind": "motion",
                                         "start": now, "end": now + 5, "data": {"peak": 0.3}})
            seq, prev = heads[site]
            entry = Entry(seq + 1, now, "caretaker", "127.0.0.1", "playback", "cam0", "ok",
                          {"from": now - 60}, prev)
            entry = Entry(**{**entry.__dict__, "hash": entry.computed_hash()})
            heads[site] = (entry.seq, entry.hash)
            body = {k: getattr(entry, k) for k in ("at", "actor", "address", "action", "target",
                                                   "outcome", "prev_hash", "hash")}
            body["detail"] = json.dumps(entry.detail, sort_keys=True)
            add(site, Stream.AUDIT, body, seq=entry.seq)
            if rng.random() < 0.05:
                add(site, Stream.CAMERA_STATE, {"camera": rng.choice(cams), "at": now,
                                                "state": "offline", "reason": "bench"})
    return out


def reset(url: str) -> None:
    with psycopg.connect(url) as conn:
        conn.execute("ALTER TABLE audit_entries DISABLE TRIGGER USER")
        conn.execute("TRUNCATE audit_entries, audit_conflicts, checkpoints, configs, "
                     "camera_states, coverage, events, deletion_passes, holds, alarms, rejected")
        conn.execute("ALTER TABLE audit_entries ENABLE TRIGGER USER")
        conn.execute("UPDATE sites SET audit_verified_seq = 0, audit_verified_hash = %s, "
                     "audit_max_seq = 0, chain_broken_at = NULL, health = NULL, "
                     "health_at = NULL", (GENESIS,))


def ingest(url: str, messages: list[Received], batch: int) -> float:
    with psycopg.connect(url) as conn:
        started = time.perf_counter()
        for i in range(0, len(messages), batch):
            with conn.transaction():
                result = write_batch(conn, messages[i:i + batch])
            assert result.rejected == 0, result
        return time.perf_counter() - started


def end_to_end(folder: Path, sites: int, seconds: float) -> list[float]:
    """Delays (s) from an audit entry's time at the site to its row at the hub."""
    hub = Hub(HubSettings(data=folder / "e2e-hub", nats_port=0, web_port=0))
    hub.start(web=False)
    light: list[LightSite] = []
    try:
        for i in range(sites):
            site = LightSite.create(folder / "e2e" / f"s{i}", f"e2e-{i}", cameras=2)
            site.connect(hub.nats_urls, hub.enrol(site.name, "Bench", site.keys.public_pem)
                         .password)
            light.append(site)
        rng = random.Random(3)
        since = time.time()  # entries written before every site was up are not counted
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for site in light:
                site.activity(rng)
            time.sleep(0.5)
        time.sleep(3)
        with psycopg.connect(hub.db_url) as conn:
            rows = conn.execute("SELECT received_at - at FROM audit_entries WHERE at >= %s",
                                (since,)).fetchall()
        return sorted(float(r[0]) for r in rows)
    finally:
        for site in light:
            site.close()
        hub.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sites", type=int, default=CITY_SITES)
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--e2e-sites", type=int, default=30)
    parser.add_argument("--e2e-seconds", type=float, default=60)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.sites, args.minutes, args.e2e_sites, args.e2e_seconds = 20, 2, 3, 5
    print(f"load average at start: {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)")
    folder = Path(tempfile.mkdtemp(prefix="custodes-bench-hub-"))
    pg = EmbeddedPostgres(folder / "pg")
    try:
        pg.start()
        db.migrate(pg.url)
        names = [f"site-{i:04d}" for i in range(args.sites)]
        with psycopg.connect(pg.url) as conn:
            pem = NodeKeys.load_or_create(folder / "keys").public_pem
            for name in names:
                add_site(conn, name, "Bench", pem)
            conn.commit()
        messages = traffic(names, args.minutes)
        city_rate = len(messages) / (args.minutes * 60) * CITY_SITES / args.sites
        print(f"{len(messages)} messages: {args.minutes} min of traffic from {args.sites} sites")
        print("| ingester | messages | seconds | msg/s | headroom over the city |")
        print("|---|---|---|---|---|")
        rates = {}
        for label, batch in (("batched (ours)", BATCH),
                             ("naive (one INSERT + commit per message)", 1)):
            reset(pg.url)
            took = ingest(pg.url, messages, batch)
            rates[label] = len(messages) / took
            print(f"| {label} | {len(messages)} | {took:.2f} | {rates[label]:.0f} | "
                  f"{rates[label] / city_rate:.1f}x |")
        ours, naive = rates.values()
        print(f"city load: {CITY_SITES} sites, {CITY_CAMERAS} cameras = {city_rate:.0f} msg/s; "
              f"batched/naive = {ours / naive:.1f}x")
    finally:
        pg.stop()
    try:
        delays = end_to_end(folder, args.e2e_sites, args.e2e_seconds)
        if delays:
            p50 = statistics.median(delays)
            p99 = delays[min(len(delays) - 1, int(0.99 * len(delays)))]
            print(f"end to end delay (site write -> hub row), {len(delays)} audit entries from "
                  f"{args.e2e_sites} sites: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
        else:
            print("end to end delay: no entries arrived")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
