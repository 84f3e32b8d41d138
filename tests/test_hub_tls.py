"""TLS between the sites and the hub: the hub's own CA and server certificate, a real
nats-server that takes TLS only (from the first byte), and the real uplink, which trusts the
hub's CA alone. Impostors and plain clients get nothing, not even a password in clear."""

from __future__ import annotations

import asyncio
import random
import socket
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import nats
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pydantic import SecretStr
from typer.testing import CliRunner

from custodes.cli import app
from custodes.config import UplinkConfig
from custodes.hub.nats_server import HUB_USER, EmbeddedNats, SiteAccount
from custodes.hub.service import Hub
from custodes.hub.tls import (
    CA_CERT,
    CA_KEY,
    SERVER_CERT,
    SERVER_KEY,
    TLS_DIR,
    ServerTLS,
    ensure_ca,
    ensure_server,
    server_names,
)
from custodes.keys import NodeKeys
from custodes.sitetime import site_zone
from custodes.uplink.tls import connect_options, uplink_options
from hub_env import (
    NATS_SOCKET_WARNINGS,
    hub_audit,
    new_site,
    q,
    running_hub,
    site_audit,
    wait_for,
)

pytestmark = [pytest.mark.slow, NATS_SOCKET_WARNINGS]


def _sans(path: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(n.value) for n in names}


def test_the_hub_makes_its_ca_and_certificate_with_private_keys_only_it_reads(
        tmp_path: Path) -> None:
    folder = tmp_path / TLS_DIR
    names = server_names("10.1.2.3", "tls://hub.example.org:4222", ["hub.lan"])
    tls = ensure_server(folder, names)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for key in (CA_KEY, SERVER_KEY):
        assert stat.S_IMODE((folder / key).stat().st_mode) == 0o600, key
    assert {"127.0.0.1", "::1", "localhost", "10.1.2.3", "hub.example.org",
            "hub.lan"} <= _sans(tls.cert_file)
    ca = x509.load_pem_x509_certificate((folder / CA_CERT).read_bytes())
    x509.load_pem_x509_certificate(tls.cert_file.read_bytes()).verify_directly_issued_by(ca)

    # Started again: the same CA and certificate. A new name: a new certificate, same CA
    # (every enrolled site trusts that CA).
    first = tls.cert_file.read_bytes()
    assert ensure_server(folder, names).cert_file.read_bytes() == first
    ensure_server(folder, [*names, "192.0.2.7"])
    assert tls.cert_file.read_bytes() != first
    assert "192.0.2.7" in _sans(tls.cert_file)
    assert (folder / CA_CERT).read_bytes() == ca.public_bytes(serialization.Encoding.PEM)

    # A key someone made readable by others is made 0600 again at the next start.
    (folder / SERVER_KEY).chmod(0o644)
    ensure_server(folder, names)
    assert stat.S_IMODE((folder / SERVER_KEY).stat().st_mode) == 0o600
    assert ensure_ca(folder) == folder / CA_CERT


def test_a_ca_without_its_key_is_not_silently_replaced(tmp_path: Path) -> None:
    folder = tmp_path / TLS_DIR
    ensure_ca(folder)
    (folder / CA_KEY).unlink()
    with pytest.raises(RuntimeError, match=r"ca\.key is missing"):
        ensure_server(folder, ["localhost"])


# -- a real nats-server that speaks TLS only --------------------------------------------------

@pytest.fixture(scope="module")
def server() -> Iterator[tuple[EmbeddedNats, ServerTLS]]:
    folder = Path(tempfile.mkdtemp(prefix="custodes-tls-test-"))
    tls = ensure_server(folder / TLS_DIR, server_names("127.0.0.1", None, []))
    n = EmbeddedNats(folder / "nats", tls=tls)
    n.start([])
    try:
        yield n, tls
    finally:
        n.stop()


