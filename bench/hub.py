"""The hub against the city, in one run, on the configuration a user gets (the embedded
nats-server and PostgreSQL that `custodes hub` starts, the real uplink code at the sites):

1. ingest headroom: the batched writer (one transaction and one multi-row INSERT per table per
   fetched batch) against a naive ingester (one INSERT and commit per message), same messages,
   written straight into PostgreSQL;
2. hub CPU per 1000 cameras: the city's traffic published into the hub's NATS at the city's
   rate for a while; CPU-seconds of the hub process, its postgres and its nats-server;
3. end to end delay, site write -> hub row: 30 light sites (a node's database written by a
   simulator, published by the real uplink, in 3 processes of their own) while the city's
   traffic goes on;
4. catch-up: 30 schools (8 cameras each) offline for 24 h rejoin at once; the time until the hub
   holds everything they had and has verified their audit chains, the city's traffic going on.

    python bench/hub.py [--sites 800 --minutes 10 --cpu-seconds 60 --e2e-sites 30
                         --e2e-seconds 60 --catchup-sites 30 --catchup-hours 24
                         --site-processes 3]
    python bench/hub.py --quick      # smoke run: 20 city sites, short windows, 3 sites x 1 h
    python bench/hub.py --profile    # also: cProfile of the batched ingester (top functions)

City traffic per site and minute, as a school's node sends it: 12 health reports, one coverage
minute, ~1.25 camera-events per camera (the city: 1000 cameras at 800 sites), one audit entry,
a camera state change every 20 minutes: about 200 messages per second for the city.
"Headroom" is the measured rate over that. The 800 city sites are enrolled straight in the
database (one shared password hash: they publish through the hub's own NATS user, from a
feeder process, since 800 uplinks do not fit on one box); the light and catch-up sites are
enrolled as a user enrols them and connect with their own credentials.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import random
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import bcrypt
import nats
import psutil
import psycopg
from sqlalchemy import func, insert
from sqlalchemy import select as sql_select

from custodes.audit.anchor import checkpoint_message
from custodes.audit.log import GENESIS, Entry
from custodes.hub import db
from custodes.hub.config import HubSettings
from custodes.hub.demo import LightSite
from custodes.hub.ingest import Received, write_batch
from custodes.hub.nats_server import PID_FILE
from custodes.hub.postgres import EmbeddedPostgres
from custodes.hub.service import Hub
from custodes.keys import NodeKeys
from custodes.store import schema
from custodes.uplink.outbox import COVERAGE_FIRST_SECONDS, Outbox
from custodes.uplink.wire import Message, Stream

CITY_SITES, CITY_CAMERAS = 800, 1000
SCHOOL_CAMERAS = 8  # a catch-up site: one of the 30 schools, an 8-channel recorder
BATCH = 500
NAIVE_MAX = 5_000  # the naive ingester's rate is per message: a sample of the traffic will do
CATCHUP_GOAL = 120.0
PASSWORD_FILE = "passwords.json"
CA_FILE = "ca.pem"  # the hub's CA, when its NATS speaks TLS (the sites and the feeder trust it)


# -- the city's traffic --------------------------------------------------------------------------


def city_minutes(sites: list[str], t0: float,
                 seed: int = 1) -> Iterator[list[tuple[float, Message]]]:
    """The city's traffic from ``t0``, a minute at a time (without end), each message with
    the time a site sends it (each site at its own second of the minute), in time order."""
    rng = random.Random(seed)
    cams = [f"cam{i}" for i in range(max(1, round(CITY_CAMERAS / CITY_SITES)))]
    heads = dict.fromkeys(sites, (0, GENESIS))
    seqs: dict[tuple[str, Stream], int] = {}
    phase = {site: rng.uniform(0, 55) for site in sites}
    minute = 0
    while True:
        out: list[tuple[float, Message]] = []

        def add(at: float, site: str, stream: Stream, body: dict[str, object],
                seq: int | None = None) -> None:
            n = seq if seq is not None else seqs.get((site, stream), 0) + 1
            seqs[(site, stream)] = n
            out.append((at, Message(site, stream, n, body)))  # noqa: B023 - used at once

        start = t0 + minute * 60
        for site in sites:
            now = start + phase[site]
            before = heads[site][0]  # the audit entry of this minute is written at ``now``
            for k in range(12):
                at = start + (phase[site] + 5 * k) % 60
                add(at, site, Stream.HEALTH, {"at": at,
                                              "audit_head": before + (1 if at >= now else 0),
                                              "cameras": {c: {"recording": True,
                                                              "state": "online"}
                                                          for c in cams}},
                    seq=int(at * 1000))
            add(now, site, Stream.COVERAGE, {"cameras": dict.fromkeys(cams, 60.0)},
                seq=int(start // 60))
            for _ in range(rng.choice([1, 1, 1, 2])):
                add(now, site, Stream.EVENT, {"camera": rng.choice(cams), "kind": "motion",
                                              "start": now - 5, "end": now,
                                              "data": {"peak": 0.3}})
            seq, prev = heads[site]
            entry = Entry(seq + 1, now, "caretaker", "127.0.0.1", "playback", "cam0", "ok",
                          {"from": now - 60}, prev)
            entry = Entry(**{**entry.__dict__, "hash": entry.computed_hash()})
            heads[site] = (entry.seq, entry.hash)
            body = {k: getattr(entry, k) for k in ("at", "actor", "address", "action", "target",
                                                   "outcome", "prev_hash", "hash")}
            body["detail"] = json.dumps(entry.detail, sort_keys=True)
            add(now, site, Stream.AUDIT, body, seq=entry.seq)
            if rng.random() < 0.05:
                add(now, site, Stream.CAMERA_STATE, {"camera": rng.choice(cams), "at": now,
                                                     "state": "offline", "reason": "bench"})
        out.sort(key=lambda item: item[0])
        yield out
        minute += 1


def traffic(sites: list[str], minutes: int) -> list[Received]:
    """``minutes`` of the city's traffic, as the hub's consumer receives it."""
    generated = city_minutes(sites, time.time() - minutes * 60)
    return [Received(m.subject, m.encode())
            for _ in range(minutes) for _, m in next(generated)]


def enrol_city(url: str, names: list[str], pem: bytes) -> None:
    """The city's sites, straight into the tables (``add_site`` makes a bcrypt hash each,
    0.1-0.2 CPU-s: minutes for 800 sites that never connect with their own password)."""
    shared = bcrypt.hashpw(os.urandom(18).hex().encode(), bcrypt.gensalt(rounds=4)).decode()
    key = pem.decode("ascii").strip() + "\n"
    now = time.time()
    with psycopg.connect(url) as conn:
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO sites (name, grp, public_key, password_hash, "
                            "enrolled_at) VALUES (%s, 'City', %s, %s, %s)",
                            [(n, key, shared, now) for n in names])
            cur.executemany("INSERT INTO site_keys (site, public_key, registered_at) VALUES "
                            "(%s, %s, %s)", [(n, key, now) for n in names])
        conn.commit()


# -- 1. ingest headroom --------------------------------------------------------------------------


def reset(url: str) -> None:
    with psycopg.connect(url) as conn:
        rollups = [t for t in ("coverage_hourly", "coverage_gaps")
                   if conn.execute("SELECT to_regclass(%s)", (t,)).fetchone() != (None,)]
        conn.execute("ALTER TABLE audit_entries DISABLE TRIGGER USER")
        conn.execute("TRUNCATE " + ", ".join([
            "audit_entries", "audit_conflicts", "checkpoints", "configs", "camera_states",
            "coverage", "events", "deletion_passes", "holds", "alarms", "rejected", *rollups]))
        conn.execute("ALTER TABLE audit_entries ENABLE TRIGGER USER")
        conn.execute("UPDATE sites SET audit_verified_seq = 0, audit_verified_hash = %s, "
                      "audit_max_seq = 0, chain_broken_at = NULL, health = NULL, "
                      "health_at = NULL, last_heard = NULL", (GENESIS,))


def ingest(url: str, messages: list[Received], batch: int, *, profile: bool = False) -> float:
    with psycopg.connect(url) as conn:
        profiler = cProfile.Profile() if profile else None
        started = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        for i in range(0, len(messages), batch):
            with conn.transaction():
                result = write_batch(conn, messages[i:i + batch])
            assert result.rejected == 0, result
        took = time.perf_counter() - started
        if profiler is not None:
            profiler.disable()
            print("cProfile of the batched ingester (this process only; PostgreSQL's time "
                  "is in psycopg's wait):")
            pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(15)
        return took


def headroom(url: str, names: list[str], minutes: int,
             profile: bool = False) -> tuple[float, float]:
    """The batched and the naive ingesters, as a table; returns (the city's msg/s, the naive
    ingester's msg/s)."""
    messages = traffic(names, minutes)
    city_rate = len(messages) / (minutes * 60) * CITY_SITES / len(names)
    print(f"{len(messages)} messages: {minutes} min of traffic from {len(names)} sites")
    print("| ingester | messages | seconds | msg/s | headroom over the city |")
    print("|---|---|---|---|---|")
    rates = {}
    for label, batch, sample in (
            ("batched (ours)", BATCH, messages),
            ("naive (one INSERT + commit per message)", 1, messages[:NAIVE_MAX])):
        reset(url)
        took = ingest(url, sample, batch, profile=profile and batch == BATCH)
        rates[label] = len(sample) / took
        print(f"| {label} | {len(sample)} | {took:.2f} | {rates[label]:.0f} | "
              f"{rates[label] / city_rate:.1f}x |")
    ours, naive = rates.values()
    print(f"city load: {CITY_SITES} sites, {CITY_CAMERAS} cameras = {city_rate:.0f} msg/s; "
          f"batched/naive = {ours / naive:.1f}x")
    reset(url)
    return city_rate, naive


# -- CPU of the hub's processes ------------------------------------------------------------------


class HubCpu:
    """CPU-seconds of the hub: this process (the hub's threads; the sites and the feeder run in
    child processes, whose time is not counted), its nats-server and its postgres (the
    postmaster, its live children, and the children it reaped meanwhile)."""

    def __init__(self, hub: Hub) -> None:
        assert hub.nats is not None
        assert hub.pg is not None
        pid_line = (hub.pg.pgdata / "postmaster.pid").read_text().split("\n", 1)[0]
        nats_pid = int((hub.nats.folder / PID_FILE).read_text().strip())
        self.parts = {"hub": psutil.Process(), "nats-server": psutil.Process(nats_pid),
                      "postgres": psutil.Process(int(pid_line))}

    def sample(self) -> dict[str, dict[int, float]]:
        out: dict[str, dict[int, float]] = {}
        for name, proc in self.parts.items():
            t = proc.cpu_times()
            seen = {proc.pid: t.user + t.system}
            if name == "postgres":
                seen[-1] = t.children_user + t.children_system  # reaped backends
                for child in proc.children(recursive=True):
                    try:
                        c = child.cpu_times()
                    except psutil.Error:
                        continue
                    seen[child.pid] = c.user + c.system
            out[name] = seen
        return out

    @staticmethod
    def spent(before: dict[str, dict[int, float]],
              after: dict[str, dict[int, float]]) -> dict[str, float]:
        out = {}
        for name, now in after.items():
            then = before[name]
            # a backend alive at the first sample and reaped since: its time is in the
            # postmaster's children total now, the part already seen is taken off
            gone = sum(v for pid, v in then.items() if pid not in now)
            out[name] = sum(v - then.get(pid, 0.0) for pid, v in now.items()) - gone
        return out


# -- child processes: the feeder and the sites ---------------------------------------------------


class Child:
    """This script again, as the feeder or the sites, spoken to by lines."""

    def __init__(self, *args: str, password: str | None = None) -> None:
        env = dict(os.environ)
        if password is not None:
            env["CUSTODES_BENCH_NATS_PASSWORD"] = password
        self.proc = subprocess.Popen([sys.executable, __file__, *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, bufsize=0, env=env)
        self.buffer = b""

    def expect(self, word: str, timeout: float) -> str:
        """The rest of the child's next line starting with ``word`` (others are echoed)."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        end = time.monotonic() + timeout
        while True:
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                text = line.decode()
                if text.startswith(word):
                    return text[len(word):].strip()
                print(text)
            left = end - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError(f"no {word!r} from the child within {timeout:.0f} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError(f"the child exited ({self.proc.wait()}) before {word!r}")
            self.buffer += chunk

    def tell(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float = 60) -> None:
        try:
            self.tell("stop")
            self.proc.wait(timeout)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


def say(word: str, value: object = "") -> None:
    print(word, json.dumps(value), flush=True)


def wait_for(word: str) -> None:
    for line in sys.stdin:
        if line.strip() == word:
            return
    raise SystemExit(0)  # the parent went away


def feeder_main(args: argparse.Namespace) -> None:
    """Publish the city's traffic at the city's rate, ``--seconds`` of it from ``--t0``."""
    names = [f"site-{i:04d}" for i in range(args.sites)]
    minutes = city_minutes(names, args.t0, seed=args.seed)
    first = next(minutes)  # generated before the start, not while it is due
    say("READY", len(first))
    wait_for("go")
    ca = Path(args.folder, CA_FILE).read_text() if args.folder else None
    sent = asyncio.run(_feed(args.url, first, minutes, args.t0 + args.seconds, ca))
    say("FED", sent)
    wait_for("stop")


async def _feed(url: str, first: list[tuple[float, Message]],
                rest: Iterator[list[tuple[float, Message]]], end: float,
                ca: str | None) -> int:
    nc = await nats.connect(url, user="hub", password=os.environ["CUSTODES_BENCH_NATS_PASSWORD"],
                            **tls_options([url], ca))
    js = nc.jetstream()
    loop = asyncio.get_running_loop()
    pending: list[asyncio.Future[Any]] = []
    sent = 0
    minute = first
    while True:
        # the next minute is made in a thread meanwhile: the one due is sent on time
        following = loop.run_in_executor(None, next, rest)
        for at, m in minute:
            if at >= end:
                await asyncio.gather(*pending)
                await nc.close()
                return sent
            if at > time.time():
                await asyncio.sleep(at - time.time())
            pending.append(await js.publish_async(m.subject, m.encode(),
                                                  headers={"Nats-Msg-Id": m.msg_id}))
            sent += 1
        pending = [f for f in pending if not f.done()]
        minute = await following


def sites_main(args: argparse.Namespace) -> None:
    """The light sites (``--role e2e``: they connect, then live for ``--seconds``) or the
    catch-up sites (``--role catchup``: ``--hours`` of a school's life written while
    offline, then they all connect at once)."""
    import logging  # noqa: PLC0415 - only the child logs, on stderr
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    folder = Path(args.folder)
    passwords = json.loads((folder / PASSWORD_FILE).read_text())
    # the hub's CA when its NATS speaks TLS (what a user's node gets at enrolment)
    tls: dict[str, Any] = ({"ca": (folder / CA_FILE).read_text()}
                           if (folder / CA_FILE).exists() else {})
    urls = args.urls.split(",")
    sites: list[LightSite] = []
    try:
        if args.role == "e2e":
            for name in args.names.split(","):
                site = LightSite.create(folder / name, name, cameras=2)
                site.connect(urls, passwords[name], **tls)
                sites.append(site)
            deadline = time.monotonic() + 120
            while (not all(s.uplink is not None and s.uplink.status.connected for s in sites)
                   and time.monotonic() < deadline):
                time.sleep(0.2)
            say("READY", sum(1 for s in sites if s.uplink and s.uplink.status.connected))
            wait_for("go")
            rng = random.Random(3)
            end = time.monotonic() + args.seconds
            while time.monotonic() < end:
                for site in sites:
                    site.activity(rng)
                time.sleep(0.5)
            say("DONE")
        else:
            expected: dict[str, dict[str, Any]] = {}
            for name in args.names.split(","):
                site = LightSite.create(folder / name, name, cameras=SCHOOL_CAMERAS)
                sites.append(site)
                expected[name] = offline_day(site, args.hours)
            say("READY", expected)
            wait_for("go")
            for site in sites:
                site.connect(urls, passwords[site.name], **tls)
            say("STARTED")
        wait_for("stop")
    finally:
        for site in sites:
            site.close()


def offline_day(site: LightSite, hours: float) -> dict[str, Any]:
    """Write ``hours`` of a school's life into ``site``'s database, as its recorder, its
    events and its users would have while the link was down: a segment per camera and minute,
    one event per camera and minute (the city's rate), an audit entry a minute with a signed
    checkpoint every 100, a camera state change every 20 minutes. Returns what its outbox has
    to send: how many rows (coverage aside), and the last of each table."""
    rng = random.Random(site.name)
    end = time.time()
    start = end - hours * 3600
    minutes = [start + 60 * k for k in range(int(hours * 60))]
    with site.store.read() as conn:
        head = conn.execute(sql_select(schema.audit_log.c.seq, schema.audit_log.c.hash)
                            .order_by(schema.audit_log.c.seq.desc()).limit(1)).one()
    seq, prev = int(head[0]), str(head[1])
    audit, checkpoints = [], []
    for t in minutes:
        entry = Entry(seq + 1, t + 30, rng.choice(["caretaker", "dpo", "inspector"]),
                      "10.0.0.7", "playback", rng.choice(site.cameras), "ok",
                      {"from": t - 600}, prev)
        entry = Entry(**{**entry.__dict__, "hash": entry.computed_hash()})
        audit.append(entry.as_row())
        seq, prev = entry.seq, entry.hash
        if seq % 100 == 0:
            checkpoints.append({"seq": seq, "hash": prev, "at": t + 30, "signature":
                                site.keys.sign(checkpoint_message(seq, prev, t + 30))})
    segments = [{"camera": cam, "start": t, "end": t + 60, "duration": 60.0,
                 "bytes": 30_000_000, "path": f"{site.name}/{cam}/{t:.3f}.mp4"}
                for t in minutes for cam in site.cameras]
    events = [{"camera": cam, "kind": "motion", "start": t + 10, "end": t + 25,
               "data": json.dumps({"peak": round(rng.random(), 3)}), "snapshot": None}
              for t in minutes for cam in site.cameras]
    states = [{"camera": rng.choice(site.cameras), "at": t, "state": "offline",
               "reason": "bench"} for t in minutes[::20]]

    def write(conn: Any) -> None:
        for table, rows in ((schema.audit_log, audit), (schema.audit_checkpoints, checkpoints),
                            (schema.segments, segments), (schema.events, events),
                            (schema.camera_states, states)):
            if rows:
                conn.execute(insert(table), rows)

    site.store.write(write)
    counts = Outbox(site.store, site.name, site.cameras).backlog()
    # Coverage is not counted here: the outbox reports every minute up to the last one surely
    # indexed, a minute more each minute; the hub is current when it holds the minute due at
    # the rejoin (``wait_current``).
    counts.pop(Stream.COVERAGE.value)
    with site.store.read() as conn:
        last = {stream: int(conn.execute(query).scalar() or 0) for stream, query in (
            ("audit_entries", sql_select(func.max(schema.audit_log.c.seq))),
            ("checkpoints", sql_select(func.max(schema.audit_checkpoints.c.id))),
            ("camera_states", sql_select(func.max(schema.camera_states.c.id))),
            ("events", sql_select(func.max(schema.events.c.id))))}
    return {"rows": sum(counts.values()), "last": last}


# -- the live hub --------------------------------------------------------------------------------


def delays(conn: psycopg.Connection[Any], sites: str, since: float,
           until: float) -> list[float]:
    """Seconds from an audit entry's time at its site to its row at the hub, sorted."""
    rows = conn.execute("SELECT received_at - at FROM audit_entries WHERE site LIKE %s AND "
                        "at >= %s AND at < %s", (sites, since, until)).fetchall()
    return sorted(float(r[0]) for r in rows)


def percentiles(values: list[float]) -> str:
    if not values:
        return "nothing arrived"
    p99 = values[min(len(values) - 1, int(0.99 * len(values)))]
    return (f"p50 {statistics.median(values) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
            f"max {values[-1] * 1000:.0f} ms ({len(values)} entries)")


def enrol_sites(hub: Hub, folder: Path, names: Iterable[str]) -> None:
    """Enrol as a user does (a bcrypt password each, the NATS accounts reloaded)."""
    folder.mkdir(parents=True, exist_ok=True)
    passwords = {}
    for name in names:
        keys = NodeKeys.load_or_create(folder / name / "keys")
        passwords[name] = hub.enrol(name, "Bench", keys.public_pem).password
    fd = os.open(folder / PASSWORD_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(passwords, f)
    write_ca(hub, folder)


def write_ca(hub: Hub, folder: Path) -> None:
    """The hub's CA for the children, when its NATS speaks TLS (a hub without TLS has none)."""
    ca = getattr(hub, "site_ca", None)
    if ca:
        (folder / CA_FILE).write_text(ca)


def tls_options(urls: list[str], ca: str | None) -> dict[str, Any]:
    """``nats.connect``'s TLS options for the hub's CA, as its sites connect (none without)."""
    if not ca:
        return {}
    from custodes.uplink.tls import connect_options  # noqa: PLC0415 - a hub with TLS only
    return connect_options(urls, ca_pem=ca)


def start_feed(hub: Hub, folder: Path, args: argparse.Namespace) -> Child:
    """The city's traffic, from now on until the end of the run, at the city's rate."""
    assert hub.nats is not None
    t0 = time.time() + args.lead  # its first minute is generated by then
    folder.mkdir(parents=True, exist_ok=True)
    write_ca(hub, folder)
    feed = Child("--feeder", "--url", hub.nats_urls[0], "--sites", str(args.sites),
                 "--t0", str(t0), "--seconds", str(10**6), "--seed", "11",
                 *(["--folder", str(folder)] if (folder / CA_FILE).exists() else []),
                 password=hub.nats.hub_password)
    feed.expect("READY", 120)
    time.sleep(max(0.0, t0 - time.time()))
    feed.tell("go")
    return feed


def cpu_at_city_rate(hub: Hub, args: argparse.Namespace, city_rate: float) -> None:
    meter = HubCpu(hub)
    time.sleep(args.lead / 4)  # the feed under way
    before, handled = meter.sample(), hub.counters.stored + hub.counters.duplicates
    started = time.monotonic()
    time.sleep(args.cpu_seconds)
    spent = meter.spent(before, meter.sample())
    took = time.monotonic() - started
    handled = hub.counters.stored + hub.counters.duplicates - handled
    total = sum(spent.values())
    per_minute = total / took * 60
    scale = (CITY_CAMERAS * args.sites / CITY_SITES) / 1000
    parts = ", ".join(f"{k} {v:.1f}" for k, v in spent.items())
    print(f"hub at the city's rate: {handled} messages ingested in {took:.0f} s "
          f"({handled / took:.0f} msg/s; the city's {args.sites} sites send "
          f"{city_rate * args.sites / CITY_SITES:.0f}): {total:.1f} CPU-s ({parts})")
    print(f"hub CPU per 1000 cameras: {per_minute / scale:.1f} CPU-s per minute "
          f"({per_minute / scale / 60 * 100:.1f}% of one core; hub process, postgres and "
          "nats-server)")


def end_to_end(hub: Hub, folder: Path, args: argparse.Namespace) -> None:
    names = [f"e2e-{i:02d}" for i in range(args.e2e_sites)]
    enrol_sites(hub, folder, names)
    groups = [names[i::args.site_processes] for i in range(args.site_processes)]
    children = [Child("--sites-worker", "--role", "e2e", "--folder", str(folder), "--names",
                      ",".join(group), "--urls", ",".join(hub.nats_urls), "--seconds",
                      str(args.e2e_seconds)) for group in groups if group]
    try:
        connected = sum(int(child.expect("READY", 180)) for child in children)
        since = time.time()
        for child in children:
            child.tell("go")
        for child in children:
            child.expect("DONE", args.e2e_seconds + 120)
        until = time.time()
        time.sleep(3)  # the last entries on their way
    finally:
        for child in children:
            child.finish()
    with psycopg.connect(hub.db_url) as conn:
        light = delays(conn, "e2e-%", since, until)
        city = delays(conn, "site-%", since, until)
    print(f"end to end delay (site write -> hub row), {connected}/{len(names)} light sites "
          f"(real uplink, {len(children)} processes) beside the city's traffic: "
          f"{percentiles(light)}")
    print(f"city traffic (feeder publish -> hub row) meanwhile: {percentiles(city)}")


def catch_up(hub: Hub, folder: Path, args: argparse.Namespace, naive_rate: float) -> None:
    names = [f"school-{i:02d}" for i in range(args.catchup_sites)]
    enrol_sites(hub, folder, names)
    built = time.monotonic()
    # Each school is its own machine; here they share the box with the hub, in a few
    # processes (one would serialise 30 uplinks on one interpreter).
    groups = [names[i::args.site_processes] for i in range(args.site_processes)]
    children = [Child("--sites-worker", "--role", "catchup", "--folder", str(folder),
                      "--names", ",".join(group), "--urls", ",".join(hub.nats_urls),
                      "--hours", str(args.catchup_hours)) for group in groups if group]
    try:
        expected: dict[str, dict[str, Any]] = {}
        for child in children:
            expected.update(json.loads(child.expect("READY", 900)))
        last = {name: e["last"] for name, e in expected.items()}
        total = sum(int(e["rows"]) for e in expected.values())
        minutes = int(min(args.catchup_hours * 3600, COVERAGE_FIRST_SECONDS) // 60)
        waiting = total + minutes * len(names)
        print(f"catch-up: {len(names)} schools x {SCHOOL_CAMERAS} cameras, "
              f"{args.catchup_hours:g} h offline: {waiting} messages waiting in their "
              f"outboxes ({minutes} coverage minutes a site; written in "
              f"{time.monotonic() - built:.0f} s)")
        meter = HubCpu(hub)
        before = meter.sample()
        site_cpu = [psutil.Process(c.proc.pid).cpu_times() for c in children]
        rejoin = time.time()
        for child in children:
            child.tell("go")
        took = wait_current(hub, total, last, rejoin=rejoin, timeout=args.catchup_timeout)
        spent = meter.spent(before, meter.sample())
        sites_spent = sum(
            (a.user + a.system) - (b.user + b.system) for a, b in zip(
                [psutil.Process(c.proc.pid).cpu_times() for c in children], site_cpu,
                strict=True))
        done = time.time()
    finally:
        for child in children:
            child.finish()
    parts = ", ".join(f"{k} {v:.0f}" for k, v in spent.items())
    if took is None:
        print(f"catch-up: the hub was NOT current after {args.catchup_timeout:.0f} s")
    else:
        print(f"catch-up: hub current {took:.1f} s after the rejoin (goal <= "
              f"{CATCHUP_GOAL:.0f} s): {waiting / took:.0f} msg/s; the naive ingester at its "
              f"rate above would need {waiting / naive_rate:.0f} s (computed, not run)")
    print(f"catch-up CPU: hub {sum(spent.values()):.0f} CPU-s ({parts}; the city's traffic "
          f"included), the schools' uplinks {sites_spent:.0f} CPU-s ({len(children)} "
          "processes on this box)")
    with psycopg.connect(hub.db_url) as conn:
        city = delays(conn, "site-%", rejoin, done)
    print(f"city traffic during the catch-up (feeder publish -> hub row): {percentiles(city)}")


def wait_current(hub: Hub, total: int, last: dict[str, dict[str, int]], *,
                 rejoin: float, timeout: float) -> float | None:
    """Seconds until the hub holds every site's last row of each table (``last``), its
    coverage up to the minute due at ``rejoin`` (the uplink's lag: 5 s), has verified its
    audit chain up to its head, and holds ``total`` rows of theirs but coverage (counted once
    the rest says it is done: counting is the slow query); None after ``timeout``."""
    started = time.monotonic()
    names = sorted(last)
    due = int((rejoin - 5.0) // 60) - 1
    tables = ("audit_entries", "checkpoints", "camera_states", "events")
    tops = ", ".join(f"(SELECT max(seq) FROM {t} WHERE site = n.name)" for t in tables)
    newest = (f"SELECT n.name, s.audit_verified_seq, {tops}, (SELECT max(seq) FROM coverage "
              "WHERE site = n.name) FROM unnest(%s::text[]) AS n(name) "
              "JOIN sites s ON s.name = n.name")
    counted = ("audit_entries", "checkpoints", "configs", "camera_states", "events",
               "deletion_passes", "holds")
    count = "SELECT " + " + ".join(
        f"(SELECT count(*) FROM {t} WHERE site = ANY(%(s)s))" for t in counted)
    with psycopg.connect(hub.db_url, autocommit=True) as conn:
        while time.monotonic() - started < timeout:
            behind = [r[0] for r in conn.execute(newest, (names,))
                      if (r[1] or 0) < last[r[0]]["audit_entries"]
                      or any((r[2 + i] or 0) < last[r[0]][t] for i, t in enumerate(tables))
                      or (r[-1] or 0) < due]
            if not behind:
                row = conn.execute(count, {"s": names}).fetchone()
                if row is not None and int(row[0]) >= total:
                    return time.monotonic() - started
            time.sleep(0.5)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sites", type=int, default=CITY_SITES)
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--cpu-seconds", type=float, default=60)
    parser.add_argument("--e2e-sites", type=int, default=30)
    parser.add_argument("--e2e-seconds", type=float, default=60)
    parser.add_argument("--catchup-sites", type=int, default=30)
    parser.add_argument("--catchup-hours", type=float, default=24)
    parser.add_argument("--catchup-timeout", type=float, default=900)
    parser.add_argument("--site-processes", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--profile", action="store_true",
                        help="cProfile of the batched ingester in the headroom part")
    parser.add_argument("--lead", type=float, default=20, help=argparse.SUPPRESS)
    # the child processes
    parser.add_argument("--feeder", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sites-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--names", help=argparse.SUPPRESS)
    parser.add_argument("--urls", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--t0", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--hours", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.feeder:
        feeder_main(args)
        return
    if args.sites_worker:
        sites_main(args)
        return
    if args.quick:
        args.sites, args.minutes = 20, 2
        args.e2e_sites, args.e2e_seconds = 3, 5
        args.catchup_sites, args.catchup_hours, args.catchup_timeout = 3, 1, 120
        args.lead, args.cpu_seconds, args.site_processes = 6, 5, 1
    print(f"load average at start: {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)")
    folder = Path(tempfile.mkdtemp(prefix="custodes-bench-hub-"))
    names = [f"site-{i:04d}" for i in range(args.sites)]
    hub = Hub(HubSettings(data=folder / "hub", nats_port=0, web_port=0))
    # The hub's own embedded PostgreSQL, started first for the ingest comparison.
    pg = EmbeddedPostgres(folder / "hub" / "postgres")
    try:
        pg.start()
        db.migrate(pg.url)
        enrol_city(pg.url, names, NodeKeys.load_or_create(folder / "keys").public_pem)
        city_rate, naive = headroom(pg.url, names, args.minutes, args.profile)
        hub.start(web=False)
        feed = start_feed(hub, folder / "feed", args)
        try:
            print(f"load average: {os.getloadavg()[0]:.1f}")
            cpu_at_city_rate(hub, args, city_rate)
            print(f"load average: {os.getloadavg()[0]:.1f}")
            end_to_end(hub, folder / "e2e", args)
            print(f"load average: {os.getloadavg()[0]:.1f}")
            catch_up(hub, folder / "catchup", args, naive)
        finally:
            feed.finish(timeout=10)
    finally:
        hub.stop()
        pg.stop()  # when the hub did not get as far as taking it over
        shutil.rmtree(folder, ignore_errors=True)
        print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
