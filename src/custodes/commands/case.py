"""`custodes case ...`: open, decide, close and search cases, as a signed-in user.

Every command acts as a user of the node (``--user``, the password from CUSTODES_PASSWORD or a
prompt), never as whoever runs the shell: the role that approves a case must be one an
administrator gave, not one claimed on the command line. A refusal is printed with its reason
and exits with status 3; it is in the audit log either way.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from custodes.auth.roles import Actor
from custodes.commands import (
    EXIT_INVALID,
    ConfigOption,
    UserOption,
    console,
    err,
    fmt_time,
    parse_time,
    signed_in,
)
from custodes.privacy.case_log import CaseLog, log_json
from custodes.privacy.cases import Case, CaseError, Cases, SubjectPhoto, descriptor_gaps

case_app = typer.Typer(help="Cases: the only context in which a face may be searched for.",
                       no_args_is_help=True)

CaseId = Annotated[int, typer.Argument(help="Case number")]
NoteOption = Annotated[str, typer.Option(help="Reason for the decision, kept with the case")]


@dataclass(frozen=True)
class _Session:
    cases: Cases
    actor: Actor


@contextmanager
def _session(config_path: Path, user: str) -> Iterator[_Session]:
    """The node's cases, and the signed-in ``user``; failures become exit codes."""
    with signed_in(config_path, user) as node:
        cases = Cases(node.store, node.keys, node.audit, node.config.profile,
                      known_cameras=node.config.cameras,
                      descriptors_off=descriptor_gaps(node.config))
        try:
            yield _Session(cases, node.actor)
        except CaseError as exc:
            err.print(f"[red]{exc}[/red]", highlight=False)
            raise typer.Exit(EXIT_INVALID) from None


def _show(case: Case) -> None:
    console.print(f"[bold]case {case.id}[/bold] ({case.reference}): {case.status.value}")
    for label, value in (
        ("legal basis", case.legal_basis), ("purpose", case.purpose),
        ("cameras", ", ".join(case.cameras)),
        ("footage", f"{fmt_time(case.scope_start)} to {fmt_time(case.scope_end)}"),
        ("watchlist", "yes" if case.watchlist else "no"),
        ("opened", f"{fmt_time(case.opened_at)} by {case.opened_by}"),
        ("decided", f"{fmt_time(case.decided_at)} by {case.decided_by}" if case.decided_by
         else "—"),
        ("note", case.decision_note or "—"), ("expires", fmt_time(case.expires_at)),
        ("closed", f"{fmt_time(case.closed_at)} by {case.closed_by}" if case.closed_by else "—"),
        ("holds", ", ".join(map(str, case.hold_ids)) or "—"),
        ("members", ", ".join(case.members) or "—"),
        ("subjects", ", ".join(f"{s.id} {s.label}" + (" (wiped)" if s.wiped else "")
                               for s in case.subjects)),
    ):
        console.print(f"  {label:12} {value}", highlight=False, markup=False)


@case_app.command("open")
def open_case(
    *, config: ConfigOption, user: UserOption,
    reference: Annotated[str, typer.Option(help="e.g. the court order number")],
    legal_basis: Annotated[str, typer.Option(help="The law or order that allows the search")],
    purpose: Annotated[str, typer.Option(help="What the search is for")],
    camera: Annotated[list[str], typer.Option(help="A camera in scope (repeat for more)")],
    start: Annotated[str, typer.Option("--from", help="Start of the footage in scope, ISO")],
    end: Annotated[str, typer.Option("--to", help="End of the footage in scope, ISO")],
    expires: Annotated[str, typer.Option(help="When the case lapses, ISO 8601")],
    photo: Annotated[list[Path], typer.Option(help="A photo of the subject (repeatable)",
                                              exists=True, dir_okay=False)],
    subject: Annotated[str, typer.Option(help="How the case names the subject")] = "subject",
    watchlist: Annotated[bool, typer.Option(help="Live alerts (police profile only)")] = False,
    member: Annotated[list[str] | None, typer.Option(
        help="A colleague who works the case (repeatable); only members see it")] = None,
) -> None:
    """Open a case; it does nothing until a different user with the approver role approves."""
    photos = [SubjectPhoto(subject, p.read_bytes()) for p in photo]
    with _session(config, user) as s:
        case = s.cases.open(s.actor, reference=reference, legal_basis=legal_basis,
                            purpose=purpose, cameras=camera, start=parse_time(start),
                            end=parse_time(end), expires_at=parse_time(expires),
                            photos=photos, watchlist=watchlist, members=member or ())
    console.print(f"case {case.id} opened; waiting for approval")


