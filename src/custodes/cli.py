"""The `custodes` command."""

from __future__ import annotations

import getpass
import logging
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from custodes.app import Node
from custodes.config import Config, ConfigError, load_config
from custodes.record.holds import active_holds, add_hold, release_hold
from custodes.record.layout import Layout
from custodes.record.playback import ExportError, export_range
from custodes.sim import SimServer, ensure_sample, run_sim
from custodes.store.db import Store

app = typer.Typer(
    help="custodes: a network video recorder whose watchers are watched.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
hold_app = typer.Typer(help="Protect footage from deletion.", no_args_is_help=True)
app.add_typer(hold_app, name="hold")
# Piped output (scripts, logs, tests) is not wrapped at 80 columns: a line stays a line.
_WIDTH = None if sys.stdout.isatty() else 200
console = Console(soft_wrap=True, width=_WIDTH)
err = Console(stderr=True, soft_wrap=True, width=_WIDTH)

ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="YAML configuration file", exists=False)
]


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


def _load(path: Path) -> Config:
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


def _fmt(t: float | None) -> str:
    return "—" if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


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

    node = Node(_load(config))
    node.start()
    if node.web is not None:
        console.print(f"status page: {node.web.url}")
    node.run_until_signalled()


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
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Record simulated cameras on the embedded default: SQLite, local disk, loopback RTSP."""
    _setup_logging(verbose)

    data = data.resolve()
    console.print(f"preparing sample video ({width}x{height}, {bitrate} kbit/s)…")
    sample = ensure_sample(data / "samples", width=width, height=height, fps=15,
                           bitrate_kbps=bitrate, codec="h264", seconds=10)
    with SimServer() as sim:
        urls = {f"cam{i:02d}": sim.add_camera(f"cam{i:02d}", sample) for i in range(1, cameras + 1)}
        config_path = data / "demo.yaml"
        config_path.write_text(yaml.safe_dump(_demo_config(urls, port), sort_keys=False))
        node = Node(_load(config_path))
        node.start()
        console.print(f"[bold]custodes demo[/bold]: {cameras} simulated cameras on RTSP loopback")
        console.print(f"  status page:   {node.web.url if node.web else '—'}")
        console.print(f"  config:        {config_path}")
        console.print(f"  recordings:    {node.layout.recordings}")
        console.print(f"  export:        custodes export --config {config_path} --camera cam01 "
                      "--from <ISO time> --to <ISO time> out.mp4")
        console.print("  stop:          Ctrl-C")
        if seconds:
            threading.Timer(seconds, node.stop_event.set).start()
        node.run_until_signalled()


def _demo_config(urls: dict[str, str], port: int) -> dict[str, object]:
    locations = ["entrance", "corridor", "exterior", "corridor"]
    return {
        "node": {"name": "demo"},
        "sites": {"demo-school": {"name": "Demo primary school"}},
        "cameras": {
            name: {
                "site": "demo-school",
                "location": locations[i % len(locations)],
                "purpose": "Demonstration: simulated camera (generated test pattern)",
                "main_url": url,
            }
            for i, (name, url) in enumerate(urls.items())
        },
        "storage": {"path": ".", "quota": "10GB"},
        "server": {"host": "127.0.0.1", "port": port},
    }


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
) -> None:
    """Serve looping sample video as N RTSP cameras on 127.0.0.1, one port each.

    With stdin a pipe, `stop camNN` / `start camNN` lines simulate outages.
    """
    _setup_logging(verbose=False)

    if codec not in ("h264", "h265"):
        raise typer.BadParameter("codec must be h264 or h265")
    run_sim(cache, cameras, width=width, height=height, fps=fps, bitrate_kbps=bitrate,
            codec=codec, base_port=base_port)


@app.command()
def export(
    config: ConfigOption,
    camera: Annotated[str, typer.Option(help="Camera name")],
    start: Annotated[str, typer.Option("--from", help="Start, ISO 8601 (UTC if no zone)")],
    end: Annotated[str, typer.Option("--to", help="End, ISO 8601 (UTC if no zone)")],
    out: Annotated[Path, typer.Argument(help="Output MP4 file")],
    allow_gaps: Annotated[bool, typer.Option(help="Export even if footage is missing")] = False,
) -> None:
    """Join the recordings of one camera over a time range into one MP4 (stream copy)."""
    cfg = _load(config)
    t0, t1 = parse_time(start), parse_time(end)
    if camera not in cfg.cameras:
        err.print(f"unknown camera {camera!r}; configured: {', '.join(cfg.cameras)}")
        raise typer.Exit(2)
    layout = Layout(cfg.storage.path)
    with Store(layout.database) as store:
        try:
            result = export_range(store, layout, camera, t0, t1, out, allow_gaps=allow_gaps)
        except ExportError as exc:
            err.print(f"[red]export failed:[/red] {exc}")
            raise typer.Exit(1) from None
    console.print(f"{result.path}: {result.duration:.1f} s from {len(result.segments)} segments")
    for gap in result.gaps:
        console.print(f"  gap: {gap}")


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
    with Store(Layout(cfg.storage.path).database) as store:
        try:
            hold_id = add_hold(store, camera=camera, start=parse_time(start), end=parse_time(end),
                               reason=reason, created_by=by or getpass.getuser(),
                               expires_at=parse_time(expires) if expires else None)
        except ValueError as exc:
            err.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
    console.print(f"hold {hold_id} placed")


@hold_app.command("list")
def hold_list(config: ConfigOption) -> None:
    """Active holds."""
    cfg = _load(config)
    with Store(Layout(cfg.storage.path).database) as store, store.read() as conn:
        holds = active_holds(conn, time.time())
    table = Table("id", "camera", "from", "to", "reason", "by", "expires")
    for h in holds:
        table.add_row(str(h.id), h.camera or "all", _fmt(h.start), _fmt(h.end), h.reason,
                      h.created_by, _fmt(h.expires_at))
    console.print(table)


@hold_app.command("release")
def hold_release(
    config: ConfigOption,
    hold_id: Annotated[int, typer.Argument(help="Hold id")],
    by: Annotated[str | None, typer.Option(help="Who releases the hold (default: you)")] = None,
) -> None:
    """Release a hold; its footage becomes subject to retention again."""
    cfg = _load(config)
    with Store(Layout(cfg.storage.path).database) as store:
        try:
            release_hold(store, hold_id, by=by or getpass.getuser())
        except ValueError as exc:
            err.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
    console.print(f"hold {hold_id} released")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
