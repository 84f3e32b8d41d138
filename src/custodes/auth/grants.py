"""Changes to accounts under the two-person rule: the one gate the API and the CLI go through.

An administrator alone could otherwise make an investigator and an approver, sign in as each,
open and approve a case and search it: the audit log would show it, but nothing would stop it.
So a change that hands out a power over other people's data waits for a second administrator:

- adding an account with a powerful role (administrator, investigator, approver), or giving an
  existing account one of those roles, becomes a pending grant;
- resetting the password of an account that holds one is a pending grant too: whoever learns
  the new password can act as that person;
- a different administrator (not the requester, not the account concerned) confirms it, and
  only then does it take effect; the new password goes to the confirming administrator;
- an unconfirmed grant lapses after GRANT_DAYS; either administrator can cancel it;
- nobody changes their own role, in either direction;
- an administrator limited to some cameras sees and acts on only the accounts and grants that
  reach cameras of theirs alone (a grant to add an account reaches the cameras it names, every
  camera when it names none; a role or password grant reaches the account's cameras): else
  one could list who is being given which other cameras, or hand out (and, through a new
  password, take) access to cameras they do not have.

Every request, confirmation, cancellation and refusal is audited, and the inspection pack lists
the grants (custodes.audit.report). The command line acts as ``cli:<local account>``: it is one
more administrator, bound by the same rule (and by the same limit: whoever runs it also holds
the database file; see the README).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, NoReturn

from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    and_,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)

from custodes.audit.actions import Action
from custodes.audit.log import AuditLog
from custodes.auth.roles import Actor, Permission, Role
from custodes.auth.users import (
    KEEP,
    Keep,
    User,
    UserError,
    Users,
    check_name,
    random_password,
    reaches_within,
)
from custodes.privacy.policy import Refused
from custodes.store import schema

# The roles that reach other people's data or hand out access to it.
PRIVILEGED: Final = frozenset({Role.ADMIN, Role.INVESTIGATOR, Role.APPROVER})
GRANT_DAYS: Final = 7  # a grant nobody confirmed within a week is stale: ask again
GRANTS_LISTED: Final = 500  # newest first; a filter narrows them before this cut


class GrantKind(StrEnum):
    ADD = "add"  # a new account with a privileged role
    ROLE = "role"  # an existing account given a privileged role
    PASSWORD = "password"  # a password reset of an account that holds one  # noqa: S105


class GrantStatus(StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


@dataclass(frozen=True)
class Grant:
    id: int
    kind: GrantKind
    user_name: str
    role: Role
    cameras: tuple[str, ...] | None
    requested_by: str
    requested_at: float
    expires_at: float
    status: GrantStatus  # as of reading: a pending grant past its expiry reads EXPIRED
    decided_by: str | None
    decided_at: float | None

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id, "kind": self.kind.value, "user": self.user_name,
            "role": self.role.value,
            "cameras": None if self.cameras is None else list(self.cameras),
            "requested_by": self.requested_by, "requested_at": self.requested_at,
            "expires_at": self.expires_at, "status": self.status.value,
            "decided_by": self.decided_by, "decided_at": self.decided_at,
        }


@dataclass(frozen=True)
class Change:
    """What a request did: the account as it is now (None: not created yet), a password to
    hand over (once), and the grant that waits for a second administrator (if any)."""

    user: User | None
    password: str | None = None
    grant: Grant | None = None


def grant_from_row(row: Row[Any], now: float) -> Grant:
    status = GrantStatus(row.status)
    if status is GrantStatus.PENDING and now >= row.expires_at:
        status = GrantStatus.EXPIRED
    return Grant(
        id=int(row.id), kind=GrantKind(row.kind), user_name=row.user_name, role=Role(row.role),
        cameras=None if row.cameras is None else tuple(json.loads(row.cameras)),
        requested_by=row.requested_by, requested_at=row.requested_at,
        expires_at=row.expires_at, status=status, decided_by=row.decided_by,
        decided_at=row.decided_at,
    )


class Accounts:
    """Adds and changes accounts for an administrator, under the two-person rule."""

    def __init__(self, users: Users, audit: AuditLog,
                 clock: Callable[[], float] = time.time) -> None:
        self.users = users
        self.audit = audit
        self.clock = clock

    # -- requests ----------------------------------------------------------------------------

    def add(self, actor: Actor, name: str, role: Role,
            cameras: Iterable[str] | None = None) -> Change:
        """A new account; one with a privileged role waits for a second administrator."""
        action = Action.USER_ADD
        self._require_manager(actor, action, name)
        allowed = None if cameras is None else sorted(set(cameras))
        detail: dict[str, Any] = {"role": role.value, "cameras": allowed}
        self._require_within(actor, action, name, allowed, detail)
        if role not in PRIVILEGED:
            password = random_password()
            user = self.users.add(name, role, password, allowed, temporary=True)
            self.audit.record(actor.name, action, name, detail=detail, address=actor.address)
            return Change(user, password)
        check_name(name)
        if self.users.get(name) is not None:
            raise UserError(f"a user named {name!r} exists already")
        grant = self._request(actor, GrantKind.ADD, name, role, allowed)
        return Change(None, None, grant)

    def change(self, actor: Actor, name: str, *, role: Role | None = None,
               cameras: Iterable[str] | Keep | None = KEEP,
               disabled: bool | None = None) -> Change:
        """Change role, cameras or disabled. Nobody changes their own role; a privileged role
        waits for a second administrator (the other changes apply at once)."""
        action = Action.USER_UPDATE
        self._require_manager(actor, action, name)
        user = self._existing(name)
        detail: dict[str, Any] = {}
        if role is not None:
            detail["role"] = role.value
        if not isinstance(cameras, Keep):
            detail["cameras"] = None if cameras is None else sorted(set(cameras))
        if disabled is not None:
            detail["disabled"] = disabled
        self._require_within(actor, action, name, user.cameras, detail)
        if not isinstance(cameras, Keep):
            self._require_within(actor, action, name, cameras, detail)
        if role is not None and role is not user.role and actor.name == user.name:
            self._refuse(actor, action, name, "nobody may change their own role", detail)
        grant = None
        if role is not None and role is not user.role and role in PRIVILEGED:
            grant = self._request(actor, GrantKind.ROLE, name, role, None)
            role = None
            detail.pop("role")
        if role is not None and role is user.role:
            role = None
        if role is not None or not isinstance(cameras, Keep) or disabled is not None:
            user = self.users.update(name, role=role, cameras=cameras, disabled=disabled)
            self.audit.record(actor.name, action, name, detail=detail, address=actor.address)
        return Change(user, None, grant)

    def reset_password(self, actor: Actor, name: str) -> Change:
        """A new random password; for a privileged account, once a second administrator
        confirms (they receive it), since whoever holds it can act as that person."""
        action = Action.USER_RESET_PASSWORD
        self._require_manager(actor, action, name)
        user = self._existing(name)
        # Whoever learns the password acts as the account, on its cameras.
        self._require_within(actor, action, name, user.cameras)
        if user.role in PRIVILEGED:
            if actor.name == user.name:
                self._refuse(actor, action, name, "change your own password with your current "
                             "one (POST /api/auth/password), not by a reset")
            return Change(user, None, self._request(actor, GrantKind.PASSWORD, name, user.role,
                                                    None))
        password = random_password()
        self.users.set_password(name, password, temporary=True)
        self.audit.record(actor.name, action, name, address=actor.address)
        return Change(user, password)

    # -- the second administrator ------------------------------------------------------------

    def confirm(self, actor: Actor, grant_id: int) -> Change:
        """Carry out a pending grant, as a second administrator; returns any new password."""
        action, target = Action.USER_GRANT_CONFIRM, f"grant {grant_id}"
        self._require_manager(actor, action, target)
        grant = self._grant(actor, action, grant_id)
        self._require_within(actor, action, target, self.reach(grant), grant.public())
        if actor.name == grant.requested_by:
            self._refuse(actor, action, target, "a grant must be confirmed by a different "
                         "administrator than the one who asked for it", grant.public())
        if actor.name == grant.user_name:
            self._refuse(actor, action, target, "nobody may confirm a grant to themselves",
                         grant.public())
        now = self.clock()
        password = random_password() if grant.kind is not GrantKind.ROLE else None
        user = self._existing(grant.user_name) if grant.kind is not GrantKind.ADD else None
        if grant.kind is GrantKind.PASSWORD and user is not None and user.role is not grant.role:
            # The account changed since the request: what was asked for is not what it is now.
            self._refuse(actor, action, target, f"{grant.user_name} is now "
                         f"{user.role.value}, not {grant.role.value}; ask again",
                         grant.public())

        def claim(conn: Connection) -> str | None:
            # Claimed in one transaction, so that two administrators confirming at once, or a
            # confirm racing a cancel, carry a grant out once.
            row = conn.execute(select(schema.user_grants)
                               .where(schema.user_grants.c.id == grant_id)).one()
            current = grant_from_row(row, now)
            if current.status is not GrantStatus.PENDING:
                return f"the grant is {current.status.value}"
            conn.execute(update(schema.user_grants).where(schema.user_grants.c.id == grant_id)
                         .values(status=GrantStatus.CONFIRMED.value, decided_by=actor.name,
                                 decided_at=now))
            return None

        problem = self.users.store.write(claim)
        if problem is not None:
            self._refuse(actor, action, target, problem, grant.public())
        try:
            user = self._carry_out(actor, grant, password)
        except (UserError, KeyError):
            # The name was taken, or the change would leave no administrator: the grant waits
            # again, unconfirmed, and the reason goes to the client.
            self.users.store.write(lambda conn: conn.execute(
                update(schema.user_grants).where(schema.user_grants.c.id == grant_id)
                .values(status=GrantStatus.PENDING.value, decided_by=None, decided_at=None)))
            raise
        self.audit.record(actor.name, action, target, address=actor.address,
                          detail=grant.public())
        return Change(user, password, self.get(grant_id))

    def _carry_out(self, actor: Actor, grant: Grant, password: str | None) -> User:
        if grant.kind is GrantKind.ADD:
            assert password is not None
            user = self.users.add(grant.user_name, grant.role, password, grant.cameras,
                                  temporary=True)
            self.audit.record(actor.name, Action.USER_ADD, grant.user_name, address=actor.address,
                              detail={"role": grant.role.value,
                                      "cameras": None if grant.cameras is None
                                      else list(grant.cameras),
                                      "grant": grant.id, "requested_by": grant.requested_by})
        elif grant.kind is GrantKind.ROLE:
            user = self.users.update(grant.user_name, role=grant.role)
            self.audit.record(actor.name, Action.USER_UPDATE, grant.user_name,
                              address=actor.address,
                              detail={"role": grant.role.value, "grant": grant.id,
                                      "requested_by": grant.requested_by})
        else:
            assert password is not None
            self.users.set_password(grant.user_name, password, temporary=True)
            user = self._existing(grant.user_name)
            self.audit.record(actor.name, Action.USER_RESET_PASSWORD, grant.user_name,
                              address=actor.address,
                              detail={"grant": grant.id, "requested_by": grant.requested_by})
        return user

    def cancel(self, actor: Actor, grant_id: int) -> Grant:
        """Withdraw a pending grant (any administrator: the requester or the one who would
        confirm it)."""
        action, target = Action.USER_GRANT_CANCEL, f"grant {grant_id}"
        self._require_manager(actor, action, target)
        grant = self._grant(actor, action, grant_id)
        self._require_within(actor, action, target, self.reach(grant), grant.public())
        now = self.clock()

        def write(conn: Connection) -> int:
            return int(conn.execute(
                update(schema.user_grants).where(
                    schema.user_grants.c.id == grant_id,
                    schema.user_grants.c.status == GrantStatus.PENDING.value,
                    schema.user_grants.c.expires_at > now)
                .values(status=GrantStatus.CANCELLED.value, decided_by=actor.name,
                        decided_at=now)).rowcount)

        if not self.users.store.write(write):
            self._refuse(actor, action, target, f"the grant is {self.get(grant_id).status.value}",
                         grant.public())
        self.audit.record(actor.name, action, target, address=actor.address,
                          detail=grant.public())
        return self.get(grant_id)

    # -- reading -----------------------------------------------------------------------------

    def get(self, grant_id: int) -> Grant:
        with self.users.store.read() as conn:
            row = conn.execute(select(schema.user_grants)
                               .where(schema.user_grants.c.id == grant_id)).first()
        if row is None:
            raise KeyError(f"there is no grant {grant_id}")
        return grant_from_row(row, self.clock())

    def reach(self, grant: Grant) -> frozenset[str] | None:
        """The cameras ``grant`` hands out (None: every camera): those an account to add is
        limited to, else the account's own (a role or a new password acts on all of them; an
        account that no longer exists reads as every camera, so only an unlimited
        administrator sees or decides its grant)."""
        if grant.kind is GrantKind.ADD:
            return None if grant.cameras is None else frozenset(grant.cameras)
        user = self.users.get(grant.user_name)
        return None if user is None else user.cameras

    def grants(self, *, pending_only: bool = False, user: str | None = None,
               camera: str | None = None, kind: GrantKind | None = None,
               status: GrantStatus | None = None,
               within: frozenset[str] | None = None) -> list[Grant]:
        """Grants, newest first (at most GRANTS_LISTED), narrowed to those that name ``user``
        (as the account concerned, the one who asked or the one who decided), that reach
        ``camera`` (one for every camera reaches each, and so does a password reset, which
        names no camera), of ``kind``, in ``status``, and, for a caller limited to the
        cameras ``within``, whose reach (``reach``) lies inside them: filtered in the query,
        before the cut."""
        if pending_only:
            status = GrantStatus.PENDING
        now = self.clock()
        g = schema.user_grants.c
        query = select(schema.user_grants)
        if within is not None:
            account = schema.users.c
            own = (select(account.cameras).where(account.name == g.user_name)
                   .correlate(schema.user_grants).scalar_subquery())
            query = query.where(or_(and_(g.kind == GrantKind.ADD.value, _inside(g.cameras, within)),
                                    and_(g.kind != GrantKind.ADD.value, _inside(own, within))))
        if user is not None:
            query = query.where(or_(g.user_name == user, g.requested_by == user,
                                    g.decided_by == user))
        if camera is not None:
            each = func.json_each(g.cameras).table_valued("value")
            query = query.where(or_(g.cameras.is_(None), exists(
                select(literal(1)).select_from(each).where(each.c.value == camera))))
        if kind is not None:
            query = query.where(g.kind == kind.value)
        if status is not None:
            # A pending grant past its expiry reads EXPIRED (grant_from_row): filter the same.
            waiting = g.status == GrantStatus.PENDING.value
            if status is GrantStatus.PENDING:
                query = query.where(waiting, g.expires_at > now)
            elif status is GrantStatus.EXPIRED:
                query = query.where(or_(g.status == status.value,
                                        and_(waiting, g.expires_at <= now)))
            else:
                query = query.where(g.status == status.value)
        with self.users.store.read() as conn:
            rows = conn.execute(query.order_by(g.id.desc()).limit(GRANTS_LISTED)).all()
        return [grant_from_row(row, now) for row in rows]

    # -- internals ---------------------------------------------------------------------------

    def _request(self, actor: Actor, kind: GrantKind, name: str, role: Role,
                 cameras: list[str] | None) -> Grant:
        now = self.clock()
        values = {
            "kind": kind.value, "user_name": name, "role": role.value,
            "cameras": None if cameras is None else json.dumps(cameras),
            "requested_by": actor.name, "requested_at": now,
            "expires_at": now + GRANT_DAYS * 86400, "status": GrantStatus.PENDING.value,
        }

        def write(conn: Connection) -> int | str:
            waiting = conn.execute(select(schema.user_grants.c.id).where(
                schema.user_grants.c.user_name == name,
                schema.user_grants.c.kind == kind.value,
                schema.user_grants.c.status == GrantStatus.PENDING.value,
                schema.user_grants.c.expires_at > now)).scalar()
            if waiting is not None:
                return f"grant {waiting} for {name} is waiting already"
            return int(conn.execute(insert(schema.user_grants).values(values)
                                    .returning(schema.user_grants.c.id)).scalar_one())

        made = self.users.store.write(write)
        if isinstance(made, str):
            raise UserError(made)
        grant = self.get(made)
        self.audit.record(actor.name, Action.USER_GRANT_REQUEST, name, address=actor.address,
                          detail=grant.public())
        return grant

    def _existing(self, name: str) -> User:
        user = self.users.get(name)
        if user is None:
            raise KeyError(f"no user named {name!r}")
        return user

    def _grant(self, actor: Actor, action: Action, grant_id: int) -> Grant:
        try:
            grant = self.get(grant_id)
        except KeyError:
            self._refuse(actor, action, f"grant {grant_id}", f"there is no grant {grant_id}")
        if grant.status is not GrantStatus.PENDING:
            self._refuse(actor, action, f"grant {grant_id}",
                         f"the grant is {grant.status.value}", grant.public())
        return grant

    def _require_within(self, actor: Actor, action: Action, target: str,
                        cameras: Iterable[str] | None,
                        detail: dict[str, Any] | None = None) -> None:
        """Refuse (audited) an administrator limited to some cameras who would act on an
        account or grant that reaches others (None: every camera)."""
        if not reaches_within(cameras, actor.cameras):
            self._refuse(actor, action, target, f"{target} reaches cameras beyond yours "
                         f"({actor.name} is limited to some cameras)", detail)

    def _require_manager(self, actor: Actor, action: Action, target: str) -> None:
        if not actor.can(Permission.USERS_MANAGE):
            self._refuse(actor, action, target,
                         f"the {actor.role.value} role cannot manage users")

    def _refuse(self, actor: Actor, action: Action, target: str, reason: str,
                detail: dict[str, Any] | None = None) -> NoReturn:
        self.audit.record_refusal(actor.name, action, target, reason, detail=detail,
                                  address=actor.address)
        raise Refused(action, reason)


def _inside(cameras: ColumnElement[Any], within: frozenset[str]) -> ColumnElement[bool]:
    """SQL: the JSON list ``cameras`` names cameras of ``within`` only (NULL, every camera,
    does not)."""
    each = func.json_each(cameras).table_valued("value")
    return and_(cameras.is_not(None), ~exists(
        select(literal(1)).select_from(each).where(each.c.value.not_in(sorted(within)))))
