"""What the hub's tests share: a hub started in a scratch folder, a TCP proxy that cuts or
blackholes a site's link, and the hub's rows compared row by row with a site's own tables."""

from __future__ import annotations

import contextlib
import gc
import math
import random
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from custodes.audit.actions import Action
from custodes.hub import db
from custodes.hub.config import HubSettings
from custodes.hub.demo import LightSite
from custodes.hub.service import Hub
from custodes.store import schema
from custodes.store.db import Store
from custodes.uplink.tls import connect_options

# nats-py leaves some sockets to the garbage collector: the StreamWriter of a connection the
# proxy cut (its transport already closing), and a connection attempt cancelled inside its
# asyncio.wait_for(open_connection(...)) while reconnecting or closing. asyncio warns when the
# collector closes them; the tests collect before they end, so that these warnings come while
# this filter applies and not at the end of the session.
NATS_SOCKET_WARNINGS = pytest.mark.filterwarnings(
    r"ignore:Exception ignored in. (<function (StreamWriter|_SelectorTransport)\.__del__"
    r"|<socket\.socket fd=\d+, family=2, type=1, proto=6, laddr=\('127\.0\.0\.1')"
    r":pytest.PytestUnraisableExceptionWarning")


# A light site writes each minute's segment when the minute has ended, from a thread that a
# busy machine can hold back for many seconds: its coverage is final later than a recorder's.
LIGHT_COVERAGE_LAG = 90.0


