"""Live video by stream copy over a WebSocket (custodes.live.stream), for roles allowed to see
originals; everyone else has the redacted live pictures of api/routes/video.py.

    GET /api/cameras/{camera}/live/stream?stream=sub|main   (WebSocket)

Guarded like every route, but by hand: a WebSocket is not an HTTP route, so the dependencies
of api/deps.py do not apply. In order:

0. API tokens are refused (HTTP 401 with the reason; audited when the token is valid). This is
   a person's view in a browser, on purpose: a browser's WebSocket cannot send an
   Authorization header (a token would have to travel in the URL, into logs and histories),
   the CSRF check below and the watermark and device policy of the pages are a browser's, and
   a script has the audited per-segment originals (/api/segments/{id}/video) and the redacted
   live pictures (live.jpg) instead.
1. The Origin must be this server's own (a page of another site must not open it with the
   viewer's cookie): refused before the handshake completes, so another site learns nothing.
2. The session cookie must be valid (else close 4401), the role must hold live.view and be
   allowed originals (custodes.live.stream.originals_allowed), the camera must be among the
   user's (else 4403, audited as refusals are), and the camera must exist (4404).
3. The first message must be the session's CSRF token, as every state-changing request
   carries it (else 4403, audited).
4. Watching is audited as ``live.original``, once per session, camera and hour.

Then the server sends JSON text messages (``state``, ``init``, ``clock``) and binary ones
(the init segment, then one fragment per frame). The session is looked at again every
RECHECK seconds: a signed-out, disabled or re-roled user's video stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import json
import logging
import time
from typing import TYPE_CHECKING, Annotated, Final
from urllib.parse import urlsplit

from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from pydantic import StringConstraints
from starlette.concurrency import run_in_threadpool

from custodes.api.deps import SESSION_COOKIE, get_node, get_sessions
from custodes.api.routes.video import WatchLog, _app_part
from custodes.audit.actions import Action
from custodes.auth.roles import Actor, Permission
from custodes.auth.sessions import SessionInfo
from custodes.auth.users import PASSWORD_FIRST
from custodes.config import NAME_PATTERN
from custodes.live.stream import (
    Busy,
    StreamKind,
    Viewer,
    originals_allowed,
)

if TYPE_CHECKING:
    from custodes.app import Node

log = logging.getLogger(__name__)

router = APIRouter(tags=["video"])

CameraName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
ORIGINAL_AUDIT_EVERY: Final = 3600.0  # one "live.original" per session and camera an hour
CSRF_WAIT: Final = 5.0  # seconds the client has to send its CSRF token
RECHECK: Final = 30.0  # seconds between looks at the session while streaming
MAX_CLIENT_MESSAGE: Final = 4096  # bytes; the client only ever sends its token

# Close codes (4000-4999 are the application's; the browser gets them with the reason).
SIGN_IN: Final = 4401
FORBIDDEN: Final = 4403
NOT_FOUND: Final = 4404
TRY_LATER: Final = 1013  # RFC 6455: try again later (server busy)
NO_TOKENS: Final = ("API tokens do not open live video: it is watched signed in, in a browser "
                    "(scripts: /api/segments/{id}/video, or live.jpg)")
RESTART: Final = 1012  # RFC 6455: service restart (the stream was stopped; reconnect)


class OriginalsWatched(WatchLog):
    """Who watches which camera's original video, so that it is audited once an hour."""

    def __init__(self) -> None:
        super().__init__(ORIGINAL_AUDIT_EVERY)


def same_origin(websocket: WebSocket) -> bool:
    """Whether the handshake's Origin is this server as the client reached it (Host)."""
    origin = websocket.headers.get("origin")
    host = websocket.headers.get("host")
    if not origin or not host:
        return False
    parts = urlsplit(origin)
    scheme = "https" if websocket.url.scheme == "wss" else "http"
    return parts.scheme == scheme and parts.netloc.lower() == host.lower()


