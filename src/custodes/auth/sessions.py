"""Sign-in sessions (cookies) and API tokens (bearer), stored as hashes.

A session is a random value in an HttpOnly cookie, with a second random value (the CSRF
token) that pages send back in a header on every state-changing request. Both live in the
database only as the session row: the cookie's SHA-256 and the CSRF token, which is no secret
from the signed-in user. API tokens are shown once and kept as their SHA-256.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, delete, insert, literal, select, update

from custodes.auth.users import User, user_from_row
from custodes.store import schema
from custodes.store.db import Store

TOUCH_EVERY = 60.0  # seconds: "last used" is kept to the minute, not written on every request
MAX_TOKEN_DAYS = 365  # an API token lives at most a year: a forgotten one does not work forever
DEFAULT_TOKEN_DAYS = 90
TOKEN_PREFIX = "cst_"  # noqa: S105 - not a secret; makes a leaked token recognisable to secret scanners


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Session:
    token: str  # the cookie value; only known right after creation
    csrf: str
    expires_at: float


@dataclass(frozen=True)
class SessionInfo:
    token_hash: str
    csrf: str
    expires_at: float
    user: User
    handle: str | None = None
    last_used_at: float | None = None


@dataclass(frozen=True)
class SessionView:
    """One of a user's sessions as their own page shows it (never the cookie or its hash)."""

    handle: str
    created_at: float
    expires_at: float
    address: str | None
    last_used_at: float | None
    last_address: str | None
    user_agent: str | None
    current: bool

    def public(self) -> dict[str, object]:
        return {"id": self.handle, "created_at": self.created_at,
                "expires_at": self.expires_at, "address": self.address,
                "last_used_at": self.last_used_at, "last_address": self.last_address,
                "user_agent": self.user_agent, "current": self.current}


class TokenError(ValueError):
    """A token that may not be made (it would outlive the token making it)."""


@dataclass(frozen=True)
class ApiToken:
    id: int
    name: str
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    parent_id: int | None = None
    last_used_at: float | None = None
    last_address: str | None = None

    def public(self) -> dict[str, object]:
        return {"id": self.id, "name": self.name, "created_at": self.created_at,
                "expires_at": self.expires_at, "revoked_at": self.revoked_at,
                "parent_id": self.parent_id, "last_used_at": self.last_used_at,
                "last_address": self.last_address}


