"""Subject access requests: a person's own footage, with everybody else blurred.

The rules live in custodes.privacy.subject_access; these routes turn requests into its calls:

1. ``POST /api/subject-access/requests`` (an officer, ``subject_access``): the request's
   reference, the requester, how and by whom and when their identity was checked, one camera
   and a span, and the requester's photo (a photo without a face is 400). Scope and rate are
   limited by the profile.
2. ``POST /api/subject-access/requests/{id}/approve`` (or ``reject``) by a second officer, who
   may first look at the photo (``.../photo.jpg``) beside the identity check.
3. ``POST /api/subject-access`` with the approved request's id: its one export, made in the
   background like any other (``node.exports``, custodes.record.export_jobs: same folder, same
   record, same queue), with a transform that keeps only the requester's face tracks visible
   (custodes.redaction.subject_access.subject_keep) and blurs every other face and the
   privacy zones (custodes.redaction.video). The photo is wiped as the export starts.

The export record is marked ``redacted: false`` (one person is visible): only the two officers
who answered the request may download it. A refusal is 403 with its reason, a request that
does not exist 404, a malformed one 400. Every step and every refusal is audited.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import cv2
from fastapi import APIRouter, Depends, Form, HTTPException, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.background import BackgroundTask

from custodes.api.deps import client_address, get_node, refuse, require, require_camera
from custodes.api.routes import exports
from custodes.api.routes.cases import answers, photo_bytes
from custodes.audit.actions import Action
from custodes.auth.roles import Actor, Permission
from custodes.faces.photos import read_image, reduced
from custodes.privacy.exports import download_problem
from custodes.privacy.subject_access import AccessRequest, RequestStatus
from custodes.record.export_jobs import (
    ExportRecord,
    JobState,
    SubjectAccessRef,
    new_export_id,
)
from custodes.record.playback import coverage, utc
from custodes.redaction.subject_access import NoFaceInPhoto, subject_keep
from custodes.redaction.video import redact_file

router = APIRouter(prefix="/api/subject-access", tags=["subject access"])

Officer = Annotated[Actor, Depends(require(Permission.SUBJECT_ACCESS))]
FormTime = Annotated[float, Form(ge=0, le=1e11, description="UTC epoch seconds")]
RequestId = Annotated[int, PathParam(ge=1, le=2**62)]


# -- requests ------------------------------------------------------------------------------


def request_json(request: AccessRequest) -> dict[str, Any]:
    out = {k: v for k, v in vars(request).items() if k != "status"}
    out["status"] = request.status.value
    out["photo_url"] = (f"/api/subject-access/requests/{request.id}/photo.jpg"
                        if request.has_photo and request.status is RequestStatus.PENDING
                        else None)
    return out


@router.post("/requests", status_code=201)
def record_request(
    request: Request,
    actor: Officer,
    *,
    photo: Annotated[UploadFile, Form(description="The requester's photo (one face)")],
    reference: Annotated[str, Form(min_length=1, max_length=200,
                                   description="The access request's reference")],
    requester: Annotated[str, Form(min_length=1, max_length=200,
                                   description="Who asks for their footage")],
    identity_check: Annotated[str, Form(min_length=1, max_length=500,
                                        description="How the requester's identity was checked "
                                                    "(e.g. passport seen in person)")],
    camera: Annotated[str, Form(max_length=64)],
    start: FormTime,
    end: FormTime,
    identity_checked_by: Annotated[str | None, Form(max_length=64, description="The user who "
                                                    "checked it (default: the caller)")] = None,
    identity_checked_at: Annotated[float | None, Form(ge=0, le=1e11, description="When "
                                                      "(default: now)")] = None,
) -> dict[str, Any]:
    """Record a subject access request; a second officer must approve it before its export."""
    node = get_node(request)
    require_camera(node, actor, camera)
    data = photo_bytes(photo, "the requester's photo")
    try:
        # A photo that shows no face is refused now, not when the export starts.
        subject_keep(reduced(read_image(data))[0])
    except NoFaceInPhoto as exc:
        raise HTTPException(400, f"the requester's photo: {exc}") from None
    with answers():
        recorded = node.subject_access.record(
            actor, reference=reference, requester=requester, identity_check=identity_check,
            identity_checked_by=identity_checked_by or actor.name,
            identity_checked_at=time.time() if identity_checked_at is None
            else identity_checked_at,
            camera=camera, start=start, end=end, photo=data)
    return request_json(recorded)


@router.get("/requests")
def list_access_requests(request: Request, actor: Officer) -> dict[str, Any]:
    """Subject access requests of the cameras the caller may see, newest first."""
    with answers():
        found = get_node(request).subject_access.list_requests(actor)
    return {"requests": [request_json(r) for r in found]}


@router.get("/requests/{request_id}")
def get_access_request(request: Request, actor: Officer,
                       request_id: RequestId) -> dict[str, Any]:
    with answers():
        return request_json(get_node(request).subject_access.get(actor, request_id))


@router.get("/requests/{request_id}/photo.jpg", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}}})
def request_photo(request: Request, actor: Officer, request_id: RequestId) -> Response:
    """The requester's photo, to compare with the identity check before deciding (audited)."""
    with answers():
        data = get_node(request).subject_access.photo(actor, request_id)
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(read_image(data), cv2.COLOR_RGB2BGR))
    if not ok:
        raise HTTPException(500, "the photo could not be encoded")
    # Biometric data: no cache may keep it.
    return Response(jpeg.tobytes(), media_type="image/jpeg",
                    headers={"Cache-Control": "no-store"})


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field("", max_length=2000)


