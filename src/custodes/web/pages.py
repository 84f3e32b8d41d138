"""The HTML pages: each a server-rendered shell that small scripts fill from the JSON API.

A page needs a signed-in user (else it redirects to /login) whose role holds the page's
permission (else 403, audited like any refused API call). The navigation lists only the pages
the role may use, so a viewer never sees a link to cases or the audit log. The pages show no
data the API would not give the same user: they render names and permissions, and the
scripts fetch everything else through the same checked routes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.routing import iter_route_contexts
from fastapi.templating import Jinja2Templates

from custodes.api import deps
from custodes.api.deps import get_node, page_actor, public
from custodes.api.status import node_status
from custodes.app import Node
from custodes.audit.actions import Action
from custodes.auth.roles import Actor, Permission
from custodes.auth.users import Users
from custodes.cameras.audit import summary as camera_risk
from custodes.live.stream import originals_allowed
from custodes.privacy.devices import classify, picture_refusal
from custodes.sitetime import site_zone

router = APIRouter(include_in_schema=False)


def _site_time(request: Request) -> dict[str, Any]:
    """Every page shows times in the site's zone and names it (custodes.sitetime)."""
    zone = site_zone(get_node(request).config.node.timezone)
    return {"site_tz": zone.name, "fmt_time": zone.text}


templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"),
                            context_processors=[_site_time])
# The node's pages count its cameras down in the navigation (static/alerts.js); the hub's pages
# reuse base.html with their own environment, without this flag: a hub has no /api/cameras.
templates.env.globals["camera_alerts"] = True


@dataclass(frozen=True)
class NavItem:
    key: str
    href: str
    label: str
    permission: Permission


NAV = (
    NavItem("live", "/", "Live", Permission.LIVE_VIEW),
    NavItem("timeline", "/timeline", "Timeline", Permission.PLAYBACK_REDACTED),
    NavItem("events", "/events", "Events", Permission.EVENTS_VIEW),
    NavItem("exports", "/exports", "Exports", Permission.EXPORT),
    # Before Cases: an inspector, who has no live view, lands here (custodes.web.inspection).
    NavItem("inspection", "/inspection", "Inspection", Permission.AUDIT_VIEW),
    NavItem("cases", "/cases", "Cases", Permission.CASE_VIEW),
    NavItem("gallery", "/gallery", "Gallery", Permission.GALLERY_MANAGE),
    NavItem("audit", "/audit", "Audit", Permission.AUDIT_VIEW),
    NavItem("system", "/system", "System", Permission.SYSTEM_VIEW),
    NavItem("users", "/users", "Users", Permission.USERS_MANAGE),  # custodes.web.admin
    NavItem("cameras", "/cameras", "Cameras", Permission.CAMERAS_MANAGE),
)


def page_access(permission: Permission | None) -> Callable[[Request], Actor | None]:
    """Dependency for a page: the signed-in actor or None; declares ``permission`` for the
    route-access table (None: any signed-in user)."""

    def dependency(request: Request) -> Actor | None:
        return page_actor(request)

    # The same declaration require() makes, read back by deps.route_table; a page differs
    # from an API route only in answering "not signed in" with a redirect instead of 401.
    deps.declare_access(dependency, permission if permission is not None else deps.SIGNED_IN)
    return dependency


def nav_for(actor: Actor) -> list[NavItem]:
    return [item for item in NAV if actor.can(item.permission)]


def cameras_for(node: Node, actor: Actor) -> list[dict[str, Any]]:
    out = []
    for cam in node.cameras():
        if not actor.sees_camera(cam.name):
            continue
        health = cam.health
        out.append({
            "name": cam.name, "site": cam.site, "location": cam.location,
            "state": health.state.value if health else "disabled",
            "reason": health.reason if health else "",
        })
    return out


def _render(request: Request, actor: Actor, page: str, title: str,
            data: dict[str, Any], *, status_code: int = 200) -> HTMLResponse:
    node = get_node(request)
    return templates.TemplateResponse(request, f"{page}.html", {
        "actor": actor, "nav": nav_for(actor), "page": page, "title": title,
        "node_name": node.config.node.name, "data": data,
    }, status_code=status_code)