class Sessions:
    def __init__(self, store: Store, hours: float) -> None:
        self.store = store
        self.seconds = hours * 3600

    # -- cookie sessions ------------------------------------------------------------------

    def create(self, user: User, address: str | None, replaces: str | None = None,
               user_agent: str | None = None) -> Session:
        """A fresh session for ``user``; the one presented before sign-in (if any) is ended.

        Always a new random value: a session id set by someone else before sign-in is never
        adopted (session fixation).
        """
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = time.time()
        row = {"token_hash": digest(token), "user_id": user.id, "csrf": csrf,
               "created_at": now, "expires_at": now + self.seconds, "address": address,
               "handle": secrets.token_hex(12), "last_used_at": now, "last_address": address,
               "user_agent": None if user_agent is None else user_agent[:200]}

        def create(conn: Connection) -> None:
            if replaces:
                conn.execute(delete(schema.sessions)
                             .where(schema.sessions.c.token_hash == digest(replaces)))
            conn.execute(delete(schema.sessions).where(schema.sessions.c.expires_at < now))
            conn.execute(insert(schema.sessions).values(row))

        self.store.write(create)
        return Session(token, csrf, row["expires_at"])  # type: ignore[arg-type]

    def lookup(self, token: str) -> SessionInfo | None:
        """The live session of an enabled user with this cookie value, or None."""
        s, u = schema.sessions, schema.users
        with self.store.read() as conn:
            row = conn.execute(
                select(u, s.c.token_hash, s.c.csrf, s.c.expires_at.label("session_expires"),
                       s.c.handle, s.c.last_used_at.label("session_used"))
                .join(s, s.c.user_id == u.c.id)
                .where(s.c.token_hash == digest(token), s.c.expires_at > time.time(),
                       u.c.disabled == 0)
            ).first()
        if row is None:
            return None
        return SessionInfo(row.token_hash, row.csrf, row.session_expires, user_from_row(row),
                           row.handle, row.session_used)

    def touch(self, info: SessionInfo, address: str | None) -> None:
        """Note that the session was used now, from ``address`` (at most once a minute)."""
        now = time.time()
        if info.last_used_at is not None and now - info.last_used_at < TOUCH_EVERY:
            return
        s = schema.sessions
        self.store.write(lambda conn: conn.execute(
            update(s).where(s.c.token_hash == info.token_hash)
            .values(last_used_at=now, last_address=address)))

    def sessions(self, user: User, current_hash: str | None) -> list[SessionView]:
        """``user``'s live sessions, the most recently used first."""
        s = schema.sessions
        with self.store.read() as conn:
            rows = conn.execute(select(s).where(s.c.user_id == user.id,
                                                s.c.expires_at > time.time())).all()
        views = [SessionView(r.handle or "", r.created_at, r.expires_at, r.address,
                             r.last_used_at, r.last_address, r.user_agent,
                             r.token_hash == current_hash) for r in rows]
        return sorted(views, key=lambda v: -(v.last_used_at or v.created_at))

    def end_handle(self, user: User, handle: str) -> bool:
        """End one of ``user``'s own sessions by its handle; False when there is none."""
        s = schema.sessions
        return bool(self.store.write(lambda conn: conn.execute(
            delete(s).where(s.c.user_id == user.id, s.c.handle == handle)).rowcount))

    def end(self, token_hash: str) -> None:
        self.store.write(lambda conn: conn.execute(
            delete(schema.sessions).where(schema.sessions.c.token_hash == token_hash)
        ))

    def end_others(self, user: User, keep_hash: str | None) -> None:
        """End every session of ``user`` but one (after a password change)."""
        s = schema.sessions
        cond = s.c.user_id == user.id
        if keep_hash is not None:
            cond = cond & (s.c.token_hash != keep_hash)
        self.store.write(lambda conn: conn.execute(delete(s).where(cond)))

    # -- API tokens -----------------------------------------------------------------------

    def create_token(self, user: User, name: str, days: float | None = None, *,
                     parent: ApiToken | None = None) -> tuple[int, str]:
        """A new bearer token for ``user``: (id, token); the token is not stored.

        ``parent``: the token the request was made with. The new one may not outlive it
        (TokenError) and is revoked with it.
        """
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = time.time()
        expires = None if days is None else now + days * 86400
        if parent is not None and parent.expires_at is not None and (
                expires is None or expires > parent.expires_at):
            left = max(0.0, parent.expires_at - now) / 86400
            until = datetime.fromtimestamp(parent.expires_at, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
            raise TokenError(f"the token making this request expires at {until}: a token made "
                             f"with it must expire by then (days at most {left:.4f})")
        row = {"user_id": user.id, "name": name, "token_hash": digest(token), "created_at": now,
               "expires_at": expires, "parent_id": None if parent is None else parent.id}

        def create(conn: Connection) -> int:
            key = conn.execute(insert(schema.api_tokens).values(row)).inserted_primary_key
            assert key is not None
            return int(key[0])

        return self.store.write(create), token

    def token_user(self, token: str) -> User | None:
        found = self.token_lookup(token)
        return None if found is None else found[0]

    def token_lookup(self, token: str) -> tuple[User, ApiToken] | None:
        """The enabled user behind a live token, and the token; None when there is none."""
        t, u = schema.api_tokens, schema.users
        now = time.time()
        with self.store.read() as conn:
            row = conn.execute(
                select(u, t.c.id.label("token_id"), t.c.name.label("token_name"),
                       t.c.created_at.label("token_created"), t.c.expires_at.label("token_expires"),
                       t.c.parent_id, t.c.last_used_at.label("token_used"))
                .join(t, t.c.user_id == u.c.id)
                .where(t.c.token_hash == digest(token), t.c.revoked_at.is_(None),
                       (t.c.expires_at.is_(None)) | (t.c.expires_at > now), u.c.disabled == 0)
            ).first()
        if row is None:
            return None
        return user_from_row(row), ApiToken(row.token_id, row.token_name, row.token_created,
                                            row.token_expires, None, row.parent_id,
                                            row.token_used)

    def touch_token(self, token: ApiToken, address: str | None) -> None:
        """Note that the token was used now, from ``address`` (at most once a minute)."""
        now = time.time()
        if token.last_used_at is not None and now - token.last_used_at < TOUCH_EVERY:
            return
        t = schema.api_tokens
        self.store.write(lambda conn: conn.execute(
            update(t).where(t.c.id == token.id).values(last_used_at=now, last_address=address)))

    def tokens(self, user: User) -> list[ApiToken]:
        t = schema.api_tokens
        with self.store.read() as conn:
            rows = conn.execute(select(t).where(t.c.user_id == user.id).order_by(t.c.id))
            return [ApiToken(r.id, r.name, r.created_at, r.expires_at, r.revoked_at,
                             r.parent_id, r.last_used_at, r.last_address) for r in rows]

    def revoke_token(self, user: User, token_id: int) -> bool:
        """Revoke one of ``user``'s own tokens and every token made with it (and with those);
        False when there is no such live token."""
        t = schema.api_tokens

        def revoke(conn: Connection) -> bool:
            now = time.time()
            done = conn.execute(
                update(t).where(t.c.id == token_id, t.c.user_id == user.id,
                                t.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            if not done.rowcount:
                return False
            family = select(literal(token_id).label("id")).cte("family", recursive=True)
            family = family.union(select(t.c.id).join(family, t.c.parent_id == family.c.id))
            conn.execute(update(t).where(t.c.id.in_(select(family.c.id)),
                                         t.c.revoked_at.is_(None)).values(revoked_at=now))
            return True

        return self.store.write(revoke)
