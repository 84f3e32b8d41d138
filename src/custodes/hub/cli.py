"""`custodes hub ...`: serve a hub, enrol a site, verify every site's chain, run the demo,
manage the hub's own users (``custodes hub user``)."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.table import Table

from custodes.auth.grants import Accounts, Change, GrantStatus
from custodes.auth.roles import Role
from custodes.auth.users import UserError, Users, ensure_admin
from custodes.commands import EXIT_REFUSED, MAX_PROBLEMS, cli_actor, console, err, fmt_time
from custodes.hub import db, scope
from custodes.hub.config import HubConfigError, HubSettings, load_hub_config
from custodes.hub.demo import run_demo
from custodes.hub.postgres import EmbeddedPostgres, PostgresError
from custodes.hub.service import Hub, database_url
from custodes.hub.sites import EnrolmentError, add_site, uplink_target
from custodes.hub.tls import HubTLSError
from custodes.hub.web import HubAccounts
from custodes.hub.witness import verify_site
from custodes.privacy.policy import Refused

hub_app = typer.Typer(help="The hub: many sites, one place.", no_args_is_help=True)

HubConfigOption = Annotated[Path | None, typer.Option(
    "--config", "-c", help="Hub YAML file (a `hub:` section); defaults apply without one")]
DataOption = Annotated[Path | None, typer.Option(
    "--data", help="The hub's data folder (overrides hub.data)")]


def _settings(config: Path | None, data: Path | None) -> HubSettings:
    try:
        return load_hub_config(config, data)
    except HubConfigError as exc:
        err.print(f"[red]invalid hub configuration:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None


@contextmanager
def _database(settings: HubSettings) -> Iterator[str]:
    """The hub's database for one command: the embedded server is started for it if the hub
    is not running, and stopped again after."""
    pg: EmbeddedPostgres | None = None
    try:
        url, pg = database_url(settings)
        db.migrate(url)
    except (PostgresError, OSError) as exc:
        err.print(f"[red]cannot open the hub database:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    try:
        yield url
    finally:
        if pg is not None and pg.started_here:
            pg.stop()


def _logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@hub_app.command("serve")
def serve(config: HubConfigOption = None, data: DataOption = None,
          verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    """Run the hub: PostgreSQL, NATS JetStream, ingest and witness, web pages."""
    _logging(verbose)
    hub = Hub(_settings(config, data))
    hub.start()
    console.print(f"hub running: NATS {', '.join(hub.advertised_urls)}, web "
                  f"{hub.web.url if hub.web else '-'}")
    if hub.first_admin_password:
        console.print("first start: user [bold]admin[/bold], password "
                      f"[bold]{hub.first_admin_password}[/bold] (shown once; change it at the "
                      "first sign-in)")
    _run_until_signalled(hub.stop_event)
    hub.stop()


def _run_until_signalled(stop: threading.Event) -> None:
    def handle(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)
    stop.wait()


@hub_app.command("add-site")
def add_site_command(
    name: Annotated[str, typer.Argument(help="The site's name (its NATS user too)")],
    group: Annotated[str, typer.Option("--group", help="Its municipality or other group")],
    key: Annotated[Path, typer.Option("--key", help="The node's public signing key "
                                      "(`custodes uplink key -c node.yaml` prints it)")],
    config: HubConfigOption = None, data: DataOption = None,
) -> None:
    """Enrol a site: register its signing key, print its uplink section and credential."""
    settings = _settings(config, data)
    try:
        pem = key.read_bytes()
    except OSError as exc:
        err.print(f"[red]cannot read {key}:[/red] {exc.strerror}", highlight=False)
        raise typer.Exit(2) from None
    try:
        urls, ca_pem, tls_first = uplink_target(settings)
    except (OSError, HubTLSError) as exc:
        err.print(f"[red]cannot read or make the CA the site must trust:[/red] {exc}",
                  highlight=False)
        raise typer.Exit(2) from None
    with _database(settings) as url, db.connect(url) as conn:
        try:
            enrolment = add_site(conn, name, group, pem)
        except EnrolmentError as exc:
            err.print(f"[red]refused:[/red] {exc}", highlight=False)
            raise typer.Exit(2) from None
        conn.commit()
    if enrolment.key_changed:
        err.print(f"[yellow]site {name} was enrolled before with another signing key: "
                  "an alarm is raised[/yellow]")
    console.print(f"# {'enrolled' if enrolment.new else 'enrolled again'}: {name} "
                  f"({group}). Add to the node's config:")
    console.print(enrolment.snippet(urls, ca_pem, tls_first), markup=False, highlight=False)
    console.print("# and to the node's environment (shown once; the hub keeps only a hash):")
    console.print(f"CUSTODES_UPLINK_PASSWORD={enrolment.password}", markup=False,
                  highlight=False)


@hub_app.command("verify")
def verify(config: HubConfigOption = None, data: DataOption = None) -> None:
    """Re-verify every site's audit chain as the hub holds it; exit 1 on any problem."""
    settings = _settings(config, data)
    failed = 0
    with _database(settings) as url, db.connect(url) as conn:
        sites = [str(r[0]) for r in conn.execute("SELECT name FROM sites ORDER BY name")]
        for site in sites:
            verdict = verify_site(conn, site)
            mark = "[green]ok[/green]" if verdict.ok else "[red]FAILED[/red]"
            console.print(f"{site}: {mark} {verdict.entries} entries, verified to "
                          f"{verdict.verified_to}, {verdict.checkpoints} checkpoints")
            for problem in verdict.problems[:MAX_PROBLEMS]:
                console.print(f"  {problem}", markup=False, highlight=False)
            failed += not verdict.ok
    console.print(f"{len(sites)} sites, {failed} with problems")
    if failed:
        raise typer.Exit(1)


