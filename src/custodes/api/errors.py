"""Errors as JSON with a reason: 4xx for anything a client got wrong, never a traceback.

The one exception: a browser asking for a page that does not exist (Accept: text/html, a path
outside /api/) gets a small HTML "not found" page rather than raw JSON.

An unexpected exception becomes 500 {"detail": "internal error", "id": ...}; the traceback goes
to the server log under the same id, so an administrator can find it and a client learns
nothing about the internals.
"""

from __future__ import annotations

import logging
import uuid
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

# A browser that follows a stale link gets a page it can leave by; the JSON stays for the API.
_pages = Jinja2Templates(directory=str(resources.files("custodes").joinpath("web/templates")))


def _plain(errors: Any) -> list[dict[str, Any]]:
    """Validation errors without the echoed input or context objects (which may not be JSON)."""
    return [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type", "")}
        for e in errors
    ]


def _wants_page(request: Request) -> bool:
    """A browser navigating (it asks for HTML), not a script calling the API."""
    return not request.url.path.startswith("/api/") and \
        "text/html" in request.headers.get("accept", "")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404 and _wants_page(request):
        node = getattr(request.app.state, "node", None)
        return _pages.TemplateResponse(request, "not_found.html", {
            "path": request.url.path,
            "node_name": node.config.node.name if node is not None else "",
        }, status_code=404)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code,
                        headers=getattr(exc, "headers", None))


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": _plain(exc.errors())}, status_code=422)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    incident = str(uuid.uuid4())
    log.error("internal error %s on %s %s", incident, request.method, request.url.path,
              exc_info=exc)
    return JSONResponse({"detail": "internal error", "id": incident}, status_code=500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
