"""The `custodes` command."""

from __future__ import annotations

import getpass
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.logging import RichHandler
from rich.table import Table

from custodes.app import Node
from custodes.audit.actions import Action
from custodes.audit.log import SigningRefused
from custodes.audit.report import AUDIT_FILE, write_pack
from custodes.commands import (
    ConfigOption,
    cli_actor,
    console,
    err,
    fmt_time,
    node_data,
    parse_time,
)
from custodes.commands import load as _load
from custodes.commands.audit import audit_app
from custodes.commands.cameras import cameras_app
from custodes.commands.case import case_app
from custodes.commands.demo import case_steps, demo_cameras, demo_config, subject_photo
from custodes.commands.export import export_app
from custodes.commands.faces import faces_app
from custodes.commands.gallery import gallery_app
from custodes.commands.profile import profile_app
from custodes.commands.redact import redact
from custodes.commands.signage import signage
from custodes.commands.user import user_app
from custodes.hub.cli import hub_app
from custodes.masking import install_log_filter
from custodes.privacy.pinning import ProfileMismatch
from custodes.privacy.policy import Action as ProfileAction
from custodes.privacy.policy import Profile, allows
from custodes.record.holds import active_holds, add_hold, release_hold
from custodes.record.layout import DATA_UMASK, Layout
from custodes.sim import SimServer, run_sim
from custodes.sim.digest import AuthScheme
from custodes.sim.onvif import OnvifIdentity
from custodes.sim.runner import SimOptions
from custodes.store.db import Store
from custodes.uplink.cli import uplink_app

