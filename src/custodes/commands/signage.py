"""`custodes signage --config FILE OUT_DIR`: the first-layer sign of each site and the
second-layer notice, made from the configuration's `legal` section and its cameras."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from custodes.commands import ConfigOption, console, err, load
from custodes.signage import write_signage
from custodes.signage.facts import MissingLegalRecord


def signage(
    config: ConfigOption,
    out: Annotated[Path, typer.Argument(help="Folder for the signs and the notice")],
) -> None:
    """Print the signs (A4 PDF per site, QR code to the notice) and the second-layer notice."""
    cfg = load(config)
    try:
        written = write_signage(cfg, out)
    except MissingLegalRecord as exc:
        err.print(f"[red]no signs made:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    for path in written:
        console.print(str(path), highlight=False)
