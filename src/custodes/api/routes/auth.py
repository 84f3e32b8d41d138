"""Signing in and out, one's own password, one's own sessions and API tokens."""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from custodes.api.deps import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    SignedIn,
    SignedInUser,
    client_address,
    get_node,
    get_sessions,
    get_throttle,
    get_users,
    public,
    refuse,
    signed_in,
)
from custodes.audit.actions import Action
from custodes.audit.log import ANONYMOUS, Outcome
from custodes.auth.roles import PERMISSIONS
from custodes.auth.sessions import DEFAULT_TOKEN_DAYS, MAX_TOKEN_DAYS, Session, TokenError
from custodes.auth.users import MIN_PASSWORD, User, UserError

router = APIRouter(prefix="/api/auth", tags=["auth"])


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Login(Body):
    name: str = Field(min_length=1, max_length=200)
    password: str = Field(min_length=1, max_length=1024)


class PasswordChange(Body):
    old_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=MIN_PASSWORD, max_length=1024)


class NewToken(Body):
    name: str = Field(min_length=1, max_length=100, description="What the token is for")
    days: float | None = Field(None, gt=0, le=MAX_TOKEN_DAYS,
                               description=f"Lifetime in days; none: {DEFAULT_TOKEN_DAYS}")


def _me(user: User, csrf: str | None = None) -> dict[str, Any]:
    out = user.public()
    out["permissions"] = sorted(p.value for p in PERMISSIONS[user.role])
    if csrf is not None:
        out["csrf"] = csrf
    return out


def _set_cookies(request: Request, response: Response, session: Session) -> None:
    secure = bool(request.app.state.secure_cookies)
    max_age = int(get_sessions(request).seconds)
    response.set_cookie(SESSION_COOKIE, session.token, max_age=max_age, path="/",
                        httponly=True, samesite="strict", secure=secure)
    # Readable by the pages' script, which echoes it in X-CSRF-Token; the server compares it
    # with the value bound to the session, so a cookie planted by another site does not help.
    response.set_cookie(CSRF_COOKIE, session.csrf, max_age=max_age, path="/",
                        httponly=False, samesite="strict", secure=secure)


def _too_many(retry: float) -> HTTPException:
    seconds = max(1, math.ceil(retry))
    return HTTPException(429, f"too many failed sign-ins: try again in {seconds} s",
                         headers={"Retry-After": str(seconds)})


@router.post("/login", dependencies=[Depends(public)])
def login(body: Login, request: Request, response: Response) -> dict[str, Any]:
    """Sign in with name and password: sets the session and CSRF cookies."""
    node, throttle = get_node(request), get_throttle(request)
    address = client_address(request)
    retry = throttle.retry_after(body.name, address)
    if retry > 0:
        refuse(node, ANONYMOUS, Action.LOGIN, body.name, "throttled", address=address,
               error=_too_many(retry))
    user = get_users(request).authenticate(body.name, body.password)
    if user is None:
        throttle.failed(body.name, address)
        node.audit.record(ANONYMOUS, Action.LOGIN, body.name, outcome=Outcome.FAILED,
                          detail={"reason": "wrong name or password"}, address=address)
        raise HTTPException(401, "wrong name or password")
    throttle.succeeded(body.name, address)
    # Never adopt the session id the client came with: always a fresh one (session fixation).
    session = get_sessions(request).create(user, address,
                                           replaces=request.cookies.get(SESSION_COOKIE),
                                           user_agent=request.headers.get("user-agent"))
    _set_cookies(request, response, session)
    node.audit.record(user.name, Action.LOGIN, user.name, address=address)
    return _me(user, session.csrf)


@router.post("/logout")
def logout(request: Request, response: Response,
           actor: SignedIn) -> dict[str, str]:
    """End this session (a bearer token stays valid: revoke it instead)."""
    info = request.state.session
    if info is not None:
        get_sessions(request).end(info.token_hash)
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")
    get_node(request).audit.record(actor.name, Action.LOGOUT, actor.name, address=actor.address)
    return {"detail": "signed out"}


@router.get("/me", dependencies=[Depends(signed_in)])
def me(request: Request) -> dict[str, Any]:
    """Who is signed in, with the role's permissions."""
    info = request.state.session
    return _me(request.state.user, info.csrf if info is not None else None)


