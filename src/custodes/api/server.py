"""The node's web server: the API and pages of custodes.api.app, served by uvicorn.

It listens on 127.0.0.1 unless configured otherwise, over HTTPS when a certificate is
configured.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

import uvicorn

from custodes.api.app import create_app

if TYPE_CHECKING:
    from custodes.app import Node

log = logging.getLogger(__name__)

__all__ = ["WebServer", "create_app"]


class WebServer:
    """uvicorn in a background thread, stoppable with the node."""

    def __init__(self, node: Node) -> None:
        cfg = node.config.server
        self._server = uvicorn.Server(uvicorn.Config(
            create_app(node), host=cfg.host, port=cfg.port, log_level="warning",
            access_log=False, lifespan="off",
            ssl_certfile=cfg.tls_cert, ssl_keyfile=cfg.tls_key,
            # The allowlist judges the real peer: never take an address from a header.
            proxy_headers=False,
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
        scheme = "https" if self._server.config.ssl_certfile else "http"
        return f"{scheme}://{host}:{port}/"

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
