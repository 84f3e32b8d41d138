"""Which municipalities (the hub's groups) a hub user may see: the fleet is managed by
municipalities, and a municipality's staff see their own sites only. As the node limits an
account to some cameras (``users.cameras``, None: every camera), the hub limits one to some
groups, in its accounts database (``web/hub.sqlite``, table ``hub_user_groups``): no row for a
user means every group, today's behaviour. Every page, API and /metrics asks ``scope_of``
and filters in its query; a page of another group's site is refused and the refusal audited.

The table is the hub's own, created here (the node's migrations do not know it): the hub's
accounts database is the node's format, opened by the node's Store."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, text

from custodes.audit.actions import Action
from custodes.audit.log import AuditLog
from custodes.store.db import Store

MAX_GROUP = 200  # as a filter value on the events page

_TABLE = ("CREATE TABLE IF NOT EXISTS hub_user_groups (user_name TEXT NOT NULL, "
          "grp TEXT NOT NULL, PRIMARY KEY (user_name, grp))")


@dataclass(frozen=True)
class Scope:
    """The groups a user may see; None: every group."""

    groups: frozenset[str] | None = None

    def allows(self, group: str | None) -> bool:
        return self.groups is None or (group is not None and group in self.groups)

    @property
    def sql(self) -> list[str] | None:
        """For ``grp = ANY(%s)``; None: no condition."""
        return None if self.groups is None else sorted(self.groups)


EVERYTHING = Scope()


def ensure_table(store: Store) -> None:
    store.write(lambda conn: conn.execute(text(_TABLE)))


def scope_of(store: Store, user: str) -> Scope:
    with store.read() as conn:
        rows = conn.execute(text("SELECT grp FROM hub_user_groups WHERE user_name = :u"),
                            {"u": user}).fetchall()
    return Scope(frozenset(str(r[0]) for r in rows) if rows else None)


def check_groups(groups: Iterable[str]) -> list[str]:
    out = sorted({g.strip() for g in groups})
    for g in out:
        if not g or len(g) > MAX_GROUP or not g.isprintable():
            raise ValueError(f"{g!r} is not a group name (1-{MAX_GROUP} printable characters)")
    return out


def set_groups(store: Store, audit: AuditLog, actor: str, user: str,
               groups: Iterable[str] | None) -> None:
    """Limit ``user`` to ``groups`` (None or empty: every group), on record."""
    wanted = check_groups(groups or [])

    def write(conn: Connection) -> None:
        conn.execute(text("DELETE FROM hub_user_groups WHERE user_name = :u"), {"u": user})
        for g in wanted:
            conn.execute(text("INSERT INTO hub_user_groups (user_name, grp) VALUES (:u, :g)"),
                         {"u": user, "g": g})

    store.write(write)
    audit.record(actor, Action.USER_UPDATE, user, detail={"groups": wanted or None})