def _address(websocket: WebSocket) -> str:
    return websocket.client.host if websocket.client else "unknown"


def _session(websocket: WebSocket) -> SessionInfo | None:
    cookie = websocket.cookies.get(SESSION_COOKIE)
    return get_sessions(websocket).lookup(cookie) if cookie else None  # type: ignore[arg-type]


def _judge(node: Node, actor: Actor, camera: str, path: str, *, must_change: bool = False
           ) -> tuple[int, str] | None:
    """Why ``actor`` may not watch ``camera``'s original video (a close code and reason,
    refusals audited), or None when they may."""
    if camera not in node.config.cameras or camera not in node.live_streams.sources():
        return NOT_FOUND, f"no camera named {camera!r}"
    if must_change:
        # As every HTTP route (custodes.api.deps): nothing before the user's own password.
        node.audit.record_refusal(actor.name, Action.ACCESS, path, "password change required",
                                  detail={"method": "WEBSOCKET"}, address=actor.address)
        return FORBIDDEN, PASSWORD_FIRST
    if not actor.can(Permission.LIVE_VIEW) or not originals_allowed(actor):
        reason = f"the {actor.role.value} role may not see original video"
        node.audit.record_refusal(actor.name, Action.ACCESS, path, reason,
                                  detail={"method": "WEBSOCKET",
                                          "permission": Permission.PLAYBACK_UNREDACTED.value},
                                  address=actor.address)
        return FORBIDDEN, reason
    if not actor.sees_camera(camera):
        node.audit.record_refusal(actor.name, Action.CAMERA_ACCESS, camera,
                                  "not among the user's cameras", address=actor.address)
        return FORBIDDEN, f"you have no access to camera {camera!r}"
    return None


@router.websocket("/api/cameras/{camera}/live/stream")
async def live_stream(
    websocket: WebSocket,
    camera: CameraName,
    stream: Annotated[StreamKind, Query(description="sub: the grid; main: one camera")] = (
        StreamKind.SUB),
) -> None:
    """The camera's own video, stream-copied as fragmented MP4 (see the module doc)."""
    node = get_node(websocket)  # type: ignore[arg-type]
    path = websocket.url.path
    if "authorization" in websocket.headers:  # a script's token: see the module doc (0.)
        await run_in_threadpool(_refuse_token, node, websocket, path)
        await _deny(websocket, 401, NO_TOKENS)
        return
    if not same_origin(websocket):
        info = await run_in_threadpool(_session, websocket)
        if info is not None:
            await run_in_threadpool(
                node.audit.record_refusal, info.user.name, Action.ACCESS, path,
                "a live video WebSocket opened from another origin",
                detail={"origin": websocket.headers.get("origin", "")[:200]},
                address=_address(websocket))
        await websocket.close(code=FORBIDDEN)  # before accepting: an HTTP 403
        return
    info = await run_in_threadpool(_session, websocket)
    await websocket.accept()
    if info is None:
        await _close(websocket, SIGN_IN, "sign in first")
        return
    actor = info.user.actor(_address(websocket))
    refused = await run_in_threadpool(functools.partial(
        _judge, node, actor, camera, path, must_change=info.user.must_change_password))
    if refused is not None:
        await _close(websocket, refused[0], refused[1])
        return
    if not await _csrf_ok(websocket, info):
        await run_in_threadpool(
            node.audit.record_refusal, actor.name, Action.ACCESS, path,
            "missing or wrong CSRF token", detail={"method": "WEBSOCKET"},
            address=actor.address)
        await _close(websocket, FORBIDDEN, "missing or wrong CSRF token")
        return
    watched: OriginalsWatched = _app_part(websocket, "live_originals",  # type: ignore[arg-type]
                                          OriginalsWatched)
    if watched.due(info.token_hash, camera, time.time()):
        # Written before any video is sent: if it cannot be written, nothing is sent.
        await run_in_threadpool(node.audit.record, actor.name, Action.LIVE_ORIGINAL, camera,
                                detail={"stream": stream.value}, address=actor.address)
    await _serve(websocket, node, camera, stream, info)


