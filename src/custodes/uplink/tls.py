"""TLS for a NATS client (a site's uplink, the hub's own ingest): nats-py's connect options.

TLS is used when a CA is given (the hub's, as `custodes hub add-site` prints it) or a URL is
``tls://``. With a CA only that CA is trusted, not the system's store: a certificate some
public authority issued for the hub's name does not let a machine pose as the hub.

``first`` starts TLS before the server says anything (nats-server's ``tls { handshake_first:
true }``, as the embedded hub runs). Without it nats-py upgrades only when the server's
greeting asks for TLS, so a machine posing as the server that does not ask would get the
credential in clear, whatever the URL's scheme says.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

    from custodes.config import UplinkConfig


def client_context(*, ca_pem: str | None = None, ca_file: Path | None = None) -> ssl.SSLContext:
    """Verifies the server's certificate and name against ``ca_pem``/``ca_file`` only (the
    system's store when neither is given)."""
    if ca_pem is not None or ca_file is not None:
        ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None,
                                         cadata=ca_pem)
    else:
        ctx = ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def check_ca_pem(pem: str) -> None:
    """Raise ValueError unless ``pem`` holds a certificate Python's TLS accepts as a CA."""
    try:
        ssl.create_default_context(cadata=pem)
    except (ssl.SSLError, ValueError) as exc:
        raise ValueError(f"not a PEM CA certificate: {exc}") from None


def uses_tls(urls: list[str], ca_pem: str | None, ca_file: Path | None) -> bool:
    return bool(ca_pem or ca_file or any(urlsplit(u).scheme == "tls" for u in urls))


def connect_options(urls: list[str], *, ca_pem: str | None = None, ca_file: Path | None = None,
                    hostname: str | None = None, first: bool = True) -> dict[str, Any]:
    """Keyword arguments for ``nats.connect``: none for plain ``nats://`` without a CA."""
    if not uses_tls(urls, ca_pem, ca_file):
        return {}
    options: dict[str, Any] = {"tls": client_context(ca_pem=ca_pem, ca_file=ca_file),
                               "tls_handshake_first": first}
    if hostname:
        options["tls_hostname"] = hostname
    return options


def uplink_options(config: UplinkConfig) -> dict[str, Any]:
    """A site's connect options, from its ``uplink`` section."""
    return connect_options(config.urls, ca_pem=config.ca, ca_file=config.ca_file,
                           hostname=config.tls_hostname, first=config.tls_first)


async def close_quickly(nc: NATS, timeout: float = 2.0) -> None:
    """nats-py's close, bounded. Over TLS a close waits for the server's answer to its
    close_notify (asyncio gives it 30 s), which a dead or blackholed link never brings: past
    ``timeout`` the connection is dropped. nats-py offers no abort, hence its transport.
    A close that ends in a CancelledError of nats-py's own (seen on a blackholed TLS link)
    is no reason to end the caller; a cancel of the caller is passed on."""
    try:
        await asyncio.wait_for(nc.close(), timeout)
    except asyncio.CancelledError:
        _abort(nc)
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
    except Exception:  # timed out or failed: either way the socket goes
        _abort(nc)


def _abort(nc: NATS) -> None:
    writer = getattr(getattr(nc, "_transport", None), "_io_writer", None)
    if writer is not None:
        with contextlib.suppress(Exception):
            writer.transport.abort()
