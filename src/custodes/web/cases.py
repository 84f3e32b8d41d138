"""The pages for cases (list, open, detail with decision, search and alerts) and the gallery.

Like every page (custodes.web.pages), each is a server-rendered shell that static/cases.js
fills from the JSON API (custodes.api.routes.cases and .gallery); the page itself renders only
what the user's role and the deployment's profile allow, so that a refusal is explained before
anyone tries. The API refuses (and audits) the same things whatever the page shows.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, Response

from custodes.api.deps import get_node
from custodes.api.routes.cases import capabilities
from custodes.auth.roles import Actor, Permission
from custodes.privacy.policy import Action, allows, limits
from custodes.web.pages import cameras_for, gate, nav_for, page_access, templates

router = APIRouter(include_in_schema=False)

CaseReader = Annotated[Actor | None, Depends(page_access(Permission.CASE_VIEW))]
GalleryManager = Annotated[Actor | None, Depends(page_access(Permission.GALLERY_MANAGE))]


def _render(request: Request, actor: Actor, template: str, title: str,
            data: dict[str, Any]) -> HTMLResponse:
    node = get_node(request)
    return templates.TemplateResponse(request, template, {
        # "cases" marks the navigation's Cases entry as the current page.
        "actor": actor, "nav": nav_for(actor), "page": "cases", "title": title,
        "node_name": node.config.node.name, "data": data,
    })


def _roles(actor: Actor) -> dict[str, Any]:
    return {
        "me": actor.name,
        "can_open": actor.can(Permission.CASE_OPEN),
        "can_approve": actor.can(Permission.CASE_APPROVE),
        "can_search": actor.can(Permission.FACE_SEARCH),
        "can_alerts": actor.can(Permission.ALERT_CONFIRM),
        "can_gallery": actor.can(Permission.GALLERY_MANAGE),
        "can_snapshots": actor.can(Permission.EVENTS_VIEW),
        "can_timeline": actor.can(Permission.PLAYBACK_REDACTED),
        "can_subject_access": actor.can(Permission.SUBJECT_ACCESS),
    }


@router.get("/cases", response_class=HTMLResponse)
def cases_page(request: Request, actor: CaseReader) -> Response:
    if (refused := gate(request, actor, Permission.CASE_VIEW)) is not None:
        return refused
    assert actor is not None
    node = get_node(request)
    limit = limits(node.config.profile)
    return _render(request, actor, "cases.html", "Cases", {
        **capabilities(node), **_roles(actor), "cameras": cameras_for(node, actor),
        # Shown beside the subject access form, so that a request is not refused for its
        # scope or rate only after the officer has filled it in.
        "access_limits": {
            "hours": limit.access_seconds / 3600, "per_requester": limit.access_per_requester,
            "per_officer": limit.access_per_officer, "period_days": limit.access_period_days,
            "valid_days": limit.access_valid_days,
        },
    })


@router.get("/cases/{case_id}", response_class=HTMLResponse)
def case_page(request: Request, actor: CaseReader,
              case_id: Annotated[int, PathParam(ge=1, le=2**62)]) -> Response:
    if (refused := gate(request, actor, Permission.CASE_VIEW)) is not None:
        return refused
    assert actor is not None
    node = get_node(request)
    return _render(request, actor, "cases_case.html", f"Case {case_id}", {
        **capabilities(node), **_roles(actor), "case_id": case_id,
        "cameras": cameras_for(node, actor),
    })


@router.get("/gallery", response_class=HTMLResponse)
def gallery_page(request: Request, actor: GalleryManager) -> Response:
    if (refused := gate(request, actor, Permission.GALLERY_MANAGE)) is not None:
        return refused
    assert actor is not None
    node = get_node(request)
    profile = node.config.profile
    enroll = allows(profile, Action.ENROLL)
    return _render(request, actor, "cases_gallery.html", "Gallery", {
        **_roles(actor), "profile": profile.value, "enroll_allowed": enroll,
        "refusal": None if enroll else f"the {profile.value} profile does not allow "
                                       "enrolling anyone",
    })
