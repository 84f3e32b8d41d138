"""Cases over HTTP: open, decide, close, search inside one, the subjects' crops, and (police)
the watchlist's alerts.

Every rule lives in custodes.privacy.cases and custodes.faces.watchlist, which also audit each
decision and each refusal; these routes turn requests into their calls and their answers into
status codes: a refusal (profile, role, case state, scope) is 403 with the library's reason,
and a case, subject or alert that does not exist 404; a malformed request (a photo without a
face, a scope that ends before it starts) is 400.

Subject photos come as multipart uploads, at most ``MAX_PHOTO_BYTES`` each, and must decode
as images before anything else looks at them (``photo_bytes``, also used by the gallery and
subject access routes).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any, Final
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, HTTPException, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from custodes.api.deps import get_node, require
from custodes.auth.roles import Actor, Permission
from custodes.faces.photos import PhotoError, check_photo
from custodes.faces.watchlist import Alert
from custodes.privacy.cases import MAX_K, Case, CaseHit, SubjectPhoto
from custodes.privacy.policy import Action, Refused, allows

if TYPE_CHECKING:
    from custodes.app import Node

router = APIRouter(prefix="/api", tags=["cases"])

MAX_PHOTO_BYTES: Final = 10 * 1024 * 1024
MAX_PHOTOS: Final = 10  # subject photos in one request
Time = Annotated[float, Field(ge=0, le=1e11, description="UTC epoch seconds")]
FormTime = Annotated[float, Form(ge=0, le=1e11, description="UTC epoch seconds")]
CaseId = Annotated[int, PathParam(ge=1, le=2**62)]
ItemId = Annotated[int, PathParam(ge=1, le=2**62)]

Viewer = Annotated[Actor, Depends(require(Permission.CASE_VIEW))]
Opener = Annotated[Actor, Depends(require(Permission.CASE_OPEN))]
Approver = Annotated[Actor, Depends(require(Permission.CASE_APPROVE))]
Searcher = Annotated[Actor, Depends(require(Permission.FACE_SEARCH))]
AlertReader = Annotated[Actor, Depends(require(Permission.ALERT_CONFIRM))]


# -- shared with the gallery and subject access routes -------------------------------------

def photo_bytes(upload: UploadFile, what: str = "the photo") -> bytes:
    """The upload's bytes once they are an image of at most MAX_PHOTO_BYTES; else 400/413."""
    data = upload.file.read(MAX_PHOTO_BYTES + 1)
    if len(data) > MAX_PHOTO_BYTES:
        raise HTTPException(413, f"{what} is larger than {MAX_PHOTO_BYTES // 2**20} MB")
    try:
        # The header only: the photo is decoded once, where its face is described, and only
        # after its declared size is known not to be a decompression bomb.
        check_photo(data)
    except PhotoError as exc:
        raise HTTPException(400, f"{what} ({upload.filename or 'upload'}): {exc}") from None
    return data


def refusal(exc: Refused) -> HTTPException:
    """A library's refusal (already audited) as an HTTP answer, with its reason."""
    # The libraries refuse a request for something that does not exist too (it is audited
    # like any refusal); to a client that is a 404.
    missing = exc.reason.startswith("there is no ") or " has no subject " in exc.reason
    return HTTPException(404 if missing else 403, exc.reason)


@contextmanager
def answers() -> Iterator[None]:
    """Refused -> 403/404 with the reason; CaseError, PhotoError and other ValueErrors -> 400."""
    try:
        yield
    except Refused as exc:
        raise refusal(exc) from None
    except ValueError as exc:  # CaseError, PhotoError
        raise HTTPException(400, str(exc)) from None


# -- what a case looks like to a client ---------------------------------------------------

def case_json(case: Case) -> dict[str, Any]:
    return {
        "id": case.id, "reference": case.reference, "legal_basis": case.legal_basis,
        "purpose": case.purpose, "cameras": list(case.cameras),
        "scope_start": case.scope_start, "scope_end": case.scope_end,
        "watchlist": case.watchlist, "status": case.status.value,
        "opened_by": case.opened_by, "opened_at": case.opened_at,
        "decided_by": case.decided_by, "decided_at": case.decided_at,
        "decision_note": case.decision_note, "expires_at": case.expires_at,
        "closed_by": case.closed_by, "closed_at": case.closed_at,
        "holds": list(case.hold_ids), "members": list(case.members),
        "subjects": [{
            "id": s.id, "label": s.label, "added_by": s.added_by, "added_at": s.added_at,
            "wiped": s.wiped,
            "crop_url": None if s.wiped else f"/api/cases/{case.id}/subjects/{s.id}/crop.jpg",
        } for s in case.subjects],
    }


