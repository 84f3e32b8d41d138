"""The node's database: SQLite in WAL mode, one writer thread, reads from any thread.

SQLite allows one writer at a time; rather than let threads fight over the lock (and hit
"database is locked" under load), every write is a function run by a single thread that owns
the write connection. Readers use their own connections, which WAL lets run concurrently
with the writer.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.pool import NullPool

log = logging.getLogger(__name__)

T = TypeVar("T")
_WRITER = "custodes.writer"


def _migrations() -> list[tuple[int, str, str]]:
    """(number, name, sql) of every migration shipped with the package, in order."""
    folder = resources.files("custodes.store").joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            number = int(entry.name.split("_", 1)[0])
            found.append((number, entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
    # Python's sqlite3 opens transactions implicitly and never for DDL; SQLAlchemy wants to
    # manage them itself, so switch the driver's own handling off.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    # NORMAL is durable across application crashes in WAL mode; only an OS crash can lose
    # the last transactions, which the start-up reconciliation repairs from the disk.
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def _on_begin(conn: Connection) -> None:
    # The writer takes the write lock when its transaction starts (IMMEDIATE): a deferred
    # transaction that reads first and writes later fails with "database is locked" when
    # another process (a CLI command beside the running node) wrote in between.
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get(_WRITER) else "BEGIN")


class Store:
    """Owns the database file: migrations at open, the writer thread, read connections."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.engine: Engine = create_engine(f"sqlite:///{path}", poolclass=NullPool)
        event.listen(self.engine, "connect", _on_connect)
        event.listen(self.engine, "begin", _on_begin)
        self._jobs: queue.Queue[tuple[Callable[[Connection], Any], Future[Any]] | None] = (
            queue.Queue()
        )
        self._writer: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def open(self) -> list[str]:
        """Apply pending migrations (after a backup) and start the writer; return those applied."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        applied = self._migrate()
        self._writer = threading.Thread(target=self._write_loop, name="db-writer", daemon=True)
        self._writer.start()
        return applied

    def close(self) -> None:
        if self._writer is not None:
            self._jobs.put(None)
            self._writer.join()
            self._writer = None
        self.engine.dispose()

    def __enter__(self) -> Store:
        self.open()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _migrate(self) -> list[str]:
        existed = self.path.exists() and self.path.stat().st_size > 0
        with self.engine.begin() as conn:
            conn.execute(text(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(number INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
            ))
            done = {row[0] for row in conn.execute(text("SELECT number FROM schema_migrations"))}
        pending = [m for m in _migrations() if m[0] not in done]
        if pending and existed and done:
            backup = self.path.with_name(f"{self.path.name}.before-{pending[0][1]}.bak")
            self._backup(backup)
            log.info("database backed up to %s before migrating", backup)
        for number, name, sql in pending:
            raw = self.engine.raw_connection()
            try:
                # executescript runs the whole file; wrap it so a failure leaves nothing half done.
                raw.driver_connection.executescript(  # type: ignore[union-attr]
                    f"BEGIN;\n{sql}\nINSERT INTO schema_migrations VALUES "
                    f"({number}, '{name}', {time.time()});\nCOMMIT;"
                )
            except sqlite3.Error:
                raw.driver_connection.execute("ROLLBACK")  # type: ignore[union-attr]
                raise
            finally:
                raw.close()
            log.info("applied migration %s", name)
        return [m[1] for m in pending]

    def _backup(self, target: Path) -> None:
        src = sqlite3.connect(self.path)
        try:
            dst = sqlite3.connect(target)
            with dst:
                src.backup(dst)
            dst.close()
        finally:
            src.close()

    # -- access ---------------------------------------------------------------------------

    def _write_loop(self) -> None:
        with self.engine.connect() as conn:
            conn.info[_WRITER] = True
            while (job := self._jobs.get()) is not None:
                fn, future = job
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    with conn.begin():
                        result = fn(conn)
                except BaseException as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(result)

    def write(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in one transaction on the writer thread and return its result."""
        return self.submit(fn).result()

    def submit(self, fn: Callable[[Connection], T]) -> Future[T]:
        if self._writer is None:
            raise RuntimeError("the store is not open")
        future: Future[T] = Future()
        self._jobs.put((fn, future))
        return future

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    def file_size(self) -> int:
        """Bytes used by the database and its WAL."""
        return sum(
            p.stat().st_size
            for p in (self.path, self.path.with_name(self.path.name + "-wal"))
            if p.exists()
        )

