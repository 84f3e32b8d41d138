"""Which municipalities (the hub's groups) a hub user may see: the fleet is managed by
municipalities, and a municipality's staff see their own sites only. As the node limits an
account to some cameras (``users.cameras``, None: every camera), the hub limits one to some
groups, in its accounts database (``web/hub.sqlite``, table ``hub_user_groups``): no row for a
user means every group, today's behaviour. Every page, API and /metrics asks ``scope_of``
and filters in its query; a page of another group's site is refused and the refusal audited.

Who may change a user's groups (``change_groups``, the one gate for the command line and the
web page): an administrator (``users.manage``), never their own (a limited administrator
would widen themselves to every site), and an administrator limited to some groups only for
users already limited to groups of theirs, to groups of theirs (else they would hand out, or
take through that account, sites they may not see). Every change and refusal is audited.

The table is the hub's own, created here (the node's migrations do not know it): the hub's
accounts database is the node's format, opened by the node's Store."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import NoReturn

from sqlalchemy import Connection, text

from custodes.audit.actions import Action
from custodes.audit.log import AuditLog
from custodes.auth.roles import Actor, Permission
from custodes.auth.users import Users
from custodes.privacy.policy import Refused
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

    def covers(self, other: Scope) -> bool:
        """Whether everything ``other`` reaches lies inside this scope."""
        return self.groups is None or (other.groups is not None and other.groups <= self.groups)

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


def scopes(store: Store) -> dict[str, Scope]:
    """Every user's scope that is limited, by user name, in one query (a user not in it sees
    every group)."""
    found: dict[str, set[str]] = {}
    with store.read() as conn:
        for user, grp in conn.execute(text("SELECT user_name, grp FROM hub_user_groups")):
            found.setdefault(str(user), set()).add(str(grp))
    return {user: Scope(frozenset(groups)) for user, groups in found.items()}


def check_groups(groups: Iterable[str]) -> list[str]:
    out = sorted({g.strip() for g in groups})
    for g in out:
        if not g or len(g) > MAX_GROUP or not g.isprintable():
            raise ValueError(f"{g!r} is not a group name (1-{MAX_GROUP} printable characters)")
    return out


def set_groups(store: Store, audit: AuditLog, actor: str, user: str,
               groups: Iterable[str] | None, *, address: str | None = None) -> None:
    """Limit ``user`` to ``groups`` (None or empty: every group), on record. No check of who
    asks: for a new account (``custodes hub user add``) and tests; a change goes through
    ``change_groups``."""
    wanted = check_groups(groups or [])

    def write(conn: Connection) -> None:
        conn.execute(text("DELETE FROM hub_user_groups WHERE user_name = :u"), {"u": user})
        for g in wanted:
            conn.execute(text("INSERT INTO hub_user_groups (user_name, grp) VALUES (:u, :g)"),
                         {"u": user, "g": g})

    store.write(write)
    audit.record(actor, Action.USER_UPDATE, user, detail={"groups": wanted or None},
                 address=address)


def change_groups(store: Store, audit: AuditLog, actor: Actor, user: str,
                  groups: Iterable[str] | None) -> list[str]:
    """Limit an existing ``user`` to ``groups`` (None or empty: every group) for ``actor``,
    under the rules above; returns the groups set. ValueError: a name that is not a group
    name; KeyError: no such user; Refused (audited): not allowed."""
    wanted = check_groups(groups or [])
    action, detail = Action.USER_UPDATE, {"groups": wanted or None}

    def refuse(reason: str) -> NoReturn:
        audit.record_refusal(actor.name, action, user, reason, detail=detail,
                             address=actor.address)
        raise Refused(action, reason)

    if not actor.can(Permission.USERS_MANAGE):
        refuse(f"the {actor.role.value} role cannot manage users")
    mine = scope_of(store, actor.name)
    if Users(store).get(user) is None:
        if mine.groups is not None:
            # One answer for a name nobody has and for a user beyond the actor's groups.
            refuse(f"{user} is not among the users {actor.name} may manage")
        raise KeyError(f"no user named {user!r}")
    if actor.name == user:
        refuse("nobody may change their own municipalities")
    if not mine.covers(scope_of(store, user)):
        refuse(f"{user} is not among the users {actor.name} may manage")
    if not mine.covers(Scope(frozenset(wanted) if wanted else None)):
        refuse(f"{actor.name} may give only municipalities of their own")
    set_groups(store, audit, actor.name, user, wanted, address=actor.address)
    return wanted