def _try(url: str, password: str, user: str = HUB_USER, **options: Any) -> str:
    async def attempt() -> str:
        try:
            nc = await nats.connect(url, user=user, password=password, connect_timeout=3,
                                    allow_reconnect=False, max_reconnect_attempts=0, **options)
        except Exception as exc:  # what refused it, for the assertion's message
            return f"refused: {exc!r}"
        try:
            await nc.flush(timeout=3)
            return "connected"
        finally:
            await nc.close()
    return asyncio.run(attempt())


def test_only_a_client_that_trusts_the_hub_s_ca_gets_in(
        server: tuple[EmbeddedNats, ServerTLS], tmp_path: Path) -> None:
    n, tls = server
    assert n.url.startswith("tls://127.0.0.1:")
    config = (n.folder / "nats-server.conf").read_text()
    assert "handshake_first: true" in config
    assert str(tls.key_file) in config
    assert _try(n.url, n.hub_password, **connect_options([n.url], ca_pem=tls.ca_pem)) \
        == "connected"
    assert _try(n.url, n.hub_password, **connect_options([n.url], ca_file=tls.ca_file)) \
        == "connected"
    # No CA: the system's store, which does not know the hub's CA.
    outcome = _try(n.url, n.hub_password, **connect_options([n.url]))
    assert "CERTIFICATE_VERIFY_FAILED" in outcome, outcome
    # Another hub's CA (a machine posing as this hub would hold such a certificate).
    other = ensure_server(tmp_path / "other", ["127.0.0.1"])
    outcome = _try(n.url, n.hub_password, **connect_options([n.url], ca_pem=other.ca_pem))
    assert "CERTIFICATE_VERIFY_FAILED" in outcome, outcome
    # The right CA but a name the certificate does not carry.
    outcome = _try(n.url, n.hub_password, **connect_options(
        [n.url], ca_pem=tls.ca_pem, hostname="not-the-hub.example"))
    assert "CERTIFICATE_VERIFY_FAILED" in outcome, outcome
    # In clear, or TLS only once the server asks for it: the server never answers.
    plain = n.url.replace("tls://", "nats://")
    assert _try(plain, n.hub_password).startswith("refused"), "a plain client got in"
    assert _try(n.url, n.hub_password, **connect_options(
        [n.url], ca_pem=tls.ca_pem, first=False)).startswith("refused")


def test_a_site_enrolled_by_a_reload_can_connect_as_soon_as_it_returns(
        server: tuple[EmbeddedNats, ServerTLS]) -> None:
    """nats-server applies a reload on its own time: `reload` returns once it has (a site
    that connected before then was refused, or got a connection without acks)."""
    n, tls = server
    sites: list[SiteAccount] = []
    for i in range(3):
        password = f"site-password-{i}"
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode("ascii")
        sites.append(SiteAccount(f"reloaded-{i}", hashed))
        n.reload(sites)
        assert _try(n.url, password, user=f"reloaded-{i}",
                    **connect_options([n.url], ca_pem=tls.ca_pem)) == "connected"


def test_a_wrong_ca_in_a_node_s_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a PEM CA certificate"):
        UplinkConfig(site="s", urls=["tls://hub:4222"], password=SecretStr("x"),
                     ca="-----BEGIN CERTIFICATE-----\nnot one\n-----END CERTIFICATE-----\n")
    ca = ensure_ca(tmp_path).read_text()
    with pytest.raises(ValueError, match="not both"):
        UplinkConfig(site="s", urls=["tls://hub:4222"], password=SecretStr("x"), ca=ca,
                     ca_file=tmp_path / CA_CERT)


