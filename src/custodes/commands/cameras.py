"""`custodes cameras`: discover ONVIF cameras, probe one, audit the fleet, manage risk data."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from custodes.audit.actions import Action
from custodes.cameras import audit as fleet_audit
from custodes.cameras import risk
from custodes.cameras.discovery import WS_DISCOVERY_PORT, discover
from custodes.cameras.models import Severity
from custodes.cameras.probe import DEFAULT_DRIFT_THRESHOLD_S, probe
from custodes.commands import ConfigOption, cli_actor, console, err, fmt_time, node_data
from custodes.commands import load as load_config
from custodes.masking import install_log_filter
from custodes.record.layout import Layout

cameras_app = typer.Typer(help="Cameras on the network: discover, probe, risk audit.",
                          no_args_is_help=True)
risk_data_app = typer.Typer(help="The fleet risk data (shipped; replaced only from a file).",
                            no_args_is_help=True)
cameras_app.add_typer(risk_data_app, name="risk-data")

CAMERA_PASSWORD_ENV = "CUSTODES_CAMERA_PASSWORD"  # noqa: S105 - a variable's name


def _quiet_logging() -> None:
    """Warnings only, on stderr, credentials masked. Configured before onvif-zeep-async is
    imported: its import calls logging.basicConfig(level=INFO) when nothing else has."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    install_log_filter()


def _print_json(value: object) -> None:
    # Plain print: rich would highlight and wrap the JSON a script reads.
    print(json.dumps(value, ensure_ascii=False, default=str))


@cameras_app.command("discover")
def discover_command(
    timeout: Annotated[float, typer.Option(min=0.1, max=60, help="Seconds to wait")] = 3.0,
    interface: Annotated[list[str] | None, typer.Option(
        help="Local IPv4 address to send the multicast probe from (repeatable; default: every "
        "non-loopback interface)")] = None,
    host: Annotated[list[str] | None, typer.Option(
        help="Ask this address directly (unicast; repeatable)")] = None,
    port: Annotated[int, typer.Option(min=1, max=65535, help="WS-Discovery port")] = (
        WS_DISCOVERY_PORT),
) -> None:
    """WS-Discovery: one JSON line per ONVIF device that answers."""
    _quiet_logging()
    try:
        found = discover(timeout, interfaces=interface, hosts=host or (), port=port)
    except OSError as exc:
        err.print(f"[red]discovery failed:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None
    for device in found:
        _print_json(device.as_json())
    err.print(f"{len(found)} device(s) answered within {timeout:g} s")


@cameras_app.command("probe")
def probe_command(
    url: Annotated[str, typer.Argument(
        help="ONVIF device service (http://HOST[:PORT]/onvif/device_service) or rtsp:// URL")],
    username: Annotated[str | None, typer.Option(help="User name at the camera")] = None,
    password_env: Annotated[str, typer.Option(
        help="Environment variable holding the camera password (never on the command line)")
    ] = CAMERA_PASSWORD_ENV,
    timeout: Annotated[float, typer.Option(min=1, max=300)] = 15.0,
    drift_threshold: Annotated[float, typer.Option(
        min=0, help="Clock drift, in seconds, reported as a finding")] = (
        DEFAULT_DRIFT_THRESHOLD_S),
) -> None:
    """Device information, streams, clock, protocols and findings of one camera, as JSON.

    Exit 1 when the probe could not complete (the JSON's "error" says why).
    """
    _quiet_logging()
    password = os.environ.get(password_env) if username is not None else None
    if username is not None and password is None:
        err.print(f"[red]set {password_env} to the camera's password[/red]")
        raise typer.Exit(2)
    result = asyncio.run(probe(url, username, password, timeout=timeout,
                               drift_threshold_s=drift_threshold))
    if result.device is not None:
        result.findings += risk.assess(result.device, risk.load())
    _print_json(result.as_json())
    if result.error is not None:
        raise typer.Exit(1)


@cameras_app.command("audit")
def audit_command(
    config: ConfigOption,
    timeout: Annotated[float, typer.Option(min=1, max=300, help="Per camera")] = 15.0,
    drift_threshold: Annotated[float, typer.Option(min=0)] = DEFAULT_DRIFT_THRESHOLD_S,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON")] = False,
) -> None:
    """Probe every configured camera and check it against the risk data and for weak settings.

    The result is kept for the system page and the inspection pack. Exit 1 if any finding is
    critical.
    """
    _quiet_logging()
    cfg = load_config(config)
    storage = Layout(cfg.storage.path).root
    try:
        data = risk.load(storage)
    except risk.RiskDataError as exc:
        err.print(f"[red]risk data unusable:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    result = asyncio.run(fleet_audit.audit_fleet(cfg, data, timeout=timeout,
                                                 drift_threshold_s=drift_threshold))
    saved = fleet_audit.save(storage, result)
    with node_data(cfg) as node:
        node.audit.record(cli_actor().name, Action.CAMERA_AUDIT, "fleet",
                          detail={"cameras": len(result.cameras), "counts": result.counts(),
                                  "risk_data": data.version})
    if as_json:
        _print_json(result.as_json())
    else:
        table = Table("camera", "severity", "finding", "what")
        for camera in result.cameras:
            if not camera.findings:
                table.add_row(camera.camera, "—", "—", "no finding")
            for finding in camera.findings:
                table.add_row(camera.camera, finding.severity.value, finding.code.value,
                              finding.message)
        console.print(table)
        counts = result.counts()
        console.print(f"risk data {data.version}; {counts['critical']} critical, "
                      f"{counts['warning']} warning, {counts['info']} info; kept in {saved}",
                      markup=False, highlight=False)
    if result.counts()[Severity.CRITICAL.value]:
        raise typer.Exit(1)


@risk_data_app.command("show")
def risk_data_show(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML configuration "
                                                "(to include the node's installed data)")] = None,
) -> None:
    """The risk data in force: version, sources and entries."""
    storage = None if config is None else Layout(load_config(config).storage.path).root
    data = risk.load(storage)
    console.print(f"risk data {data.version} (compiled {data.compiled}): "
                  f"{len(data.vulnerabilities)} exploited vulnerabilities, "
                  f"{len(data.covered)} covered entities", markup=False, highlight=False)
    for source in data.sources:
        console.print(f"  {source.id}: {source.title} — {source.url} (taken {source.taken})",
                      markup=False, highlight=False)


@risk_data_app.command("update")
def risk_data_update(
    file: Annotated[Path, typer.Argument(help="Risk data JSON (same format as shipped)")],
    config: ConfigOption,
    allow_older: Annotated[bool, typer.Option(help="Accept a version older than the one in "
                                              "force")] = False,
) -> None:
    """Validate FILE and make it the node's risk data. Never fetched from the network."""
    cfg = load_config(config)
    storage = Layout(cfg.storage.path).root
    try:
        new, previous = risk.install(file, storage, allow_older=allow_older)
    except (risk.RiskDataError, OSError) as exc:
        err.print(f"[red]risk data refused:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    with node_data(cfg) as node:
        node.audit.record(cli_actor().name, Action.RISK_DATA_UPDATE, new.version,
                          detail={"previous": previous, "file": str(file),
                                  "entries": len(new.vulnerabilities) + len(new.covered)})
    console.print(f"risk data {new.version} in force (was {previous}) since "
                  f"{fmt_time(os.stat(storage / risk.INSTALLED_NAME).st_mtime)}",
                  markup=False, highlight=False)
