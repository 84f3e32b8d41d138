"""`custodes export`: make a signed export folder, and verify one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from custodes.commands import (
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
from custodes.config import Config
from custodes.record.bundle import Transform, create_export
from custodes.record.manifest import verify_bundle
from custodes.record.playback import ExportError, segments_in_range
from custodes.redaction.exports import SegmentBoxes, redact_joined
from custodes.store.db import Store

export_app = typer.Typer(help="Signed exports: footage with a manifest an inspector can verify.",
                         no_args_is_help=True)


def redaction_for(config: Config, camera: str, store: Store, start: float,
                  end: float) -> Transform:
    """Every face and the camera's privacy zones blurred, as for any picture leaving the box.

    With the segments' boxes kept in the node's storage, as the node's own exports and viewers'
    copies use them (searched and kept where missing): the command works on the same storage,
    so it reuses and leaves the same box files. A node object gives their names; it is not
    started (nothing runs, its database is not opened: the command's `store` is used).
    """
    from custodes.app import Node  # noqa: PLC0415 - the whole node's imports, only to redact

    boxes = SegmentBoxes(Node(config))
    zones = config.cameras[camera].privacy_zones

    def redact(src: Path, dst: Path) -> dict[str, Any]:
        with store.read() as conn:
            segments = segments_in_range(conn, camera, start, end)
        return redact_joined(src, dst, segments, boxes, zones=zones)

    return redact


@export_app.command("create")
def create(
    *,
    config: ConfigOption,
    camera: Annotated[str, typer.Option(help="Camera name")],
    start: Annotated[str, typer.Option("--from", help="Start, ISO 8601 (UTC if no zone)")],
    end: Annotated[str, typer.Option("--to", help="End, ISO 8601 (UTC if no zone)")],
    out: Annotated[Path, typer.Argument(help="Folder to create for the export")],
    case: Annotated[str | None, typer.Option(help="Case the export is made for")] = None,
    unredacted: Annotated[bool, typer.Option(
        "--unredacted", help="Leave faces and privacy zones visible (recorded as such in the "
        "manifest and the audit log)",
    )] = False,
    allow_gaps: Annotated[bool, typer.Option(help="Export even if footage is missing")] = False,
) -> None:
    """Export one camera's recordings over a time range as a signed, audited folder."""
    cfg = load(config)
    t0, t1 = parse_time(start), parse_time(end)
    if camera not in cfg.cameras:
        err.print(f"unknown camera {camera!r}; configured: {', '.join(cfg.cameras)}")
        raise typer.Exit(2)
    with node_data(cfg) as data:
        store = data.store
        transform = None if unredacted else redaction_for(cfg, camera, store, t0, t1)
        try:
            bundle = create_export(
                store, data.layout, data.keys, data.audit, camera, t0, t1, out,
                actor=cli_actor(), case=case, transform=transform, allow_gaps=allow_gaps,
                node=cfg.node.name,
            )
        except ExportError as exc:
            err.print(f"[red]export failed:[/red] {exc}", highlight=False)
            raise typer.Exit(1) from None
    console.print(f"{bundle.folder}: {bundle.video.name}, {bundle.duration:.1f} s, signed "
                  f"manifest; audit entry {bundle.audit_seq}", highlight=False)
    for gap in bundle.gaps:
        console.print(f"  gap: {gap}", highlight=False)
    redaction = bundle.manifest["redaction"]
    if redaction.get("applied"):
        console.print(f"  redacted: {redaction.get('faces_blurred')} faces and "
                      f"{redaction.get('zones')} privacy zones blurred", highlight=False)
    else:
        console.print("[yellow]  not redacted: faces and bystanders are visible[/yellow]")


@export_app.command("verify")
def verify(
    *,
    folder: Annotated[Path, typer.Argument(help="The export folder")],
    key: Annotated[
        Path | None,
        typer.Option("--key", help="The node's public key (signing.pub), obtained separately"),
    ] = None,
) -> None:
    """Check an export's signature and file hashes; name what was altered; exit 1 if anything.

    Without --key the answer is at best UNVERIFIED (exit 4): the folder's own signing.pub
    proves nothing, since whoever altered the folder could re-sign it with their own key.
    """
    public_pem = None
    if key is not None:
        try:
            public_pem = key.read_bytes()
        except OSError as exc:
            err.print(f"cannot read the public key {key}: {exc.strerror}", highlight=False)
            raise typer.Exit(2) from None
    report = verify_bundle(folder, public_pem)
    m = report.manifest or {}
    if report.ok:
        if report.verified:
            console.print(f"[green]{folder}: OK[/green] — {len(report.files_ok)} files match "
                          f"the signed manifest ({report.key_source} key)", highlight=False)
        else:
            console.print(f"[yellow]{folder}: UNVERIFIED[/yellow] — {len(report.files_ok)} "
                          "files match a manifest signed by the key in the folder itself; give "
                          "the node's key with --key to know who signed it", highlight=False)
        redacted = "redacted" if m.get("redaction", {}).get("applied") else "not redacted"
        console.print(f"  {m.get('camera')} from {m.get('start')} to {m.get('end')}, "
                      f"made {m.get('created_at')} by {m.get('created_by')}, case "
                      f"{m.get('case') or '—'}, {redacted}", highlight=False)
    else:
        console.print(f"[red]{folder}: FAILED[/red] — {len(report.problems)} problems",
                      highlight=False)
        print_lines(report.problems)
    print_lines(report.notes, style="yellow")
    if not report.ok:
        raise typer.Exit(1)
    if not report.verified:
        raise typer.Exit(EXIT_UNVERIFIED)