def wait_for(what: str, cond: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for: {what}")


def converge(what: str, problems: Callable[[], list[str]], timeout: float = 180) -> None:
    """Wait until ``problems()`` finds none; else fail with those it found last."""
    deadline = time.monotonic() + timeout
    found = problems()
    while found and time.monotonic() < deadline:
        time.sleep(0.5)
        found = problems()
    assert not found, f"{what}, still after {timeout:.0f} s:\n  " + "\n  ".join(found[:20])


# -- the link between a site and the hub -----------------------------------------------------

class Link(StrEnum):
    OPEN = "open"
    CUT = "cut"  # open connections dropped, new ones refused: a link that fails loudly
    BLACKHOLE = "blackhole"  # nothing passes and nothing is refused: only timeouts tell


class Proxy:
    """A TCP proxy between a site and the hub's NATS server, whose link can be cut or
    blackholed.

    A blackhole behaves as a dead route does for TCP: connections stay open, new ones are
    accepted, and no byte gets through either way. The bytes are held, not dropped (TCP
    retransmits them), so when the link comes back whatever a site wrote into a connection
    it has since given up on still reaches the server, late: a copy the hub must not count
    twice."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.state = Link.OPEN
        self.swallowed = 0  # connections opened while the link was a blackhole
        self._passing = threading.Event()
        self._passing.set()
        self.open: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                if self.state == Link.CUT:
                    client.close()
                    continue
                if self.state == Link.BLACKHOLE:
                    self.swallowed += 1
                try:
                    upstream = socket.create_connection(("127.0.0.1", self.target))
                except OSError:
                    client.close()
                    continue
                self.open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                self._passing.wait()
                data = src.recv(65536)
                if not data:
                    break
                self._passing.wait()  # read just as the hole opened: held, not lost
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        with self.lock:  # the other direction's pump ends too: close both once
            if src in self.open:
                self.open.remove(src)
                src.close()

    def cut(self) -> None:
        with self.lock:
            self.state = Link.CUT
            for s in self.open:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            self.open.clear()
        self._passing.set()  # held pumps wake up to find their sockets closed

    def blackhole(self) -> None:
        with self.lock:
            self.state = Link.BLACKHOLE
            self.swallowed = 0
            self._passing.clear()

    def restore(self) -> None:
        with self.lock:
            self.state = Link.OPEN
            self._passing.set()

    def close(self) -> None:
        self.cut()
        self.listener.close()


# -- a hub ---------------------------------------------------------------------------------

@contextlib.contextmanager
def running_hub(**settings: Any) -> Iterator[Hub]:
    """A hub (embedded PostgreSQL and, unless ``nats_urls`` is given, nats-server) in
    ``<scratch>/hub``; ``hub.settings.data.parent`` is a scratch folder for the sites.

    Not under pytest's tmp folder: as root, PostgreSQL runs as its own account and must be
    able to reach its folder, and every pytest run resets pytest's root folder to 0700."""
    folder = Path(tempfile.mkdtemp(prefix="custodes-hub-test-"))
    values: dict[str, Any] = {"data": folder / "hub", "nats_port": 0, "web_port": 0,
                              "silent_after_seconds": 5, **settings}
    h = Hub(HubSettings(**values))
    try:
        h.start(web=False)
        yield h
    finally:
        h.stop()
        gc.collect()
        shutil.rmtree(folder, ignore_errors=True)


def q(hub: Hub, sql: str, *args: object) -> list[tuple[Any, ...]]:
    with db.connect(hub.db_url) as conn:
        return [tuple(r) for r in conn.execute(sql.encode(), args or None).fetchall()]


def site_audit(site: LightSite | Store) -> list[tuple[int, str]]:
    store = site if isinstance(site, Store) else site.store
    with store.read() as conn:
        return [(int(r[0]), str(r[1])) for r in conn.execute(
            select(schema.audit_log.c.seq, schema.audit_log.c.hash)
            .order_by(schema.audit_log.c.seq))]


def hub_audit(hub: Hub, name: str) -> list[tuple[int, str]]:
    return [(int(r[0]), str(r[1])) for r in q(
        hub, "SELECT seq, hash FROM audit_entries WHERE site = %s ORDER BY seq", name)]


def open_alarms(hub: Hub, name: str) -> set[str]:
    return {str(r[0]) for r in q(
        hub, "SELECT kind FROM alarms WHERE site = %s AND cleared_at IS NULL", name)}


def new_site(hub: Hub, root: Path, name: str, *, group: str = "Ashby",
             url: str | None = None, connect: bool = True,
             cameras: int = 3) -> tuple[LightSite, str]:
    site = LightSite.create(root / name, name, cameras=cameras, checkpoint_every=5)
    password = hub.enrol(name, group, site.keys.public_pem).password
    if connect:
        site.connect([url or hub.nats_urls[0]], password, health_seconds=1, ca=hub.site_ca,
                     tls_first=hub.site_tls_first)
    return site, password


def tls_of(hub: Hub) -> dict[str, Any]:
    """``nats.connect`` options for a raw client of ``hub``, as its sites connect."""
    return connect_options(hub.nats_urls, ca_pem=hub.site_ca, first=hub.site_tls_first)


class Activity:
    """Light sites at work (`LightSite.activity`) in a thread of their own, a round every
    ``every`` seconds, until `end`: the traffic beside the fleet's and the cluster's tests."""

    def __init__(self, sites: Sequence[LightSite], *, seed: int, every: float,
                 name: str) -> None:
        self._stop = threading.Event()
        rng = random.Random(seed)

        def work() -> None:
            while not self._stop.wait(every):
                for site in sites:
                    site.activity(rng)

        self._thread = threading.Thread(target=work, name=name, daemon=True)
        self._thread.start()

    def halt(self) -> None:
        """Stop after the round under way (a test's cleanup: nothing waited for)."""
        self._stop.set()

    def end(self) -> None:
        """Stop, and wait for the round under way: after it, the sites write nothing more."""
        self.halt()
        self._thread.join(60)
        assert not self._thread.is_alive(), "the sites' writer did not stop"


# -- row by row: a site's own tables against the hub's ----------------------------------------

# (the site's query, the hub's query): the same columns, in the same order, keyed by the
# stream's sequence number first.
TABLES: dict[str, tuple[str, str]] = {
    "audit entries": (
        "SELECT seq, at, actor, address, action, target, outcome, detail, prev_hash, hash "
        "FROM audit_log ORDER BY seq",
        "SELECT seq, at, actor, address, action, target, outcome, detail, prev_hash, hash "
        "FROM audit_entries WHERE site = %s ORDER BY seq"),
    "checkpoints": (
        "SELECT id, seq, hash, at FROM audit_checkpoints ORDER BY id",
        "SELECT seq, entry_seq, hash, at FROM checkpoints WHERE site = %s ORDER BY seq"),
    "configs": (
        f"SELECT seq FROM audit_log WHERE action = '{Action.NODE_START.value}' ORDER BY seq",
        "SELECT seq FROM configs WHERE site = %s ORDER BY seq"),
    "camera states": (
        "SELECT id, camera, at, state, reason FROM camera_states ORDER BY id",
        "SELECT seq, camera, at, state, reason FROM camera_states WHERE site = %s "
        "ORDER BY seq"),
    "events": (
        'SELECT id, camera, kind, start, "end" FROM events ORDER BY id',
        "SELECT seq, camera, kind, start_at, end_at FROM events WHERE site = %s ORDER BY seq"),
}


def table_rows(store: Store, hub: Hub, name: str) -> dict[str, tuple[list[tuple[Any, ...]],
                                                                       list[tuple[Any, ...]]]]:
    """For each table: (the site's rows, the hub's rows), read now."""
    out = {}
    with store.read() as conn:
        mine = {t: [tuple(r) for r in conn.execute(text(site_sql))]
                for t, (site_sql, _) in TABLES.items()}
    for t, (_, hub_sql) in TABLES.items():
        out[t] = (mine[t], q(hub, hub_sql, name))
    return out


def coverage_of(store: Store, cameras: Iterable[str],
                minutes: list[int]) -> dict[int, dict[str, float]]:
    """Seconds recorded per camera in each of ``minutes``, from the site's segment index."""
    out = {m: dict.fromkeys(cameras, 0.0) for m in minutes}
    if not minutes:
        return out
    lo, hi = minutes[0] * 60.0, (minutes[-1] + 1) * 60.0
    with store.read() as conn:
        segments = conn.execute(text('SELECT camera, start, "end" FROM segments WHERE '
                                     '"end" > :lo AND start < :hi'), {"lo": lo, "hi": hi}).all()
    for cam, start, end in segments:
        for m in range(int(start // 60), math.ceil(end / 60)):
            if m in out:
                covered = min(end, m * 60.0 + 60) - max(start, m * 60.0)
                out[m][cam] = out[m].get(cam, 0.0) + max(0.0, covered)
    return {m: {c: min(60.0, s) for c, s in cams.items()} for m, cams in out.items()}


def differences(hub: Hub, name: str, store: Store, cameras: Iterable[str], *,
                at_least: dict[str, int] | None = None) -> list[str]:
    """What the hub holds for site ``name`` that is not, row by row, what the site holds.

    Without ``at_least`` the hub must hold every row of the site (a site that stopped
    writing). With it (a site still writing), the hub's rows must be the site's first rows,
    with no gap and nothing twice, and at least ``at_least[table]`` of them (coverage: up to
    at least that minute)."""
    found: list[str] = []
    for table, (site, held) in table_rows(store, hub, name).items():
        head = site[:len(held)]
        if held != head:
            bad = next((i for i, (a, b) in enumerate(zip(held, site, strict=False))
                        if a != b), min(len(held), len(site)))
            found.append(f"{name} {table}: row {bad} differs: hub "
                         f"{held[bad] if bad < len(held) else None} site "
                         f"{site[bad] if bad < len(site) else None}")
        elif at_least is None and len(held) != len(site):
            found.append(f"{name} {table}: the hub holds {len(held)} of {len(site)} rows")
        elif at_least is not None and len(held) < at_least.get(table, 0):
            found.append(f"{name} {table}: the hub holds {len(held)} rows, expected at least "
                         f"{at_least[table]}")
    minutes = [(int(r[0]), dict(r[1])) for r in q(
        hub, "SELECT seq, cameras FROM coverage WHERE site = %s ORDER BY seq", name)]
    if minutes:
        numbers = [m for m, _ in minutes]
        if numbers != list(range(numbers[0], numbers[-1] + 1)):
            found.append(f"{name} coverage: minutes missing between {numbers[0]} and "
                         f"{numbers[-1]}")
        truth = coverage_of(store, cameras, numbers)
        for minute, cams in minutes:
            want = truth[minute]
            if set(cams) != set(want) or any(abs(float(cams[c]) - want[c]) > 0.011
                                             for c in want):
                found.append(f"{name} coverage of minute {minute}: hub {cams} site {want}")
                break
    wanted = (at_least or {}).get("coverage")
    if wanted is not None and (not minutes or minutes[-1][0] < wanted):
        found.append(f"{name} coverage: the hub's last minute is "
                     f"{minutes[-1][0] if minutes else None}, expected at least {wanted}")
    return found
