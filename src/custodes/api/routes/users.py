"""Managing users: list (system.view), add, change, disable, reset a password (users.manage).

New and reset passwords are random and returned once; nobody chooses another person's
password, and none is ever stored or logged in the clear.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from pydantic import BaseModel, ConfigDict, Field

from custodes.api.deps import get_node, get_users, require
from custodes.auth.roles import Actor, Permission, Role
from custodes.auth.users import USER_NAME, User, UserError, random_password

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
def list_users(request: Request, _actor: Reader) -> list[dict[str, Any]]:
    return [u.public() for u in get_users(request).list()]


@router.get("/{name}")
def get_user(name: UserName, request: Request, _actor: Reader) -> dict[str, Any]:
    return _get(request, name).public()


@router.post("", status_code=201)
def add_user(body: NewUser, request: Request, actor: Manager) -> dict[str, Any]:
    """Add a user with a random password, returned this once."""
    node = get_node(request)
    _check_cameras(node, body.cameras)
    password = random_password()
    try:
        user = get_users(request).add(body.name, body.role, password, body.cameras)
    except UserError as exc:
        raise HTTPException(409 if "exists" in str(exc) else 400, str(exc)) from None
    node.audit.record(actor.name, "user.add", user.name,
                      detail={"role": user.role.value, "cameras": body.cameras},
                      address=actor.address)
    return {**user.public(), "password": password}


@router.patch("/{name}")
def change_user(name: UserName, body: UserChange, request: Request,
                actor: Manager) -> dict[str, Any]:
    """Change a user's role, cameras or disabled flag; disabling ends their sessions and
    tokens. The last enabled administrator cannot be demoted or disabled."""
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
    try:
        user = get_users(request).update(name, **changes)
    except UserError as exc:
        raise HTTPException(409, str(exc)) from None
    node.audit.record(actor.name, "user.update", name,
                      detail={k: (v.value if isinstance(v, Role) else v)
                              for k, v in changes.items()},
                      address=actor.address)
    return user.public()


@router.post("/{name}/password")
def reset_password(name: UserName, request: Request, actor: Manager) -> dict[str, Any]:
    """Give a user a new random password (returned once); ends their sessions and tokens."""
    _get(request, name)
    password = random_password()
    get_users(request).set_password(name, password)
    get_node(request).audit.record(actor.name, "user.reset_password", name,
                                   address=actor.address)
    return {"name": name, "password": password}
