"""The administration pages: users and grants (administrators), and every user's own account
(password, sessions, API tokens).

Like every page (custodes.web.pages) each is a shell that a small script fills from the JSON
API: static/admin.js calls /api/users and /api/grants, whose rules (custodes.auth.grants: the
two-person rule, nobody changes their own role) refuse the same things however they are asked.
The page only says in advance what will be refused, so nobody fills in a form for nothing.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from custodes.api.deps import get_node, get_users
from custodes.auth.grants import GRANT_DAYS, PRIVILEGED, GrantKind, GrantStatus
from custodes.auth.roles import PERMISSIONS, Actor, Permission, Role
from custodes.auth.sessions import DEFAULT_TOKEN_DAYS, MAX_TOKEN_DAYS
from custodes.auth.users import MIN_PASSWORD, PASSWORD_PAGE
from custodes.web.pages import gate, nav_for, page_access, safe_next, templates

router = APIRouter(include_in_schema=False)

Manager = Annotated[Actor | None, Depends(page_access(Permission.USERS_MANAGE))]
Anyone = Annotated[Actor | None, Depends(page_access(None))]

# What each role may do, in words, beside the role picker (the README says the same).
ROLE_WORDS: dict[Role, str] = {
    Role.VIEWER: "live view and playback, faces blurred; events",
    Role.OPERATOR: "a viewer who also plays back originals, exports and places holds",
    Role.INVESTIGATOR: "an operator who also opens cases and searches inside approved ones",
    Role.APPROVER: "approves cases opened by others, answers access requests; reads the audit",
    Role.INSPECTOR: "read-only: audit log, retention, configuration, cases",
    Role.ADMIN: "manages users and the system, watches as a viewer; nothing unredacted",
}

# What each kind of grant is, in the grants table and its filter.
GRANT_WORDS: dict[GrantKind, str] = {
    GrantKind.ADD: "new account",
    GrantKind.ROLE: "role for an account",
    GrantKind.PASSWORD: "password reset",
}


def _render(request: Request, actor: Actor, template: str, page: str, *, title: str,
            data: dict[str, Any], nav: bool = True) -> HTMLResponse:
    node = get_node(request)
    return templates.TemplateResponse(request, template, {
        "actor": actor, "nav": nav_for(actor) if nav else [], "page": page, "title": title,
        "node_name": node.config.node.name, "data": data,
    })


def _sign_in(request: Request) -> Response:
    """The redirect to /login (and back) for a page any signed-in user may see."""
    redirect = gate(request, None, Permission.STATUS_VIEW)
    assert redirect is not None
    return redirect


def _roles() -> list[dict[str, Any]]:
    return [{"role": r.value, "privileged": r in PRIVILEGED, "words": ROLE_WORDS[r],
             "permissions": sorted(p.value for p in PERMISSIONS[r])} for r in Role]


@router.get("/users", response_class=HTMLResponse)
def users_page(request: Request, actor: Manager) -> Response:
    if (refused := gate(request, actor, Permission.USERS_MANAGE)) is not None:
        return refused
    assert actor is not None
    return _render(request, actor, "users.html", "users", title="Users", data={
        "me": actor.name, "roles": _roles(), "cameras": sorted(get_node(request).config.cameras),
        "grant_days": GRANT_DAYS,
    })


@router.get("/users/grants", response_class=HTMLResponse)
def grants_page(request: Request, actor: Manager) -> Response:
    if (refused := gate(request, actor, Permission.USERS_MANAGE)) is not None:
        return refused
    assert actor is not None
    return _render(request, actor, "grants.html", "users", title="Grants", data={
        "me": actor.name, "grant_days": GRANT_DAYS,
        # The filter's choices (GET /api/grants?user=&camera=&kind=&status=).
        "cameras": sorted(get_node(request).config.cameras),
        "kinds": [{"value": k.value, "words": GRANT_WORDS[k]} for k in GrantKind],
        "statuses": [s.value for s in GrantStatus],
    })


@router.get("/account", response_class=HTMLResponse)
def account_page(request: Request, actor: Anyone) -> Response:
    if actor is None:
        return _sign_in(request)
    user = get_users(request).get(actor.name)
    assert user is not None
    return _render(request, actor, "account.html", "account", title="Your account", data={
        "me": actor.name, "role": actor.role.value,
        "cameras": None if actor.cameras is None else sorted(actor.cameras),
        "role_words": ROLE_WORDS[actor.role],
        "max_token_days": MAX_TOKEN_DAYS, "default_token_days": DEFAULT_TOKEN_DAYS,
        "password_changed_at": user.password_changed_at,
    })


@router.get(PASSWORD_PAGE, response_class=HTMLResponse)
def password_page(request: Request, actor: Anyone, next: str | None = None) -> Response:
    if actor is None:
        return _sign_in(request)
    user = get_users(request).get(actor.name)
    assert user is not None
    forced = user.must_change_password
    data = {"me": actor.name, "forced": forced, "min": MIN_PASSWORD, "next": safe_next(next)}
    # While forced, every other page would send the user back here: no navigation to offer.
    return _render(request, actor, "password.html", "account", title="Change your password",
                   data=data, nav=not forced)