app = typer.Typer(
    help="custodes: a network video recorder whose watchers are watched.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
hold_app = typer.Typer(help="Protect footage from deletion.", no_args_is_help=True)
app.add_typer(hold_app, name="hold")
app.add_typer(audit_app, name="audit")
app.add_typer(export_app, name="export")
app.add_typer(case_app, name="case")
app.add_typer(user_app, name="user")
app.add_typer(gallery_app, name="gallery")
app.add_typer(profile_app, name="profile")
app.command("redact")(redact)
app.command("signage")(signage)
app.add_typer(faces_app, name="faces")
app.add_typer(cameras_app, name="cameras")
app.add_typer(hub_app, name="hub")
app.add_typer(uplink_app, name="uplink")


def _setup_logging(verbose: bool) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    if err.is_terminal:
        handler: logging.Handler = RichHandler(console=err, show_path=False)
        logging.basicConfig(level=level, format="%(name)s: %(message)s",
                            datefmt="[%Y-%m-%d %H:%M:%S]", handlers=[handler])
    else:
        # One plain line per record for journald and log files; rich would wrap lines.
        logging.basicConfig(level=level, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Errors of cameras and libraries repeat stream URLs, passwords included.
    install_log_filter()



@app.command("check-config")
def check_config(path: Annotated[Path, typer.Argument(help="YAML configuration file")]) -> None:
    """Validate a configuration file; print every error with its line and key."""
    config = _load(path)
    console.print(
        f"{path}: ok — {len(config.sites)} sites, {len(config.cameras)} cameras, "
        f"storage in {config.storage.path}"
    )


@app.command()
def run(
    config: ConfigOption,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run a recorder node for the cameras in the configuration."""
    _setup_logging(verbose)

    node = Node(_load(config), config_path=config)
    try:
        node.start()
    except ProfileMismatch as exc:
        err.print(f"[red]{exc}[/red]", highlight=False)
        raise typer.Exit(2) from None
    if node.web is not None:
        console.print(f"web interface: {node.web.url}")
    _print_first_admin(node)
    node.run_until_signalled()


def _print_first_admin(node: Node) -> None:
    if node.first_admin_password:
        # To stdout, never to the log: the password must not end up in journald.
        console.print(
            f"first start: sign in as 'admin' with the password {node.first_admin_password} "
            "(shown only now; the first sign-in asks you to choose your own before anything "
            "else)", markup=False, highlight=False,
        )


@app.command()
def demo(
    cameras: Annotated[int, typer.Option(min=1, max=64, help="Simulated cameras")] = 8,
    data: Annotated[Path, typer.Option(help="Folder for recordings and samples")] = Path(
        "var/demo"
    ),
    port: Annotated[int, typer.Option(help="Web server port (0: any free)")] = 8080,
    width: Annotated[int, typer.Option(help="Simulated stream width")] = 1280,
    height: Annotated[int, typer.Option(help="Simulated stream height")] = 720,
    bitrate: Annotated[int, typer.Option(help="Simulated stream bitrate, kbit/s")] = 2000,
    seconds: Annotated[
        float, typer.Option(help="Stop after this many seconds (0: until Ctrl-C)")
    ] = 0,
    profile: Annotated[
        Profile, typer.Option(help="Deployment profile (school allows no identification)")
    ] = Profile.SCHOOL,
    video: Annotated[list[Path] | None, typer.Option(
        exists=True, dir_okay=False,
        help="Your own clip, served as a camera (repeat for more; replaces --cameras)")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Record simulated cameras on the embedded default: SQLite, local disk, loopback RTSP."""
    _setup_logging(verbose)

    data = data.resolve()
    videos = [v.resolve() for v in video or []]
    what = f"{len(videos)} clip(s)" if videos else "sample video"
    console.print(f"preparing {what} ({width}x{height}, {bitrate} kbit/s)…")
    with SimServer() as sim:
        cams = demo_cameras(sim, data, videos, cameras, width=width, height=height,
                            bitrate=bitrate)
        config_path = data / "demo.yaml"
        config_path.write_text(
            yaml.safe_dump(demo_config(cams, port, profile), sort_keys=False)
        )
        node = Node(_load(config_path), config_path=config_path)
        try:
            node.start()
        except ProfileMismatch as exc:  # a demo folder made earlier with another profile
            err.print(f"[red]{exc}[/red] (or use another --data folder)", highlight=False)
            raise typer.Exit(2) from None
        source = "your clips" if videos else "simulated cameras"
        console.print(f"[bold]custodes demo[/bold]: {len(cams)} {source} on RTSP loopback, "
                      f"{profile.value} profile")
        console.print(f"  web interface: {node.web.url if node.web else '—'}")
        console.print(f"  config:        {config_path}")
        console.print(f"  recordings:    {node.layout.recordings}")
        console.print(f"  export:        custodes export create --config {config_path} "
                      "--camera cam01 --from <ISO time> --to <ISO time> out-folder")
        console.print(f"  new password:  custodes user reset-password admin --config {config_path}")
        console.print("  stop:          Ctrl-C")
        _print_first_admin(node)
        photo = None
        if videos and allows(profile, ProfileAction.SEARCH) and cams[0].clip is not None:
            photo = subject_photo(cams[0].clip, data / "subject-cam01.jpg")
        for line in case_steps(config_path, profile, cams[0].name, photo):
            console.print(line, markup=False, highlight=False)
        if seconds:
            threading.Timer(seconds, node.stop_event.set).start()
        node.run_until_signalled()


@app.command()
def sim(
    cameras: Annotated[int, typer.Option(min=1, max=256)] = 8,
    width: Annotated[int, typer.Option()] = 2592,
    height: Annotated[int, typer.Option()] = 1944,
    fps: Annotated[int, typer.Option(min=1, max=60)] = 15,
    bitrate: Annotated[int, typer.Option(help="kbit/s")] = 4000,
    codec: Annotated[str, typer.Option(help="h264 or h265")] = "h264",
    base_port: Annotated[int, typer.Option(help="Port of the first camera")] = 8554,
    cache: Annotated[Path, typer.Option(help="Folder for generated samples")] = Path(
        "var/samples"
    ),
    auth: Annotated[AuthScheme | None, typer.Option(
        help="Require credentials (user --username, password $CUSTODES_SIM_PASSWORD or made "
        "up and printed)")] = None,
    username: Annotated[str, typer.Option(help="User name with --auth")] = "admin",
    onvif: Annotated[bool, typer.Option(help="Serve an ONVIF device per camera and answer "
                                        "WS-Discovery")] = False,
    discovery_port: Annotated[int, typer.Option(min=0, max=65535)] = 3702,
    manufacturer: Annotated[str, typer.Option(help="ONVIF identity")] = "custodes",
    model: Annotated[str, typer.Option(help="ONVIF identity")] = "SIM-CAM",
    firmware: Annotated[str, typer.Option(help="ONVIF identity")] = "1.0.0",
    clock_offset: Annotated[float, typer.Option(help="ONVIF clock minus real, s")] = 0.0,
    anonymous_users: Annotated[bool, typer.Option(
        help="ONVIF GetUsers answers without credentials (a weakness to audit)")] = False,
) -> None:
    """Serve looping sample video as N RTSP cameras on 127.0.0.1, one port each.

    With stdin a pipe, `stop camNN` / `start camNN` lines simulate outages.
    """
    _setup_logging(verbose=False)

    if codec not in ("h264", "h265"):
        raise typer.BadParameter("codec must be h264 or h265")
    identity = OnvifIdentity(manufacturer=manufacturer, model=model, firmware=firmware,
                             clock_offset_s=clock_offset, anonymous_users=anonymous_users)
    options = SimOptions(auth=auth, username=username, onvif=identity if onvif else None,
                         discovery_port=discovery_port)
    run_sim(cache, cameras, width=width, height=height, fps=fps, bitrate_kbps=bitrate,
            codec=codec, base_port=base_port, options=options)


@app.command()
def report(
    config: ConfigOption,
    out: Annotated[Path, typer.Argument(help="New folder for the signed inspection pack")],
    days: Annotated[float, typer.Option(min=0.01, help="Period covered, in days")] = 30,
) -> None:
    """Write the inspection pack: profile, cameras, retention, cases, access, audit log, signed."""
    cfg = _load(config)
    with node_data(cfg) as data:
        try:
            pack = write_pack(cfg, data.store, data.keys, data.audit, out, actor=cli_actor().name,
                              since=time.time() - days * 86400)
        except FileExistsError as exc:
            err.print(f"[red]report failed:[/red] {exc}", highlight=False)
            raise typer.Exit(1) from None
        except SigningRefused as exc:
            # The node signs no pack over a log that was cut back or rewritten.
            err.print(f"[red]report refused:[/red] {exc}", highlight=False)
            raise typer.Exit(1) from None
    chain = pack.facts["audit_chain"]
    console.print(f"{pack.folder}: report.pdf, report.md, report.json, {AUDIT_FILE}, signed")
    console.print(f"audit log: {chain['summary']}", markup=False, highlight=False)
    if not chain["ok"]:
        raise typer.Exit(1)


@hold_app.command("add")
def hold_add(
    config: ConfigOption,
    start: Annotated[str, typer.Option("--from", help="Start, ISO 8601")],
    end: Annotated[str, typer.Option("--to", help="End, ISO 8601")],
    reason: Annotated[str, typer.Option(help="Why the footage must be kept")],
    camera: Annotated[str | None, typer.Option(help="Camera (default: all)")] = None,
    expires: Annotated[str | None, typer.Option(help="When the hold lapses, ISO 8601")] = None,
    by: Annotated[str | None, typer.Option(help="Who places the hold (default: you)")] = None,
) -> None:
    """Protect a time range of footage from retention."""
    cfg = _load(config)
    if camera is not None and camera not in cfg.cameras:
        err.print(f"unknown camera {camera!r}")
        raise typer.Exit(2)
    t0, t1 = parse_time(start), parse_time(end)
    with node_data(cfg) as data:
        try:
            hold_id = add_hold(data.store, camera=camera, start=t0, end=t1,
                               reason=reason, created_by=by or getpass.getuser(),
                               expires_at=parse_time(expires) if expires else None)
        except ValueError as exc:
            err.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
        data.audit.record(
            cli_actor().name, Action.HOLD_ADD, camera or "all",
            detail={"hold": hold_id, "start": t0, "end": t1, "reason": reason, "by": by},
        )
    console.print(f"hold {hold_id} placed")


@hold_app.command("list")
def hold_list(config: ConfigOption) -> None:
    """Active holds."""
    cfg = _load(config)
    with Store(Layout(cfg.storage.path).database) as store, store.read() as conn:
        holds = active_holds(conn, time.time())
    table = Table("id", "camera", "from", "to", "reason", "by", "expires")
    for h in holds:
        table.add_row(str(h.id), h.camera or "all", fmt_time(h.start), fmt_time(h.end), h.reason,
                      h.created_by, fmt_time(h.expires_at))
    console.print(table)


@hold_app.command("release")
def hold_release(
    config: ConfigOption,
    hold_id: Annotated[int, typer.Argument(help="Hold id")],
    by: Annotated[str | None, typer.Option(help="Who releases the hold (default: you)")] = None,
) -> None:
    """Release a hold; its footage becomes subject to retention again."""
    cfg = _load(config)
    with node_data(cfg) as data:
        try:
            release_hold(data.store, hold_id, by=by or getpass.getuser())
        except ValueError as exc:
            err.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
        data.audit.record(
            cli_actor().name, Action.HOLD_RELEASE, str(hold_id), detail={"by": by}
        )
    console.print(f"hold {hold_id} released")


def main() -> None:
    # What the commands write (databases, exports, packs) is for this account and its group
    # only, as what the node writes (custodes.record.layout).
    os.umask(DATA_UMASK)
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