def gate(request: Request, actor: Actor | None, permission: Permission, *,
         pictures: bool = False) -> Response | None:
    """The response that replaces the page when the user may not see it, else None.

    ``pictures``: the page shows video or pictures, which the profile's device policy may
    keep off phones and small screens (custodes.privacy.devices).
    """
    if actor is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
    if actor.can(permission):
        return device_gate(request, actor) if pictures else None
    get_node(request).audit.record_refusal(
        actor.name, Action.ACCESS, request.url.path, None,
        detail={"method": request.method, "permission": permission.value},
        address=actor.address,
    )
    return _render(request, actor, "denied", "Not allowed", {
        "reason": f"the {actor.role.value} role lacks the permission {permission.value!r}",
    }, status_code=403)


def device_gate(request: Request, actor: Actor) -> Response | None:
    """The page that explains why this device gets no pictures, else None (audited)."""
    node = get_node(request)
    seen = classify(request.headers, request.cookies)
    reason = picture_refusal(node.config.profile, seen)
    if reason is None:
        return None
    node.audit.record_refusal(actor.name, Action.DEVICE_REFUSED, request.url.path, reason,
                              detail={"client": seen.kind.value}, address=actor.address)
    return _render(request, actor, "device_refused", "Not on this device",
                   {"reason": reason, "client": seen.kind.value}, status_code=403)


def safe_next(target: str | None) -> str:
    """``target`` when it is a path on this server, else "/": never an open redirect.

    Browsers drop tabs and line breaks from URLs and read a backslash as "/", so
    ?next=/%09/evil.example (a tab) and ?next=/%5Cevil.example both lead to //evil.example,
    another host. Any control character, space or backslash is refused outright, and what is
    left must parse as a bare path that does not start with "//".
    """
    if not target or any(c.isspace() or not c.isprintable() or c == "\\" for c in target):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/") \
            or parts.path.startswith("//"):
        return "/"
    return target


# -- icon ----------------------------------------------------------------------------------

FAVICON = Path(__file__).parent / "static" / "favicon.svg"


@router.get("/favicon.ico", dependencies=[Depends(public)])
def favicon() -> FileResponse:
    """The icon browsers ask for unprompted; the pages link the same SVG."""
    return FileResponse(FAVICON, media_type="image/svg+xml",
                        headers={"Cache-Control": "public, max-age=86400"})


# -- sign-in -------------------------------------------------------------------------------

@router.get("/login", response_class=HTMLResponse, dependencies=[Depends(public)])
def login_page(request: Request, next: str | None = None) -> Response:
    target = safe_next(next)
    if page_actor(request) is not None:
        return RedirectResponse(target, status_code=303)
    node = get_node(request)
    return templates.TemplateResponse(request, "login.html", {
        "node_name": node.config.node.name, "data": {"next": target},
    })


# -- pages -------------------------------------------------------------------------------

# The root is every signed-in user's landing page: the live grid, or the first page the role
# may use (an inspector has no live view).
Landing = Annotated[Actor | None, Depends(page_access(None))]
Playback = Annotated[Actor | None, Depends(page_access(Permission.PLAYBACK_REDACTED))]
EventsReader = Annotated[Actor | None, Depends(page_access(Permission.EVENTS_VIEW))]
Exporter = Annotated[Actor | None, Depends(page_access(Permission.EXPORT))]
AuditReader = Annotated[Actor | None, Depends(page_access(Permission.AUDIT_VIEW))]
SystemReader = Annotated[Actor | None, Depends(page_access(Permission.SYSTEM_VIEW))]


@router.get("/", response_class=HTMLResponse)
def live_page(request: Request, actor: Landing) -> Response:
    if actor is not None and not actor.can(Permission.LIVE_VIEW):
        served = {str(ctx.path) for ctx in iter_route_contexts(request.app.routes)}
        first = [item for item in nav_for(actor) if item.href in served]
        if first:
            return RedirectResponse(first[0].href, status_code=303)
    if (refused := gate(request, actor, Permission.LIVE_VIEW, pictures=True)) is not None:
        return refused
    assert actor is not None
    node = get_node(request)
    return _render(request, actor, "live", "Live", {
        "cameras": cameras_for(node, actor),
        "canPlayback": actor.can(Permission.PLAYBACK_REDACTED),
        # Original live video by stream copy (custodes.live.stream), else redacted pictures.
        "liveOriginal": originals_allowed(actor),
    })