def hit_json(case_id: int, hit: CaseHit) -> dict[str, Any]:
    at = hit.start
    # A possible hit names nobody (custodes.faces.calibration): no subject, no subject photo.
    named = hit.level.names_subject
    return {
        "face_id": hit.face_id, "camera": hit.camera, "start": hit.start, "end": hit.end,
        "distance": round(hit.distance, 4), "event_id": hit.event_id,
        "level": hit.level.value, "meaning": hit.meaning,
        "subject_id": hit.subject_id if named else None,
        # The event's snapshot was redacted when it was taken: every face in it is blurred.
        "snapshot_url": (f"/api/events/{hit.event_id}/snapshot.jpg"
                         if hit.event_id is not None and hit.snapshot else None),
        "subject_crop_url": (f"/api/cases/{case_id}/subjects/{hit.subject_id}/crop.jpg"
                             if named else None),
        "timeline_url": "/timeline?" + urlencode({"camera": hit.camera, "at": f"{at:.0f}"}),
    }


def alert_json(alert: Alert) -> dict[str, Any]:
    # Alerts are raised at match level only; one raised under the old 0.6 reads as possible.
    named = alert.level.names_subject
    return {
        "id": alert.id, "case_id": alert.case_id,
        "subject_id": alert.subject_id if named else None,
        "face_id": alert.face_id, "camera": alert.camera, "seen_at": alert.seen_at,
        "distance": round(alert.distance, 4), "created_at": alert.created_at,
        "level": alert.level.value, "meaning": alert.meaning,
        "status": alert.status.value, "decided_by": alert.decided_by,
        "decided_at": alert.decided_at,
        "subject_crop_url": (f"/api/cases/{alert.case_id}/subjects/{alert.subject_id}/crop.jpg"
                             if named else None),
        "timeline_url": "/timeline?" + urlencode({"camera": alert.camera,
                                                   "at": f"{alert.seen_at:.0f}"}),
    }


def capabilities(node: Node) -> dict[str, Any]:
    """What the deployment's profile allows at all, with the reason when it does not."""
    profile = node.config.profile
    search = allows(profile, Action.SEARCH)
    return {
        "profile": profile.value, "search_allowed": search,
        "watchlist_allowed": allows(profile, Action.WATCHLIST),
        "refusal": None if search else f"the {profile.value} profile does not allow face "
                                       "search",
    }


# -- cases ----------------------------------------------------------------------------------

@router.get("/cases")
def list_cases(request: Request, actor: Viewer) -> dict[str, Any]:
    """The cases the caller may see (custodes.privacy.cases.Cases.access_problem), newest
    first (metadata only), and what the profile allows."""
    node = get_node(request)
    with answers():
        cases = node.cases.list_cases(actor)
    return {**capabilities(node), "cases": [case_json(c) for c in cases]}


@router.post("/cases", status_code=201)
def open_case(
    request: Request,
    actor: Opener,
    *,
    reference: Annotated[str, Form(max_length=200)],
    legal_basis: Annotated[str, Form(max_length=500)],
    purpose: Annotated[str, Form(max_length=1000)],
    cameras: Annotated[list[str], Form(description="Cameras in the scope (repeat the field)")],
    start: FormTime,
    end: FormTime,
    expires_at: FormTime,
    photos: Annotated[list[UploadFile], Form(description="Photos of the subject, one face "
                                                          "each (JPEG, PNG)")],
    labels: Annotated[list[str] | None, Form(description="A label per photo (default "
                                                           "'subject N')")] = None,
    watchlist: Annotated[bool, Form(description="Live alerts (police profile)")] = False,
    members: Annotated[list[str] | None, Form(description="Colleagues who work the case "
                                                          "(repeat the field)")] = None,
) -> dict[str, Any]:
    """Open a pending case with its subjects' photos; a different user must approve it."""
    node = get_node(request)
    if len(photos) > MAX_PHOTOS:
        raise HTTPException(400, f"at most {MAX_PHOTOS} photos per request")
    names = list(labels or [])
    if len(names) > len(photos):
        raise HTTPException(400, "more labels than photos")
    names += [f"subject {i}" for i in range(len(names) + 1, len(photos) + 1)]
    with answers():
        # The profile's refusal (audited by open, which checks it first) comes before the
        # photos are even read: a school answers 403 whatever was uploaded.
        if not allows(node.config.profile, Action.SEARCH):
            node.cases.open(actor, reference=reference, legal_basis=legal_basis,
                            purpose=purpose, cameras=cameras, start=start, end=end,
                            expires_at=expires_at, photos=[], watchlist=watchlist)
        subject_photos = [
            SubjectPhoto(label or f"subject {i}", photo_bytes(upload, f"photo {i}"))
            for i, (label, upload) in enumerate(zip(names, photos, strict=True), 1)
        ]
        case = node.cases.open(actor, reference=reference, legal_basis=legal_basis,
                               purpose=purpose, cameras=cameras, start=start, end=end,
                               expires_at=expires_at, photos=subject_photos,
                               watchlist=watchlist, members=members or ())
    return case_json(case)


@router.get("/cases/{case_id}")
def get_case(request: Request, actor: Viewer, case_id: CaseId) -> dict[str, Any]:
    node = get_node(request)
    with answers():
        case = node.cases.get(actor, case_id)
    return {**capabilities(node), **case_json(case)}


