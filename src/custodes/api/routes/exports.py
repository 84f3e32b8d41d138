"""Exports as evidence: signed bundles of a camera's footage over a range, made in the
background, listed, downloaded (zip) and verified.

The node makes them (``node.exports``, custodes.record.export_jobs: the records, the queue,
what a restart does); these routes decide who may have which.

Redaction is on unless the caller asks otherwise; an unredacted export needs
export.unredacted and an approved, active case that covers the camera and the range. Any export
that names a case needs the case active and the caller one of its people, and an unredacted
one is downloaded only by them while the case lasts (custodes.privacy.exports, which also
deletes exports past their case or the retention ceiling). Making a bundle is audited by
create_export (also when it fails), refusals and downloads here.
Export ids in paths are checked against ``EXPORT_ID`` before they touch a path.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from starlette.background import BackgroundTask

from custodes.api.deps import client_address, get_node, refuse, require, require_camera
from custodes.api.routes.video import CameraName
from custodes.audit.actions import Action
from custodes.auth.roles import Actor, Permission
from custodes.privacy.exports import case_problem, download_problem
from custodes.record.export_jobs import EXPORT_ID, ExportRecord, JobState, new_export_id
from custodes.record.manifest import verify_bundle
from custodes.record.playback import coverage, utc
from custodes.redaction.exports import redact_range
from custodes.store import schema

if TYPE_CHECKING:
    from custodes.app import Node

router = APIRouter(prefix="/api/exports", tags=["exports"])

Exporter = Annotated[Actor, Depends(require(Permission.EXPORT))]
ExportId = Annotated[str, PathParam(pattern=EXPORT_ID)]
MAX_SECONDS = 6 * 3600.0  # the longest range one export may cover
LISTED = 200  # newest exports listed


class NewExport(BaseModel):
    model_config = ConfigDict(extra="forbid")
    camera: CameraName
    start: float = Field(ge=0, le=1e11, description="UTC epoch seconds")
    end: float = Field(ge=0, le=1e11, description="UTC epoch seconds")
    redact: bool = Field(True, description="Blur faces and privacy zones (unredacted needs "
                         "export.unredacted and an approved case)")
    # SQLite integers are 64-bit: a larger id would fail in the query (a 500), not be missing.
    case: int | None = Field(None, ge=1, le=2**62, description="The case the export belongs to")
    allow_gaps: bool = Field(False, description="Export across holes in the recording "
                             "(listed in the manifest) instead of refusing")


def _refuse(node: Node, actor: Actor, camera: str, reason: str, detail: dict[str, Any]) -> None:
    refuse(node, actor.name, Action.EXPORT, camera, reason, detail=detail, address=actor.address)


@router.post("", status_code=202)
def create(body: NewExport, request: Request, actor: Exporter) -> dict[str, Any]:
    """Start making a signed export; follow it with GET /api/exports (state "done")."""
    node = get_node(request)
    require_camera(node, actor, body.camera)
    if body.end <= body.start:
        raise HTTPException(400, "the export range must end after it starts")
    if body.end - body.start > MAX_SECONDS:
        raise HTTPException(400, f"an export covers at most {MAX_SECONDS / 3600:.0f} hours")
    asked = {"from": body.start, "to": body.end, "redact": body.redact, "case": body.case}
    if not body.redact:
        if not actor.can(Permission.EXPORT_UNREDACTED):
            _refuse(node, actor, body.camera, f"the {actor.role.value} role may only export "
                    "redacted video", asked)
        if body.case is None:
            _refuse(node, actor, body.camera, "an unredacted export needs a case", asked)
    if body.case is not None:
        # Any export that names a case is evidence in it: an active case the user works on.
        problem = case_problem(node.store, actor, body.case, camera=body.camera,
                               start=body.start, end=body.end, unredacted=not body.redact)
        if problem is None and not body.redact:
            with node.store.read() as conn:
                decider = conn.execute(select(schema.cases.c.decided_by)
                                       .where(schema.cases.c.id == body.case)).scalar()
            if decider == actor.name:  # one name never holds both sides of one case
                problem = f"{actor.name} decided case {body.case} and cannot also work it"
        if problem is not None:
            _refuse(node, actor, body.camera, problem, asked)
    with node.store.read() as conn:
        spans, gaps = coverage(conn, body.camera, body.start, body.end)
    if not spans:
        raise HTTPException(404, f"no recordings of {body.camera} between {utc(body.start)} "
                                 f"and {utc(body.end)}")
    if gaps and not body.allow_gaps:
        holes = "; ".join(str(g) for g in gaps)
        raise HTTPException(409, f"the recordings have gaps: {holes} (allow_gaps exports "
                                 "across them)")

    record = ExportRecord(
        id=new_export_id(), camera=body.camera, start=body.start, end=body.end,
        redacted=body.redact, case=body.case, allow_gaps=body.allow_gaps,
        created_by=actor.name, created_at=time.time(),
    )
    camera, start, end = body.camera, body.start, body.end

    def blur(src: Path, dst: Path) -> dict[str, Any]:
        # The segments' kept boxes (shared with viewers' copies), not a second search.
        return redact_range(node, camera, start, end, src, dst)

    return _public(node.exports.submit(record, actor, blur if body.redact else None))


def _public(record: ExportRecord) -> dict[str, Any]:
    out = record.to_json()
    done = record.state is JobState.DONE
    out["download_url"] = f"/api/exports/{record.id}/download" if done else None
    out["verify_url"] = f"/api/exports/{record.id}/verify" if done else None
    return out


@router.get("")
def list_exports(request: Request, actor: Exporter) -> dict[str, Any]:
    """The newest exports of the cameras the caller may see, newest first."""
    found = get_node(request).exports.newest(LISTED, lambda r: actor.sees_camera(r.camera))
    return {"exports": [_public(r) for r in found]}


def find_export(node: Node, actor: Actor, export_id: str, *,
                subject_access: bool = False) -> ExportRecord:
    """The export ``export_id``, done or not, of a camera ``actor`` sees (404 when missing);
    with ``subject_access``, only a subject access export."""
    record = node.exports.get(export_id)
    if record is None or (subject_access and record.subject_access is None):
        raise HTTPException(404, f"no {'subject access ' if subject_access else ''}export "
                                 f"{export_id}")
    require_camera(node, actor, record.camera)
    return record


def unfinished(record: ExportRecord) -> HTTPException | None:
    """The 409 for an export not (yet) done, or None."""
    if record.state is JobState.DONE:
        return None
    return HTTPException(409, f"export {record.id} is {record.state.value}"
                         + (f": {record.error}" if record.error else ""))


def _done(request: Request, actor: Actor, export_id: str) -> tuple[Node, ExportRecord]:
    node = get_node(request)
    record = find_export(node, actor, export_id)
    if (problem := unfinished(record)) is not None:
        raise problem
    return node, record


@router.get("/{export_id}/download", response_class=FileResponse,
            responses={200: {"content": {"application/zip": {}}}})
def download(request: Request, actor: Exporter, export_id: ExportId) -> FileResponse:
    """The bundle as a zip: the video, manifest.json, manifest.sig and signing.pub, and beside
    them a README.txt on playing and verifying it."""
    node, record = _done(request, actor, export_id)
    if not record.redacted and not actor.can(Permission.EXPORT_UNREDACTED):
        _refuse(node, actor, record.camera, "this export is unredacted: downloading it "
                "needs export.unredacted", {"export": export_id, "download": True})
    problem = download_problem(node.store, actor, record.to_json())
    if problem is not None:
        _refuse(node, actor, record.camera, problem, {"export": export_id, "download": True})
    archive = node.exports.zip(export_id)
    size = archive.stat().st_size
    node.audit.record(actor.name, Action.EXPORT_DOWNLOAD, record.camera, detail={
        "export": export_id, "redacted": record.redacted, "case": record.case,
        "from": record.start, "to": record.end, "bytes": size,
    }, address=client_address(request))
    return FileResponse(archive, media_type="application/zip",
                        filename=f"custodes-export-{export_id}.zip",
                        background=BackgroundTask(archive.unlink, missing_ok=True))


@router.get("/{export_id}/verify")
def verify(request: Request, actor: Exporter, export_id: ExportId) -> dict[str, Any]:
    """Check the bundle on the recorder: its signature (by this node's key) and every file's
    checksum."""
    node, _record = _done(request, actor, export_id)
    report = verify_bundle(node.exports.bundle(export_id), node.keys.public_pem)
    return {
        "id": export_id, "ok": report.ok, "signature_ok": report.signature_ok,
        "key_source": report.key_source, "files_ok": report.files_ok,
        "problems": report.problems, "notes": report.notes,
    }