def _refuse_token(node: Node, websocket: WebSocket, path: str) -> None:
    """Audits the refusal when the token names a user (an unknown token names nobody)."""
    scheme, _, token = websocket.headers.get("authorization", "").partition(" ")
    found = (get_sessions(websocket).token_lookup(token.strip())  # type: ignore[arg-type]
             if scheme.lower() == "bearer" and token.strip() else None)
    if found is not None:
        node.audit.record_refusal(found[0].name, Action.ACCESS, path, NO_TOKENS,
                                  detail={"method": "WEBSOCKET"}, address=_address(websocket))


async def _deny(websocket: WebSocket, status: int, reason: str) -> None:
    """Refuses the handshake with an HTTP answer that says why; a server that cannot send
    one (no ASGI denial-response extension) answers a bare 403."""
    try:
        await websocket.send_denial_response(JSONResponse({"detail": reason},
                                                          status_code=status))
    except RuntimeError:
        await websocket.close(code=SIGN_IN)


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    # A close frame's reason holds at most 123 bytes; a camera's name could make it longer.
    await websocket.close(code=code, reason=reason.encode()[:123].decode("utf-8", "ignore"))


async def _csrf_ok(websocket: WebSocket, info: SessionInfo) -> bool:
    try:
        text = await asyncio.wait_for(websocket.receive_text(), CSRF_WAIT)
        sent = json.loads(text[:MAX_CLIENT_MESSAGE]).get("csrf", "")
    except (TimeoutError, ValueError, AttributeError, KeyError, WebSocketDisconnect):
        return False
    return isinstance(sent, str) and hmac.compare_digest(sent.encode(), info.csrf.encode())


async def _serve(websocket: WebSocket, node: Node, camera: str, kind: StreamKind,
                 info: SessionInfo) -> None:
    streams = node.live_streams
    viewer = Viewer(asyncio.get_running_loop())
    try:
        upstream = streams.subscribe(camera, kind, viewer)
    except Busy as exc:
        await _close(websocket, TRY_LATER, f"server busy: {exc}")
        return
    except KeyError:  # removed or disabled since it was checked
        await _close(websocket, NOT_FOUND, f"no camera named {camera!r}")
        return
    tasks = [asyncio.create_task(_send(websocket, viewer)),
             asyncio.create_task(_listen(websocket)),
             asyncio.create_task(_recheck(websocket, node, camera, info))]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            closing = task.result()
            if closing is not None:
                with contextlib.suppress(Exception):
                    await _close(websocket, closing[0], closing[1])
    finally:
        for task in tasks:
            task.cancel()
        streams.unsubscribe(upstream, viewer)


async def _send(websocket: WebSocket, viewer: Viewer) -> tuple[int, str] | None:
    try:
        while not viewer.closed:
            message = await viewer.get()
            if isinstance(message.data, bytes):
                await websocket.send_bytes(message.data)
            else:
                await websocket.send_text(json.dumps(message.data))
            if message.final:  # the stream was stopped (the camera removed, the node stopping)
                return RESTART, "live video stopped"
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass  # the viewer went away
    return None


async def _listen(websocket: WebSocket) -> tuple[int, str] | None:
    """Until the client goes: what it sends is not used (it may say it is still there)."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
    return None


async def _recheck(websocket: WebSocket, node: Node, camera: str,
                   info: SessionInfo) -> tuple[int, str] | None:
    """Ends the video when the session ends or the user may no longer watch originals."""
    while True:
        await asyncio.sleep(RECHECK)
        now = await run_in_threadpool(_session, websocket)
        if now is None or now.token_hash != info.token_hash:
            return SIGN_IN, "the session ended"
        actor = now.user.actor(_address(websocket))
        refused = await run_in_threadpool(_judge, node, actor, camera, websocket.url.path)
        if refused is not None:
            return refused
