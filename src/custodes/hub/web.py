"""The hub's web pages, on the node's rules: the same sign-in API (``/api/auth``: sessions,
CSRF on every state-changing request, password first, throttled and audited sign-ins), the
same roles and permissions, the same look (the node's templates and static files), refusals
recorded in an audit log.

The hub's own users, sessions and audit log live in a small node-format SQLite database in
its data folder (``web/hub.sqlite``), signed with the hub's own key (``keys/``): the code that
guards a node guards the hub, unchanged. At the first start an ``admin`` is created with a
random password, printed once, to be changed at the first sign-in.

Pages: the fleet by municipality (``/``), a site (``/sites/{name}``), the events across
sites with filters (``/events``, metadata only: sites send no picture and no descriptor), the
alarms (``/alarms``); ``/metrics`` in Prometheus' text format for an API token of a role that may
view the system (``Authorization: Bearer``). A user limited to some municipalities (groups)
sees only their sites on every one of these (``hub/scope.py``). The users (``/users``,
administrators): roles and groups, a user's groups set through ``PUT
/api/users/{name}/groups`` under the command line's rule (``scope.change_groups``).
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlencode

import jinja2
import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from pydantic import BaseModel, ConfigDict, Field

from custodes.api import deps, errors
from custodes.api.app import SecurityHeaders
from custodes.api.bodies import BodyGuard
from custodes.api.routes import auth as auth_routes
from custodes.audit.actions import Action
from custodes.audit.log import AuditLog
from custodes.auth.roles import Actor, Permission
from custodes.auth.sessions import Sessions
from custodes.auth.throttle import LoginThrottle
from custodes.auth.users import MIN_PASSWORD, USER_NAME, Users, ensure_admin
from custodes.events.types import EventKind
from custodes.hub import db, events_page, fleet, scope
from custodes.keys import NodeKeys
from custodes.privacy.policy import Refused
from custodes.store.db import Store
from custodes.web.pages import NavItem  # the node's menu entries: one look, one rule

if TYPE_CHECKING:
    from custodes.hub.service import Hub

SESSION_HOURS = 12.0


@dataclass
class HubAccounts:
    """What the node's auth code finds on ``app.state.node``: a store and an audit log."""

    store: Store
    audit: AuditLog

    @classmethod
    def open(cls, folder: Path) -> HubAccounts:
        keys = NodeKeys.load_or_create(folder / "keys")
        store = Store(folder / "web" / "hub.sqlite")
        store.open()
        scope.ensure_table(store)
        return cls(store, AuditLog(store, keys))


NAV = (
    NavItem("fleet", "/", "Fleet", Permission.STATUS_VIEW),
    NavItem("events", "/events", "Events", Permission.EVENTS_VIEW),
    NavItem("alarms", "/alarms", "Alarms", Permission.STATUS_VIEW),
    NavItem("users", "/users", "Users", Permission.USERS_MANAGE),
)


def page(permission: Permission | None) -> Callable[[Request], Actor | None]:
    """A page's dependency: the signed-in actor or None (the page redirects to sign-in),
    declaring ``permission`` as the node's pages do."""
    def dependency(request: Request) -> Actor | None:
        return deps.page_actor(request)

    deps.declare_access(dependency, permission if permission is not None else deps.SIGNED_IN)
    return dependency


# Module level: FastAPI resolves these annotations by name in this module.
Viewer = Annotated[Actor | None, Depends(page(Permission.STATUS_VIEW))]
EventsReader = Annotated[Actor | None, Depends(page(Permission.EVENTS_VIEW))]
SignedIn = Annotated[Actor | None, Depends(page(None))]
Administrator = Annotated[Actor | None, Depends(page(Permission.USERS_MANAGE))]
MetricsReader = Annotated[Actor, Depends(deps.require(Permission.SYSTEM_VIEW))]
Manager = Annotated[Actor, Depends(deps.require(Permission.USERS_MANAGE))]
UserName = Annotated[str, PathParam(pattern=USER_NAME, description="User name")]


class GroupsChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    groups: list[Annotated[str, Field(max_length=scope.MAX_GROUP)]] | None = Field(
        max_length=1000, description="The municipalities the user may see; null or []: all")


def _when(t: float | None) -> str:
    if t is None:
        return "never"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(t: float | None) -> str:
    if t is None:
        return "never"
    s = max(0.0, time.time() - t)
    if s < 120:
        return f"{s:.0f} s ago"
    if s < 7200:
        return f"{s / 60:.0f} min ago"
    if s < 172800:
        return f"{s / 3600:.0f} h ago"
    return f"{s / 86400:.0f} days ago"


