"""What every route depends on: the node, who is asking, and whether they may.

Each route declares its access with exactly one of three dependencies, which the role-matrix
test reads back from the route (so a route without a declaration fails the test suite):

- ``Depends(require(Permission.X))``: a signed-in user whose role holds X;
- ``Depends(signed_in)``: any signed-in user (their own account, sign-out);
- ``Depends(public)``: anyone who can reach the server (sign-in, health).

Cookie sessions must send the session's CSRF token in ``X-CSRF-Token`` on every
state-changing method; bearer tokens are exempt (a browser never adds them on its own).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, NoReturn
from urllib.parse import quote

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.routing import APIRoute, iter_route_contexts

from custodes.audit.actions import Action
from custodes.auth.roles import Actor, Permission
from custodes.auth.sessions import SessionInfo, Sessions
from custodes.auth.throttle import LoginThrottle
from custodes.auth.users import PASSWORD_FIRST, PASSWORD_PAGE, User, Users

if TYPE_CHECKING:
    from fastapi.dependencies.models import Dependant

    from custodes.app import Node

SESSION_COOKIE = "custodes_session"
CSRF_COOKIE = "custodes_csrf"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# All a user whose password somebody else chose may reach until they choose their own.
OPEN_BEFORE_PASSWORD_CHANGE = frozenset({
    PASSWORD_PAGE, "/api/auth/password", "/api/auth/logout", "/api/auth/me",
})

SIGNED_IN = "signed-in"
PUBLIC = "public"
Access = Permission | str  # a Permission, SIGNED_IN or PUBLIC
_ACCESS_ATTR = "__custodes_access__"


# -- the node and the auth parts create_app puts on app.state -----------------------------

def get_node(request: Request) -> Node:
    node: Node = request.app.state.node
    return node


def get_users(request: Request) -> Users:
    users: Users = request.app.state.users
    return users


def get_sessions(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.sessions
    return sessions


def get_throttle(request: Request) -> LoginThrottle:
    throttle: LoginThrottle = request.app.state.throttle
    return throttle


def client_address(request: Request) -> str:
    """The client's IP address as the server sees it (no proxy headers are trusted)."""
    return request.client.host if request.client else "unknown"


# -- who is asking --------------------------------------------------------------------------

def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise HTTPException(401, "the Authorization header must be 'Bearer <token>'")
    return value.strip()


def _authenticate(request: Request) -> User | None:
    """The user behind the request's bearer token or session cookie; None when there is none.

    Sets ``request.state.session`` (the cookie session, or None for a token) and
    ``request.state.token`` (the API token, or None for a cookie session). Raises 401 for a
    bearer token that is not valid, and 403 when a cookie session's state-changing request
    lacks its CSRF token.
    """
    request.state.session = None
    request.state.token = None
    token = _bearer(request)
    if token is not None:
        found = get_sessions(request).token_lookup(token)
        if found is None:
            raise HTTPException(401, "the API token is not valid (revoked, expired or unknown)")
        user, request.state.token = found
        get_sessions(request).touch_token(request.state.token, client_address(request))
        _password_first(request, user)
        return user
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    info = get_sessions(request).lookup(cookie)
    if info is None:
        return None
    if request.method not in SAFE_METHODS and not _csrf_ok(request, info):
        refuse(get_node(request), info.user.name, Action.ACCESS, request.url.path,
               "missing or wrong CSRF token", detail={"method": request.method},
               address=client_address(request),
               error=HTTPException(403, f"missing or wrong {CSRF_HEADER} header (CSRF "
                                        "protection)"))
    request.state.session = info
    get_sessions(request).touch(info, client_address(request))
    _password_first(request, info.user)
    return info.user


def _password_first(request: Request, user: User) -> None:
    """Until a user replaces a password someone else chose, only the password change and
    sign-out answer: a page redirects there, an API call gets 403 with the reason."""
    path = request.url.path
    if not user.must_change_password or path in OPEN_BEFORE_PASSWORD_CHANGE:
        return
    # A browser navigating (it asks for HTML) is sent to the page; a script gets the reason.
    navigating = "text/html" in request.headers.get("accept", "")
    if navigating and not path.startswith("/api/") and request.method in SAFE_METHODS:
        target = path + (f"?{request.url.query}" if request.url.query else "")
        raise HTTPException(303, PASSWORD_FIRST, headers={
            "Location": f"{PASSWORD_PAGE}?next={quote(target, safe='')}"})
    refuse(get_node(request), user.name, Action.ACCESS, path, "password change required",
           detail={"method": request.method}, address=client_address(request),
           error=HTTPException(403, PASSWORD_FIRST))


