"""`custodes hub ...`: serve a hub, enrol a site, verify every site's chain, run the demo."""

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

from custodes.commands import MAX_PROBLEMS, console, err
from custodes.hub import db
from custodes.hub.config import HubConfigError, HubSettings, load_hub_config
from custodes.hub.demo import run_demo
from custodes.hub.postgres import EmbeddedPostgres, PostgresError
from custodes.hub.service import Hub, database_url
from custodes.hub.sites import EnrolmentError, add_site
from custodes.hub.witness import verify_site

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
    with _database(settings) as url, db.connect(url) as conn:
        try:
            enrolment = add_site(conn, name, group, pem)
        except EnrolmentError as exc:
            err.print(f"[red]refused:[/red] {exc}", highlight=False)
            raise typer.Exit(2) from None
        conn.commit()
    urls = ([settings.advertise_url] if settings.advertise_url else
            settings.nats_urls or [f"nats://{settings.nats_host}:{settings.nats_port}"])
    if enrolment.key_changed:
        err.print(f"[yellow]site {name} was enrolled before with another signing key: "
                  "an alarm is raised[/yellow]")
    console.print(f"# {'enrolled' if enrolment.new else 'enrolled again'}: {name} "
                  f"({group}). Add to the node's config:")
    console.print(enrolment.snippet(urls), markup=False, highlight=False)
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
