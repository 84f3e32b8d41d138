"""Holds (evidence lock): list, place and release, for those who hold holds.manage.

The rules live in custodes.record.hold_requests; here only the camera is checked against the
node and the user, and refusals become 4xx with their reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from custodes.api.deps import get_node, require, require_camera
from custodes.api.routes.video import CameraName
from custodes.auth.roles import Actor, Permission
from custodes.privacy.policy import Refused
from custodes.record.hold_requests import MAX_REASON, HoldDesk, HoldError

router = APIRouter(prefix="/api/holds", tags=["holds"])

Keeper = Annotated[Actor, Depends(require(Permission.HOLDS_MANAGE))]
Epoch = Annotated[float, Field(ge=0, le=1e11, description="UTC epoch seconds")]
Time = Annotated[float | None, Query(ge=0, le=1e11, description="UTC epoch seconds")]
HoldId = Annotated[int, Path(ge=1, le=2**62, description="Hold number")]


class NewHold(BaseModel):
    model_config = ConfigDict(extra="forbid")
    camera: CameraName
    start: Epoch
    end: Epoch
    reason: str = Field(min_length=1, max_length=MAX_REASON,
                        description="The incident, complaint or case the footage is kept for")
    expires_at: Epoch | None = Field(None, description="When the hold lapses; none: until "
                                                       "released")


class Release(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field("", max_length=MAX_REASON, description="Why (kept in the audit log)")


def desk(request: Request) -> HoldDesk:
    node = get_node(request)
    return HoldDesk(node.store, node.audit)


@contextmanager
def _answers() -> Iterator[None]:
    try:
        yield
    except Refused as exc:
        raise HTTPException(403, exc.reason) from None
    except HoldError as exc:
        missing = str(exc).startswith("there is no hold")
        raise HTTPException(404 if missing else 409 if "no longer" in str(exc) else 400,
                            str(exc)) from None


@router.get("")
def list_holds(request: Request, actor: Keeper, *,
               camera: Annotated[CameraName | None, Query()] = None,
               start: Time = None, end: Time = None) -> list[dict[str, Any]]:
    """Holds in force on the caller's cameras (overlapping [start, end) when given)."""
    if camera is not None:
        require_camera(get_node(request), actor, camera)
    with _answers():
        return [v.public() for v in desk(request).list(actor, camera=camera, start=start,
                                                        end=end)]


@router.post("", status_code=201)
def place_hold(body: NewHold, request: Request, actor: Keeper) -> dict[str, Any]:
    """Keep a camera's footage in [start, end) from retention; audited."""
    require_camera(get_node(request), actor, body.camera)
    with _answers():
        return desk(request).place(actor, camera=body.camera, start=body.start, end=body.end,
                                   reason=body.reason, expires_at=body.expires_at).public()


@router.post("/{hold_id}/release")
def release_hold(hold_id: HoldId, body: Release, request: Request,
                 actor: Keeper) -> dict[str, Any]:
    """End a hold placed by hand (a case's holds end with the case); audited."""
    with _answers():
        return desk(request).release(actor, hold_id, body.note).public()
