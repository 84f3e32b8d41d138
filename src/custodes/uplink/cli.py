"""`custodes uplink ...`: what a node's operator needs to enrol it at a hub."""

from __future__ import annotations

import typer

from custodes.commands import ConfigOption, console, err, load
from custodes.keys import KeyFileError, NodeKeys

uplink_app = typer.Typer(help="Report this node to a hub.", no_args_is_help=True)


@uplink_app.command("key")
def key(config: ConfigOption) -> None:
    """Print the node's public signing key, for `custodes hub add-site --key`."""
    cfg = load(config)
    try:
        keys = NodeKeys.load_or_create(cfg.key_dir)
    except (KeyFileError, OSError) as exc:
        err.print(f"[red]cannot use the node's keys:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    console.print(keys.public_pem.decode("ascii"), end="", markup=False, highlight=False)