@router.post("/cases/{case_id}/subjects")
def add_subject(
    request: Request,
    actor: Opener,
    case_id: CaseId,
    photo: Annotated[UploadFile, Form(description="A photo of the subject, one face")],
    label: Annotated[str, Form(max_length=200)] = "",
) -> dict[str, Any]:
    """Add a subject's photo to a pending case (its opener only)."""
    node = get_node(request)
    with answers():
        data = photo_bytes(photo)
        case = node.cases.add_subject(actor, case_id, SubjectPhoto(label, data))
    return case_json(case)


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field("", max_length=2000)


class Approval(Decision):
    expires_at: Time | None = Field(None, description="Bring the expiry forward (never back)")


@router.post("/cases/{case_id}/approve")
def approve(request: Request, actor: Approver, case_id: CaseId,
            body: Approval) -> dict[str, Any]:
    """Approve a pending case (not its opener): search allowed, footage in scope held."""
    with answers():
        case = get_node(request).cases.approve(actor, case_id, note=body.note,
                                               expires_at=body.expires_at)
    return case_json(case)


@router.post("/cases/{case_id}/reject")
def reject(request: Request, actor: Approver, case_id: CaseId,
           body: Decision) -> dict[str, Any]:
    """Reject a pending case; its subjects' biometric data is wiped."""
    with answers():
        case = get_node(request).cases.reject(actor, case_id, note=body.note)
    return case_json(case)


@router.post("/cases/{case_id}/close")
def close(request: Request, actor: Viewer, case_id: CaseId, body: Decision) -> dict[str, Any]:
    """End a case (its opener or an approver): holds released, subjects wiped."""
    with answers():
        case = get_node(request).cases.close(actor, case_id, note=body.note)
    return case_json(case)


class Search(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cameras: list[str] | None = Field(None, max_length=100,
                                      description="Narrow the case's cameras (default: all)")
    start: Time | None = Field(None, description="Narrow the scope's start")
    end: Time | None = Field(None, description="Narrow the scope's end")
    k: int = Field(20, ge=1, le=MAX_K, description="Hits at most")


@router.post("/cases/{case_id}/search")
def search(request: Request, actor: Searcher, case_id: CaseId,
           body: Search) -> dict[str, Any]:
    """The recorded faces nearest to the case's subjects, inside its scope (audited), with
    what could be searched: ``outcome`` (found, none_near, nothing_searchable, no_tracks),
    a plain ``summary``, and the face tracks counted per camera, with or without a
    descriptor, and why not where known."""
    with answers():
        result = get_node(request).cases.search(actor, case_id, cameras=body.cameras,
                                                start=body.start, end=body.end, k=body.k)
    return {
        "case_id": result.case_id, "use_id": result.use_id,
        "cameras": list(result.cameras), "start": result.start,
        "end": result.end, "k": result.k,
        "hits": [hit_json(result.case_id, h) for h in result.hits],
        # An empty list alone would not say whether anything could be compared at all.
        "outcome": result.outcome.value, "summary": result.summary,
        "coverage": {
            "tracks": result.tracks, "searchable": result.searchable,
            "without_descriptors": result.missing,
            "cameras": [{"camera": c.camera, "tracks": c.tracks, "searchable": c.searchable,
                         "without_descriptors": c.missing, "reason": c.reason}
                        for c in result.coverage],
        },
    }


@router.get("/cases/{case_id}/subjects/{subject_id}/crop.jpg", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}}})
def subject_crop(request: Request, actor: Viewer, case_id: CaseId,
                 subject_id: ItemId) -> Response:
    """A subject's face crop, to compare with a hit (audited; for those working the case)."""
    with answers():
        jpeg = get_node(request).cases.subject_crop(actor, case_id, subject_id)
    # Biometric data: no cache may keep it.
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


# -- watchlist alerts (police) ------------------------------------------------------------

@router.get("/cases/{case_id}/alerts")
def alerts(request: Request, actor: AlertReader, case_id: CaseId) -> dict[str, Any]:
    """A case's watchlist alerts, newest first; candidates await a second person."""
    node = get_node(request)
    with answers():
        found = node.watchlist.alerts(actor, case_id)
    return {"enabled": node.watchlist.enabled, "alerts": [alert_json(a) for a in found]}


@router.post("/alerts/{alert_id}/confirm")
def confirm(request: Request, actor: AlertReader, alert_id: ItemId) -> dict[str, Any]:
    """A second person (not the case's opener) agrees the candidate is the subject."""
    with answers():
        alert = get_node(request).watchlist.confirm(actor, alert_id)
    return alert_json(alert)


@router.post("/alerts/{alert_id}/dismiss")
def dismiss(request: Request, actor: AlertReader, alert_id: ItemId) -> dict[str, Any]:
    with answers():
        alert = get_node(request).watchlist.dismiss(actor, alert_id)
    return alert_json(alert)

