"""Subject access requests: a person's own footage, with everybody else blurred.

An approver (the data-protection officer, ``subject_access``) uploads the requester's photo,
the camera and the range. The photo's face is described at once (a photo without one is 400)
and the export is made in the background like any other (custodes.api.routes.exports: same
folder, same record, same one-at-a-time turn), with a transform that keeps only the
requester's face tracks visible (custodes.redaction.subject_access.subject_keep) and blurs every
other face and the privacy zones (custodes.redaction.video). The photo itself is never
stored; its descriptor lives as long as the export job.

The export record is marked ``redacted: false`` (one person is visible), so on the exports
page only roles allowed unredacted exports may download it; the approver, who has no export
permission, lists and downloads it here. Requests, bundles and downloads are audited.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from custodes.api.deps import client_address, get_node, require, require_camera
from custodes.api.routes import exports
from custodes.api.routes.cases import photo_bytes
from custodes.auth.roles import Actor, Permission
from custodes.faces.photos import read_image
from custodes.privacy.policy import Action, allows
from custodes.record.bundle import create_export
from custodes.record.playback import coverage, utc
from custodes.redaction.subject_access import NoFaceInPhoto, subject_keep
from custodes.redaction.video import Keep, redact_file

if TYPE_CHECKING:
    from custodes.app import Node

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/subject-access", tags=["subject access"])

Officer = Annotated[Actor, Depends(require(Permission.SUBJECT_ACCESS))]
FormTime = Annotated[float, Form(ge=0, le=1e11, description="UTC epoch seconds")]


@router.post("", status_code=202)
def request_export(
    request: Request,
    actor: Officer,
    *,
    photo: Annotated[UploadFile, Form(description="The requester's photo (one face)")],
    camera: Annotated[str, Form(max_length=64)],
    start: FormTime,
    end: FormTime,
    reference: Annotated[str, Form(min_length=1, max_length=200,
                                   description="The access request's reference")],
    allow_gaps: Annotated[bool, Form()] = False,
) -> dict[str, Any]:
    """Start a signed export of ``camera`` over the range in which only the requester is
    visible; follow it with GET /api/subject-access (state "done")."""
    node = get_node(request)
    asked = {"from": start, "to": end, "reference": reference}
    if not allows(node.config.profile, Action.SUBJECT_ACCESS):
        reason = f"the {node.config.profile.value} profile does not allow subject access"
        node.audit.record(actor.name, "subject_access.request", camera, outcome="refused",
                          detail={**asked, "reason": reason}, address=actor.address)
        raise HTTPException(403, reason)
    require_camera(node, actor, camera)
    if end <= start:
        raise HTTPException(400, "the range must end after it starts")
    if end - start > exports.MAX_SECONDS:
        raise HTTPException(400, f"an export covers at most {exports.MAX_SECONDS / 3600:.0f} "
                                 "hours")
    data = photo_bytes(photo, "the requester's photo")
    try:
        keep = subject_keep(read_image(data))
    except NoFaceInPhoto as exc:
        raise HTTPException(400, f"the requester's photo: {exc}") from None
    del data  # the photo is not kept; its descriptor lives in ``keep``
    with node.store.read() as conn:
        spans, gaps = coverage(conn, camera, start, end)
    if not spans:
        raise HTTPException(404, f"no recordings of {camera} between {utc(start)} and "
                                 f"{utc(end)}")
    if gaps and not allow_gaps:
        holes = "; ".join(str(g) for g in gaps)
        raise HTTPException(409, f"the recordings have gaps: {holes} (allow_gaps exports "
                                 "across them)")

    export_id = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(4)
    folder = exports.exports_root(node) / export_id
    folder.mkdir(parents=True)
    record: dict[str, Any] = {
        "id": export_id, "camera": camera, "start": start, "end": end,
        # One person is shown unblurred: treated as unredacted wherever exports are listed.
        "redacted": False, "subject_access": {"reference": reference},
        "case": None, "allow_gaps": allow_gaps, "created_by": actor.name,
        "created_at": time.time(), "state": "queued", "error": None, "bytes": None,
        "duration": None, "audit_seq": None,
    }
    jobs = exports.jobs_of(request)
    with jobs.lock:
        jobs.active.add(export_id)
    exports.write_record(folder, record)
    node.audit.record(actor.name, "subject_access.request", camera,
                      detail={**asked, "export": export_id}, address=actor.address)
    threading.Thread(target=_make, args=(node, jobs, folder, record, actor),
                     kwargs={"keep": keep}, name=f"subject-access-{export_id}", daemon=True).start()
    return _public(record)


def _make(node: Node, jobs: exports.Jobs, folder: Path, record: dict[str, Any], actor: Actor,
          *, keep: Keep) -> None:
    camera = record["camera"]
    zones = node.config.cameras[camera].privacy_zones
    reference = record["subject_access"]["reference"]

    def only_the_requester(src: Path, dst: Path) -> dict[str, Any]:
        # The request's reference goes into the signed manifest with what was done.
        return {**redact_file(src, dst, zones=zones, keep=keep),
                "subject_access": reference}

    try:
        with jobs.turn:
            record["state"] = "running"
            exports.write_record(folder, record)
            bundle = create_export(
                node.store, node.layout, node.keys, node.audit, camera, record["start"],
                record["end"], folder / "bundle", actor=actor, transform=only_the_requester,
                allow_gaps=record["allow_gaps"], node=node.config.node.name,
            )
        record.update(state="done", duration=bundle.duration, audit_seq=bundle.audit_seq,
                      bytes=sum(p.stat().st_size for p in bundle.folder.iterdir()))
    except Exception as exc:
        log.warning("subject access export %s failed: %s", record["id"], exc)
        record.update(state="failed", error=str(exc))
    finally:
        exports.write_record(folder, record)
        with jobs.lock:
            jobs.active.discard(record["id"])


def _public(record: dict[str, Any]) -> dict[str, Any]:
    out = dict(record)
    done = record["state"] == "done"
    out["download_url"] = f"/api/subject-access/{record['id']}/download" if done else None
    return out


@router.get("")
def list_requests(request: Request, actor: Officer) -> dict[str, Any]:
    """Subject access exports of the cameras the caller may see, newest first."""
    node = get_node(request)
    root = exports.exports_root(node)
    jobs = exports.jobs_of(request)
    found = []
    if root.is_dir():
        for name in sorted((p.name for p in root.iterdir() if exports.valid_id(p.name)),
                           reverse=True):
            record = exports.read_record(root / name, jobs)
            if (record is not None and "subject_access" in record
                    and actor.sees_camera(record["camera"])):
                found.append(_public(record))
            if len(found) >= exports.LISTED:
                break
    return {"exports": found}


@router.get("/{export_id}/download", response_class=FileResponse,
            responses={200: {"content": {"application/zip": {}}}})
def download(request: Request, actor: Officer, export_id: exports.ExportId) -> FileResponse:
    """The subject access bundle as a zip (audited)."""
    node = get_node(request)
    folder = exports.exports_root(node) / export_id
    record = exports.read_record(folder, exports.jobs_of(request)) if folder.is_dir() else None
    if record is None or "subject_access" not in record:
        raise HTTPException(404, f"no subject access export {export_id}")
    require_camera(node, actor, record["camera"])
    if record["state"] != "done":
        raise HTTPException(409, f"export {export_id} is {record['state']}"
                            + (f": {record['error']}" if record.get("error") else ""))
    archive = exports.zip_bundle(node, export_id, folder / "bundle")
    node.audit.record(actor.name, "export.download", record["camera"], detail={
        "export": export_id, "subject_access": record["subject_access"]["reference"],
        "from": record["start"], "to": record["end"], "bytes": archive.stat().st_size,
    }, address=client_address(request))
    return FileResponse(archive, media_type="application/zip",
                        filename=f"custodes-subject-access-{export_id}.zip",
                        background=BackgroundTask(archive.unlink, missing_ok=True))
