"""The gallery over HTTP: enroll, list, show a crop of, approve, and delete enrolled people.

custodes.faces.gallery holds every rule (profile, role, legal basis, expiry) and audits each
change, view and refusal; a refusal is 403 with its reason, a photo that cannot serve 400.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from custodes.api.deps import get_node, require
from custodes.api.routes.cases import MAX_PHOTOS, answers, photo_bytes
from custodes.auth.roles import Actor, Permission
from custodes.faces.gallery import BasisKind, LegalBasis, Person

router = APIRouter(prefix="/api/gallery", tags=["gallery"])

Manager = Annotated[Actor, Depends(require(Permission.GALLERY_MANAGE))]
Approver = Annotated[Actor, Depends(require(Permission.CASE_APPROVE))]
PersonId = Annotated[int, PathParam(ge=1, le=2**62)]


def person_json(person: Person) -> dict[str, Any]:
    return {
        "id": person.id, "reference": person.reference,
        "legal_basis": {"kind": str(person.legal_basis.kind),
                        "reference": person.legal_basis.reference},
        "expires_at": person.expires_at, "created_at": person.created_at,
        "created_by": person.created_by, "updated_at": person.updated_at,
        "updated_by": person.updated_by, "photos": person.photos,
        "case_id": person.case_id, "approved_by": person.approved_by,
        "approved_at": person.approved_at,
        "crop_url": f"/api/gallery/{person.id}/crop.jpg",
    }


@router.get("")
def list_people(request: Request, actor: Manager) -> dict[str, Any]:
    """Everyone enrolled, soonest expiry first (audited)."""
    node = get_node(request)
    with answers():
        people = node.gallery.list(actor)
    return {"people": [person_json(p) for p in people]}


@router.post("", status_code=201)
def enroll(
    request: Request,
    actor: Manager,
    *,
    reference: Annotated[str, Form(max_length=200)],
    basis_kind: Annotated[BasisKind, Form(description="case or consent")],
    basis_reference: Annotated[str, Form(max_length=200)],
    expires_at: Annotated[float, Form(ge=0, le=1e11, description="UTC epoch seconds")],
    photos: Annotated[list[UploadFile], Form(description="Photos of the person, one face "
                                                          "each")],
) -> dict[str, Any]:
    """Enroll a person under a legal basis, until an expiry (at most a year ahead)."""
    node = get_node(request)
    if len(photos) > MAX_PHOTOS:
        raise HTTPException(400, f"at most {MAX_PHOTOS} photos per request")
    with answers():
        data = [photo_bytes(p, f"photo {i}") for i, p in enumerate(photos, 1)]
        person_id = node.gallery.enroll(actor, reference, data,
                                        legal_basis=LegalBasis(basis_kind, basis_reference),
                                        expires_at=expires_at)
    return {"id": person_id}


class Approval(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field("", max_length=2000)


@router.post("/{person_id}/approve")
def approve(request: Request, actor: Approver, person_id: PersonId,
            body: Approval | None = None) -> dict[str, Any]:
    """Approve a pending (consent) entry as a second person; only then is it matched."""
    with answers():
        person = get_node(request).gallery.approve(actor, person_id,
                                                   note=body.note if body else "")
    return person_json(person)


@router.get("/{person_id}/crop.jpg", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}}})
def crop(request: Request, actor: Manager, person_id: PersonId) -> Response:
    """The person's first face crop (audited)."""
    with answers():
        crops = get_node(request).gallery.crops(actor, person_id)
    if not crops:
        raise HTTPException(404, f"no enrolled person {person_id}")
    return Response(crops[0], media_type="image/jpeg", headers={"Cache-Control": "no-store"})


@router.delete("/{person_id}", status_code=204)
def delete(request: Request, actor: Manager, person_id: PersonId) -> Response:
    """Remove the person and their photos (audited)."""
    with answers():
        try:
            get_node(request).gallery.delete(actor, person_id)
        except KeyError:
            raise HTTPException(404, f"no enrolled person {person_id}") from None
    return Response(status_code=204)
