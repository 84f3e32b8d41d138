"""Exports as evidence: signed bundles of a camera's footage over a range, made in the
background, listed, downloaded (zip) and verified.

```
<storage>/exports/<id>/
  export.json   the request and its state (queued, running, done, failed)
  bundle/       what custodes.record.bundle.create_export made: video, signed manifest, key
```

Redaction is on unless the caller asks otherwise; an unredacted export needs
export.unredacted and an approved, active case that covers the camera and the range. Making a
bundle is audited by create_export (also when it fails), refusals and downloads here.
Export ids are made here and checked against ``EXPORT_ID`` before they touch a path.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from starlette.background import BackgroundTask

from custodes.api.deps import client_address, get_node, require, require_camera
from custodes.api.routes.video import CameraName
from custodes.auth.roles import Actor, Permission
from custodes.record.bundle import create_export
from custodes.record.manifest import verify_bundle
from custodes.record.playback import coverage, utc
from custodes.redaction.video import redact_file
from custodes.store import schema

if TYPE_CHECKING:
    from custodes.app import Node

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/exports", tags=["exports"])

Exporter = Annotated[Actor, Depends(require(Permission.EXPORT))]
EXPORT_ID = r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{8}$"
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
    case: int | None = Field(None, ge=1, description="The case the export belongs to")
    allow_gaps: bool = Field(False, description="Export across holes in the recording "
                             "(listed in the manifest) instead of refusing")


class Jobs:
    """The exports being made by this process: one at a time, the others wait their turn."""

    def __init__(self) -> None:
        self.active: set[str] = set()
        self.lock = threading.Lock()
        self.turn = threading.Semaphore(1)


_JOBS_LOCK = threading.Lock()


def jobs_of(request: Request) -> Jobs:
    with _JOBS_LOCK:
        jobs: Jobs | None = getattr(request.app.state, "export_jobs", None)
        if jobs is None:
            jobs = request.app.state.export_jobs = Jobs()
    return jobs


def exports_root(node: Node) -> Path:
    return node.layout.root / "exports"


def write_record(folder: Path, record: dict[str, Any]) -> None:
    tmp = folder / ".export.json.partial"
    tmp.write_text(json.dumps(record, indent=1), encoding="utf-8")
    os.replace(tmp, folder / "export.json")


def read_record(folder: Path, jobs: Jobs) -> dict[str, Any] | None:
    try:
        record: dict[str, Any] = json.loads((folder / "export.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    with jobs.lock:
        active = record["id"] in jobs.active
    if record.get("state") in ("queued", "running") and not active:
        record["state"] = "failed"
        record["error"] = "interrupted: the recorder stopped while it was being made"
    return record


def _refuse(node: Node, actor: Actor, camera: str, reason: str, detail: dict[str, Any]) -> None:
    node.audit.record(actor.name, "export", camera, outcome="refused",
                      detail={**detail, "reason": reason}, address=actor.address)
    raise HTTPException(403, reason)


def _case_problem(node: Node, case_id: int, camera: str, start: float, end: float, *,
                  unredacted: bool) -> str | None:
    """Why the case cannot carry this export, or None. (Read from the cases table directly:
    custodes.privacy.cases loads the face models, which an export does not need.)"""
    with node.store.read() as conn:
        row = conn.execute(select(schema.cases).where(schema.cases.c.id == case_id)).first()
    if row is None:
        return f"there is no case {case_id}"
    if not unredacted:
        return None
    if row.status != "approved" or row.closed_at is not None or row.expires_at <= time.time():
        state = "expired" if row.status == "approved" else row.status
        return f"case {case_id} is not approved and active ({state})"
    if camera not in json.loads(row.cameras) or start < row.scope_start or end > row.scope_end:
        return f"case {case_id} does not cover {camera} from {utc(start)} to {utc(end)}"
    return None


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
        problem = _case_problem(node, body.case, body.camera, body.start, body.end,
                                unredacted=not body.redact)
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

    export_id = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(4)
    folder = exports_root(node) / export_id
    folder.mkdir(parents=True)
    record: dict[str, Any] = {
        "id": export_id, "camera": body.camera, "start": body.start, "end": body.end,
        "redacted": body.redact, "case": body.case, "allow_gaps": body.allow_gaps,
        "created_by": actor.name, "created_at": time.time(), "state": "queued", "error": None,
        "bytes": None, "duration": None, "audit_seq": None,
    }
    jobs = jobs_of(request)
    with jobs.lock:
        jobs.active.add(export_id)
    write_record(folder, record)
    worker = threading.Thread(target=_make, args=(node, jobs, folder, record, actor),
                              name=f"export-{export_id}", daemon=True)
    worker.start()
    return _public(record)


def _make(node: Node, jobs: Jobs, folder: Path, record: dict[str, Any], actor: Actor) -> None:
    camera = record["camera"]
    zones = node.config.cameras[camera].privacy_zones

    def blur(src: Path, dst: Path) -> dict[str, Any]:
        return redact_file(src, dst, zones=zones)

    try:
        with jobs.turn:
            record["state"] = "running"
            write_record(folder, record)
            bundle = create_export(
                node.store, node.layout, node.keys, node.audit, camera, record["start"],
                record["end"], folder / "bundle", actor=actor,
                case=None if record["case"] is None else str(record["case"]),
                transform=blur if record["redacted"] else None,
                allow_gaps=record["allow_gaps"], node=node.config.node.name,
            )
        record.update(state="done", duration=bundle.duration, audit_seq=bundle.audit_seq,
                      bytes=sum(p.stat().st_size for p in bundle.folder.iterdir()))
    except Exception as exc:
        log.warning("export %s failed: %s", record["id"], exc)
        record.update(state="failed", error=str(exc))
    finally:
        write_record(folder, record)
        with jobs.lock:
            jobs.active.discard(record["id"])


def _public(record: dict[str, Any]) -> dict[str, Any]:
    out = dict(record)
    done = record["state"] == "done"
    out["download_url"] = f"/api/exports/{record['id']}/download" if done else None
    out["verify_url"] = f"/api/exports/{record['id']}/verify" if done else None
    return out


@router.get("")
def list_exports(request: Request, actor: Exporter) -> dict[str, Any]:
    """The newest exports of the cameras the caller may see, newest first."""
    node = get_node(request)
    root = exports_root(node)
    jobs = jobs_of(request)
    found = []
    if root.is_dir():
        names = sorted((p.name for p in root.iterdir() if valid_id(p.name)), reverse=True)
        for name in names:
            record = read_record(root / name, jobs)
            if record is not None and actor.sees_camera(record["camera"]):
                found.append(_public(record))
            if len(found) >= LISTED:
                break
    return {"exports": found}


def valid_id(name: str) -> bool:
    return re.match(EXPORT_ID, name) is not None


def _done(request: Request, actor: Actor, export_id: str) -> tuple[Node, dict[str, Any], Path]:
    node = get_node(request)
    folder = exports_root(node) / export_id
    record = read_record(folder, jobs_of(request)) if folder.is_dir() else None
    if record is None:
        raise HTTPException(404, f"no export {export_id}")
    require_camera(node, actor, record["camera"])
    if record["state"] != "done":
        raise HTTPException(409, f"export {export_id} is {record['state']}"
                            + (f": {record['error']}" if record.get("error") else ""))
    return node, record, folder / "bundle"


@router.get("/{export_id}/download", response_class=FileResponse,
            responses={200: {"content": {"application/zip": {}}}})
def download(request: Request, actor: Exporter, export_id: ExportId) -> FileResponse:
    """The bundle as a zip: the video, manifest.json, manifest.sig and signing.pub."""
    node, record, bundle = _done(request, actor, export_id)
    if not record["redacted"] and not actor.can(Permission.EXPORT_UNREDACTED):
        _refuse(node, actor, record["camera"], "this export is unredacted: downloading it "
                "needs export.unredacted", {"export": export_id, "download": True})
    archive = zip_bundle(node, export_id, bundle)
    size = archive.stat().st_size
    node.audit.record(actor.name, "export.download", record["camera"], detail={
        "export": export_id, "redacted": record["redacted"], "case": record["case"],
        "from": record["start"], "to": record["end"], "bytes": size,
    }, address=client_address(request))
    return FileResponse(archive, media_type="application/zip",
                        filename=f"custodes-export-{export_id}.zip",
                        background=BackgroundTask(archive.unlink, missing_ok=True))


@router.get("/{export_id}/verify")
def verify(request: Request, actor: Exporter, export_id: ExportId) -> dict[str, Any]:
    """Check the bundle on the recorder: its signature (by this node's key) and every file's
    checksum."""
    node, _record, bundle = _done(request, actor, export_id)
    report = verify_bundle(bundle, node.keys.public_pem)
    return {
        "id": export_id, "ok": report.ok, "signature_ok": report.signature_ok,
        "key_source": report.key_source, "files_ok": report.files_ok,
        "problems": report.problems, "notes": report.notes,
    }


def zip_bundle(node: Node, export_id: str, bundle: Path) -> Path:
    """The bundle's files in a temporary zip beside the exports; the caller removes it."""
    handle, name = tempfile.mkstemp(prefix=".download-", suffix=".zip",
                                    dir=exports_root(node))
    os.close(handle)
    archive = Path(name)
    try:
        # Stored, not deflated: the video is compressed already and the rest is tiny.
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
            for path in sorted(bundle.iterdir()):
                if path.is_file():
                    zf.write(path, f"{export_id}/{path.name}")
    except BaseException:
        archive.unlink(missing_ok=True)
        raise
    return archive
