"""The web application: every API router, the pages, and what guards them all.

Routers are found, not listed: every module in ``custodes.api.routes`` (JSON) and then in
``custodes.web`` (pages) that defines ``router`` is included. In front of
them sit the client allowlist (addresses outside ``server.allow_networks`` get 403) and a few
security headers; behind them, the JSON error handlers.
"""

from __future__ import annotations

import importlib
import ipaddress
import logging
import pkgutil
import threading
import time
from importlib import resources
from typing import TYPE_CHECKING, ClassVar

from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from custodes.api import errors
from custodes.api.bodies import BodyGuard
from custodes.api.devices import PictureDevices
from custodes.audit.actions import Action
from custodes.audit.log import ANONYMOUS
from custodes.auth.sessions import Sessions
from custodes.auth.throttle import LoginThrottle
from custodes.auth.users import Users

if TYPE_CHECKING:
    from custodes.app import Node

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def create_app(node: Node) -> FastAPI:
    app = FastAPI(
        title="custodes", version="0.1.0",
        description="Network video recorder with accountable face recognition.",
        openapi_url="/api/openapi.json",
        # The interactive docs load scripts from a CDN: a recorder on a closed network has none.
        docs_url=None, redoc_url=None,
    )
    app.state.node = node
    app.state.users = Users(node.store)
    app.state.sessions = Sessions(node.store, node.config.server.session_hours)
    # In the database: a restart (which a crash can cause) lifts no lock-out.
    app.state.throttle = LoginThrottle.stored(node.store)
    app.state.secure_cookies = node.config.server.tls
    errors.install(app)
    for router in _routers():
        app.include_router(router)
    static = resources.files("custodes").joinpath("web/static")
    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    # Outermost last: the allowlist first, then the headers (on refusals too), then bodies.
    app.add_middleware(BodyGuard, api=app)
    app.add_middleware(PictureDevices, api=app, node=node)  # no pictures to phones (profile)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(ClientAllowlist, node=node)
    return app


def _routers() -> list[APIRouter]:
    """Every ``router`` of the modules in custodes.api.routes, then of those in custodes.web."""
    import custodes.api.routes as api_package  # noqa: PLC0415 - the packages are what we walk
    import custodes.web as web_package  # noqa: PLC0415

    found = []
    for package in (api_package, web_package):
        for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            router = getattr(module, "router", None)
            if isinstance(router, APIRouter):
                found.append(router)
    return found


class ClientAllowlist:
    """Refuse (403) clients whose address is outside the configured networks.

    Each refused address is audited once per ``audit_every`` seconds, so a scanner cannot
    flood the audit log.
    """

    def __init__(self, app: ASGIApp, node: Node, audit_every: float = 600.0) -> None:
        self.app = app
        self.node = node
        self.networks: list[Network] = [
            ipaddress.ip_network(n, strict=False) for n in node.config.server.allow_networks
        ]
        self.audit_every = audit_every
        self._last_audit: dict[str, float] = {}
        self._lock = threading.Lock()

    def allowed(self, host: str | None) -> bool:
        if host is None:
            return False
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in net for net in self.networks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        host = client[0] if client else None
        if self.allowed(host):
            await self.app(scope, receive, send)
            return
        await run_in_threadpool(self._audit, host or "unknown", str(scope.get("path", "")))
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        response = JSONResponse(
            {"detail": "your address is not among the networks allowed to use this server"},
            status_code=403,
        )
        await response(scope, receive, send)

    def _audit(self, host: str, path: str) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last_audit.get(host)
            if last is not None and now - last < self.audit_every:
                return
            self._last_audit[host] = now
            if len(self._last_audit) > 10_000:
                self._last_audit.clear()
        log.warning("refused a client outside the allowed networks: %s", host)
        # Synchronous like every audit write; refusals are rare and once per address.
        self.node.audit.record_refusal(ANONYMOUS, Action.CLIENT_REFUSED, path,
                                       "address outside server.allow_networks", address=host)


class SecurityHeaders:
    """Headers that keep pages out of frames and responses out of shared caches."""

    HEADERS: ClassVar[dict[str, str]] = {
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
    }

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_api = str(scope.get("path", "")).startswith("/api/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.HEADERS.items():
                    headers.setdefault(name, value)
                if is_api:
                    headers.setdefault("Cache-Control", "no-store")
            await send(message)

        await self.app(scope, receive, send_with_headers)