@router.get("/timeline", response_class=HTMLResponse)
def timeline_page(
    request: Request,
    actor: Playback,
    camera: str | None = None,
    day: date | None = None,
    at: Annotated[float | None, Query(ge=0, le=2**32)] = None,
) -> Response:
    if (refused := gate(request, actor, Permission.PLAYBACK_REDACTED, pictures=True)) is not None:
        return refused
    assert actor is not None
    cameras = cameras_for(get_node(request), actor)
    names = [c["name"] for c in cameras]
    chosen = camera if camera in names else (names[0] if names else None)
    if day is None:
        zone = site_zone(get_node(request).config.node.timezone)
        day = zone.day_of(at if at is not None else time.time())
    return _render(request, actor, "timeline", "Timeline", {
        "cameras": cameras, "camera": chosen, "day": day.isoformat(), "at": at,
        "can_unredacted": actor.can(Permission.PLAYBACK_UNREDACTED),
        "can_export": actor.can(Permission.EXPORT),
        "can_hold": actor.can(Permission.HOLDS_MANAGE),  # custodes.web.static.holds.js
    })


@router.get("/events", response_class=HTMLResponse)
def events_page(request: Request,
                actor: EventsReader) -> Response:
    if (refused := gate(request, actor, Permission.EVENTS_VIEW, pictures=True)) is not None:
        return refused
    assert actor is not None
    return _render(request, actor, "events", "Events", {
        "cameras": cameras_for(get_node(request), actor),
        "canPlayback": actor.can(Permission.PLAYBACK_REDACTED),
        "canAcknowledge": actor.can(Permission.EVENTS_ACKNOWLEDGE),
    })


@router.get("/exports", response_class=HTMLResponse)
def exports_page(request: Request,
                 actor: Exporter) -> Response:
    if (refused := gate(request, actor, Permission.EXPORT)) is not None:
        return refused
    assert actor is not None
    return _render(request, actor, "exports", "Exports", {
        "cameras": cameras_for(get_node(request), actor),
        "can_unredacted": actor.can(Permission.EXPORT_UNREDACTED),
    })


@router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request,
               actor: AuditReader) -> Response:
    if (refused := gate(request, actor, Permission.AUDIT_VIEW)) is not None:
        return refused
    assert actor is not None
    return _render(request, actor, "audit", "Audit log", {})


@router.get("/system", response_class=HTMLResponse)
def system_page(request: Request,
                actor: SystemReader) -> Response:
    if (refused := gate(request, actor, Permission.SYSTEM_VIEW)) is not None:
        return refused
    assert actor is not None
    node = get_node(request)
    status = node_status(node, actor)
    config = node.config
    cameras = [
        {"name": name, "site": cam.site, "location": cam.location.value, "purpose": cam.purpose,
         "enabled": cam.enabled, "record": cam.record.mode.value,
         "segment_seconds": cam.record.segment_seconds,
         "retention_hours": config.retention_hours(name),
         "analytics": cam.analytics.enabled, "privacy_zones": len(cam.privacy_zones)}
        for name, cam in config.cameras.items() if actor.sees_camera(name)
    ]
    users = [u.public() for u in Users(node.store).list(within=actor.cameras)]
    risk = camera_risk(node.layout.root, config)
    risk["cameras"] = [c for c in risk["cameras"] if actor.sees_camera(c["camera"])]
    return templates.TemplateResponse(request, "system.html", {
        "actor": actor, "nav": nav_for(actor), "page": "system", "title": "System",
        "node_name": config.node.name, "data": {}, "status": status, "cameras": cameras,
        "users": users, "profile": config.profile.value, "camera_risk": risk,
        "retention": {"default_hours": config.retention.default_hours,
                      "ceiling_days": config.retention.ceiling_days,
                      "quota": config.storage.quota, "min_free": config.storage.min_free},
        "fmt_bytes": _fmt_bytes, "fmt_duration": _fmt_duration,
        "time_zone": site_zone(config.node.timezone).describe(),
    })


def _fmt_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _fmt_bytes(n: float | None) -> str:
    if n is None:
        return "—"
    units = ["B", "kB", "MB", "GB", "TB"]
    i = 0
    value = float(n)
    while value >= 1000 and i < len(units) - 1:
        value /= 1000
        i += 1
    return f"{value:.1f} {units[i]}" if i else f"{int(value)} B"
