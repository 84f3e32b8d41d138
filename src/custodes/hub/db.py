"""The hub's PostgreSQL: numbered migrations in ``hub/migrations``, applied at start, each in
one transaction with its record, under an advisory lock (two hubs starting on one database
do not migrate twice)."""

from __future__ import annotations

import logging
from importlib import resources
from typing import Any

import psycopg

log = logging.getLogger(__name__)

_LOCK = 0x637573746F646573  # "custodes"


def migrations() -> list[tuple[int, str, str]]:
    folder = resources.files("custodes.hub").joinpath("migrations")
    found = [(int(e.name.split("_", 1)[0]), e.name, e.read_text(encoding="utf-8"))
             for e in folder.iterdir() if e.name.endswith(".sql")]
    return sorted(found)


def connect(url: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(url, autocommit=False)


def close_quietly(conn: psycopg.Connection[Any] | None) -> None:
    """Close ``conn`` (if any) after a failure on it: a broken connection may fail to close
    too, and that must not hide the failure being handled (logged, at debug level)."""
    if conn is None:
        return
    try:
        conn.close()
    except Exception as exc:  # whatever a broken socket raises
        log.debug("hub database: closing a failed connection: %r", exc)


def migrate(url: str) -> list[str]:
    """Apply pending migrations; return their names."""
    applied: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK,))
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (number INTEGER PRIMARY "
                         "KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
            done = {int(r[0]) for r in conn.execute("SELECT number FROM schema_migrations")}
            for number, name, sql in migrations():
                if number in done:
                    continue
                with conn.transaction():
                    conn.execute(sql.encode())  # bytes: run as a script, no placeholders
                    conn.execute("INSERT INTO schema_migrations (number, name) VALUES (%s, %s)",
                                 (number, name))
                log.info("hub database: applied migration %s", name)
                applied.append(name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK,))
    return applied