def _site_time(t: float | None, zone: str) -> str:
    """``t`` in a site's zone, 24-hour, with the zone's name, as the node shows it."""
    return fleet.zone_of(zone).text(t, zone=True)


def _duration(start: float, end: float | None) -> str:
    if end is None:
        return "ongoing"
    s = max(0.0, end - start)
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min"


def _fleet_rows(rows: list[fleet.SiteRow]) -> Markup:
    """A group's table rows on the overview. Written here rather than in the template: for
    the city's 800 sites Jinja's loop (~11,000 autoescaped outputs) was half of the page's
    time; here only the strings from the database are escaped, numbers are formatted."""
    def pct(x: float | None, digits: int) -> str:
        return "—" if x is None else f"{100 * x:.{digits}f} %"

    out = []
    for r in rows:
        name = html.escape(r.name)
        chain = (f"<b>broken at {r.chain_broken_at}</b>" if r.chain_broken_at is not None
                 else f"verified to {r.audit_verified}")
        kept = "—" if r.retention_hours is None else f"{r.retention_hours:.1f} h"
        limit = "—" if r.retention_limit is None else f"{r.retention_limit:.0f} h"
        out.append(
            f'<tr data-site="{name}" class="{"bad" if r.alarms or not r.online else ""}">'
            f'<td><a href="/sites/{name}">{name}</a></td>'
            f'<td>{_ago(r.last_heard)}{"" if r.online else " <b>offline</b>"}</td>'
            f"<td>{r.recording} / {r.down}</td><td>{pct(r.coverage_24h, 1)}</td>"
            f"<td>{kept} / {limit}</td><td>{pct(r.disk_used, 0)}</td><td>{r.backlog}</td>"
            f"<td>{chain}</td><td>{r.alarms}</td></tr>")
    return Markup("\n".join(out))  # noqa: S704 - every string from outside escaped above


def _templates() -> Jinja2Templates:
    node_templates = resources.files("custodes").joinpath("web/templates")
    hub_templates = Path(__file__).parent / "templates"
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader([jinja2.FileSystemLoader(str(hub_templates)),
                                    jinja2.FileSystemLoader(str(node_templates))]),
        autoescape=True)
    env.globals.update(when=_when, ago=_ago, site_time=_site_time, duration=_duration,
                       fleet_rows=_fleet_rows)
    return Jinja2Templates(env=env)


