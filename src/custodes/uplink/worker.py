"""The uplink: a worker that publishes the outbox to the hub's NATS JetStream, in order.

One thread runs its own asyncio loop (nats-py is asyncio) and repeats a pass: for each stream
in turn, read a batch after the cursor, publish it with ``Nats-Msg-Id`` = the message's stable
id, wait for the server's acks, and move the cursor to the last message acknowledged without a
gap. A message not acknowledged (link down, server gone, refused) is sent again on the next
pass with the same id: the server drops a copy within its duplicate window, the hub's tables
drop any other (unique on site, stream, seq). At least once on the wire, exactly once at the
hub. Health is sent every ``health_seconds`` while connected and never queued: only the latest
matters, and the hub knows from its absence that the site is silent.

The node goes on recording whatever the link does; the uplink logs once when the hub becomes
unreachable and once when it is back (with the backlog it is draining).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS

from custodes.config import UplinkConfig
from custodes.store.db import Store
from custodes.uplink.outbox import DURABLE, Outbox
from custodes.uplink.wire import Message, Stream, inbox_prefix

log = logging.getLogger(__name__)

ACK_TIMEOUT = 10.0
RETRY_SECONDS = 1.0
IDLE_SECONDS = 0.5


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
                    await nc.close()

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
                )
            except Exception as exc:  # nats-py raises several kinds; all mean "not now"
                self._down(f"cannot connect: {exc!r}")
                await self._sleep(RETRY_SECONDS * 2)
                continue
            self._up()
            return nc
        return None

    async def _pump(self, nc: NATS) -> None:
        js = nc.jetstream()
        next_health = 0.0
        while not self._stop.is_set():
            if nc.is_closed:
                return
            if time.monotonic() >= next_health:
                await self._send_health(js)
                next_health = time.monotonic() + self.config.health_seconds
            busy = False
            failed = False
            for stream in DURABLE:
                messages = await asyncio.to_thread(self.outbox.pending, stream,
                                                   self.config.batch)
                if not messages:
                    continue
                acked = await self._publish(js, messages)
                if acked:
                    await asyncio.to_thread(self.outbox.acknowledged, acked)
                    self.status.sent += len(acked)
                    self.status.last_ack_at = time.time()
                    self._up()
                if len(acked) < len(messages):
                    failed = True
                    break
                busy = busy or len(messages) == self.config.batch
            if failed:
                await self._sleep(RETRY_SECONDS)
            elif not busy:
                await self._sleep(IDLE_SECONDS)

    async def _publish(self, js: Any, messages: list[Message]) -> list[Message]:
        """Publish ``messages`` and return the leading run the server acknowledged."""
        futures: list[asyncio.Future[Any]] = []
        try:
            for m in messages:
                futures.append(await js.publish_async(
                    m.subject, m.encode(), headers={"Nats-Msg-Id": m.msg_id}, wait_stall=5))
        except Exception as exc:
            self._down(f"publish failed: {exc!r}")
        acked: list[Message] = []
        deadline = time.monotonic() + ACK_TIMEOUT
        for m, fut in zip(messages, futures, strict=False):
            try:
                await asyncio.wait_for(asyncio.shield(fut),
                                       max(0.1, deadline - time.monotonic()))
                acked.append(m)
            except TimeoutError:
                self._down(f"no ack for {m.msg_id} within {ACK_TIMEOUT:.0f} s")
                break
            except Exception as exc:
                self._down(f"{m.msg_id} refused: {exc!r}")
                break
        for fut in futures[len(acked):]:
            fut.cancel()  # frees the client's slot; the message goes again next pass
        return acked

    async def _send_health(self, js: Any) -> None:
        try:
            body = await asyncio.to_thread(self._health_body)
            m = Message(self.config.site, Stream.HEALTH, int(time.time() * 1000), body)
            await js.publish(m.subject, m.encode(), headers={"Nats-Msg-Id": m.msg_id},
                             timeout=ACK_TIMEOUT)
        except Exception as exc:
            self._down(f"health not sent: {exc!r}")

    def _health_body(self) -> dict[str, Any]:
        body: dict[str, Any] = dict(self.health()) if self.health is not None else {}
        self.status.backlog = self.outbox.backlog()
        body.update({"at": time.time(), "backlog": self.status.backlog,
                     "audit_head": self.outbox.audit_head(),
                     "retention_hours": self.outbox.retention()})
        return body

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
