"""The profile's device policy at the door: no picture or video leaves for a phone where the
profile forbids it (custodes.privacy.devices says what a phone is and what each profile allows).

One rule for every route rather than a check in each: every URL that sends a picture or video
ends in one of PICTURE_ENDINGS (``live.jpg``, ``snapshot.jpg``, ``/video``, ``/redacted``,
``/download``, ``/live/stream`` ...), and tests/test_browser_phone.py holds every route whose
documented response is an image, a video or a zip to that rule, so a new picture route cannot
slip past it. Pages that show pictures answer with an explanation instead
(custodes.web.pages.device_gate).

A refusal is audited (``device.refused``) once per user and ten minutes: a page's tiles
would otherwise write one entry per picture. Requests without a valid session or token pass
through to the route, which answers 401 as always.
"""

from __future__ import annotations

import re
import threading
import time
from typing import TYPE_CHECKING, Final

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from custodes.api.deps import SESSION_COOKIE
from custodes.audit.actions import Action
from custodes.auth.sessions import Sessions
from custodes.privacy.devices import ClientSeen, classify, picture_refusal

if TYPE_CHECKING:
    from custodes.app import Node

PICTURE_ENDINGS: Final = re.compile(
    r"(\.(jpg|jpeg|png|webp|mp4|zip)|/(video|redacted|download|stream|picture|snapshot)"
    # JSON that carries a picture: the camera stream test answers with a redacted preview;
    # the inspection pack holds each camera's redacted field of view.
    r"|/cameras/test|/inspection/pack)$")


def sends_pictures(path: str) -> bool:
    return PICTURE_ENDINGS.search(path) is not None


class PictureDevices:
    def __init__(self, app: ASGIApp, api: FastAPI, node: Node,
                 audit_every: float = 600.0) -> None:
        self.app = app
        self.api = api
        self.node = node
        self.audit_every = audit_every
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] not in ("http", "websocket") or not sends_pictures(path):
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        seen = classify(conn.headers, conn.cookies)
        reason = picture_refusal(self.node.config.profile, seen)
        user = None if reason is None else await run_in_threadpool(self._user, conn)
        if reason is None or user is None:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        await run_in_threadpool(self._audit, user, path, reason, seen,
                                client[0] if client else None)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 4403, "reason": reason[:120]})
            return
        await JSONResponse({"detail": reason}, status_code=403)(scope, receive, send)

    def _user(self, conn: HTTPConnection) -> str | None:
        sessions: Sessions = self.api.state.sessions
        scheme, _, token = conn.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            found = sessions.token_lookup(token.strip())
            return None if found is None else found[0].name
        cookie = conn.cookies.get(SESSION_COOKIE)
        info = sessions.lookup(cookie) if cookie else None
        return None if info is None else info.user.name

    def _audit(self, user: str, path: str, reason: str, seen: ClientSeen,
               address: str | None) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(user)
            if last is not None and now - last < self.audit_every:
                return
            self._last[user] = now
            if len(self._last) > 10_000:
                self._last.clear()
        self.node.audit.record_refusal(user, Action.DEVICE_REFUSED, path, reason,
                                       detail={"client": seen.kind.value}, address=address)
