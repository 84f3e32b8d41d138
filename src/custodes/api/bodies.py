"""Request bodies: refused before they are read when nobody signed in sent them, and cut off
at a size fixed per route.

FastAPI reads and parses a route's body before its dependencies (sign-in among them) run:
without this layer, an anonymous 2 GB multipart to /api/cases is spooled to a temporary file
before the 401, and a 400 MB JSON sign-in is held in memory several times over. So, in front
of the routes:

- a request with a body (a Content-Length above 0, or any Transfer-Encoding) to a route that
  is not public gets 401 unless its session cookie or bearer token is valid, and not one byte
  of the body is read;
- a body larger than its route's limit gets 413: at once when Content-Length says so, else
  (chunked, without a length) as soon as the bytes received so far pass it, counted as they
  arrive, before the route has kept more than the limit.

The limit of a route follows from what it takes: ``JSON_BODY`` for anything without a file
field, and for a route with photo fields ``MAX_PHOTO_BYTES`` per photo (``MAX_PHOTOS`` for a
list of them) plus ``FORM_OVERHEAD`` for the other fields. Refusals close the connection, so
a client still sending is cut off rather than drained.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from fastapi import UploadFile
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import cookie_parser
from starlette.responses import JSONResponse
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from custodes.api.deps import PUBLIC, SESSION_COOKIE, access_of
from custodes.api.routes.cases import MAX_PHOTO_BYTES, MAX_PHOTOS

if TYPE_CHECKING:
    from fastapi import FastAPI
    from fastapi.dependencies.models import Dependant

    from custodes.auth.sessions import Sessions

JSON_BODY: Final = 64 * 1024  # bytes: the largest JSON request any route needs is a few KiB
FORM_OVERHEAD: Final = 64 * 1024  # bytes: a multipart's text fields and part headers


@dataclass(frozen=True)
class BodyRule:
    limit: int  # bytes
    public: bool  # open to anyone: its body is read without a sign-in


DEFAULT_RULE: Final = BodyRule(JSON_BODY, public=False)


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than the {_size(limit)} this route "
                              "accepts")


def _size(n: int) -> str:
    return f"{n // 2**20} MiB" if n >= 2**20 else f"{n // 1024} KiB"


def _uploads(annotation: Any) -> int:
    """How many files a body field of this type can carry: 0, 1, or MAX_PHOTOS for a list."""
    if isinstance(annotation, type) and issubclass(annotation, UploadFile):
        return 1
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (list, tuple, set, frozenset, Sequence):
        return MAX_PHOTOS * max((_uploads(a) for a in args), default=0)
    return max((_uploads(a) for a in args), default=0)  # Annotated, Optional, unions


def _body_params(dependant: Dependant) -> list[Any]:
    found = list(dependant.body_params)
    for sub in dependant.dependencies:
        found += _body_params(sub)
    return found


def rule_for(route: RouteContext) -> BodyRule:
    """A route's body limit and whether it is public (see the module's description)."""
    dependant = route.dependant
    files = sum(_uploads(f.field_info.annotation) for f in _body_params(dependant))
    limit = files * MAX_PHOTO_BYTES + FORM_OVERHEAD if files else JSON_BODY
    return BodyRule(limit, PUBLIC in access_of(dependant))


def body_rules(api: FastAPI) -> list[tuple[RouteContext, BodyRule]]:
    """Every API route of ``api`` (however deeply included) with its rule."""
    return [(ctx, rule_for(ctx)) for ctx in iter_route_contexts(api.routes)
            if isinstance(ctx.original_route, APIRoute)]


class BodyGuard:
    """ASGI middleware: see the module's description. ``api`` is the FastAPI application whose
    routes decide the limits (read at the first request, once every router is included)."""

    def __init__(self, app: ASGIApp, api: FastAPI) -> None:
        self.app = app
        self.api = api
        self._rules: list[tuple[RouteContext, BodyRule]] | None = None

    def rule(self, scope: Scope) -> BodyRule:
        if self._rules is None:
            self._rules = body_rules(self.api)
        for route, rule in self._rules:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return rule
        return DEFAULT_RULE

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        length = headers.get("content-length")
        chunked = "transfer-encoding" in headers
        try:
            declared = int(length) if length is not None else None
        except ValueError:
            declared = None  # the server refuses a malformed length before we are called
        if not chunked and not declared:
            await self.app(scope, receive, send)  # no body: nothing to guard
            return
        rule = self.rule(scope)
        # Sign-in first: an anonymous client learns nothing of a route's limits.
        if not rule.public and not await run_in_threadpool(_signed_in, self.api, headers):
            await _refuse(scope, receive, send, HTTPException(401, "sign in first"))
            return
        if declared is not None and declared > rule.limit:
            await _refuse(scope, receive, send, BodyTooLarge(rule.limit))
            return
        await self._limited(scope, receive, send, rule.limit)

    async def _limited(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        received = 0
        over = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True
                    raise BodyTooLarge(limit)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if over and not started:
                # The route's parser may have turned our exception into a 400 of its own
                # (FastAPI does for JSON): whatever it answers, the answer is 413.
                if message["type"] == "http.response.start":
                    started = True
                    await _refuse(scope, receive, send, BodyTooLarge(limit))
                return
            if over:
                return  # the rest of the replaced answer
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except BodyTooLarge as exc:
            # Started: either our 413 is already out, or the route answered before reading
            # its whole body (none does) and its answer is cut short; nothing more to send.
            if not started:
                await _refuse(scope, receive, send, exc)


def _signed_in(api: FastAPI, headers: Headers) -> bool:
    """Whether the request carries a valid bearer token or session cookie (the route checks
    again, with CSRF and permissions; this only decides whether its body may be read)."""
    sessions: Sessions = api.state.sessions
    authorization = headers.get("authorization")
    if authorization is not None:
        scheme, _, token = authorization.partition(" ")
        return scheme.lower() == "bearer" and bool(token.strip()) \
            and sessions.token_user(token.strip()) is not None
    cookie = cookie_parser(headers.get("cookie", "")).get(SESSION_COOKIE)
    return cookie is not None and bool(cookie) and sessions.lookup(cookie) is not None


async def _refuse(scope: Scope, receive: Receive, send: Send, exc: HTTPException) -> None:
    # Connection: close ends the request here: the server stops reading what the client is
    # still sending instead of draining it.
    response = JSONResponse({"detail": exc.detail}, status_code=exc.status_code,
                            headers={"Connection": "close"})
    await response(scope, receive, send)
