"""The hub's own certificate authority, and the certificate of its embedded NATS server.

At its first start the hub makes, in ``<data>/tls``, a CA (``ca.pem``, ``ca.key``) and a server
certificate it signs (``server.pem``, ``server.key``) for the names and addresses the sites
use to reach it: loopback, ``nats_host`` (unless it is a wildcard), the host of
``advertise_url`` and ``tls_names``. Private keys are files of mode 0600 in a folder of mode
0700. The sites get the CA certificate at enrolment (``custodes hub add-site`` prints it in
their ``uplink`` section) and accept no other server: a machine that takes the hub's address
cannot read a site's credential.

The CA is kept as long as its files exist (every enrolled site trusts it; a new CA means
enrolling every site again). The server certificate is made again at a start when it does not
name every configured name, is not signed by this CA, or has less than a third of its life
left.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import ipaddress
import logging
import os
import socket
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger(__name__)

TLS_DIR = "tls"
CA_CERT = "ca.pem"
CA_KEY = "ca.key"
SERVER_CERT = "server.pem"
SERVER_KEY = "server.key"
CA_DAYS = 20 * 365  # the sites pin it: replacing it means enrolling every site again
SERVER_DAYS = 825
LOOPBACK = ("localhost", "127.0.0.1", "::1")
WILDCARDS = ("", "0.0.0.0", "::")  # noqa: S104 - names to leave out, not addresses to bind


class HubTLSError(RuntimeError):
    """The hub's TLS files cannot be read or made."""


@dataclass(frozen=True)
class ServerTLS:
    """The files nats-server's ``tls {}`` block names, and the CA the clients need."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    @property
    def ca_pem(self) -> str:
        return self.ca_file.read_text(encoding="ascii")


def server_names(host: str, advertise_url: str | None, extra: Iterable[str]) -> list[str]:
    """Every name and address the server's certificate must carry."""
    names = list(LOOPBACK)
    if host not in WILDCARDS:
        names.append(host)
    elif (machine := socket.gethostname()) and machine not in names:
        names.append(machine)  # listening everywhere: the machine's name at least
    if advertise_url:
        advertised = urlsplit(advertise_url).hostname
        if advertised:
            names.append(advertised)
    names.extend(extra)
    out: list[str] = []
    for given in names:
        name = given.strip().strip("[]").lower()
        if name and name not in out:
            out.append(name)
    return out


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _write_private(path: Path, data: bytes) -> None:
    """Written beside, then moved into place: never a half key, never readable by others."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("%s was readable by others (mode %o): made 0600", path, mode)
        path.chmod(0o600)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise HubTLSError(f"{path}: not an EC private key")
    return key


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One maker at a time: ``hub serve`` and ``hub add-site`` may both start first."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder.chmod(0o700)
    fd = os.open(folder / ".lock", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _make_ca(folder: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "custodes hub CA"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "custodes")])
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    _write_private(folder / CA_KEY, _key_pem(key))
    _write_public(folder / CA_CERT, cert.public_bytes(serialization.Encoding.PEM))
    log.info("hub: made its certificate authority %s", folder / CA_CERT)


def ensure_ca(folder: Path) -> Path:
    """The CA certificate's file, made with its key when neither exists yet."""
    with _locked(folder):
        return _ensure_ca(folder)


def _ensure_ca(folder: Path) -> Path:
    cert, key = folder / CA_CERT, folder / CA_KEY
    if cert.exists() != key.exists():
        missing = key if cert.exists() else cert
        raise HubTLSError(f"{missing} is missing: restore it from a backup, or remove "
                          f"{folder} to make a new CA (then enrol every site again)")
    if not cert.exists():
        _make_ca(folder)
    return cert


def _needs_new(cert: x509.Certificate, ca: x509.Certificate, names: list[str]) -> str | None:
    """Why the server certificate must be made again (None: it is good)."""
    if cert.issuer != ca.subject:
        return "not issued by this CA"
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return "not signed by this CA"
    held = set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    missing = [n for n in names if _san(n) not in held]
    if missing:
        return f"does not name {', '.join(missing)}"
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    if cert.not_valid_after_utc - _now() < life / 3:
        return f"expires on {cert.not_valid_after_utc:%Y-%m-%d}"
    return None


def ensure_server(folder: Path, names: list[str]) -> ServerTLS:
    """The CA and a server certificate for ``names``, made or renewed as needed."""
    with _locked(folder):
        ca_path = _ensure_ca(folder)
        ca_key = _load_key(folder / CA_KEY)
        ca = x509.load_pem_x509_certificate(ca_path.read_bytes())
        cert_path, key_path = folder / SERVER_CERT, folder / SERVER_KEY
        why = "none yet"
        if cert_path.exists() and key_path.exists():
            _load_key(key_path)  # its mode is checked, and it must be readable
            why = _needs_new(x509.load_pem_x509_certificate(cert_path.read_bytes()), ca,
                             names) or ""
        if why:
            _make_server(folder, ca, ca_key, names)
            log.info("hub: new NATS server certificate (%s) for %s", why, ", ".join(names))
        return ServerTLS(ca_path, cert_path, key_path)


def _make_server(folder: Path, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
                 names: list[str]) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
            .add_extension(x509.SubjectAlternativeName([_san(n) for n in names]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write_private(folder / SERVER_KEY, _key_pem(key))
    _write_public(folder / SERVER_CERT, cert.public_bytes(serialization.Encoding.PEM))

