"""Managing users: list (system.view), add, change, disable, reset a password (users.manage).

New and reset passwords are random and returned once; nobody chooses another person's
password, and none is ever stored or logged in the clear. Privileged roles and their password
resets wait for a second administrator (custodes.auth.grants): 202 with the grant, which
another administrator confirms at /api/grants/{id}/confirm.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from custodes.api.deps import get_node, get_users, require
from custodes.auth.grants import Accounts, Change, GrantStatus
from custodes.auth.roles import Actor, Permission, Role
from custodes.auth.users import USER_NAME, User, UserError, reaches_within
from custodes.privacy.policy import Refused

if TYPE_CHECKING:
    from custodes.app import Node

router = APIRouter(prefix="/api/users", tags=["users"])

Reader = Annotated[Actor, Depends(require(Permission.SYSTEM_VIEW))]
Manager = Annotated[Actor, Depends(require(Permission.USERS_MANAGE))]
UserName = Annotated[str, Path(pattern=USER_NAME, description="User name")]
Cameras = Annotated[list[Annotated[str, Field(max_length=63)]], Field(max_length=1000)]


class NewUser(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=USER_NAME)
    role: Role
    cameras: Cameras | None = Field(None, description="Cameras the user may see; none: all")


class UserChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role | None = None
    cameras: Cameras | None = Field(None, description="Cameras the user may see; null: all")
    disabled: bool | None = None


def _check_cameras(node: Node, cameras: list[str] | None) -> None:
    unknown = sorted(set(cameras or ()) - set(node.config.cameras))
    if unknown:
        raise HTTPException(400, f"unknown cameras: {', '.join(unknown)}")


def _get(request: Request, name: str) -> User:
    user = get_users(request).get(name)
    if user is None:
        raise HTTPException(404, f"no user named {name!r}")
    return user


@router.get("")
def list_users(request: Request, actor: Reader) -> list[dict[str, Any]]:
    return [u.public() for u in get_users(request).list(within=actor.cameras)]


@router.get("/{name}")
def get_user(name: UserName, request: Request, actor: Reader) -> dict[str, Any]:
    user = _get(request, name)
    if not reaches_within(user.cameras, actor.cameras):  # as if unknown: names not probed
        raise HTTPException(404, f"no user named {name!r}")
    return user.public()


def accounts(request: Request) -> Accounts:
    return Accounts(get_users(request), get_node(request).audit)


@contextmanager
def account_answers() -> Iterator[None]:
    """Refused -> 403 (404 for a grant that does not exist); UserError -> 409 or 400."""
    try:
        yield
    except Refused as exc:
        raise HTTPException(404 if exc.reason.startswith("there is no ") else 403,
                            exc.reason) from None
    except KeyError as exc:
        raise HTTPException(404, str(exc.args[0])) from None
    except UserError as exc:
        conflict = "exists" in str(exc) or "waiting" in str(exc) or "leave no" in str(exc)
        raise HTTPException(409 if conflict else 400, str(exc)) from None


def _answer(change: Change, response: Response) -> dict[str, Any]:
    """The account (and a new password, once), or 202 with the grant that now waits for a
    second administrator."""
    if change.grant is not None and change.grant.status is GrantStatus.PENDING:
        response.status_code = 202
        return {**(change.user.public() if change.user else {}),
                "grant": change.grant.public(),
                "detail": f"waiting for a second administrator to confirm grant "
                          f"{change.grant.id}"}
    assert change.user is not None
    out = change.user.public()
    if change.password is not None:
        out["password"] = change.password
    return out


@router.post("", status_code=201, responses={202: {"description": "A privileged role: "
                                                   "waiting for a second administrator"}})
def add_user(body: NewUser, request: Request, response: Response,
             actor: Manager) -> dict[str, Any]:
    """Add a user with a random password, returned this once. An administrator, investigator
    or approver is not added yet: 202 with a grant that a second administrator confirms."""
    _check_cameras(get_node(request), body.cameras)
    with account_answers():
        change = accounts(request).add(actor, body.name, body.role, body.cameras)
    return _answer(change, response)


@router.patch("/{name}", responses={202: {"description": "A privileged role: waiting for a "
                                          "second administrator"}})
def change_user(name: UserName, body: UserChange, request: Request, response: Response,
                actor: Manager) -> dict[str, Any]:
    """Change a user's role, cameras or disabled flag; disabling ends their sessions and
    tokens. Nobody changes their own role; a privileged role waits for a second
    administrator (202); the last enabled administrator cannot be demoted or disabled."""
    node = get_node(request)
    _get(request, name)
    given = body.model_fields_set
    _check_cameras(node, body.cameras)
    changes: dict[str, Any] = {}
    if "role" in given and body.role is not None:
        changes["role"] = body.role
    if "cameras" in given:
        changes["cameras"] = body.cameras
    if "disabled" in given and body.disabled is not None:
        changes["disabled"] = body.disabled
    with account_answers():
        change = accounts(request).change(actor, name, **changes)
    return _answer(change, response)


@router.post("/{name}/password", responses={202: {"description": "A privileged account: "
                                                  "waiting for a second administrator"}})
def reset_password(name: UserName, request: Request, response: Response,
                   actor: Manager) -> dict[str, Any]:
    """Give a user a new random password (returned once); ends their sessions and tokens.
    For an administrator, investigator or approver: 202 with a grant; the administrator who
    confirms it receives the password."""
    _get(request, name)
    with account_answers():
        change = accounts(request).reset_password(actor, name)
    out = _answer(change, response)
    if response.status_code == 202:
        return out
    return {"name": name, "password": out["password"]}