@hub_app.command("demo")
def demo(  # noqa: PLR0917 - typer options are parameters
    sites: Annotated[int, typer.Option(min=1, max=500, help="Simulated sites")] = 30,
    nodes: Annotated[int, typer.Option(min=0, max=4, help="Of which real nodes recording "
                                       "simulated cameras")] = 2,
    seconds: Annotated[float, typer.Option(help="Stop after this long (0: until Ctrl-C)")] = 0,
    data: Annotated[Path, typer.Option(help="Folder for the hub and the sites")] = Path(
        "var/hub-demo"),
    web_port: Annotated[int, typer.Option(help="Hub web port (0: any free)")] = 8090,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """An embedded hub and simulated sites reporting to it through the real uplink."""
    _logging(verbose)
    run_demo(data.resolve(), sites=sites, nodes=min(nodes, sites), seconds=seconds,
             web_port=web_port)


# -- the hub's users -------------------------------------------------------------------------

user_app = typer.Typer(help="The people who may sign in to the hub's pages: the node's "
                       "accounts, roles, passwords and two-person rule.", no_args_is_help=True)
hub_app.add_typer(user_app, name="user")

UserName = Annotated[str, typer.Argument(help="User name")]


@contextmanager
def _accounts(config: Path | None, data: Path | None) -> Iterator[Accounts]:
    """The hub's accounts (``web/hub.sqlite`` in its data folder, audited in its signed log),
    the same code as the node's: argon2id, roles, grants. A hub without any user gets its
    ``admin`` first, as at its first start, so that a second administrator can exist."""
    settings = _settings(config, data)
    try:
        hub = HubAccounts.open(settings.data)
    except OSError as exc:
        err.print(f"[red]cannot open the hub's accounts in {settings.data}:[/red] {exc}",
                  highlight=False)
        raise typer.Exit(2) from None
    try:
        first = ensure_admin(hub.store, hub.audit)
        if first is not None:
            console.print("no user yet: created [bold]admin[/bold]", highlight=False)
            _print_password("admin", first)
        yield Accounts(Users(hub.store), hub.audit)
    except (UserError, KeyError) as exc:
        err.print(f"[red]{exc.args[0] if exc.args else exc}[/red]", highlight=False)
        raise typer.Exit(2) from None
    except Refused as exc:
        err.print(f"[red]refused:[/red] {exc.reason}", highlight=False)
        raise typer.Exit(EXIT_REFUSED) from None
    finally:
        hub.store.close()


def _print_password(name: str, password: str) -> None:
    console.print(f"password for {name}: {password}", markup=False, highlight=False)
    console.print("It is shown only this once; hand it over in person. The user must choose "
                  "their own at the first sign-in (nothing else works until then).")


def _print_change(name: str, change: Change) -> None:
    grant = change.grant
    if grant is not None and grant.status is GrantStatus.PENDING:
        console.print(f"grant {grant.id}: {grant.kind.value} {name} ({grant.role.value}) waits "
                      "for a second administrator to confirm it (custodes hub user confirm "
                      f"{grant.id}, run by another local account)", highlight=False)
    elif change.password is not None:
        _print_password(name, change.password)


GroupOption = Annotated[list[str] | None, typer.Option(
    "--group", help="A municipality (group) the user may see; repeat for more; none: all")]


@user_app.command("add")
def user_add(name: UserName,
             role: Annotated[Role, typer.Option(help="What the user may do")],
             group: GroupOption = None,
             config: HubConfigOption = None, data: DataOption = None) -> None:
    """Add a user with a random password, printed once (an administrator, investigator or
    approver once a second administrator confirms the grant), limited to the sites of the
    groups given (hub/scope.py)."""
    groups = _groups(group)
    with _accounts(config, data) as accounts:
        actor = cli_actor()
        change = accounts.add(actor, name, role)
        # After the account (which refuses a name in use), before anyone can sign in with it.
        scope.set_groups(accounts.users.store, accounts.audit, actor.name, name, groups)
    _print_change(name, change)


def _groups(given: list[str] | None) -> list[str]:
    """The groups given, checked (hub/scope.py); a bad name ends the command with 2."""
    try:
        return scope.check_groups(given or [])
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]", highlight=False)
        raise typer.Exit(2) from None


