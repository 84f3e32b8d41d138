"""`custodes gallery ...`: enroll, update, list, delete and purge people, as a signed-in user.

Like every command that touches biometric data, these act as a user of the node (``--user``,
the password from CUSTODES_PASSWORD or a prompt). A refusal is printed with its reason and exits
with status 3; a photo that cannot serve (no face, several faces) exits with status 2. Both are
in the audit log.
"""

from __future__ import annotations

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
from custodes.faces.gallery import BasisKind, Gallery, LegalBasis
from custodes.faces.photos import PhotoError

gallery_app = typer.Typer(help="The gallery of enrolled people (legal basis and expiry "
                               "required).", no_args_is_help=True)

PhotoOption = Annotated[list[Path] | None, typer.Option(
    "--photo", help="A photo showing only the person's face (repeatable)", exists=True,
    dir_okay=False)]
CaseOption = Annotated[str | None, typer.Option("--case", help="Legal basis: the case reference")]
ConsentOption = Annotated[str | None, typer.Option(
    "--consent", help="Legal basis: the consent record's reference")]
ExpiresOption = Annotated[str | None, typer.Option(
    help="When the enrollment lapses, ISO 8601 (UTC if no zone)")]


@dataclass(frozen=True)
class _Session:
    gallery: Gallery
    actor: Actor


def _basis(case: str | None, consent: str | None) -> LegalBasis | None:
    if case is not None and consent is not None:
        raise typer.BadParameter("give either --case or --consent, not both")
    if case is not None:
        return LegalBasis(BasisKind.CASE, case)
    if consent is not None:
        return LegalBasis(BasisKind.CONSENT, consent)
    return None


@contextmanager
def _session(config_path: Path, user: str) -> Iterator[_Session]:
    """The node's gallery and the signed-in ``user``; failures become exit codes."""
    with signed_in(config_path, user) as node:
        try:
            yield _Session(Gallery(node.store, node.keys, node.audit, node.config.profile),
                           node.actor)
        except (PhotoError, KeyError) as exc:
            err.print(f"[red]{exc}[/red]", highlight=False)
            raise typer.Exit(EXIT_INVALID) from None


@gallery_app.command("enroll")
def enroll(
    *, config: ConfigOption, user: UserOption,
    reference: Annotated[str, typer.Argument(help="Who this is, as the case or consent "
                                                  "record names them")],
    photo: PhotoOption = None, case: CaseOption = None, consent: ConsentOption = None,
    expires: ExpiresOption = None,
) -> None:
    """Enroll a person from their photos, under a case or a consent, until an expiry."""
    photos = [p.read_bytes() for p in photo or []]
    basis = _basis(case, consent)
    with _session(config, user) as s:
        person = s.gallery.enroll(s.actor, reference, photos, legal_basis=basis,
                                  expires_at=parse_time(expires) if expires else None)
    console.print(f"person {person} enrolled from {len(photos)} photos")


@gallery_app.command("update")
def update(
    *, config: ConfigOption, user: UserOption,
    person: Annotated[int, typer.Argument(help="Person id")],
    reference: Annotated[str | None, typer.Option(help="A new reference")] = None,
    photo: PhotoOption = None, case: CaseOption = None, consent: ConsentOption = None,
    expires: ExpiresOption = None,
) -> None:
    """Change a person's reference, legal basis or expiry; new photos replace the old."""
    photos = [p.read_bytes() for p in photo] if photo else None
    with _session(config, user) as s:
        s.gallery.update(s.actor, person, reference=reference, photos=photos,
                         legal_basis=_basis(case, consent),
                         expires_at=parse_time(expires) if expires else None)
    console.print(f"person {person} updated")


@gallery_app.command("list")
def list_people(*, config: ConfigOption, user: UserOption) -> None:
    """Everyone enrolled, soonest expiry first."""
    with _session(config, user) as s:
        people = s.gallery.list(s.actor)
    table = Table("id", "reference", "legal basis", "photos", "expires", "enrolled by",
                  "approved by")
    for p in people:
        table.add_row(str(p.id), p.reference,
                      f"{p.legal_basis.kind} {p.legal_basis.reference}", str(p.photos),
                      fmt_time(p.expires_at), p.created_by,
                      p.approved_by or "pending (not matched)")
    console.print(table)


@gallery_app.command("approve")
def approve(
    *, config: ConfigOption, user: UserOption,
    person: Annotated[int, typer.Argument(help="Person id")],
    note: Annotated[str, typer.Option(help="Why, kept in the audit log")] = "",
) -> None:
    """Approve a pending (consent) entry as a second person (an approver); only then is it
    matched."""
    with _session(config, user) as s:
        s.gallery.approve(s.actor, person, note=note)
    console.print(f"person {person} approved")


@gallery_app.command("delete")
def delete(*, config: ConfigOption, user: UserOption,
           person: Annotated[int, typer.Argument(help="Person id")]) -> None:
    """Remove a person and their photos from the gallery."""
    with _session(config, user) as s:
        s.gallery.delete(s.actor, person)
    console.print(f"person {person} deleted")
