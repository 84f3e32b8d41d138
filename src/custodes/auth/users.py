"""User accounts: names, roles, per-camera permissions and argon2id password hashes.

There are no default credentials: the first start creates "admin" with a random password that
is shown once. Passwords are hashed with argon2id at argon2-cffi's defaults and re-hashed on
the next sign-in when those defaults change.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, delete, func, insert, select, update

from custodes.audit.actions import Action
from custodes.audit.log import SYSTEM, AuditLog
from custodes.auth.roles import Actor, Role
from custodes.store import schema
from custodes.store.db import Store

USER_NAME = r"^[a-z0-9][a-z0-9._-]{0,62}$"
MIN_PASSWORD = 12
ADMIN = "admin"
PASSWORD_PAGE = "/account/password"  # noqa: S105 - a page, not a password
PASSWORD_FIRST = ("your password was made for you by someone else (at the first start, for a "
                  "new account or by a reset): choose your own on " + PASSWORD_PAGE +
                  " (POST /api/auth/password) before anything else")

_hasher = PasswordHasher()  # argon2id at the library's current recommended cost


def reaches_within(cameras: Iterable[str] | None, limit: frozenset[str] | None) -> bool:
    """Whether an account or grant reaching ``cameras`` (None: every camera) is inside an
    administrator's ``limit`` (None: unlimited): what a limited administrator sees and acts
    on."""
    return limit is None or (cameras is not None and set(cameras) <= limit)


class _Keep(Enum):
    KEEP = "keep"


KEEP = _Keep.KEEP  # "leave this field as it is" where None has a meaning of its own
Keep = _Keep  # its type, for callers that pass KEEP through (custodes.auth.grants)


class UserError(ValueError):
    """A request about users that cannot be done, with the reason (shown to the client)."""


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: Role
    cameras: frozenset[str] | None
    disabled: bool
    created_at: float
    password_changed_at: float
    # The password is one somebody else chose or saw (first start, a new account, a reset):
    # until the user sets their own, custodes.api.deps lets them do nothing else.
    must_change_password: bool = False

    def actor(self, address: str | None = None) -> Actor:
        return Actor(self.name, self.role, self.cameras, address)

    def public(self) -> dict[str, object]:
        """What the API shows of a user (never the hash)."""
        return {
            "name": self.name, "role": self.role.value,
            "cameras": None if self.cameras is None else sorted(self.cameras),
            "disabled": self.disabled, "created_at": self.created_at,
            "password_changed_at": self.password_changed_at,
            "must_change_password": self.must_change_password,
        }


def random_password() -> str:
    return secrets.token_urlsafe(15)  # 20 characters, 120 bits


def check_name(name: str) -> str:
    if not re.match(USER_NAME, name):
        raise UserError(
            "a user name is 1-63 characters: lower-case letters, digits, '.', '_' or '-'"
        )
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise UserError(f"a password needs at least {MIN_PASSWORD} characters")
    if len(password) > 1024:
        raise UserError("a password may have at most 1024 characters")
    return password


def _cameras_json(cameras: Iterable[str] | None) -> str | None:
    return None if cameras is None else json.dumps(sorted(set(cameras)))


def user_from_row(row: object) -> User:
    m = row._mapping  # type: ignore[attr-defined]
    cams = m["cameras"]
    return User(
        id=m["id"], name=m["name"], role=Role(m["role"]),
        cameras=None if cams is None else frozenset(json.loads(cams)),
        disabled=bool(m["disabled"]), created_at=m["created_at"],
        password_changed_at=m["password_changed_at"],
        must_change_password=bool(m["must_change_password"]),
    )


class Users:
    """The users table, read from any thread and written on the store's writer."""

    def __init__(self, store: Store, hasher: PasswordHasher = _hasher) -> None:
        self.store = store
        self.hasher = hasher  # another cost only for tests, which hash many passwords
        self._dummy: str | None = None

    def _dummy_hash(self) -> str:
        # Verified against when the name is unknown, so that a wrong name costs as long as a
        # wrong password and response times do not tell which names exist.
        if self._dummy is None:
            self._dummy = self.hasher.hash(secrets.token_urlsafe(16))
        return self._dummy

    def get(self, name: str) -> User | None:
        with self.store.read() as conn:
            row = conn.execute(select(schema.users).where(schema.users.c.name == name)).first()
        return None if row is None else user_from_row(row)

    def by_id(self, user_id: int) -> User | None:
        with self.store.read() as conn:
            row = conn.execute(select(schema.users).where(schema.users.c.id == user_id)).first()
        return None if row is None else user_from_row(row)

    def list(self, within: frozenset[str] | None = None) -> list[User]:
        """Every account, or for an administrator limited to the cameras ``within``, those
        inside them (`reaches_within`): the rest would tell who watches which other cameras."""
        with self.store.read() as conn:
            rows = conn.execute(select(schema.users).order_by(schema.users.c.name))
            users = [user_from_row(r) for r in rows]
        return [u for u in users if reaches_within(u.cameras, within)]

    def count(self) -> int:
        with self.store.read() as conn:
            return int(conn.execute(select(func.count()).select_from(schema.users)).scalar_one())

    def add(self, name: str, role: Role, password: str,
            cameras: Iterable[str] | None = None, *, temporary: bool = False) -> User:
        """``temporary``: the password was made for the user by someone else, who saw it;
        the user must change it before anything else."""
        check_name(name)
        check_password(password)
        now = time.time()
        values = {
            "name": name, "role": role.value, "cameras": _cameras_json(cameras),
            "password_hash": self.hasher.hash(password), "disabled": 0, "created_at": now,
            "password_changed_at": now, "must_change_password": int(temporary),
        }

        def add(conn: Connection) -> None:
            exists = conn.execute(
                select(schema.users.c.id).where(schema.users.c.name == name)
            ).first()
            if exists:
                raise UserError(f"a user named {name!r} exists already")
            conn.execute(insert(schema.users).values(values))

        self.store.write(add)
        user = self.get(name)
        assert user is not None
        return user

    def authenticate(self, name: str, password: str) -> User | None:
        """The enabled user with this name and password, or None (in constant-ish time)."""
        with self.store.read() as conn:
            row = conn.execute(
                select(schema.users, schema.users.c.password_hash.label("hash"))
                .where(schema.users.c.name == name)
            ).first()
        stored = row.hash if row is not None else self._dummy_hash()
        try:
            self.hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        if row is None:
            return None
        user = user_from_row(row)
        if user.disabled:
            return None
        if self.hasher.check_needs_rehash(stored):
            new_hash = self.hasher.hash(password)
            self.store.write(lambda conn: conn.execute(
                update(schema.users).where(schema.users.c.id == user.id)
                .values(password_hash=new_hash)
            ))
        return user

    def set_password(self, name: str, password: str, *, temporary: bool = False) -> None:
        """A new password; ``temporary`` when someone other than the user chose or saw it (a
        reset): the user must change it at the next sign-in."""
        check_password(password)
        new_hash = self.hasher.hash(password)
        now = time.time()

        def change(conn: Connection) -> None:
            user_id = conn.execute(
                select(schema.users.c.id).where(schema.users.c.name == name)
            ).scalar()
            if user_id is None:
                raise UserError(f"no user named {name!r}")
            conn.execute(update(schema.users).where(schema.users.c.id == user_id)
                         .values(password_hash=new_hash, password_changed_at=now,
                                 must_change_password=int(temporary)))
            # A new password ends every session and token made with the old one.
            _end_access(conn, user_id)

        self.store.write(change)

    def update(self, name: str, *, role: Role | None = None,
               cameras: Iterable[str] | _Keep | None = KEEP,
               disabled: bool | None = None) -> User:
        """Change role, cameras (None: every camera) or disabled; what is not given stays."""
        values: dict[str, object] = {}
        if role is not None:
            values["role"] = role.value
        if not isinstance(cameras, _Keep):
            values["cameras"] = _cameras_json(cameras)
        if disabled is not None:
            values["disabled"] = int(disabled)

        def change(conn: Connection) -> None:
            row = conn.execute(select(schema.users).where(schema.users.c.name == name)).first()
            if row is None:
                raise UserError(f"no user named {name!r}")
            user = user_from_row(row)
            if values:
                conn.execute(update(schema.users).where(schema.users.c.id == user.id)
                             .values(values))
            if user.role is Role.ADMIN and not user.disabled:
                _check_an_admin_remains(conn)
            if disabled:
                _end_access(conn, user.id)

        self.store.write(change)
        user = self.get(name)
        assert user is not None
        return user


