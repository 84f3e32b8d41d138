"""The inspector's page: what the inspection pack is, a link to download it, how to check it.

The pack itself is made by custodes.api.routes.inspection (signed, audited on download). This
page exists because an inspector arriving at the recorder could not find it: it states the
recorder's signing-key fingerprint, which the inspector must compare with the one the
operator gave through another channel, and the plain ``openssl`` commands that check a pack
without custodes (the same steps the report prints, from custodes.audit.report_text).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from custodes.api.deps import get_node
from custodes.api.routes.inspection import MAX_DAYS
from custodes.audit.report import site_timezone
from custodes.audit.report_text import verification_steps
from custodes.auth.roles import Actor, Permission
from custodes.privacy.devices import classify, picture_refusal
from custodes.record.manifest import key_fingerprint
from custodes.web.pages import gate, nav_for, page_access, templates

router = APIRouter(include_in_schema=False)

Inspector = Annotated[Actor | None, Depends(page_access(Permission.AUDIT_VIEW))]


@router.get("/inspection", response_class=HTMLResponse)
def inspection_page(request: Request, actor: Inspector) -> Response:
    if (refused := gate(request, actor, Permission.AUDIT_VIEW)) is not None:
        return refused
    assert actor is not None
    node = get_node(request)
    fingerprint = key_fingerprint(node.keys.public_pem)
    return templates.TemplateResponse(request, "inspector.html", {
        "actor": actor, "nav": nav_for(actor), "page": "inspection",
        "title": "Inspection", "node_name": node.config.node.name, "data": {},
        "fingerprint": fingerprint, "max_days": MAX_DAYS, "profile": node.config.profile.value,
        "timezone": site_timezone(node.config),
        # The pack holds each camera's redacted view: a phone gets it no more than footage.
        "device_refusal": picture_refusal(node.config.profile,
                                          classify(request.headers, request.cookies)),
        "steps": verification_steps(f"inspection-{node.config.node.name}-<time>", "report.pdf",
                                    fingerprint),
    })
