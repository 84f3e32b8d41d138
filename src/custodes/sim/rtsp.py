"""A small RTSP 1.0 server (RTP over TCP, interleaved) that plays sample files as live cameras.

Each camera listens on its own port, so stopping one gives clients "connection refused", as a
camera that lost power would. A camera has one clock: its clients all receive the same packets
(same SSRC, sequence numbers and timestamps) and a new client joins at the next keyframe.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import logging
import random
import secrets
import socket
import struct
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import urlsplit

from custodes.sim.digest import AuthScheme, DigestVerifier
from custodes.sim.rtp import DEFAULT_MAX_PAYLOAD, RTP_CLOCK, AccessUnit, Clip, load_clip

log = logging.getLogger(__name__)

PATH = "/stream"
_TRACK = "track1"
_PAYLOAD_TYPE = 96
_SESSION_TIMEOUT_S = 60
_REPORT_INTERVAL_S = 5.0
# Further behind than this (a suspended process, an overloaded box) we skip ahead rather than
# burst the backlog into every client.
_MAX_LAG_S = 1.0
_MIN_CLIENT_BUFFER = 256 * 1024
_MAX_BODY = 64 * 1024
_NTP_EPOCH = 2_208_988_800  # seconds from 1900 (NTP) to 1970 (Unix)
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    454: "Session Not Found",
    455: "Method Not Valid in This State",
    461: "Unsupported Transport",
    501: "Not Implemented",
}

_T = TypeVar("_T")


class _BadRequest(Exception):
    pass


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    url: str
    headers: dict[str, str]  # names lower-cased


@dataclass(slots=True)
class _Reply:
    status: int
    headers: dict[str, str]
    body: bytes = b""


async def _read_request(reader: asyncio.StreamReader) -> _Request | None:
    """The next request, skipping the RTCP receiver reports clients interleave; None at EOF."""
    while True:
        try:
            first = await reader.readexactly(1)
        except asyncio.IncompleteReadError:
            return None
        if first == b"$":
            header = await reader.readexactly(3)
            await reader.readexactly(int.from_bytes(header[1:3], "big"))
            continue
        if first in b"\r\n":
            continue
        parts = (first + await reader.readline()).decode("utf-8", "replace").split()
        if len(parts) != 3 or not parts[2].startswith("RTSP/"):
            raise _BadRequest(" ".join(parts)[:80])
        headers: dict[str, str] = {}
        while line := (await reader.readline()).decode("utf-8", "replace").strip():
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0") or 0)
        if not 0 <= length <= _MAX_BODY:
            raise _BadRequest(f"Content-Length {length}")
        if length:
            await reader.readexactly(length)  # SET_PARAMETER/GET_PARAMETER bodies: ignored
        return _Request(parts[0].upper(), parts[1], headers)


def _rtcp_report(ssrc: int, timestamp: int, packets: int, octets: int) -> bytes:
    """A sender report plus the SDES CNAME that RFC 3550 requires in every compound packet."""
    now = time.time() + _NTP_EPOCH
    seconds = int(now)
    fraction = int((now - seconds) * 2**32) & 0xFFFFFFFF
    report = struct.pack(
        "!BBHIIIIII",
        0x80,
        200,
        6,
        ssrc,
        seconds & 0xFFFFFFFF,
        fraction,
        timestamp,
        packets & 0xFFFFFFFF,
        octets & 0xFFFFFFFF,
    )
    cname = b"custodes-sim"
    chunk = struct.pack("!IBB", ssrc, 1, len(cname)) + cname + b"\0"
    chunk += b"\0" * (-len(chunk) % 4)
    return report + struct.pack("!BBH", 0x81, 202, len(chunk) // 4) + chunk


def _interleave(channel: int, packets: list[tuple[bytes, bytes]]) -> bytes:
    parts: list[bytes] = []
    for header, payload in packets:
        parts += (struct.pack("!cBH", b"$", channel, len(header) + len(payload)), header, payload)
    return b"".join(parts)


class _Client:
    """One RTSP connection, which is also its one session."""

    def __init__(
        self, camera: _Camera, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.camera = camera
        self.reader = reader
        self.writer = writer
        self.peer = "{}:{}".format(*writer.get_extra_info("peername", ("?", 0))[:2])
        self.session: str | None = None
        self.channel = 0  # RTP; RTCP goes on channel + 1
        self.joined = False  # has had the keyframe it waits for after PLAY
        # The kernel's buffer would otherwise grow to megabytes and hide a stalled client for
        # minutes; with it capped, `max_client_buffer` bounds the lag in both places.
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, camera.max_client_buffer)
        self._handlers: dict[str, Callable[[_Request], _Reply]] = {
            "OPTIONS": self._options,
            "DESCRIBE": self._describe,
            "SETUP": self._setup,
            "PLAY": self._play,
            "PAUSE": self._pause,
            "TEARDOWN": self._pause,  # serve() then closes the connection
            "GET_PARAMETER": self._keep_alive,  # clients' keep-alive
            "SET_PARAMETER": self._keep_alive,
        }

    def send(self, data: bytes) -> None:
        transport = self.writer.transport
        if transport.is_closing():
            return
        transport.write(data)
        if transport.get_write_buffer_size() > self.camera.max_client_buffer:
            log.warning(
                "%s: dropping slow client %s (%d bytes unsent)",
                self.camera.name,
                self.peer,
                transport.get_write_buffer_size(),
            )
            transport.abort()

    async def serve(self) -> None:
        try:
            while (request := await _read_request(self.reader)) is not None:
                reply = self._answer(request)
                self._write_reply(request, reply)
                await self.writer.drain()
                if request.method == "TEARDOWN":
                    break
        except _BadRequest as exc:
            log.info("%s: bad request from %s: %s", self.camera.name, self.peer, exc)
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass  # the client went away, or sent a line longer than the reader's limit
        finally:
            self.camera.clients.discard(self)
            self.writer.close()
            log.debug("%s: %s disconnected", self.camera.name, self.peer)

    def _write_reply(self, request: _Request, reply: _Reply) -> None:
        lines = [
            f"RTSP/1.0 {reply.status} {_REASONS[reply.status]}",
            f"CSeq: {request.headers.get('cseq', '0')}",
            "Server: custodes-sim",
        ]
        if self.session and reply.status != 401:
            lines.append(f"Session: {self.session};timeout={_SESSION_TIMEOUT_S}")
        lines += [f"{name}: {value}" for name, value in reply.headers.items()]
        if reply.body:
            lines.append(f"Content-Length: {len(reply.body)}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + reply.body)

    def _answer(self, request: _Request) -> _Reply:
        log.debug("%s: %s %s from %s", self.camera.name, request.method, request.url, self.peer)
        handler = self._handlers.get(request.method)
        if handler is None:
            return _Reply(501, {})
        if request.method != "OPTIONS" and (challenge := self.camera.refusal(request)):
            return _Reply(401, {"WWW-Authenticate": challenge})
        if request.method in ("PLAY", "PAUSE", "TEARDOWN"):
            if self.session is None:
                return _Reply(455, {})
            if request.headers.get("session", self.session).split(";")[0] != self.session:
                return _Reply(454, {})
        return handler(request)

    def _options(self, request: _Request) -> _Reply:
        return _Reply(200, {"Public": ", ".join(self._handlers)})

    def _describe(self, request: _Request) -> _Reply:
        if urlsplit(request.url).path.rstrip("/") != PATH:
            return _Reply(404, {})
        headers = {"Content-Type": "application/sdp", "Content-Base": f"{self.camera.url}/"}
        return _Reply(200, headers, self.camera.sdp().encode())

    def _play(self, request: _Request) -> _Reply:
        if self not in self.camera.clients:
            self.joined = False
            self.camera.clients.add(self)
            log.info("%s: streaming to %s", self.camera.name, self.peer)
        return _Reply(200, {"Range": "npt=0.000-"})

    def _pause(self, request: _Request) -> _Reply:
        self.camera.clients.discard(self)
        return _Reply(200, {})

    def _keep_alive(self, request: _Request) -> _Reply:
        return _Reply(200, {})

    def _setup(self, request: _Request) -> _Reply:
        if not urlsplit(request.url).path.startswith(PATH):
            return _Reply(404, {})
        # Only the client's first choice matters: we offer a single transport.
        first = request.headers.get("transport", "").split(",", maxsplit=1)[0]
        fields = [f.strip() for f in first.split(";")]
        if not fields[0].upper().startswith("RTP/AVP/TCP"):
            # Tells clients such as ffmpeg and VLC to retry with TCP interleaving.
            return _Reply(461, {})
        for field in fields:
            if field.startswith("interleaved="):
                try:
                    self.channel = int(field.removeprefix("interleaved=").split("-")[0])
                except ValueError:
                    return _Reply(400, {})
        if not 0 <= self.channel <= 254:
            return _Reply(400, {})
        self.session = self.session or secrets.token_hex(8)
        reply = (
            f"RTP/AVP/TCP;unicast;interleaved={self.channel}-{self.channel + 1};"
            f"ssrc={self.camera.ssrc:08X};mode=play"
        )
        return _Reply(200, {"Transport": reply})


class _Camera:
    """A listening port, its clients and the clock that paces the clip to them.

    Everything but construction and `reserve` runs on the server's event loop.
    """

    def __init__(
        self,
        name: str,
        *,
        host: str,
        port: int,
        clip: Clip,
        credentials: tuple[str, str] | None,
        max_client_buffer: int | None,
        auth: AuthScheme = AuthScheme.BASIC,
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.clip = clip
        self.ssrc = random.getrandbits(32)
        self.max_client_buffer = max_client_buffer or max(
            _MIN_CLIENT_BUFFER, int(2 * clip.bytes_per_second)
        )
        self._auth = (
            base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
            if credentials and auth is AuthScheme.BASIC
            else None
        )
        # Dahua's realm names the device; ours names the camera.
        self._digest = (
            DigestVerifier(credentials[0], credentials[1], f"custodes-sim {name}")
            if credentials and auth is AuthScheme.DIGEST
            else None
        )
        self.wanted = True  # stays stopped across SimServer.start once stop_camera was called
        self.clients: set[_Client] = set()  # those that sent PLAY
        self._sock: socket.socket | None = None
        self._server: asyncio.Server | None = None
        self._pacer: asyncio.Task[None] | None = None
        self._connections: dict[asyncio.Task[Any], _Client] = {}
        self._seq = random.getrandbits(16)
        self._ts_base = random.getrandbits(32)
        self._packets = 0
        self._octets = 0
        self._last_report = 0.0

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"rtsp://{host}:{self.port}{PATH}"

    def reserve(self) -> None:
        """Bind (not listen) the port, so it is ours and known before the camera goes live."""
        if self._sock is not None or self._server is not None:
            return
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            # Rebinding after stop must work while old connections sit in TIME_WAIT.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        self._sock = sock

    async def open(self) -> None:
        if self._server is not None:
            return
        self.reserve()
        assert self._sock is not None
        sock, self._sock = self._sock, None
        self._server = await asyncio.start_server(self._accept, sock=sock, backlog=64)
        self._pacer = asyncio.create_task(self._pace(), name=f"sim-{self.name}")
        log.info("%s: serving %s", self.name, self.url)

    def release(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def close(self) -> None:
        self.release()
        if self._server is None:
            return
        self._server.close()
        if self._pacer is not None:
            self._pacer.cancel()
        for client in self._connections.values():
            # Abort, not close: a dead camera does not flush what it had queued. Each handler
            # then sees EOF and ends by itself.
            client.writer.transport.abort()
        if self._connections:
            await asyncio.wait(self._connections, timeout=5)
        if self._pacer is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._pacer
        await self._server.wait_closed()
        self._server = self._pacer = None
        self.clients.clear()
        log.info("%s: stopped", self.name)

    def refusal(self, request: _Request) -> str | None:
        """None if the request may proceed, else the WWW-Authenticate challenge to answer."""
        header = request.headers.get("authorization", "")
        if self._digest is not None:
            verdict = self._digest.verify(header, request.method)
            return None if verdict else self._digest.challenge(stale=verdict is None)
        if self._auth is None:
            return None
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "basic" and hmac.compare_digest(value.strip(), self._auth):
            return None
        return 'Basic realm="custodes-sim"'

    def sdp(self) -> str:
        ip = "IP6" if ":" in self.host else "IP4"
        lines = [
            "v=0",
            f"o=- {self.ssrc} 1 IN {ip} {self.host}",
            f"s=custodes sim {self.name}",
            f"c=IN {ip} {self.host}",
            "t=0 0",
            "a=control:*",
            "a=range:npt=0-",
            f"m=video 0 RTP/AVP {_PAYLOAD_TYPE}",
            f"a=rtpmap:{_PAYLOAD_TYPE} {self.clip.codec}/{RTP_CLOCK}",
            f"a=fmtp:{_PAYLOAD_TYPE} {self.clip.fmtp()}",
            f"a=framerate:{self.clip.fps:g}",
            f"a=x-dimensions:{self.clip.width},{self.clip.height}",
            f"a=control:{_TRACK}",
        ]
        return "\r\n".join(lines) + "\r\n"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        client = self._connections[task] = _Client(self, reader, writer)
        try:
            await client.serve()
        finally:
            del self._connections[task]

    async def _pace(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        played = 0  # RTP ticks of the passes already made through the clip
        while True:
            for unit in self.clip.units:
                tick = played + unit.pts
                lag = loop.time() - (start + tick / RTP_CLOCK)
                if lag < 0:
                    await asyncio.sleep(-lag)
                elif lag > _MAX_LAG_S:
                    log.warning("%s: %.1f s behind real time, skipping ahead", self.name, lag)
                    start += lag
                self._broadcast(unit, (self._ts_base + tick) & 0xFFFFFFFF, loop.time())
            played += self.clip.period

    def _broadcast(self, unit: AccessUnit, timestamp: int, now: float) -> None:
        targets: list[_Client] = []
        for client in list(self.clients):
            if not client.joined:
                if not unit.keyframe:
                    continue
                client.joined = True
                client.send(self._report(client, timestamp))
            targets.append(client)
        if not targets:
            return
        last = len(unit.payloads) - 1
        packets: list[tuple[bytes, bytes]] = []
        for index, payload in enumerate(unit.payloads):
            marker = 0x80 if index == last else 0
            header = struct.pack(
                "!BBHII", 0x80, marker | _PAYLOAD_TYPE, self._seq, timestamp, self.ssrc
            )
            self._seq = (self._seq + 1) & 0xFFFF
            self._octets += len(payload)
            packets.append((header, payload))
        self._packets += len(packets)
        framed: dict[int, bytes] = {}
        for client in targets:
            if client.channel not in framed:
                framed[client.channel] = _interleave(client.channel, packets)
            client.send(framed[client.channel])
        if now - self._last_report >= _REPORT_INTERVAL_S:
            self._last_report = now
            for client in targets:
                client.send(self._report(client, timestamp))

    def _report(self, client: _Client, timestamp: int) -> bytes:
        report = _rtcp_report(self.ssrc, timestamp, self._packets, self._octets)
        return struct.pack("!cBH", b"$", client.channel + 1, len(report)) + report


class SimServer:
    """RTSP cameras served from a background thread, for tests, benchmarks and demos.

    `add_camera` binds the camera's port at once (so its URL is known) and works before or after
    `start`; cameras start streaming when the server starts, or immediately if it already has.
    A camera's URL is `rtsp://HOST:PORT/stream`. Use as a context manager, or call `stop`.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        max_client_buffer: int | None = None,
    ) -> None:
        """`max_client_buffer`: bytes queued for a client, in our buffer and again in the
        kernel's, before it is dropped as too slow (default: two seconds of its camera's stream,
        at least 256 KiB)."""
        self.host = host
        self._max_payload = max_payload
        self._max_client_buffer = max_client_buffer
        self._cameras: dict[str, _Camera] = {}
        self._clips: dict[Path, Clip] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def urls(self) -> dict[str, str]:
        with self._lock:
            return {name: camera.url for name, camera in self._cameras.items()}

    def add_camera(
        self,
        name: str,
        media: Path,
        *,
        port: int = 0,
        username: str | None = None,
        password: str | None = None,
        auth: AuthScheme = AuthScheme.BASIC,
    ) -> str:
        """Serve `media` (MP4, H.264/H.265, no B-frames) in a loop; port 0 picks a free one.

        With `username` and `password`, every request but OPTIONS needs Basic or (with
        `auth=AuthScheme.DIGEST`) Digest authentication.
        """
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        credentials = None
        if username is not None and password is not None:
            credentials = (username, password)
        with self._lock:
            if name in self._cameras:
                raise ValueError(f"camera {name!r} already exists")
            key = media.resolve()
            if key not in self._clips:
                # Loaded once and shared: 64 cameras of one sample cost one sample's memory.
                self._clips[key] = load_clip(key, max_payload=self._max_payload)
            camera = _Camera(
                name,
                host=self.host,
                port=port,
                clip=self._clips[key],
                credentials=credentials,
                max_client_buffer=self._max_client_buffer,
                auth=auth,
            )
            camera.reserve()
            self._cameras[name] = camera
        if self._loop is not None:
            self._call(camera.open())
        return camera.url

    def start(self) -> None:
        if self._loop is not None:
            return
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="custodes-sim", daemon=True
        )
        self._thread.start()
        for camera in list(self._cameras.values()):
            if camera.wanted:
                self._call(camera.open())

    def clip(self, name: str) -> Clip:
        """What camera `name` serves: codec, size, frame rate (the simulated ONVIF profiles)."""
        return self._camera(name).clip

    def stop_camera(self, name: str) -> None:
        """Close the port and drop every client: new clients get "connection refused"."""
        camera = self._camera(name)
        camera.wanted = False
        if self._loop is None:
            camera.release()
        else:
            self._call(camera.close())

    def start_camera(self, name: str) -> None:
        """Listen again on the same port; OSError if something else took it meanwhile."""
        camera = self._camera(name)
        camera.wanted = True
        if self._loop is None:
            camera.reserve()
        else:
            self._call(camera.open())

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            for camera in self._cameras.values():
                camera.release()
            return
        for camera in list(self._cameras.values()):
            self._call(camera.close())
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _camera(self, name: str) -> _Camera:
        with self._lock:
            try:
                return self._cameras[name]
            except KeyError:
                raise KeyError(f"no camera named {name!r}") from None

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)
