"""A hub: ordered start and stop of its parts.

Start: PostgreSQL (embedded, or ``database_url``) and its migrations; NATS (embedded, with one
account per enrolled site, or ``nats_urls``); the JetStream stream and the ingest consumer; the
watch (silent sites, newly enrolled sites -> NATS reload); the web pages. Stop in reverse.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import nats
import nats.errors
import psycopg
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from custodes.hub import compaction, db
from custodes.hub.alarms import AlarmKind, raise_alarm
from custodes.hub.config import HubSettings
from custodes.hub.ingest import BatchResult, Received, write_batch
from custodes.hub.nats_server import HUB_USER, EmbeddedNats, free_port, log_nats_error
from custodes.hub.postgres import EmbeddedPostgres
from custodes.hub.sites import Enrolment, accounts, add_site
from custodes.hub.tls import TLS_DIR, ensure_server, server_names
from custodes.hub.web import HubWebServer
from custodes.uplink.tls import connect_options
from custodes.uplink.wire import STREAM_NAME, Stream, subject

log = logging.getLogger(__name__)

# The hub's durable consumers. Each is read by one loop, a batch at a time, each message acked
# once its batch is written (AckPolicy.EXPLICIT). Not AckPolicy.ALL, one ack a batch: a fetch
# whose answer is lost (a stream leader killed mid-fetch) leaves messages delivered that the
# hub never saw, and the next batch's ack would cover them: lost, not redelivered (seen in
# tests/test_hub_cluster.py). The consumer of the hub before this one ("hub-ingest") is
# replaced by "hub-fleet" from its ack floor on, once.
CONSUMER = "hub-fleet"
OLD_CONSUMER = "hub-ingest"
# Health has a stream of its own: the next report supersedes it, so it is kept an hour at
# most and one per site (the durable streams keep 14 days), and it is read by a consumer of
# its own, so that a site draining days of backlog does not hold every site's health (and
# with it "last heard" and the silent alarm) behind the backlog.
HEALTH_STREAM = "CUSTODES_HEALTH"
HEALTH_CONSUMER = "hub-health"
HEALTH_MAX_AGE = 3600.0
FETCH = 500
# How long a fetch waits for its batch to fill once a message is there (nats-py waits out
# the whole timeout): what the hub adds to a message's delay when traffic trickles in. A
# backlog fills the batch at once; an idle hub asks ten times a second.
FETCH_WAIT = 0.1
# JetStream drops a message id it saw within this window; the hub's tables drop the rest.
DUPLICATE_WINDOW = 600.0
WATCH_SECONDS = 2.0


@dataclass
class IngestCounters:
    stored: int = 0
    duplicates: int = 0
    conflicts: int = 0
    rejected: int = 0
    batches: int = 0
    failures: int = 0
    last_batch_at: float | None = None
    per_stream: dict[str, int] = field(default_factory=dict)

    def add(self, r: BatchResult) -> None:
        self.stored += r.stored
        self.duplicates += r.duplicates
        self.conflicts += r.conflicts
        self.rejected += r.rejected
        self.batches += 1
        self.last_batch_at = time.time()


def database_url(settings: HubSettings) -> tuple[str, EmbeddedPostgres | None]:
    """The database to use, starting the embedded one when none is configured."""
    if settings.database_url:
        return settings.database_url, None
    pg = EmbeddedPostgres(settings.data / "postgres")
    pg.start()
    return pg.url, pg


class Hub:
    def __init__(self, settings: HubSettings) -> None:
        self.settings = settings
        self.pg: EmbeddedPostgres | None = None
        self.nats: EmbeddedNats | None = None
        self.db_url = ""
        self.counters = IngestCounters()
        self.stop_event = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sites_seen: tuple[int, float] = (0, 0.0)
        self._consumer_ready = threading.Event()
        self.web: Any = None

    @property
    def nats_urls(self) -> list[str]:
        if self.settings.nats_urls:
            return list(self.settings.nats_urls)
        assert self.nats is not None
        return [self.nats.url]

    @property
    def first_admin_password(self) -> str | None:
        """The password of the hub's first ``admin``, made at its first start (else None)."""
        return self.web.first_admin_password if self.web is not None else None

    @property
    def site_ca(self) -> str | None:
        """The CA certificate (PEM) the sites must trust: the hub's own, or the cluster's."""
        if self.nats is not None and self.nats.tls is not None:
            return self.nats.tls.ca_pem
        ca_file = self.settings.nats_ca_file
        return ca_file.read_text(encoding="ascii") if ca_file is not None else None

    @property
    def site_tls_first(self) -> bool:
        """Whether the sites start TLS first (the embedded server wants it)."""
        return self.nats is not None or self.settings.nats_tls_first

    @property
    def advertised_urls(self) -> list[str]:
        if self.settings.advertise_url:
            return [self.settings.advertise_url]
        return self.nats_urls

    def start(self, *, web: bool = True) -> None:
        self.settings.data.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.db_url, self.pg = database_url(self.settings)
        applied = db.migrate(self.db_url)
        if applied:
            log.info("hub database ready (%s)", ", ".join(applied))
        if not self.settings.nats_urls:
            port = self.settings.nats_port or free_port()
            tls = ensure_server(self.settings.data / TLS_DIR, server_names(
                self.settings.nats_host, self.settings.advertise_url, self.settings.tls_names))
            self.nats = EmbeddedNats(self.settings.data / "nats", port, tls=tls,
                                     host=self.settings.nats_host)
            with db.connect(self.db_url) as conn:
                self.nats.start(accounts(conn))
                self._sites_seen = _site_marker(conn)
        for target, name in ((self._ingest_main, "hub-ingest"), (self._watch, "hub-watch"),
                             (self._compact_main, "hub-compact")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        if not self._consumer_ready.wait(60):
            log.error("hub: the ingest consumer is not ready after 60 s")
        if web:
            self.web = HubWebServer(self)
            self.web.start()
        log.info("hub started: NATS %s, database %s", ", ".join(self.nats_urls),
                 "embedded" if self.pg else "external")

    def stop(self) -> None:
        self.stop_event.set()
        if self.web is not None:
            self.web.stop()
        for thread in self._threads:
            thread.join(15)
        if self.nats is not None:
            self.nats.stop()
        if self.pg is not None:
            self.pg.stop()

    def enrol(self, name: str, group: str, public_pem: bytes) -> Enrolment:
        """Enrol a site (``custodes.hub.sites.add_site``) and let it in at once."""
        with db.connect(self.db_url) as conn:
            enrolment = add_site(conn, name, group, public_pem)
            conn.commit()
            if self.nats is not None:
                self.nats.reload(accounts(conn))
                self._sites_seen = _site_marker(conn)
        return enrolment

    def wait_ready(self, timeout: float = 60) -> bool:
        return self._consumer_ready.wait(timeout)

    # -- ingest -----------------------------------------------------------------------------

    def _ingest_main(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._ingest())
        except Exception:
            log.exception("hub: the ingest consumer stopped by an error")
        finally:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    async def _connect(self) -> NATS:
        if self.settings.nats_urls:
            user = self.settings.nats_user
            password = (self.settings.nats_password.get_secret_value()
                        if self.settings.nats_password else None)
        else:
            assert self.nats is not None
            user, password = HUB_USER, self.nats.hub_password
        tls = connect_options(self.nats_urls, ca_pem=self.site_ca, first=self.site_tls_first)
        return await nats.connect(servers=self.nats_urls, user=user, password=password,
                                  name="custodes-hub", max_reconnect_attempts=-1,
                                  reconnect_time_wait=1, error_cb=log_nats_error, **tls)

    async def _ingest(self) -> None:
        nc = None
        while nc is None and not self.stop_event.is_set():
            try:
                nc = await self._connect()
            except Exception as exc:
                log.error("hub: cannot connect to NATS (%r); retrying", exc)
                await asyncio.sleep(2)
        if nc is None:
            return
        js = nc.jetstream()
        subs = await self._subscribe(js)
        if subs is None:
            with contextlib.suppress(Exception):
                await nc.close()
            return
        self._consumer_ready.set()
        try:
            await asyncio.gather(*(self._consume(psub, name) for name, psub in subs))
        finally:
            with contextlib.suppress(Exception):
                await nc.close()

    async def _consume(self, psub: Any, name: str) -> None:
        """Fetch, write, ack, in order, until the hub stops; a batch that cannot be written
        is written again (never skipped: the ack of a later batch would cover it)."""
        conn = db.connect(self.db_url)
        try:
            while not self.stop_event.is_set():
                try:
                    msgs = await psub.fetch(FETCH, timeout=FETCH_WAIT)
                except (TimeoutError, nats.errors.TimeoutError):
                    continue
                except Exception as exc:
                    log.warning("hub: fetch from %s failed: %r", name, exc)
                    await asyncio.sleep(1)
                    continue
                batch = [Received(m.subject, m.data) for m in msgs]
                while not self.stop_event.is_set():
                    try:
                        result = await asyncio.to_thread(self._write, conn, batch)
                    except Exception:
                        log.exception("hub: could not write a batch of %d messages from %s; "
                                      "trying again", len(batch), name)
                        self.counters.failures += 1
                        db.close_quietly(conn)
                        await asyncio.sleep(1)
                        with contextlib.suppress(Exception):
                            conn = db.connect(self.db_url)
                        continue
                    self.counters.add(result)
                    for m in msgs:  # buffered by the client: a few socket writes a batch
                        with contextlib.suppress(Exception):
                            await m.ack()
                    break
        finally:
            conn.close()

    async def _subscribe(self, js: Any) -> list[tuple[str, Any]] | None:
        """The streams (made or updated if needed) and the hub's durable consumers on them;
        None if the hub stops first."""
        while not self.stop_event.is_set():
            try:
                await _ensure_streams(js, self.settings.nats_replicas)
                return [(CONSUMER, await _consumer(js, STREAM_NAME, CONSUMER, OLD_CONSUMER)),
                        (HEALTH_CONSUMER, await _consumer(js, HEALTH_STREAM, HEALTH_CONSUMER))]
            except Exception as exc:
                # A cluster still electing its leaders, or short of the servers the replicas
                # need: said, and tried again rather than leaving the hub without ingest.
                log.error("hub: cannot set up the JetStream streams and their consumers (%r); "
                          "retrying in 2 s", exc)
                await asyncio.sleep(2)
        return None

    @staticmethod
    def _write(conn: Any, batch: list[Received]) -> BatchResult:
        try:
            with conn.transaction():
                return write_batch(conn, batch)
        except psycopg.DataError as exc:
            log.warning("hub: the database refused a message of this batch (%s); writing the "
                        "batch again one message at a time", exc)
        with conn.transaction():
            return write_batch(conn, batch, safe=True)

    def _compact_main(self) -> None:
        compaction.run(self.db_url, self.stop_event)  # minute rows past a month: hub/compaction.py

    # -- watch: silent sites, new sites ----------------------------------------------------

    def _watch(self) -> None:
        conn = None
        while not self.stop_event.wait(WATCH_SECONDS):
            try:
                if conn is None:
                    conn = db.connect(self.db_url)
                with conn.transaction():
                    self._check_silent(conn)
                    marker = _site_marker(conn)
                    if self.nats is not None and marker != self._sites_seen:
                        self.nats.reload(accounts(conn))
                        self._sites_seen = marker
                        log.info("hub: site accounts reloaded (%d sites)", marker[0])
            except Exception:
                log.exception("hub: watch pass failed")
                db.close_quietly(conn)
                conn = None
        if conn is not None:
            conn.close()

    def _check_silent(self, conn: Any) -> None:
        now = time.time()
        limit = self.settings.silent_after_seconds
        for (name,) in conn.execute("SELECT name FROM sites WHERE COALESCE(last_heard, "
                                    "enrolled_at) < %s", (now - limit,)).fetchall():
            raise_alarm(conn, name, AlarmKind.SILENT,
                        f"nothing heard from the site for more than {limit:.0f} s")
        # Cleared in one statement: one per site every WATCH_SECONDS made 400 statements a
        # second for the city's 800 sites.
        conn.execute("UPDATE alarms SET cleared_at = %s WHERE kind = %s AND cleared_at IS NULL "
                     "AND site IN (SELECT name FROM sites WHERE last_heard >= %s)",
                     (now, AlarmKind.SILENT.value, now - limit))


def _site_marker(conn: Any) -> tuple[int, float]:
    row = conn.execute("SELECT count(*), COALESCE(max(enrolled_at), 0) FROM sites").fetchone()
    return int(row[0]), float(row[1])


async def _consumer(js: Any, stream: str, durable: str, previous: str | None = None) -> Any:
    """A pull subscription on ``durable`` (AckPolicy.EXPLICIT), made if missing; made from where
    the consumer ``previous`` had acked up to, if that one is there (it is then deleted:
    what it had delivered but not acked comes again, and the tables drop it)."""
    try:
        await js.consumer_info(stream, durable)
    except NotFoundError:
        config = ConsumerConfig(name=durable, durable_name=durable,
                                ack_policy=AckPolicy.EXPLICIT, ack_wait=60,
                                max_ack_pending=20000)
        if previous is not None:
            with contextlib.suppress(NotFoundError):
                old = await js.consumer_info(stream, previous)
                floor = old.ack_floor.stream_seq if old.ack_floor is not None else 0
                config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
                config.opt_start_seq = floor + 1
                log.info("hub: consumer %s replaces %s from stream message %d", durable,
                         previous, floor + 1)
        await js.add_consumer(stream, config)
    if previous is not None:
        with contextlib.suppress(NotFoundError):
            await js.delete_consumer(stream, previous)
    return await js.pull_subscribe_bind(durable=durable, stream=stream)


async def _ensure_streams(js: Any, replicas: int) -> None:
    """The durable stream (every stream of a site but health, 14 days) and the health stream
    (the last report of each site, an hour at most). A hub made before the health stream had
    one stream for every subject: its subjects are narrowed first (streams may not overlap);
    the health reports it holds are read and written as before."""
    durable = [subject("*", s) for s in Stream if s != Stream.HEALTH]
    await _ensure_stream(js, StreamConfig(
        name=STREAM_NAME, subjects=durable, storage=StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW, max_age=14 * 86400.0, num_replicas=replicas))
    await _ensure_stream(js, StreamConfig(
        name=HEALTH_STREAM, subjects=[subject("*", Stream.HEALTH)], storage=StorageType.FILE,
        duplicate_window=60.0, max_age=HEALTH_MAX_AGE, max_msgs_per_subject=1,
        num_replicas=replicas))


async def _ensure_stream(js: Any, config: StreamConfig) -> None:
    try:
        info = await js.stream_info(config.name)
    except NotFoundError:
        await js.add_stream(config)
        log.info("hub: created the JetStream stream %s (%d replicas)", config.name,
                 config.num_replicas)
        return
    if (info.config.num_replicas or 1) != config.num_replicas:
        # The cluster moves the stream's copies itself; the consumers follow their stream.
        log.warning("hub: the stream %s has %s replicas, the config says %d: changing it",
                    config.name, info.config.num_replicas, config.num_replicas)
        await js.update_stream(config)
    elif sorted(info.config.subjects or []) != sorted(config.subjects or []):
        log.info("hub: the stream %s now takes %s", config.name, ", ".join(config.subjects or []))
        await js.update_stream(config)
