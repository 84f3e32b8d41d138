"""HTTP Digest authentication (RFC 2617 / RFC 7616, MD5) as Dahua and Hikvision cameras do it.

The server side for the simulator's RTSP cameras: a challenge with a fresh nonce, and the check
of a client's answer, with or without `qop=auth` (Dahua's RTSP omits qop; ffmpeg and VLC
handle both forms).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from enum import StrEnum

_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')
# A nonce is accepted this long after it was issued; then the client is challenged again.
NONCE_LIFETIME_S = 300.0
_MAX_NONCES = 1024


class AuthScheme(StrEnum):
    BASIC = "basic"
    DIGEST = "digest"


def _md5(text: str) -> str:
    # MD5 is what the protocol and the cameras use; this is not a password store.
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def parse_params(value: str) -> dict[str, str]:
    """`key="value", key=token` pairs of a Digest header, keys lower-cased."""
    return {
        m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
        for m in _PARAM.finditer(value)
    }


def response(
    *, username: str, password: str, realm: str, method: str, uri: str, nonce: str,
    qop: str | None = None, nc: str = "", cnonce: str = "",
) -> str:
    """The `response=` a client computes (RFC 2617 section 3.2.2.1, algorithm MD5)."""
    ha1 = _md5(f"{username}:{realm}:{password}")
    ha2 = _md5(f"{method}:{uri}")
    if qop:
        return _md5(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _md5(f"{ha1}:{nonce}:{ha2}")


class DigestVerifier:
    """Issues nonces and checks answers for one user; not thread-safe (one event loop)."""

    def __init__(self, username: str, password: str, realm: str) -> None:
        self.username = username
        self._password = password
        self.realm = realm
        self._nonces: dict[str, float] = {}

    def challenge(self, *, stale: bool = False) -> str:
        now = time.monotonic()
        if len(self._nonces) >= _MAX_NONCES:
            self._nonces = {n: t for n, t in self._nonces.items() if now - t < NONCE_LIFETIME_S}
        nonce = secrets.token_hex(16)
        self._nonces[nonce] = now
        return (
            f'Digest realm="{self.realm}", nonce="{nonce}", algorithm=MD5'
            + (", stale=TRUE" if stale else "")
        )

    def verify(self, header: str, method: str) -> bool | None:
        """True: accepted; False: wrong; None: right but the nonce expired (send stale=TRUE)."""
        scheme, _, rest = header.partition(" ")
        if scheme.lower() != "digest":
            return False
        p = parse_params(rest)
        if p.get("username") != self.username or p.get("realm") != self.realm:
            return False
        if p.get("algorithm", "MD5").upper() != "MD5":
            return False
        nonce, uri, answer = p.get("nonce", ""), p.get("uri", ""), p.get("response", "")
        issued = self._nonces.get(nonce)
        if issued is None or not uri or not answer:
            return False
        qop = p.get("qop")
        if qop is not None and qop != "auth":
            return False
        expected = response(
            username=self.username, password=self._password, realm=self.realm, method=method,
            uri=uri, nonce=nonce, qop=qop, nc=p.get("nc", ""), cnonce=p.get("cnonce", ""),
        )
        if not hmac.compare_digest(expected, answer.lower()):
            return False
        if time.monotonic() - issued > NONCE_LIFETIME_S:
            return None
        return True
