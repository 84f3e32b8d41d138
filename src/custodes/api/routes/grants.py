"""Grants of privileged roles (custodes.auth.grants): listed (system.view), confirmed by a
second administrator or cancelled (users.manage); a caller limited to some cameras lists and
decides only the grants that reach cameras of theirs alone (others: 403, audited)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request

from custodes.api.deps import require
from custodes.api.routes.users import account_answers, accounts
from custodes.auth.grants import GrantKind, GrantStatus
from custodes.auth.roles import Actor, Permission
from custodes.config import NAME_PATTERN

Reader = Annotated[Actor, Depends(require(Permission.SYSTEM_VIEW))]
Manager = Annotated[Actor, Depends(require(Permission.USERS_MANAGE))]
GrantId = Annotated[int, Path(ge=1, le=2**62, description="Grant number")]

router = APIRouter(prefix="/api/grants", tags=["users"])


@router.get("")
def list_grants(
    actor: Reader, request: Request, *, pending: bool = False,
    user: Annotated[str | None, Query(
        min_length=1, max_length=128,
        description="Only grants naming this user: the account concerned, who asked or who "
                    "decided")] = None,
    camera: Annotated[str | None, Query(
        pattern=NAME_PATTERN,
        description="Only grants reaching this camera (a grant for every camera, or a "
                    "password reset, which names none, reaches each)")] = None,
    kind: Annotated[GrantKind | None, Query(description="Only grants of this kind")] = None,
    status: Annotated[GrantStatus | None, Query(
        description="Only grants in this state (pending=true means status=pending)")] = None,
) -> list[dict[str, Any]]:
    """Grants of privileged roles and password resets, newest first (at most 500 after the
    filters). An administrator limited to some cameras sees only the grants that reach none
    but theirs (custodes.auth.grants.Accounts.reach)."""
    if pending and status not in (None, GrantStatus.PENDING):
        raise HTTPException(400, f"pending=true and status={status} ask for two states")
    found = accounts(request).grants(pending_only=pending, user=user, camera=camera,
                                     kind=kind, status=status, within=actor.cameras)
    return [g.public() for g in found]


@router.post("/{grant_id}/confirm")
def confirm_grant(grant_id: GrantId, request: Request, actor: Manager) -> dict[str, Any]:
    """Carry out a grant as a second administrator; a new password is returned this once."""
    with account_answers():
        change = accounts(request).confirm(actor, grant_id)
    assert change.grant is not None
    out: dict[str, Any] = {"grant": change.grant.public(),
                           "user": change.user.public() if change.user else None}
    if change.password is not None:
        out["password"] = change.password
    return out


@router.post("/{grant_id}/cancel")
def cancel_grant(grant_id: GrantId, request: Request, actor: Manager) -> dict[str, Any]:
    """Withdraw a pending grant."""
    with account_answers():
        return accounts(request).cancel(actor, grant_id).public()
