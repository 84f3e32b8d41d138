"""The camera page (cameras.manage): the shell that static/cameras.js fills from
/api/system/cameras. Like every page it shows nothing the API would not give the same user."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from custodes.api.deps import get_node
from custodes.auth.roles import Actor, Permission
from custodes.web.pages import gate, nav_for, page_access, templates

router = APIRouter(include_in_schema=False)

CameraManager = Annotated[Actor | None, Depends(page_access(Permission.CAMERAS_MANAGE))]


@router.get("/cameras", response_class=HTMLResponse)
def cameras_page(request: Request, actor: CameraManager) -> Response:
    if (refused := gate(request, actor, Permission.CAMERAS_MANAGE)) is not None:
        return refused
    assert actor is not None
    node = get_node(request)
    return templates.TemplateResponse(request, "cameras.html", {
        "actor": actor, "nav": nav_for(actor), "page": "cameras", "title": "Cameras",
        "node_name": node.config.node.name,
        "data": {"editable": node.config_path is not None,
                 "profile": node.config.profile.value},
    })
