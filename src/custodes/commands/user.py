"""`custodes user ...`: add, list, disable and enable users, reset a password, and the
grants of privileged roles (custodes.auth.grants): list, confirm, cancel.

Passwords are random and printed once; there is no option to choose one on the command line
(it would land in the shell history). Every change is audited as the local account, which is
bound by the two-person rule like any administrator: it cannot confirm its own grant.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from custodes.audit.log import AuditLog
from custodes.auth.grants import Accounts, Change, GrantStatus
from custodes.auth.roles import Role
from custodes.auth.users import User, UserError, Users
from custodes.commands import (
    EXIT_REFUSED,
    ConfigOption,
    cli_actor,
    console,
    err,
    fmt_time,
    load,
    node_data,
)
from custodes.config import Config
from custodes.privacy.policy import Refused

user_app = typer.Typer(help="Manage the people who may sign in.", no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(help="User name")]
GrantArg = Annotated[int, typer.Argument(help="Grant number (custodes user grants)")]


@contextmanager
def _open(config: Config) -> Iterator[tuple[Users, AuditLog]]:
    with node_data(config) as data:
        try:
            yield Users(data.store), data.audit
        except (UserError, KeyError) as exc:
            err.print(f"[red]{exc}[/red]", highlight=False)
            raise typer.Exit(2) from None
        except Refused as exc:
            err.print(f"[red]refused:[/red] {exc.reason}", highlight=False)
            raise typer.Exit(EXIT_REFUSED) from None


def _print_change(name: str, change: Change) -> None:
    if change.grant is not None and change.grant.status is GrantStatus.PENDING:
        console.print(f"grant {change.grant.id}: {change.grant.kind.value} {name} "
                      f"({change.grant.role.value}) waits for a second administrator to "
                      f"confirm it (custodes user confirm {change.grant.id})", highlight=False)
    elif change.password is not None:
        _print_password(name, change.password)


def _cameras(config: Config, text: str | None) -> list[str] | None:
    if text is None:
        return None
    cameras = [c.strip() for c in text.split(",") if c.strip()]
    unknown = sorted(set(cameras) - set(config.cameras))
    if unknown:
        err.print(f"[red]unknown cameras: {', '.join(unknown)}[/red]", highlight=False)
        raise typer.Exit(2)
    return cameras


def _print_password(name: str, password: str) -> None:
    console.print(f"password for {name}: {password}", markup=False, highlight=False)
    console.print("It is shown only this once; hand it over in person. The user must choose "
                  "their own at the first sign-in (nothing else works until then).")


@user_app.command("add")
def add(
    config: ConfigOption,
    name: NameArg,
    role: Annotated[Role, typer.Option(help="What the user may do")],
    cameras: Annotated[str | None, typer.Option(
        help="Comma-separated cameras the user may see (default: all)")] = None,
) -> None:
    """Add a user with a random password, printed once (an administrator, investigator or
    approver once a second administrator confirms the grant)."""
    cfg = load(config)
    allowed = _cameras(cfg, cameras)
    with _open(cfg) as (users, audit):
        change = Accounts(users, audit).add(cli_actor(), name, role, allowed)
    _print_change(name, change)


@user_app.command("list")
def list_users(config: ConfigOption) -> None:
    """Every user with role, cameras and state."""
    with _open(load(config)) as (users, _audit):
        everyone = users.list()
    table = Table("name", "role", "cameras", "state", "password changed")
    for u in everyone:
        table.add_row(u.name, u.role.value, "all" if u.cameras is None else ",".join(
            sorted(u.cameras)), "disabled" if u.disabled else "enabled",
            datetime.fromtimestamp(u.password_changed_at, UTC).strftime("%Y-%m-%d %H:%M UTC"))
    console.print(table)


def _set_disabled(config: ConfigOption, name: str, disabled: bool) -> User:
    with _open(load(config)) as (users, audit):
        user = Accounts(users, audit).change(cli_actor(), name, disabled=disabled).user
    assert user is not None
    return user


@user_app.command("disable")
def disable(config: ConfigOption, name: NameArg) -> None:
    """Disable a user: their sessions and API tokens end at once."""
    _set_disabled(config, name, True)
    console.print(f"{name} disabled")


@user_app.command("enable")
def enable(config: ConfigOption, name: NameArg) -> None:
    """Enable a disabled user again (with the password they had)."""
    _set_disabled(config, name, False)
    console.print(f"{name} enabled")


@user_app.command("reset-password")
def reset_password(config: ConfigOption, name: NameArg) -> None:
    """Give a user a new random password, printed once; their sessions and tokens end. For an
    administrator, investigator or approver, once a second administrator confirms it."""
    with _open(load(config)) as (users, audit):
        change = Accounts(users, audit).reset_password(cli_actor(), name)
    _print_change(name, change)


@user_app.command("grants")
def list_grants(
    config: ConfigOption,
    everything: Annotated[bool, typer.Option("--all", help="Decided grants too")] = False,
) -> None:
    """Grants of privileged roles and password resets waiting for a second administrator."""
    with _open(load(config)) as (users, audit):
        found = Accounts(users, audit).grants(pending_only=not everything)
    table = Table("grant", "kind", "user", "role", "asked by", "asked", "state", "decided by")
    for g in found:
        table.add_row(str(g.id), g.kind.value, g.user_name, g.role.value, g.requested_by,
                      fmt_time(g.requested_at), g.status.value, g.decided_by or "—")
    console.print(table)


@user_app.command("confirm")
def confirm(config: ConfigOption, grant: GrantArg) -> None:
    """Carry out a grant another administrator asked for; a new password is printed once."""
    with _open(load(config)) as (users, audit):
        change = Accounts(users, audit).confirm(cli_actor(), grant)
    assert change.grant is not None
    console.print(f"grant {grant} confirmed", highlight=False)
    if change.password is not None:
        _print_password(change.grant.user_name, change.password)


@user_app.command("cancel")
def cancel(config: ConfigOption, grant: GrantArg) -> None:
    """Withdraw a pending grant."""
    with _open(load(config)) as (users, audit):
        Accounts(users, audit).cancel(cli_actor(), grant)
    console.print(f"grant {grant} cancelled", highlight=False)