def _end_access(conn: Connection, user_id: int) -> None:
    conn.execute(delete(schema.sessions).where(schema.sessions.c.user_id == user_id))
    conn.execute(update(schema.api_tokens)
                 .where(schema.api_tokens.c.user_id == user_id,
                        schema.api_tokens.c.revoked_at.is_(None))
                 .values(revoked_at=time.time()))


def _check_an_admin_remains(conn: Connection) -> None:
    # Runs inside the changing transaction: raising rolls the change back.
    admins = conn.execute(
        select(func.count()).select_from(schema.users)
        .where(schema.users.c.role == Role.ADMIN.value, schema.users.c.disabled == 0)
    ).scalar_one()
    if admins == 0:
        raise UserError("this would leave no enabled administrator")


def ensure_admin(store: Store, audit: AuditLog) -> str | None:
    """On first start (no users at all) create "admin" with a random password and return it.

    The caller prints it once; it is stored only as a hash. Returns None when users exist.
    """
    users = Users(store)
    if users.count():
        return None
    password = random_password()
    # Printed on the console, so possibly seen or logged by others: changed at first sign-in.
    users.add(ADMIN, Role.ADMIN, password, temporary=True)
    audit.record(SYSTEM, Action.USER_ADD, ADMIN,
                 detail={"role": Role.ADMIN.value, "first_run": True})
    return password