@router.post("/password")
def change_password(body: PasswordChange, request: Request, response: Response,
                    user: SignedInUser) -> dict[str, str]:
    """Change one's own password: ends every session and revokes every API token of the
    account, then starts a fresh session for this browser."""
    node, throttle = get_node(request), get_throttle(request)
    actor = user.actor(client_address(request))
    retry = throttle.retry_after(user.name, actor.address or "")
    if retry > 0:
        raise _too_many(retry)
    if get_users(request).authenticate(user.name, body.old_password) is None:
        throttle.failed(user.name, actor.address or "")
        node.audit.record(actor.name, Action.USER_PASSWORD, user.name, outcome=Outcome.FAILED,
                          detail={"reason": "wrong current password"}, address=actor.address)
        raise HTTPException(403, "the current password is wrong")
    if body.new_password == body.old_password:
        raise HTTPException(400, "the new password must differ from the current one")
    try:
        get_users(request).set_password(user.name, body.new_password)
    except UserError as exc:
        raise HTTPException(400, str(exc)) from None
    node.audit.record(actor.name, Action.USER_PASSWORD, user.name, address=actor.address)
    if request.state.session is not None:
        _set_cookies(request, response,
                     get_sessions(request).create(
                         user, actor.address, user_agent=request.headers.get("user-agent")))
    return {"detail": "password changed; other sessions and API tokens were ended"}


@router.get("/tokens")
def list_tokens(request: Request,
                user: SignedInUser) -> list[dict[str, Any]]:
    """One's own API tokens (never their values)."""
    return [t.public() for t in get_sessions(request).tokens(user)]


@router.post("/tokens", status_code=201)
def create_token(body: NewToken, request: Request,
                 user: SignedInUser) -> dict[str, Any]:
    """A bearer token acting as oneself (same role and cameras); shown this once only.

    It lives ``days`` (at most a year; 90 when not given). Made with another token, it
    expires no later than that one (400 otherwise) and is revoked with it: a stolen
    short-lived token cannot be turned into a lasting one."""
    actor = user.actor(client_address(request))
    node = get_node(request)
    parent = request.state.token
    try:
        token_id, token = get_sessions(request).create_token(
            user, body.name, body.days or DEFAULT_TOKEN_DAYS, parent=parent)
    except TokenError as exc:
        refuse(node, actor.name, Action.TOKEN_CREATE, body.name, str(exc),
               detail={"days": body.days}, address=actor.address,
               error=HTTPException(400, str(exc)))
    node.audit.record(actor.name, Action.TOKEN_CREATE, str(token_id),
                      detail={"name": body.name, "days": body.days,
                              "parent": None if parent is None else parent.id},
                      address=actor.address)
    return {"id": token_id, "name": body.name, "token": token}


@router.delete("/tokens/{token_id}")
def revoke_token(token_id: Annotated[int, Path(ge=1, le=2**62)], request: Request,
                 user: SignedInUser) -> dict[str, str]:
    """Revoke one of one's own API tokens."""
    if not get_sessions(request).revoke_token(user, token_id):
        raise HTTPException(404, f"you have no live API token {token_id}")
    actor = user.actor(client_address(request))
    get_node(request).audit.record(actor.name, Action.TOKEN_REVOKE, str(token_id),
                                   address=actor.address)
    return {"detail": "revoked"}


SessionId = Annotated[str, Path(pattern=r"^[0-9a-f]{24}$", description="Session id")]


@router.get("/sessions")
def list_sessions(request: Request, user: SignedInUser) -> list[dict[str, Any]]:
    """One's own signed-in sessions: when made, last used and from where (never the cookie)."""
    info = request.state.session
    current = info.token_hash if info is not None else None
    return [v.public() for v in get_sessions(request).sessions(user, current)]


@router.delete("/sessions/{session_id}")
def end_session(session_id: SessionId, request: Request, response: Response,
                user: SignedInUser) -> dict[str, str]:
    """End one of one's own sessions (another browser, a lost laptop); audited."""
    actor = user.actor(client_address(request))
    info = request.state.session
    if not get_sessions(request).end_handle(user, session_id):
        raise HTTPException(404, f"you have no live session {session_id}")
    get_node(request).audit.record(actor.name, Action.SESSION_END, session_id,
                                   address=actor.address)
    if info is not None and info.handle == session_id:
        response.delete_cookie(SESSION_COOKIE, path="/")
        response.delete_cookie(CSRF_COOKIE, path="/")
    return {"detail": "session ended"}
