"""`custodes audit`: verify the audit log (the node's, or an exported file) and export it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from custodes.audit.exchange import LogFileError, export_log, verify_file
from custodes.audit.log import AuditLog
from custodes.audit.verify import VerifyReport, verify_store
from custodes.commands import (
    ConfigOption,
    cli_actor,
    console,
    err,
    load,
    node_keys,
    parse_time,
    print_lines,
)
from custodes.keys import PUBLIC_KEY
from custodes.record.layout import Layout
from custodes.store.db import Store

audit_app = typer.Typer(help="Verify and export the tamper-evident audit log.",
                        no_args_is_help=True)

KeyOption = Annotated[
    Path | None,
    typer.Option("--key", help="The node's public key (signing.pub), obtained separately"),
]


@audit_app.command("verify")
def verify(
    *,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Verify this node's database")
    ] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Verify an exported log (offline)")
    ] = None,
    key: KeyOption = None,
) -> None:
    """Check that no audit entry was modified, deleted, inserted or reordered; exit 1 if any was.

    With --config: the node's database, with the node's public key. With --file: an exported
    log, needing nothing but the file and (recommended) --key.
    """
    if (config is None) == (file is None):
        err.print("give either --config (the node's log) or --file (an exported log)")
        raise typer.Exit(2)
    public_pem = _read_key(key) if key is not None else None
    if file is not None:
        try:
            report = verify_file(file, public_pem)
        except LogFileError as exc:
            console.print(f"[red]{file}: FAILED[/red]")
            print_lines([str(exc)])
            raise typer.Exit(1) from None
        _show(str(file), report)
        return

    assert config is not None
    cfg = load(config)
    if public_pem is None:
        public_pem = _read_key(cfg.key_dir / PUBLIC_KEY)
    layout = Layout(cfg.storage.path)
    if not layout.database.is_file():
        err.print(f"no database at {layout.database}")
        raise typer.Exit(2)
    with Store(layout.database) as store:
        report = verify_store(store, public_pem)
    _show(f"audit log of {cfg.node.name}", report)


@audit_app.command("export")
def export(
    *,
    config: ConfigOption,
    out: Annotated[Path, typer.Argument(help="The file to write (JSONL)")],
    since: Annotated[
        str | None, typer.Option(help="First time, ISO 8601 (UTC if no zone)")
    ] = None,
    until: Annotated[str | None, typer.Option(help="End time, ISO 8601 (exclusive)")] = None,
) -> None:
    """Write the audit log (or a time range of it) to a signed file an inspector can verify."""
    cfg = load(config)
    t0 = parse_time(since) if since else None
    t1 = parse_time(until) if until else None
    keys = node_keys(cfg)
    with Store(Layout(cfg.storage.path).database) as store:
        try:
            done = export_log(AuditLog(store, keys), out, actor=cli_actor().name,
                              node=cfg.node.name, since=t0, until=t1)
        except (FileExistsError, LookupError) as exc:
            err.print(f"[red]audit export failed:[/red] {exc}", highlight=False)
            raise typer.Exit(1) from None
    console.print(f"{out}: entries {done.first_seq}..{done.last_seq}, "
                  f"{done.checkpoints} signed checkpoints", highlight=False)
    console.print(f"verify with: custodes audit verify --file {out} "
                  f"--key {cfg.key_dir / PUBLIC_KEY}", highlight=False)


def _read_key(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        err.print(f"cannot read the public key {path}: {exc.strerror}", highlight=False)
        raise typer.Exit(2) from None


def _show(what: str, report: VerifyReport) -> None:
    if report.ok:
        console.print(f"[green]{what}: OK[/green] — {report.summary()}", highlight=False)
    else:
        console.print(f"[red]{what}: FAILED[/red] — {len(report.problems)} problems; "
                      f"{report.summary()}", highlight=False)
        print_lines([str(p) for p in report.problems])
    print_lines(report.notes, style="yellow")
    if not report.ok:
        raise typer.Exit(1)