@router.post("/requests/{request_id}/approve")
def approve_request(request: Request, actor: Officer, request_id: RequestId,
                    body: Decision) -> dict[str, Any]:
    """Approve a pending request (a second officer: not its recorder nor identity checker)."""
    with answers():
        decided = get_node(request).subject_access.approve(actor, request_id, note=body.note)
    return request_json(decided)


@router.post("/requests/{request_id}/reject")
def reject_request(request: Request, actor: Officer, request_id: RequestId,
                   body: Decision) -> dict[str, Any]:
    """Reject a pending request; the requester's photo is wiped."""
    with answers():
        decided = get_node(request).subject_access.reject(actor, request_id, note=body.note)
    return request_json(decided)


# -- the export ------------------------------------------------------------------------------


class NewAccessExport(BaseModel):
    model_config = ConfigDict(extra="forbid")
    request: int = Field(ge=1, le=2**62, description="The approved request's id")
    allow_gaps: bool = Field(False, description="Export across holes in the recording")


@router.post("", status_code=202)
def request_export(request: Request, actor: Officer, body: NewAccessExport) -> dict[str, Any]:
    """Start the one export of an approved request, in which only the requester is visible;
    follow it with GET /api/subject-access (state "done")."""
    node = get_node(request)
    with answers():
        access = node.subject_access.exportable(actor, body.request)
    camera, start, end = access.camera, access.start, access.end
    # Checked before the request is spent: a range without footage leaves it approved.
    with node.store.read() as conn:
        spans, gaps = coverage(conn, camera, start, end)
    if not spans:
        raise HTTPException(404, f"no recordings of {camera} between {utc(start)} and "
                                 f"{utc(end)}")
    if gaps and not body.allow_gaps:
        holes = "; ".join(str(g) for g in gaps)
        raise HTTPException(409, f"the recordings have gaps: {holes} (allow_gaps exports "
                                 "across them)")
    export_id = new_export_id()
    with answers():
        access, data = node.subject_access.spend(actor, body.request, export_id)
    try:
        keep = subject_keep(reduced(read_image(data))[0])
    except NoFaceInPhoto as exc:  # checked when recorded; a changed detector could differ
        raise HTTPException(400, f"the requester's photo: {exc}") from None
    del data  # the photo is gone from the database; its descriptor lives in ``keep``
    record = ExportRecord(
        id=export_id, camera=camera, start=start, end=end,
        # One person is shown unblurred: treated as unredacted wherever exports are listed.
        redacted=False, case=None, allow_gaps=body.allow_gaps, created_by=actor.name,
        created_at=time.time(), subject_access=SubjectAccessRef(access.reference, access.id),
    )
    zones = node.config.cameras[camera].privacy_zones
    reference = access.reference

    def only_the_requester(src: Path, dst: Path) -> dict[str, Any]:
        # The request's reference goes into the signed manifest with what was done.
        return {**redact_file(src, dst, zones=zones, keep=keep), "subject_access": reference}

    return _public(node.exports.submit(record, actor, only_the_requester))


def _public(record: ExportRecord) -> dict[str, Any]:
    out = record.to_json()
    done = record.state is JobState.DONE
    out["download_url"] = f"/api/subject-access/{record.id}/download" if done else None
    return out


@router.get("")
def list_requests(request: Request, actor: Officer) -> dict[str, Any]:
    """Subject access exports of the cameras the caller may see, newest first."""
    found = get_node(request).exports.newest(
        exports.LISTED,
        lambda r: r.subject_access is not None and actor.sees_camera(r.camera))
    return {"exports": [_public(r) for r in found]}


@router.get("/{export_id}/download", response_class=FileResponse,
            responses={200: {"content": {"application/zip": {}}}})
def download(request: Request, actor: Officer, export_id: exports.ExportId) -> FileResponse:
    """The subject access bundle as a zip (audited)."""
    node = get_node(request)
    record = exports.find_export(node, actor, export_id, subject_access=True)
    assert record.subject_access is not None
    problem = download_problem(node.store, actor, record.to_json())
    if problem is not None:
        refuse(node, actor.name, Action.EXPORT_DOWNLOAD, record.camera, problem,
               detail={"export": export_id}, address=actor.address)
    if (not_yet := exports.unfinished(record)) is not None:
        raise not_yet
    archive = node.exports.zip(export_id)
    node.audit.record(actor.name, Action.EXPORT_DOWNLOAD, record.camera, detail={
        "export": export_id, "subject_access": record.subject_access.reference,
        "from": record.start, "to": record.end, "bytes": archive.stat().st_size,
    }, address=client_address(request))
    return FileResponse(archive, media_type="application/zip",
                        filename=f"custodes-subject-access-{export_id}.zip",
                        background=BackgroundTask(archive.unlink, missing_ok=True))
