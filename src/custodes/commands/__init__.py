"""Subcommands of `custodes`, one module per group, and what they share.

The shared pieces (consoles, the --config option, loading a config, reading a time) are here
rather than in custodes.cli so that a group module can use them without importing the module
that imports it.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from custodes.audit.actions import Action
from custodes.audit.log import AuditLog, Outcome
from custodes.auth.roles import Actor, Role
from custodes.auth.users import PASSWORD_FIRST, Users
from custodes.config import Config, ConfigError, load_config
from custodes.data import NodeData
from custodes.keys import KeyFileError, NodeKeys
from custodes.privacy.pinning import ProfileMismatch, check_profile
from custodes.privacy.policy import Refused
from custodes.store.db import Store

# Piped output (scripts, logs, tests) is not wrapped at 80 columns: a line stays a line.
_WIDTH = None if sys.stdout.isatty() else 200
console = Console(soft_wrap=True, width=_WIDTH)
err = Console(stderr=True, soft_wrap=True, width=_WIDTH)

ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="YAML configuration file", exists=False)
]

# How many problems a verification prints before it only counts the rest: a rewritten log
# can produce thousands, and the first ones say where it starts.
MAX_PROBLEMS = 50


def load(path: Path) -> Config:
    """The configuration, or exit 2 with every error and its line."""
    try:
        return load_config(path)
    except ConfigError as exc:
        err.print(f"[red]{exc.source}: invalid configuration[/red]")
        for issue in exc.issues:
            err.print(f"  {issue}", markup=False, highlight=False)
        raise typer.Exit(2) from None


def parse_time(text: str) -> float:
    """ISO 8601 time to UTC epoch seconds; a time without zone is taken as UTC."""
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not an ISO 8601 time (2026-11-28T10:00:00Z)"
        ) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.timestamp()


@contextmanager
def node_data(config: Config) -> Iterator[NodeData]:
    """The node's data (`NodeData`: layout, database, keys, audit log) with the database open
    for the block; the keys are created on first use as the node itself would; exit 2 when
    they are unusable."""
    try:
        data = NodeData.of(config)
    except (KeyFileError, OSError) as exc:
        err.print(f"[red]cannot use the node's keys:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    with data.store:
        yield data


def cli_actor() -> Actor:
    """Who acts when the command line is used: the local account, as an administrator.

    Whoever runs these commands can read the node's files and keys anyway; what matters is
    that the audit log names the account ("cli:<user>") and tells it apart from web users.
    """
    return Actor(name=f"cli:{getpass.getuser()}", role=Role.ADMIN)


def print_lines(lines: list[str], *, style: str = "red") -> None:
    """Print up to MAX_PROBLEMS lines, then how many more there are."""
    for line in lines[:MAX_PROBLEMS]:
        # markup off: file names and messages may hold brackets.
        console.print(f"  {line}", style=style or None, markup=False, highlight=False)
    if len(lines) > MAX_PROBLEMS:
        console.print(f"  … and {len(lines) - MAX_PROBLEMS} more")


def fmt_time(t: float | None) -> str:
    return "—" if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# -- commands that act for a person ----------------------------------------------------------

PASSWORD_ENV = "CUSTODES_PASSWORD"  # noqa: S105 - the variable's name, not a secret
EXIT_INVALID = 2
EXIT_REFUSED = 3
# Nothing wrong was found, but nothing was proven either: checked only against the key that
# came with the thing checked, which whoever altered it could have replaced.
EXIT_UNVERIFIED = 4

UserOption = Annotated[str, typer.Option(
    "--user", "-u", envvar="CUSTODES_USER",
    help="Act as this user (password: $CUSTODES_PASSWORD or a prompt)",
)]


@dataclass(frozen=True)
class SignedIn:
    config: Config
    store: Store
    keys: NodeKeys
    audit: AuditLog
    actor: Actor


@contextmanager
def signed_in(config_path: Path, user: str) -> Iterator[SignedIn]:
    """The node's parts and the signed-in ``user``; a refusal exits 3, printed with its reason.

    Commands that touch biometric data act as a user of the node, never as whoever runs the
    shell: the role that approves a case must be one an administrator gave, not one claimed on
    the command line. A wrong password is audited like a failed sign-in on the web, with the
    local account that tried it ("cli:<user>") as the actor and the account claimed as target.
    """
    config = load(config_path)
    with node_data(config) as data:
        store, keys, audit = data.store, data.keys, data.audit
        try:
            # A second config (or ``profile: ${P}``) on the same storage must not enroll into,
            # or search, a database pinned to a profile that forbids it.
            check_profile(store, config.profile)
        except ProfileMismatch as exc:
            err.print(f"[red]{exc}[/red]", highlight=False)
            raise typer.Exit(EXIT_INVALID) from None
        password = os.environ.get(PASSWORD_ENV) or getpass.getpass(f"password for {user}: ")
        account = Users(store).authenticate(user, password)
        if account is None:
            # The actor is who typed the password, not the account claimed: whoever runs the
            # command cannot put a failed sign-in (and a lock-out) on another person's record.
            audit.record(cli_actor().name, Action.LOGIN, user, outcome=Outcome.FAILED,
                         detail={"via": "cli", "claimed": user})
            err.print("[red]wrong user name or password[/red]")
            raise typer.Exit(EXIT_REFUSED)
        if account.must_change_password:
            # As on the web (custodes.api.deps): a password someone else saw opens nothing.
            audit.record_refusal(account.name, Action.LOGIN, user, "password change required",
                                 detail={"via": "cli"})
            err.print(f"[red]refused:[/red] {PASSWORD_FIRST}", highlight=False)
            raise typer.Exit(EXIT_REFUSED)
        try:
            yield SignedIn(config, store, keys, audit, account.actor())
        except Refused as exc:
            err.print(f"[red]refused:[/red] {exc.reason}", highlight=False)
            raise typer.Exit(EXIT_REFUSED) from None
