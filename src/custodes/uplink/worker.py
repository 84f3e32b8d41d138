"""The uplink: a worker that publishes the outbox to the hub's NATS JetStream, in order.

One thread runs its own asyncio loop (nats-py is asyncio) and repeats a pass: read a batch
after each stream's cursor (one database connection for all), publish them all with
``Nats-Msg-Id`` = the message's stable id, wait for the server's acks, and move each cursor to
the last message acknowledged without a gap (one write). A pass starts as soon as the node
commits something to its database (seen within ``POLL_SECONDS``, whichever process wrote it),
else every ``IDLE_SECONDS``. A message not acknowledged (link down, server gone, refused) is
sent again on the next pass with the same id: the server drops a copy within its duplicate
window, the hub's tables drop any other (unique on site, stream, seq). At least once on the
wire, exactly once at the hub. Health is sent every ``health_seconds`` while connected and
never queued: only the latest matters, and the hub knows from its absence that the site is
silent.

The node goes on recording whatever the link does; the uplink logs once when the hub becomes
unreachable and once when it is back (with the backlog it is draining).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS

from custodes.config import UplinkConfig
from custodes.store.db import Store
from custodes.uplink.outbox import Outbox
from custodes.uplink.publish import AckedPublisher
from custodes.uplink.tls import close_quickly, uplink_options
from custodes.uplink.wire import Message, Stream, inbox_prefix

log = logging.getLogger(__name__)

ACK_TIMEOUT = 10.0
# No ack at all for this long: drop the client and connect anew. A connection the server
# registered while it reloaded its accounts (the hub reloads at every enrolment) can stay up,
# answer pings and never get an ack, and nats-py's own reconnects inherit that state; a new
# client does not (tests/test_hub_fleet.py).
STALE_SECONDS = 30.0
RETRY_SECONDS = 1.0
# A pass starts when the database changed (looked at every POLL_SECONDS), and at the latest
# IDLE_SECONDS after the last one: what becomes due with time alone (a coverage minute, an
# event open too long, a deletion pass settled) waits no longer than that.
POLL_SECONDS = 0.05
IDLE_SECONDS = 5.0
BLIND_SECONDS = 0.5  # between passes when the database's changes cannot be watched


class _Commits:
    """Whether anything was committed to the node's database: SQLite's ``data_version`` on a
    connection of the uplink's own, which never writes. It changes with every commit of any
    other connection, the node's writer or a command run beside the node, and costs
    microseconds to read: the uplink looks often instead of reading every stream."""

    def __init__(self, path: Path) -> None:
        self._conn: sqlite3.Connection | None = None
        try:
            self._conn = sqlite3.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            log.warning("uplink: cannot watch %s for changes (%s); reading it every %.1f s",
                        path, exc, BLIND_SECONDS)

    def version(self) -> int | None:
        """None when it cannot tell: the caller then reads the streams."""
        if self._conn is None:
            return None
        try:
            return int(self._conn.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error:
            return None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


@dataclass
class UplinkStatus:
    connected: bool = False
    last_ack_at: float | None = None
    last_error: str | None = None
    sent: int = 0
    backlog: dict[str, int] = field(default_factory=dict)


class Uplink:
    """Publishes ``store``'s outbox for site ``config.site`` until ``stop`` is called."""

    def __init__(self, store: Store, config: UplinkConfig, cameras: list[str], *,
                 health: Callable[[], dict[str, Any]] | None = None,
                 coverage_lag: float = 150.0) -> None:
        self.config = config
        self.outbox = Outbox(store, config.site, cameras, coverage_lag=coverage_lag)
        self.health = health
        self.status = UplinkStatus()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._down_logged = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name=f"uplink-{self.config.site}",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("uplink %s: did not stop within %.0f s", self.config.site, timeout)
            self._thread = None

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._run())
        except Exception:  # the thread must say why it ended, the node records on regardless
            log.exception("uplink %s: stopped by an error", self.config.site)
        finally:
            # What nats-py left running (reconnect tasks) ends with the loop, not after it.
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _run(self) -> None:
        while not self._stop.is_set():
            nc = await self._connect()
            if nc is None:
                return
            try:
                await self._pump(nc)
            finally:
                with contextlib.suppress(Exception):
                    await close_quickly(nc)  # TLS on a dead link: no 30 s wait

    async def _connect(self) -> NATS | None:
        while not self._stop.is_set():
            try:
                nc = await nats.connect(
                    servers=self.config.urls, user=self.config.site,
                    password=self.config.password.get_secret_value(),
                    inbox_prefix=inbox_prefix(self.config.site),
                    name=f"custodes-uplink-{self.config.site}",
                    connect_timeout=5, reconnect_time_wait=1, max_reconnect_attempts=-1,
                    # a link that silently drops everything is noticed within ~30 s
                    ping_interval=10, max_outstanding_pings=2,
                    error_cb=self._on_error, disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                    **uplink_options(self.config),  # TLS: only the hub's CA is trusted
                )
            except Exception as exc:  # nats-py raises several kinds; all mean "not now"
                self._down(f"cannot connect: {exc!r}")
                await self._sleep(RETRY_SECONDS * 2)
                continue
            self._up()
            return nc
        return None

    async def _pump(self, nc: NATS) -> None:
        commits = _Commits(self.outbox.store.path)
        try:
            await self._passes(nc, commits)
        finally:
            commits.close()

    async def _passes(self, nc: NATS, commits: _Commits) -> None:
        js = AckedPublisher(nc)
        await js.start()
        next_health = 0.0
        failing_since: float | None = None  # the first pass with no ack, since the last ack
        while not self._stop.is_set():
            if nc.is_closed:
                return
            if time.monotonic() >= next_health:
                await self._send_health(js)
                next_health = time.monotonic() + self.config.health_seconds
            seen = commits.version()  # a commit from here on is read by this pass or the next
            # At most ``batch`` messages in flight: 30 sites back from days offline each
            # put 8 streams x 500 before the server at once, and the last site's first ack
            # then came after the whole queue (more than ACK_TIMEOUT on a busy hub: all of
            # them gave up, and sent it all again).
            batches = await asyncio.to_thread(functools.partial(
                self.outbox.pending_all, self.config.batch, total=self.config.batch))
            acked = await self._publish(js, batches) if batches else {}
            runs = [run for run in acked.values() if run]
            if runs:
                await asyncio.to_thread(self.outbox.acknowledged_runs, runs)
                self.status.sent += sum(len(run) for run in runs)
                self.status.last_ack_at = time.time()
                self._up()
            if runs:
                failing_since = None
            if any(len(acked.get(s, [])) < len(m) for s, m in batches.items()):
                now = time.monotonic()
                failing_since = now if failing_since is None else failing_since
                if now - failing_since > STALE_SECONDS:
                    log.warning("uplink %s: no ack for %.0f s; a new connection",
                                self.config.site, now - failing_since)
                    return
                await self._sleep(RETRY_SECONDS)
            elif sum(len(m) for m in batches.values()) < self.config.batch:
                await self._idle(commits, seen,
                                 min(IDLE_SECONDS, next_health - time.monotonic()))

    async def _publish(self, js: AckedPublisher, batches: dict[Stream, list[Message]]
                       ) -> dict[Stream, list[Message]]:
        """Publish every stream's messages at once (one wait for the acks, not one per
        stream) and return, per stream, the leading run the server acknowledged.

        The link is given up when no ack at all came for ``ACK_TIMEOUT``, not when the
        pass's last ack takes longer than that: 30 sites draining days at once queue tens of
        thousands of messages at the server, whose acks come steadily but late, and a fixed
        deadline made every site give its pass up and send it all again (seen: twice, 80 s
        of a 220 s catch-up, each resend more load on the server)."""
        sent: list[tuple[Message, asyncio.Future[Any]]] = []
        progress = [time.monotonic()]  # when an ack last came (or the publishing ended)

        def acked_one(fut: asyncio.Future[Any]) -> None:
            if not fut.cancelled():  # an answer from the server, not our giving up
                progress[0] = time.monotonic()
        try:
            for messages in batches.values():
                for m in messages:
                    if self._stop.is_set():
                        break  # what is not sent goes at the next start
                    fut = await js.publish(m.subject, m.encode(), {"Nats-Msg-Id": m.msg_id})
                    fut.add_done_callback(acked_one)
                    sent.append((m, fut))
        except Exception as exc:
            self._down(f"publish failed: {exc!r}")
        progress[0] = max(progress[0], time.monotonic())
        acked: dict[Stream, list[Message]] = {s: [] for s in batches}
        stopped: set[Stream] = set()
        for m, fut in sent:
            if m.stream in stopped:
                fut.cancel()  # frees the client's slot; the message goes again next pass
                continue
            try:
                await self._ack(fut, progress)
                acked[m.stream].append(m)
            except TimeoutError:
                fut.cancel()
                stopped.update(batches)  # the link, not the message: the rest waits too
                if not self._stop.is_set():
                    self._down(f"no ack for {m.msg_id} within {ACK_TIMEOUT:.0f} s")
            except Exception as exc:
                self._down(f"{m.msg_id} refused: {exc!r}")
                stopped.add(m.stream)  # in order: nothing after it in its stream counts
        return acked

    async def _ack(self, fut: asyncio.Future[Any], progress: list[float]) -> None:
        """The server's ack of a message; TimeoutError when no ack of the pass came for
        ACK_TIMEOUT (``progress[0]``: the last one), or at once when the uplink is stopping:
        a link that swallows everything (acks never come) must not hold the node's stop for
        ACK_TIMEOUT (tests/test_hub.py)."""
        while not fut.done():
            left = progress[0] + ACK_TIMEOUT - time.monotonic()
            if self._stop.is_set() or left <= 0:
                raise TimeoutError
            await asyncio.wait({fut}, timeout=min(0.1, left))
        fut.result()  # a refusal raises here

    async def _send_health(self, js: AckedPublisher) -> None:
        """Publish the health report without waiting for its ack: the pass goes on with the
        outbox meanwhile (a slow ack once held audit entries back for up to ACK_TIMEOUT)."""
        try:
            body = await asyncio.to_thread(self._health_body)
            m = Message(self.config.site, Stream.HEALTH, int(time.time() * 1000), body)
            ack = await js.publish(m.subject, m.encode(), {"Nats-Msg-Id": m.msg_id})
        except Exception as exc:
            self._down(f"health not sent: {exc!r}")
            return

        def acked(fut: asyncio.Future[Any]) -> None:
            if not fut.cancelled() and fut.exception() is not None:
                self._down(f"health not acknowledged: {fut.exception()!r}")

        ack.add_done_callback(acked)
        # never answered (a reconnect lost it): given up, which frees the client's slot
        asyncio.get_running_loop().call_later(ACK_TIMEOUT, ack.cancel)

    def _health_body(self) -> dict[str, Any]:
        body: dict[str, Any] = dict(self.health()) if self.health is not None else {}
        self.status.backlog = self.outbox.backlog()
        body.update({"at": time.time(), "backlog": self.status.backlog,
                     "audit_head": self.outbox.audit_head(),
                     "retention_hours": self.outbox.retention()})
        return body

    async def _idle(self, commits: _Commits, seen: int | None, seconds: float) -> None:
        """Wait ``seconds``, or until something was committed to the node's database after
        the version ``seen`` (read when the last pass began)."""
        if seen is None:
            seconds = min(seconds, BLIND_SECONDS)
        end = time.monotonic() + seconds
        while not self._stop.is_set() and time.monotonic() < end:
            if seen is not None and commits.version() != seen:
                return
            await asyncio.sleep(min(POLL_SECONDS, max(0.0, end - time.monotonic())))

    async def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._stop.is_set() and time.monotonic() < end:
            await asyncio.sleep(min(0.1, end - time.monotonic()))

    # -- logged once when it goes down, once when it comes back ------------------------------

    def _down(self, why: str) -> None:
        self.status.connected = False
        self.status.last_error = why
        if not self._down_logged:
            log.warning("uplink %s: hub unreachable (%s); recording goes on, the backlog "
                        "waits in the database", self.config.site, why)
            self._down_logged = True

    def _up(self) -> None:
        self.status.connected = True
        if self._down_logged:
            log.info("uplink %s: hub reachable again, sending the backlog", self.config.site)
            self._down_logged = False

    async def _on_error(self, exc: Exception) -> None:
        self.status.last_error = repr(exc)
        if "permissions violation" in str(exc).lower():
            # The hub's server refused something this site may not do: never expected from
            # an enrolled site publishing its own subjects, so said loudly.
            log.error("uplink %s: refused by the hub: %s", self.config.site, exc)
        else:
            log.debug("uplink %s: %r", self.config.site, exc)

    async def _on_disconnected(self) -> None:
        self._down("disconnected")

    async def _on_reconnected(self) -> None:
        self._up()