def _csrf_ok(request: Request, info: SessionInfo) -> bool:
    sent = request.headers.get(CSRF_HEADER, "")
    return hmac.compare_digest(sent.encode(), info.csrf.encode())


def current_user(request: Request) -> User:
    user = _authenticate(request)
    if user is None:
        raise HTTPException(401, "sign in first")
    request.state.user = user
    return user


def current_actor(request: Request) -> Actor:
    """The signed-in actor; 401 {"detail": "sign in first"} without a valid session or token."""
    return current_user(request).actor(client_address(request))


def page_actor(request: Request) -> Actor | None:
    """For pages: the signed-in actor, or None (the page redirects to /login)."""
    try:
        user = _authenticate(request)
    except HTTPException as exc:
        if exc.status_code == 401:
            return None
        raise
    return None if user is None else user.actor(client_address(request))


def refuse(
    node: Node,
    actor: str,
    action: Action,
    target: str,
    reason: str | None,
    *,
    address: str | None,
    detail: dict[str, Any] | None = None,
    error: HTTPException | None = None,
) -> NoReturn:
    """Refuse a request: on record first (``AuditLog.record_refusal``), then ``error``.

    ``error`` is what the client gets: by default a 403 that gives the reason. Every route
    that turns a request away with an audited refusal does it through here.
    """
    node.audit.record_refusal(actor, action, target, reason, detail=detail, address=address)
    raise (error if error is not None else HTTPException(403, reason)) from None


# -- access declarations ---------------------------------------------------------------------

def declare_access(dep: Callable[..., Any], access: Access) -> Callable[..., Any]:
    setattr(dep, _ACCESS_ATTR, access)
    return dep


def require(permission: Permission) -> Callable[..., Actor]:
    """Dependency: the signed-in actor, whose role must hold ``permission``.

    401 when not signed in; 403 with the reason when the role lacks it, and the refusal is
    written to the audit log.
    """

    def dependency(request: Request) -> Actor:
        actor = current_actor(request)
        if not actor.can(permission):
            refuse(get_node(request), actor.name, Action.ACCESS, request.url.path, None,
                   detail={"method": request.method, "permission": permission.value},
                   address=actor.address,
                   error=HTTPException(403, f"the {actor.role.value} role lacks the "
                                            f"permission {permission.value!r}"))
        return actor

    declare_access(dependency, permission)
    return dependency


def signed_in(request: Request) -> Actor:
    """Dependency: any signed-in actor."""
    return current_actor(request)


def signed_in_user(request: Request) -> User:
    """Dependency: any signed-in user, as the account rather than the actor."""
    return current_user(request)


def public() -> None:
    """Dependency: declares a route open to anyone the client allowlist lets in."""


declare_access(signed_in, SIGNED_IN)
declare_access(signed_in_user, SIGNED_IN)

# Parameter types for routes: ``def f(actor: SignedIn)``, ``def g(user: SignedInUser)``.
SignedIn = Annotated[Actor, Depends(signed_in)]
SignedInUser = Annotated[User, Depends(signed_in_user)]
declare_access(public, PUBLIC)


def require_camera(node: Node, actor: Actor, camera: str) -> None:
    """404 for a camera the node does not have; 403 (audited) when ``actor`` may not see it."""
    if camera not in node.config.cameras:
        raise HTTPException(404, f"no camera named {camera!r}")
    if not actor.sees_camera(camera):
        refuse(node, actor.name, Action.CAMERA_ACCESS, camera, "not among the user's cameras",
               address=actor.address,
               error=HTTPException(403, f"you have no access to camera {camera!r}"))


@dataclass(frozen=True)
class RouteAccess:
    path: str
    methods: frozenset[str]
    access: frozenset[Access]  # normally exactly one declaration


def route_table(app: FastAPI) -> list[RouteAccess]:
    """Every API route of ``app`` (however deeply included) with its access declarations."""
    table = []
    for ctx in iter_route_contexts(app.routes):
        if not isinstance(ctx.original_route, APIRoute):
            continue
        table.append(RouteAccess(str(ctx.path), frozenset(ctx.methods or ()),
                                 access_of(ctx.dependant)))
    return table


def access_of(dependant: Dependant) -> frozenset[Access]:
    """The access declarations of a route's dependencies, however deeply nested."""
    found: set[Access] = set()

    def walk(dependant: Dependant) -> None:
        access = getattr(dependant.call, _ACCESS_ATTR, None)
        if access is not None:
            found.add(access)
        for sub in dependant.dependencies:
            walk(sub)

    walk(dependant)
    return frozenset(found)
