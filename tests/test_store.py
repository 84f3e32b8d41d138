"""The database: migrations, their agreement with the schema module, the single writer."""

from __future__ import annotations

import functools
import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import Connection, func, insert, inspect, select

from custodes.store import schema
from custodes.store.db import Store, _migrations


def test_migrations_create_exactly_the_tables_of_the_schema_module(tmp_path: Path) -> None:
    with Store(tmp_path / "x.db") as store:
        inspector = inspect(store.engine)
        for table in schema.metadata.sorted_tables:
            columns = {c["name"] for c in inspector.get_columns(table.name)}
            assert columns == {c.name for c in table.columns}, table.name
        assert set(inspector.get_table_names()) == {
            *schema.metadata.tables, "schema_migrations"
        }


def test_migrations_apply_once_and_back_up_before_upgrading(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    with Store(path):
        pass
    store = Store(path)
    assert store.open() == []
    store.close()
    # A database made by the first release (only migration 0001) is backed up, then upgraded.
    path.unlink()
    first = _migrations()[0]
    with sqlite3.connect(path) as db:
        db.executescript(
            f"{first[2]}\nCREATE TABLE schema_migrations (number INTEGER PRIMARY KEY, "
            f"name TEXT NOT NULL, applied_at REAL NOT NULL);\n"
            f"INSERT INTO schema_migrations VALUES (1, '{first[1]}', 0);"
        )
    store = Store(path)
    applied = store.open()
    store.close()
    assert applied == [name for _, name, _ in _migrations()[1:]]
    assert (tmp_path / f"x.db.before-{applied[0]}.bak").is_file()


def test_writes_from_many_threads_are_serialised(tmp_path: Path) -> None:
    seg = schema.segments
    with Store(tmp_path / "x.db") as store:
        def writer(n: int) -> None:
            for i in range(50):
                row = {"camera": f"c{n}", "start": i, "end": i + 1, "duration": 1, "bytes": 1,
                       "path": f"{n}/{i}"}
                store.write(functools.partial(_insert_row, row=row))

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with store.read() as conn:
            assert conn.execute(select(func.count()).select_from(seg)).scalar() == 400


def _insert_row(conn: Connection, row: dict[str, object]) -> None:
    conn.execute(insert(schema.segments).values(row))


def test_a_failed_write_rolls_back_and_raises_in_the_caller(tmp_path: Path) -> None:
    seg = schema.segments
    with Store(tmp_path / "x.db") as store:
        def half_then_fail(conn: Connection) -> None:
            conn.execute(insert(seg).values(
                camera="c", start=0, end=1, duration=1, bytes=1, path="p"))
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            store.write(half_then_fail)
        with store.read() as conn:
            assert conn.execute(select(func.count()).select_from(seg)).scalar() == 0
