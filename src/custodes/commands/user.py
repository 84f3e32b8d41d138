"""`custodes user ...`: add, list, disable and enable users, reset a password.

Passwords are random and printed once; there is no option to choose one on the command line
(it would land in the shell history). Every change is audited as the local account.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from custodes.audit.log import AuditLog
from custodes.auth.roles import Role
from custodes.auth.users import User, UserError, Users, random_password
from custodes.commands import ConfigOption, cli_actor, console, err, load, node_keys
from custodes.config import Config
from custodes.record.layout import Layout
from custodes.store.db import Store

user_app = typer.Typer(help="Manage the people who may sign in.", no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(help="User name")]


@contextmanager
def _open(config: Config) -> Iterator[tuple[Users, AuditLog]]:
    keys = node_keys(config)
    with Store(Layout(config.storage.path).database) as store:
        try:
            yield Users(store), AuditLog(store, keys)
        except UserError as exc:
            err.print(f"[red]{exc}[/red]", highlight=False)
            raise typer.Exit(2) from None


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
    console.print("It is shown only this once; hand it over in person and ask for it to be "
                  "changed at the first sign-in.")


@user_app.command("add")
def add(
    config: ConfigOption,
    name: NameArg,
    role: Annotated[Role, typer.Option(help="What the user may do")],
    cameras: Annotated[str | None, typer.Option(
        help="Comma-separated cameras the user may see (default: all)")] = None,
) -> None:
    """Add a user with a random password, printed once."""
    cfg = load(config)
    allowed = _cameras(cfg, cameras)
    password = random_password()
    with _open(cfg) as (users, audit):
        users.add(name, role, password, allowed)
        audit.record(cli_actor().name, "user.add", name,
                     detail={"role": role.value, "cameras": allowed, "via": "cli"})
    _print_password(name, password)


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
        if users.get(name) is None:
            raise UserError(f"no user named {name!r}")
        user = users.update(name, disabled=disabled)
        audit.record(cli_actor().name, "user.update", name,
                     detail={"disabled": disabled, "via": "cli"})
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
    """Give a user a new random password, printed once; their sessions and tokens end."""
    password = random_password()
    with _open(load(config)) as (users, audit):
        users.set_password(name, password)
        audit.record(cli_actor().name, "user.reset_password", name, detail={"via": "cli"})
    _print_password(name, password)