@user_app.command("groups")
def user_groups(name: UserName, group: GroupOption = None,
                config: HubConfigOption = None, data: DataOption = None) -> None:
    """Set the municipalities (groups) a user may see; without --group: every one."""
    groups = _groups(group)
    with _accounts(config, data) as accounts:
        # The web page's rule (hub/scope.py), as the local administrator.
        scope.change_groups(accounts.users.store, accounts.audit, cli_actor(), name, groups)
    console.print(f"{name} sees {', '.join(groups) if groups else 'every group'}",
                  highlight=False)


@user_app.command("list")
def user_list(config: HubConfigOption = None, data: DataOption = None) -> None:
    """Every user with role and state."""
    with _accounts(config, data) as accounts:
        everyone = accounts.users.list()
        seen = {u.name: scope.scope_of(accounts.users.store, u.name).sql for u in everyone}
    table = Table("name", "role", "state", "password changed", "groups")
    for u in everyone:
        state = "disabled" if u.disabled else (
            "enabled, must choose a password" if u.must_change_password else "enabled")
        groups = seen[u.name]
        table.add_row(u.name, u.role.value, state, fmt_time(u.password_changed_at),
                      ", ".join(groups) if groups else "all")
    console.print(table)


@user_app.command("disable")
def user_disable(name: UserName, config: HubConfigOption = None,
                 data: DataOption = None) -> None:
    """Disable a user: their sessions and API tokens end at once."""
    with _accounts(config, data) as accounts:
        accounts.change(cli_actor(), name, disabled=True)
    console.print(f"{name} disabled", highlight=False)


@user_app.command("enable")
def user_enable(name: UserName, config: HubConfigOption = None,
                data: DataOption = None) -> None:
    """Enable a disabled user again (with the password they had)."""
    with _accounts(config, data) as accounts:
        accounts.change(cli_actor(), name, disabled=False)
    console.print(f"{name} enabled", highlight=False)


@user_app.command("passwd")
def user_passwd(name: UserName, config: HubConfigOption = None,
                data: DataOption = None) -> None:
    """Give a user a new random password, printed once, to be changed at the next sign-in;
    their sessions and tokens end. For an administrator, investigator or approver, once a
    second administrator confirms it."""
    with _accounts(config, data) as accounts:
        change = accounts.reset_password(cli_actor(), name)
    _print_change(name, change)


@user_app.command("grants")
def user_grants(config: HubConfigOption = None, data: DataOption = None) -> None:
    """Grants waiting for a second administrator."""
    with _accounts(config, data) as accounts:
        found = accounts.grants(pending_only=True)
    table = Table("grant", "kind", "user", "role", "asked by", "asked")
    for g in found:
        table.add_row(str(g.id), g.kind.value, g.user_name, g.role.value, g.requested_by,
                      fmt_time(g.requested_at))
    console.print(table)


@user_app.command("confirm")
def user_confirm(grant: Annotated[int, typer.Argument(help="Grant number (user grants)")],
                 config: HubConfigOption = None, data: DataOption = None) -> None:
    """Carry out a grant another administrator asked for; a new password is printed once."""
    with _accounts(config, data) as accounts:
        change = accounts.confirm(cli_actor(), grant)
    assert change.grant is not None
    console.print(f"grant {grant} confirmed", highlight=False)
    if change.password is not None:
        _print_password(change.grant.user_name, change.password)