def create_hub_app(hub: Hub, accounts: HubAccounts) -> FastAPI:  # noqa: PLR0915 - routes
    """The hub's application; its routes are closures over ``hub`` and ``accounts``."""
    app = FastAPI(title="custodes hub", docs_url=None, redoc_url=None,
                  openapi_url="/api/openapi.json")
    app.state.node = accounts  # the node's auth routes record through .audit
    app.state.users = Users(accounts.store)
    app.state.sessions = Sessions(accounts.store, SESSION_HOURS)
    app.state.throttle = LoginThrottle.stored(accounts.store)
    app.state.secure_cookies = False
    errors.install(app)
    app.include_router(auth_routes.router)
    templates = _templates()
    silent = hub.settings.silent_after_seconds

    def render(request: Request, actor: Actor, page: str, title: str,
               data: dict[str, Any], *, view: dict[str, Any] | None = None,
               status_code: int = 200, site_tz: str = "UTC") -> HTMLResponse:
        """``data`` goes to the page's scripts as JSON (the node's templates read it);
        ``view`` is what the hub's own templates render on the server."""
        return templates.TemplateResponse(request, f"{page}.html", {
            "actor": actor, "nav": [n for n in NAV if actor.can(n.permission)],
            "page": page, "title": title, "node_name": "hub", "site_tz": site_tz,
            "data": data, "view": view or {}}, status_code=status_code)

    def gate(request: Request, actor: Actor | None, permission: Permission) -> Response | None:
        if actor is None:
            return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
        if actor.can(permission):
            return None
        accounts.audit.record_refusal(
            actor.name, Action.ACCESS, request.url.path, None,
            detail={"method": request.method, "permission": permission.value},
            address=actor.address)
        return render(request, actor, "denied", "Not allowed", {
            "reason": f"the {actor.role.value} role lacks the permission "
                      f"{permission.value!r}"}, status_code=403)

    def limits(actor: Actor) -> scope.Scope:
        """The municipalities ``actor`` may see (hub/scope.py)."""
        return scope.scope_of(accounts.store, actor.name)

    @app.get("/login", dependencies=[Depends(deps.public)], response_class=HTMLResponse)
    def login(request: Request, next: str = "/") -> HTMLResponse:
        from custodes.web.pages import safe_next  # noqa: PLC0415 - the node's, same rule

        return templates.TemplateResponse(request, "login.html", {
            "node_name": "hub", "data": {"next": safe_next(next)}})

    @app.get("/account/password", response_class=HTMLResponse)
    def password(request: Request, actor: SignedIn) -> Response:
        if actor is None:
            return RedirectResponse("/login?next=/account/password", status_code=303)
        user = Users(accounts.store).get(actor.name)
        return render(request, actor, "password", "Password", {
            "me": actor.name, "min": MIN_PASSWORD,
            "forced": bool(user and user.must_change_password)})

    @app.get("/", response_class=HTMLResponse)
    def overview(request: Request, actor: Viewer) -> Response:
        refused = gate(request, actor, Permission.STATUS_VIEW)
        if refused is not None or actor is None:
            return refused or RedirectResponse("/login", status_code=303)
        mine = limits(actor).sql
        with db.connect(hub.db_url) as conn:
            rows = fleet.sites(conn, silent, groups=mine)
            open_alarms = fleet.alarms(conn, open_only=True, limit=20, groups=mine)
        return render(request, actor, "hub_fleet", "Fleet", {}, view={
            "groups": fleet.groups(rows), "sites": len(rows),
            "online": sum(r.online for r in rows), "alarms": open_alarms})

    @app.get("/sites/{name}", response_class=HTMLResponse)
    def site(request: Request, name: str, actor: Viewer) -> Response:
        refused = gate(request, actor, Permission.STATUS_VIEW)
        if refused is not None or actor is None:
            return refused or RedirectResponse("/login", status_code=303)
        with db.connect(hub.db_url) as conn:
            rows = fleet.sites(conn, silent, name)
            scope_ = limits(actor)
            if not rows and scope_.groups is None:
                return render(request, actor, "denied", "No such site",
                              {"reason": f"no site is enrolled as {name!r}"}, status_code=404)
            if not rows or not scope_.allows(rows[0].group):
                # A limited user gets the same answer for another municipality's site and for
                # a name no site has: a 404 for the second would let them probe names.
                reason = f"the site is not in the municipalities {actor.name!r} may see"
                accounts.audit.record_refusal(actor.name, Action.ACCESS, request.url.path,
                                              reason, address=actor.address)
                return render(request, actor, "denied", "Not allowed", {"reason": reason},
                              status_code=403)
            detail = fleet.site_detail(conn, name)
            site_alarms = fleet.alarms(conn, site=name, limit=50)
            row = conn.execute("SELECT health FROM sites WHERE name = %s", (name,)).fetchone()
            health: dict[str, Any] = dict(row[0] or {}) if row else {}  # type: ignore[call-overload]
        return render(request, actor, "hub_site", name, {"site": name}, view={
            "site": rows[0], "detail": detail, "alarms": site_alarms,
            "cameras": health.get("cameras") or {}})

    @app.get("/events", response_class=HTMLResponse)
    def event_list(request: Request, actor: EventsReader,  # noqa: PLR0917 - the filters
                   group: str | None = None, site: str | None = None,
                   camera: str | None = None, kind: str | None = None,
                   start: str | None = None, end: str | None = None,
                   before: str | None = None) -> Response:
        refused = gate(request, actor, Permission.EVENTS_VIEW)
        if refused is not None or actor is None:
            return refused or RedirectResponse("/login", status_code=303)
        if actor.cameras is not None:
            # A node account limited to some cameras names them without a site: on the hub
            # that limit cannot be told apart from "every site's cam01", so it is refused.
            reason = "an account limited to some cameras cannot list events across sites"
            accounts.audit.record_refusal(actor.name, Action.CAMERA_ACCESS, request.url.path,
                                          reason, address=actor.address)
            return render(request, actor, "denied", "Not allowed", {"reason": reason},
                          status_code=403)
        given = {"group": group, "site": site, "camera": camera, "kind": kind,
                 "start": start, "end": end}
        asked = {k: v.strip() for k, v in given.items() if v and v.strip()}
        rows: list[fleet.EventRow] = []
        problem: str | None = None
        mine = limits(actor).sql
        with db.connect(hub.db_url) as conn:
            choices = fleet.event_choices(conn, mine)
            zone = events_page.filter_zone(choices, asked.get("group"), asked.get("site"))
            try:
                wanted = events_page.parse(asked, before, zone, mine)
            except events_page.FilterError as exc:
                problem = str(exc)
            else:
                rows = fleet.events(conn, wanted, fleet.EVENTS_PAGE + 1)
            # Another municipality's site: no cameras offered (its events are filtered out).
            cameras = (fleet.site_cameras(conn, asked["site"])
                       if asked.get("site") in choices["zones"] else [])
        more = len(rows) > fleet.EVENTS_PAGE
        rows = rows[:fleet.EVENTS_PAGE]
        older = (f"/events?{urlencode({**asked, 'before': rows[-1].key})}"
                 if more and rows else None)
        return render(request, actor, "hub_events", "Events", {}, site_tz=zone.name, view={
            "rows": rows, "asked": asked, "choices": choices, "cameras": cameras,
            "kinds": [k.value for k in EventKind], "zone": zone.name, "problem": problem,
            "older": older, "paged": before is not None,
        }, status_code=400 if problem else 200)

    @app.get("/alarms", response_class=HTMLResponse)
    def alarm_list(request: Request, actor: Viewer) -> Response:
        refused = gate(request, actor, Permission.STATUS_VIEW)
        if refused is not None or actor is None:
            return refused or RedirectResponse("/login", status_code=303)
        with db.connect(hub.db_url) as conn:
            rows = fleet.alarms(conn, groups=limits(actor).sql)
        return render(request, actor, "hub_alarms", "Alarms", {}, view={"alarms": rows})

    @app.get("/users", response_class=HTMLResponse)
    def user_list(request: Request, actor: Administrator) -> Response:
        refused = gate(request, actor, Permission.USERS_MANAGE)
        if refused is not None or actor is None:
            return refused or RedirectResponse("/login", status_code=303)
        mine = limits(actor)
        limited = scope.scopes(accounts.store)
        with db.connect(hub.db_url) as conn:
            enrolled = {str(r[0]) for r in conn.execute("SELECT DISTINCT grp FROM sites")}
        # A limited administrator sees the users within their groups only, and is offered
        # only their groups (scope.change_groups refuses the others anyway).
        rows = []
        offered = set(enrolled)  # and the groups users have, enrolled or not yet
        for user in Users(accounts.store).list():
            seen = limited.get(user.name, scope.EVERYTHING)
            if not mine.covers(seen):
                continue
            state = "disabled" if user.disabled else (
                "enabled, must choose a password" if user.must_change_password else "enabled")
            rows.append({"name": user.name, "role": user.role.value, "state": state,
                         "groups": sorted(seen.groups or ()), "own": user.name == actor.name})
            offered |= seen.groups or set()
        choices = sorted(offered if mine.groups is None else offered & mine.groups)
        return render(request, actor, "hub_users", "Users", {}, view={
            "users": rows, "choices": choices})

    @app.put("/api/users/{name}/groups")
    def user_groups(name: UserName, body: GroupsChange, actor: Manager) -> dict[str, Any]:
        """Limit a user to some municipalities (none: every one); administrators only, not
        their own, a limited administrator only within theirs; audited."""
        try:
            groups = scope.change_groups(accounts.store, accounts.audit, actor, name,
                                         body.groups)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        except KeyError as exc:
            raise HTTPException(404, str(exc.args[0])) from None
        except Refused as exc:
            raise HTTPException(403, exc.reason) from None
        return {"name": name, "groups": groups or None}

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics(actor: MetricsReader) -> PlainTextResponse:
        mine = limits(actor).sql
        with db.connect(hub.db_url) as conn:
            values = fleet.metrics(conn, silent, mine)
        if mine is None:  # the hub's own counters are the whole fleet's
            c = hub.counters
            values.update({
                "custodes_hub_ingested_total": float(c.stored),
                "custodes_hub_duplicates_total": float(c.duplicates),
                "custodes_hub_conflicts_total": float(c.conflicts),
                "custodes_hub_ingest_failures_total": float(c.failures),
            })
        lines = []
        for key, value in values.items():
            kind = "counter" if key.endswith("_total") else "gauge"
            lines += [f"# TYPE {key} {kind}", f"{key} {value:g}"]
        return PlainTextResponse("\n".join(lines) + "\n",
                                 media_type="text/plain; version=0.0.4")

    static = resources.files("custodes").joinpath("web/static")
    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    app.add_middleware(BodyGuard, api=app)
    app.add_middleware(SecurityHeaders)
    return app


class HubWebServer:
    """uvicorn in a thread, as the node's ``WebServer``."""

    def __init__(self, hub: Hub) -> None:
        self.accounts = HubAccounts.open(hub.settings.data)
        self.first_admin_password = ensure_admin(self.accounts.store, self.accounts.audit)
        self._server = uvicorn.Server(uvicorn.Config(
            create_hub_app(hub, self.accounts), host=hub.settings.web_host,
            port=hub.settings.web_port, log_level="warning", access_log=False,
            lifespan="off", proxy_headers=False))
        self._thread = threading.Thread(target=self._server.run, name="hub-web", daemon=True)

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the hub's web server could not start (port in use?)")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        host, port = self._server.servers[0].sockets[0].getsockname()[:2]
        return f"http://{host}:{port}/"

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self.accounts.store.close()
