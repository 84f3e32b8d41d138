"""The node's web server: for now a read-only status page and its JSON.

It listens on 127.0.0.1 unless configured otherwise and shows no pictures; the full API with
authentication and roles builds on this app.
"""

from __future__ import annotations

import logging
import threading
import time
from importlib import resources
from typing import TYPE_CHECKING, Any

import uvicorn
from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from custodes.api.status import node_status

if TYPE_CHECKING:
    from custodes.app import Node

log = logging.getLogger(__name__)


def create_app(node: Node) -> FastAPI:
    app = FastAPI(title="custodes", version="0.1.0", docs_url=None, redoc_url=None)
    page = resources.files("custodes.api").joinpath("templates/status.html").read_text("utf-8")

    @app.get("/api/status")
    def status() -> dict[str, Any]:
        """Cameras with their health and recordings, and disk use."""
        return node_status(node)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    return app


class WebServer:
    """uvicorn in a background thread, stoppable with the node."""

    def __init__(self, node: Node) -> None:
        cfg = node.config.server
        self._server = uvicorn.Server(uvicorn.Config(
            create_app(node), host=cfg.host, port=cfg.port, log_level="warning",
            access_log=False, lifespan="off",
        ))
        self._thread = threading.Thread(target=self._server.run, name="web", daemon=True)

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the web server could not start (is the port in use?)")
            time.sleep(0.05)
        log.info("web server at %s", self.url)

    @property
    def url(self) -> str:
        sock = self._server.servers[0].sockets[0]
        host, port = sock.getsockname()[:2]
        return f"http://{host}:{port}/"

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