@case_app.command("list")
def list_cases(config: ConfigOption, user: UserOption) -> None:
    """Every case, newest first."""
    with _session(config, user) as s:
        cases = s.cases.list_cases(s.actor)
    table = Table("id", "reference", "status", "cameras", "opened by", "expires")
    for c in cases:
        table.add_row(str(c.id), c.reference, c.status.value, ", ".join(c.cameras), c.opened_by,
                      fmt_time(c.expires_at))
    console.print(table)


@case_app.command("show")
def show(config: ConfigOption, user: UserOption, case_id: CaseId) -> None:
    """A case's details (no biometric data)."""
    with _session(config, user) as s:
        _show(s.cases.get(s.actor, case_id))


@case_app.command("log")
def use_log(config: ConfigOption, user: UserOption, case_id: CaseId) -> None:
    """A case's use log (JSON): its authorisation, each face search with what it searched and
    with what, every result, and who verified it (custodes.privacy.case_log)."""
    with _session(config, user) as s:
        log = CaseLog(s.cases.store, s.cases.audit, s.cases)
        record = log_json(log.uses(s.actor, case_id), log.authorisation(s.actor, case_id))
    console.print_json(json.dumps(record))


@case_app.command("approve")
def approve(
    config: ConfigOption, user: UserOption, case_id: CaseId, note: NoteOption = "",
    expires: Annotated[str | None, typer.Option(help="Bring the expiry forward, ISO")] = None,
) -> None:
    """Approve a pending case opened by someone else; holds the footage in its scope."""
    with _session(config, user) as s:
        case = s.cases.approve(s.actor, case_id, note=note,
                               expires_at=parse_time(expires) if expires else None)
    _show(case)


@case_app.command("reject")
def reject(config: ConfigOption, user: UserOption, case_id: CaseId,
           note: NoteOption = "") -> None:
    """Reject a pending case; its subject data is wiped."""
    with _session(config, user) as s:
        s.cases.reject(s.actor, case_id, note=note)
    console.print(f"case {case_id} rejected")


@case_app.command("close")
def close(config: ConfigOption, user: UserOption, case_id: CaseId,
          note: NoteOption = "") -> None:
    """End a case: its holds are released and its subject data wiped."""
    with _session(config, user) as s:
        s.cases.close(s.actor, case_id, note=note)
    console.print(f"case {case_id} closed")


@case_app.command("search")
def search(
    *, config: ConfigOption, user: UserOption, case_id: CaseId,
    camera: Annotated[list[str] | None, typer.Option(help="Narrow to these cameras")] = None,
    start: Annotated[str | None, typer.Option("--from", help="Narrow the window, ISO")] = None,
    end: Annotated[str | None, typer.Option("--to", help="Narrow the window, ISO")] = None,
    k: Annotated[int, typer.Option("-k", help="Hits to return")] = 20,
) -> None:
    """Search the recordings in the case's scope for its subjects' faces."""
    with _session(config, user) as s:
        result = s.cases.search(s.actor, case_id, cameras=camera or None,
                                start=parse_time(start) if start else None,
                                end=parse_time(end) if end else None, k=k)
    table = Table("distance", "level", "camera", "seen", "event", "snapshot (redacted)",
                  "subject")
    for hit in result.hits:
        # A possible hit is ranked but names nobody (custodes.faces.calibration).
        table.add_row(f"{hit.distance:.3f}", hit.level.value, hit.camera, fmt_time(hit.start),
                      str(hit.event_id or "—"), hit.snapshot or "—",
                      str(hit.subject_id) if hit.level.names_subject else "not named")
    if result.hits:
        console.print(table)
    console.print(f"{len(result.hits)} hits in {', '.join(result.cameras)}, "
                  f"{fmt_time(result.start)} to {fmt_time(result.end)}; "
                  f"{result.searchable} of {result.tracks} face tracks searchable")
    console.print(result.summary, markup=False, highlight=False)
    for meaning in dict.fromkeys(hit.meaning for hit in result.hits):
        console.print(meaning, markup=False, highlight=False)
