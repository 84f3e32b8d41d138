"""`custodes audit`: verify the audit log (the node's, or an exported file) and export it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from custodes.audit.anchor import Anchor, AnchorFile
from custodes.audit.exchange import LogFileError, export_log, verify_file, witness_anchors
from custodes.audit.log import SigningRefused
from custodes.audit.verify import VerifyReport, verify_store
from custodes.commands import (
    EXIT_REFUSED,
    EXIT_UNVERIFIED,
    ConfigOption,
    cli_actor,
    console,
    err,
    load,
    node_data,
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
    witness: Annotated[list[Path] | None, typer.Option(
        "--witness", "-w", help="An older copy to hold the log against (an exported log, an "
        "export folder, an inspection pack, a copy of the anchor file); repeatable",
    )] = None,
) -> None:
    """Check that no audit entry was modified, deleted, inserted or reordered; exit 1 if any was.

    With --config: the node's database, with the node's public key and the anchors the node
    kept in its key folder. With --file: an exported log, needing nothing but the file and
    --key (without it the answer is at best UNVERIFIED, exit 4). Every --witness adds the
    anchors of a copy kept off the node: what the node signed then must still be in the log.
    """
    if (config is None) == (file is None):
        err.print("give either --config (the node's log) or --file (an exported log)")
        raise typer.Exit(2)
    public_pem = _read_key(key) if key is not None else None
    witnesses = _witnesses(witness or [])
    if file is not None:
        try:
            report = verify_file(file, public_pem, witnesses)
        except LogFileError as exc:
            console.print(f"[red]{file}: FAILED[/red]")
            print_lines([str(exc)])
            raise typer.Exit(1) from None
        _show(str(file), report, trusted_key=public_pem is not None)
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
        report = verify_store(store, public_pem, anchors=AnchorFile.in_folder(cfg.key_dir),
                              witnesses=witnesses)
    _show(f"audit log of {cfg.node.name}", report, trusted_key=True)


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
    with node_data(cfg) as data:
        try:
            done = export_log(data.audit, out, actor=cli_actor().name,
                              node=cfg.node.name, since=t0, until=t1)
        except (FileExistsError, LookupError) as exc:
            err.print(f"[red]audit export failed:[/red] {exc}", highlight=False)
            raise typer.Exit(1) from None
        except SigningRefused as exc:
            err.print(f"[red]audit export refused:[/red] {exc}", highlight=False)
            raise typer.Exit(EXIT_REFUSED) from None
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


def _witnesses(paths: list[Path]) -> list[tuple[str, Anchor]]:
    found: list[tuple[str, Anchor]] = []
    for path in paths:
        try:
            found.extend(witness_anchors(path))
        except LogFileError as exc:
            err.print(f"[red]not a witness:[/red] {exc}", highlight=False)
            raise typer.Exit(2) from None
    return found


def _show(what: str, report: VerifyReport, *, trusted_key: bool) -> None:
    if report.ok and trusted_key:
        console.print(f"[green]{what}: OK[/green] — {report.summary()}", highlight=False)
    elif report.ok:
        console.print(f"[yellow]{what}: UNVERIFIED[/yellow] — consistent, but checked only "
                      f"with the key the file itself carries; {report.summary()}",
                      highlight=False)
    else:
        console.print(f"[red]{what}: FAILED[/red] — {len(report.problems)} problems; "
                      f"{report.summary()}", highlight=False)
        print_lines([str(p) for p in report.problems])
    print_lines(report.notes, style="yellow")
    if not report.ok:
        raise typer.Exit(1)
    if not trusted_key:
        raise typer.Exit(EXIT_UNVERIFIED)
