"""Ask an RTSP camera, without playing anything, whether it wants credentials and takes ours.

One DESCRIBE without credentials, then (if refused and credentials are given) one with Digest
(RFC 2617/7616, MD5, what Dahua and Hikvision ask for) or Basic, whichever the camera offers.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import secrets
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit, urlunsplit

from custodes.sim.digest import parse_params, response

_MAX_HEADER_LINES = 64
_MAX_BODY = 64 * 1024
_RTPMAP = re.compile(r"^a=rtpmap:\d+\s+([A-Za-z0-9-]+)/", re.MULTILINE)


@dataclass(slots=True)
class RtspCheck:
    url: str  # without credentials
    reachable: bool = False
    open_without_credentials: bool = False  # DESCRIBE answered 200 with no credentials
    schemes: list[str] = field(default_factory=list)  # offered in WWW-Authenticate: basic/digest
    authenticated: bool | None = None  # None: no credentials given or none were needed
    codec: str | None = None  # from the SDP's rtpmap
    error: str | None = None


def strip_credentials(url: str) -> tuple[str, str | None, str | None]:
    """The URL without user info, and the user name and password that were in it."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None, None
    host = parts.netloc.rpartition("@")[2]
    user = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return urlunsplit(parts._replace(netloc=host)), user, password


async def _request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, url: str, cseq: int,
    authorization: str | None,
) -> tuple[int, dict[str, list[str]], str]:
    lines = [f"DESCRIBE {url} RTSP/1.0", f"CSeq: {cseq}", "Accept: application/sdp",
             "User-Agent: custodes-probe"]
    if authorization:
        lines.append(f"Authorization: {authorization}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    status_line = (await reader.readline()).decode("utf-8", "replace").split(maxsplit=2)
    if len(status_line) < 2 or not status_line[0].startswith("RTSP/"):
        raise ValueError("the answer is not RTSP")
    status = int(status_line[1])
    headers: dict[str, list[str]] = {}
    for _ in range(_MAX_HEADER_LINES):
        line = (await reader.readline()).decode("utf-8", "replace").strip()
        if not line:
            break
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    length = int((headers.get("content-length") or ["0"])[0])
    if not 0 <= length <= _MAX_BODY:
        raise ValueError(f"Content-Length {length}")
    body = (await reader.readexactly(length)).decode("utf-8", "replace") if length else ""
    return status, headers, body


def _authorization(
    challenges: list[str], url: str, username: str, password: str
) -> tuple[str, str] | None:
    """(scheme, header value) answering the strongest challenge offered."""
    for challenge in challenges:
        scheme, _, rest = challenge.partition(" ")
        if scheme.lower() == "digest":
            p = parse_params(rest)
            qop = "auth" if "auth" in p.get("qop", "").split(",") else None
            nc, cnonce = "00000001", secrets.token_hex(8)
            answer = response(username=username, password=password, realm=p.get("realm", ""),
                              method="DESCRIBE", uri=url, nonce=p.get("nonce", ""), qop=qop,
                              nc=nc, cnonce=cnonce)
            value = (f'Digest username="{username}", realm="{p.get("realm", "")}", '
                     f'nonce="{p.get("nonce", "")}", uri="{url}", response="{answer}"')
            if "opaque" in p:
                value += f', opaque="{p["opaque"]}"'
            if qop:
                value += f', qop={qop}, nc={nc}, cnonce="{cnonce}"'
            return "digest", value
    for challenge in challenges:
        if challenge.lower().startswith("basic"):
            token = base64.b64encode(f"{username}:{password}".encode()).decode()
            return "basic", f"Basic {token}"
    return None


async def _exchange(
    result: RtspCheck, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
    username: str | None, password: str | None,
) -> None:
    bare = result.url
    status, headers, body = await _request(reader, writer, bare, 1, None)
    challenges = headers.get("www-authenticate", [])
    result.schemes = sorted({c.partition(" ")[0].lower() for c in challenges})
    if status == 200:
        result.open_without_credentials = True
    elif status == 401 and username is not None and password is not None:
        auth = _authorization(challenges, bare, username, password)
        if auth is None:
            result.error = "the camera offers no authentication scheme we speak"
            return
        status, headers, body = await _request(reader, writer, bare, 2, auth[1])
        result.authenticated = status == 200
        if status == 401:
            result.error = f"the camera refused the credentials ({auth[0]})"
            return
    elif status == 401:
        result.error = "the camera requires credentials and none were given"
        return
    if status == 200:
        match = _RTPMAP.search(body)
        result.codec = match.group(1).upper() if match else None
    else:
        result.error = f"DESCRIBE answered {status}"


async def check_rtsp(
    url: str, username: str | None = None, password: str | None = None, *,
    timeout: float = 10.0,
) -> RtspCheck:
    """DESCRIBE `url` without and (if needed) with credentials; never raises for the camera's
    sake: what went wrong is in `error`."""
    bare, url_user, url_password = strip_credentials(url)
    username = username if username is not None else url_user
    password = password if password is not None else url_password
    result = RtspCheck(bare)
    parts = urlsplit(bare)
    if parts.scheme != "rtsp" or not parts.hostname:
        result.error = "not an rtsp:// URL with a host"
        return result
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(parts.hostname, parts.port or 554)
            result.reachable = True
            try:
                await _exchange(result, reader, writer, username, password)
            finally:
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()
    except TimeoutError:
        result.error = f"no answer within {timeout:g} s"
    except OSError as exc:
        result.error = f"cannot connect: {exc.strerror or exc}"
    except (ValueError, asyncio.IncompleteReadError) as exc:
        result.error = f"not a usable RTSP answer: {exc}"
    return result