def test_an_impostor_that_does_not_ask_for_tls_never_sees_the_password(
        tmp_path: Path) -> None:
    """A machine on the hub's address that greets in clear and does not ask for TLS, as a
    plain nats-server would: nats-py would send CONNECT with the password in clear unless it
    starts TLS first, as the uplink does."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    received = bytearray()

    def impostor() -> None:
        listener.settimeout(20)
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            conn.sendall(b'INFO {"server_id":"x","version":"2.10.0","auth_required":true,'
                         b'"max_payload":1048576}\r\n')
            conn.settimeout(3)
            try:
                while chunk := conn.recv(4096):
                    received.extend(chunk)
            except OSError:
                pass

    thread = threading.Thread(target=impostor, daemon=True)
    thread.start()
    ca = ensure_ca(tmp_path).read_text()
    config = UplinkConfig(site="school-1", urls=[f"tls://127.0.0.1:{port}"],
                          password=SecretStr("the-site-s-secret"), ca=ca)
    outcome = _try(config.urls[0], config.password.get_secret_value(),
                   **uplink_options(config))
    thread.join(25)
    listener.close()
    assert outcome.startswith("refused"), outcome
    assert received, "the client sent nothing at all"
    assert received[:1] == b"\x16", "not a TLS handshake first"  # a TLS record: handshake
    assert b"the-site-s-secret" not in received
    assert b"CONNECT" not in received


# -- the hub, and the real uplink --------------------------------------------------------------

@pytest.fixture(scope="module")
def hub() -> Iterator[Hub]:
    with running_hub() as h:
        yield h


def test_a_site_reports_over_tls_and_a_site_with_another_ca_gets_nothing_through(
        hub: Hub, tmp_path: Path) -> None:
    assert hub.nats_urls[0].startswith("tls://")
    assert hub.site_ca is not None
    assert "BEGIN CERTIFICATE" in hub.site_ca
    tls_folder = hub.settings.data / TLS_DIR
    for key in (CA_KEY, SERVER_KEY):
        assert stat.S_IMODE((tls_folder / key).stat().st_mode) & 0o077 == 0, key
    good, _ = new_site(hub, tmp_path, "tls-school")
    duped, password = new_site(hub, tmp_path, "duped-school", connect=False)
    try:
        good.activity(random.Random(11))
        wait_for("the site's log at the hub", lambda: hub_audit(hub, good.name)
                 == site_audit(good))
        assert good.uplink is not None
        assert good.uplink.status.connected
        # The light site's health names its zone, as a node's does (the events page uses it).
        wait_for("the site's health", lambda: q(
            hub, "SELECT health->>'timezone' FROM sites WHERE name = %s", good.name)[0][0]
            == site_zone(None).name)

        duped.activity(random.Random(12))
        other_ca = ensure_ca(tmp_path / "other-ca").read_text()
        duped.connect(hub.nats_urls, password, health_seconds=1, ca=other_ca)
        uplink = duped.uplink
        assert uplink is not None
        wait_for("the refusal", lambda: "CERTIFICATE_VERIFY_FAILED"
                 in (uplink.status.last_error or ""), timeout=60)
        assert not uplink.status.connected
        assert hub_audit(hub, duped.name) == []
    finally:
        good.close()
        duped.close()


def test_add_site_gives_the_node_the_hub_s_ca(hub: Hub, tmp_path: Path) -> None:
    pub = tmp_path / "signing.pub"
    pub.write_bytes(NodeKeys.load_or_create(tmp_path / "keys").public_pem)
    result = CliRunner().invoke(app, ["hub", "add-site", "ca-school", "--group", "Garth",
                                      "--key", str(pub), "--data", str(hub.settings.data)])
    assert result.exit_code == 0, result.output
    section = result.output.split("Add to the node's config:\n", 1)[1].split("\n# and", 1)[0]
    uplink = UplinkConfig.model_validate(
        {**yaml.safe_load(section)["uplink"], "password": "from-the-environment"})
    assert uplink.ca == hub.site_ca
    assert uplink.tls_first
    assert all(u.startswith("tls://") for u in uplink.urls)
    host = uplink.urls[0].split("//", 1)[1].rsplit(":", 1)[0].strip("[]")
    assert host in _sans(hub.settings.data / TLS_DIR / SERVER_CERT)
