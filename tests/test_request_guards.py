"""Attacks on requests, sign-in and footage access, each performed for real and refused:
camera passwords in error texts, silent downloads of original footage, bodies sent before or
without sign-in (over real HTTP, to uvicorn on 127.0.0.1), decompression bombs, tokens that
outlive their parent, lock-outs of someone else's account, open redirects after sign-in, and
a status page that must not aggregate the whole segment index.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
import tempfile
import threading
import time
import types
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from select import select as wait_readable
from typing import Any

import cv2
import numpy as np
import psutil
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import delete, func, insert, select, update
from starlette import formparsers
from starlette.types import Message, Receive, Scope, Send

from custodes.analytics import worker
from custodes.analytics.worker import Stats
from custodes.api.bodies import FORM_OVERHEAD, JSON_BODY, body_rules
from custodes.api.routes.cases import MAX_PHOTO_BYTES, photo_bytes
from custodes.app import Node
from custodes.audit.actions import Action
from custodes.auth.roles import Role
from custodes.capture.supervisor import CaptureSupervisor, State
from custodes.faces.photos import MAX_PIXELS, PhotoError, check_photo, read_image
from custodes.masking import CredentialFilter, mask_credentials
from custodes.store import schema
from custodes.vision.decode import FrameSource, StreamError
from custodes.web.pages import safe_next
from footage import add_segments
from test_auth import (
    PASSWORD,
    add_user,
    audit_entries,
    client,
    make_app,
    open_node,
    signed_in,
)

CAMERA_URL = "rtsp://user:secret@127.0.0.1:1/cam1"  # as test_auth's node configures cam1


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    yield from open_node(tmp_path)


@pytest.fixture
def app(node: Node) -> FastAPI:
    return make_app(node)


def token_for(app: FastAPI, role: Role, name: str | None = None) -> str:
    user = add_user(app, name or role.value, role)
    _, token = app.state.sessions.create_token(user, "test")
    return str(token)


# -- item 2: camera passwords in error texts ----------------------------------------------------


def test_a_refused_camera_never_shows_its_password(app: FastAPI, node: Node,
                                                   tmp_path: Path) -> None:
    # The attack's raw material, for real: OpenCV's error for a refused camera holds the URL.
    source = FrameSource(CAMERA_URL, 5.0, 320)
    source.start()
    deadline = time.monotonic() + 30
    raw = ""
    try:
        while not raw and time.monotonic() < deadline:
            try:
                source.take()
            except StreamError as exc:
                raw = str(exc)
            time.sleep(0.05)
    finally:
        source.close(timeout=1)
    assert "secret" in raw, raw

    # The analysis worker masks it before the message leaves the process...
    sent: list[Any] = []
    cam = types.SimpleNamespace(
        spec=types.SimpleNamespace(camera="cam1", url=CAMERA_URL,
                                   config=types.SimpleNamespace(fps=5.0)),
        source=types.SimpleNamespace(close=lambda timeout: None), analysis=types.SimpleNamespace(
            flush=lambda: None), lags=[], failures=0, retry_at=0.0, rate=5.0, seen_frame=True)
    worker._offline(cam, types.SimpleNamespace(put=sent.append), raw)  # type: ignore[arg-type]
    [stats] = sent
    assert "secret" not in stats.reason
    assert "rtsp://user:***@127.0.0.1:1/cam1" in stats.reason

    # ...and the node masks whatever reaches it, before keeping it.
    node.events.handle(Stats("cam1", False, raw, 0.0, 0.0, 0, 0, 0))
    assert "secret" not in node.events.stats["cam1"].reason
    # The recorder's own state reason, as ffmpeg words a refusal.
    recorder = CaptureSupervisor("cam2", CAMERA_URL.replace("cam1", "cam2"), tmp_path,
                                 10, on_segment=lambda s: None)
    node.supervisors["cam2"] = recorder
    recorder._set_state(State.OFFLINE, f"{CAMERA_URL.replace('cam1', 'cam2')}: Connection "
                                       "refused; password secret was rejected")
    assert recorder.health.reason == ("rtsp://user:***@127.0.0.1:1/cam2: Connection refused; "
                                      "password *** was rejected")

    # Every role with status.view, on the API and the system page: no password.
    viewer = signed_in(app, add_user(app, "vera", Role.VIEWER))
    status = viewer.get("/api/status")
    assert status.status_code == 200
    assert "secret" not in status.text
    cameras = {c["name"]: c for c in status.json()["cameras"]}
    assert "user:***@" in cameras["cam1"]["analytics"]["reason"]
    assert "user:***@" in cameras["cam2"]["reason"]
    page = signed_in(app, add_user(app, "ada", Role.ADMIN)).get("/system")
    assert page.status_code == 200
    assert "secret" not in page.text
    assert "user:***@" in page.text


def test_log_records_are_masked_with_their_tracebacks() -> None:
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect()
    handler.addFilter(CredentialFilter())
    log = logging.getLogger("test.masking")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("camera %s is offline: %s", "cam1", f"{CAMERA_URL}: refused")
        try:
            raise OSError(f"cannot open {CAMERA_URL}")
        except OSError:
            log.exception("analysis failed")
    finally:
        log.removeHandler(handler)
    assert len(lines) == 2
    assert all("secret" not in line for line in lines), lines
    assert "rtsp://user:***@" in lines[1]


@pytest.mark.parametrize(("text", "expected"), [
    ("rtsp://admin:p@ss@cam.local:554/s failed", "rtsp://admin:***@cam.local:554/s failed"),
    ("'rtsps://a:b@h/x' and http://t0k3n@h/y", "'rtsps://a:***@h/x' and http://***@h/y"),
    ("no url here", "no url here"),
])
def test_mask_credentials(text: str, expected: str) -> None:
    assert mask_credentials(text) == expected
    # A bare copy of a known URL's password goes too (ffmpeg sometimes quotes it alone).
    assert mask_credentials("auth with s3cret% failed", "rtsp://u:s3cret%25@h/") == \
        "auth with *** failed"


# -- item 3: original footage is audited ----------------------------------------------------------


def test_original_segment_downloads_are_audited_once_per_session_and_segment(
        app: FastAPI, node: Node, tmp_path: Path) -> None:
    fake = tmp_path / "clip.mp4"
    fake.write_bytes(os.urandom(4096))
    ids = add_segments(node.store, node.layout, "cam1", [1e9 + 10 * n for n in range(5)], [fake])
    operator = signed_in(app, add_user(app, "otto", Role.OPERATOR))
    # The attack: walk the sequential ids, with and without Range, as a player would.
    for segment_id in ids:
        for headers in ({}, {"Range": "bytes=0-99"}, {"Range": "bytes=100-"}):
            r = operator.get(f"/api/segments/{segment_id}/video", headers=headers)
            assert r.status_code in (200, 206), r.text
    entries = audit_entries(node, Action.SEGMENT_ORIGINAL)
    assert [(e["actor"], e["target"]) for e in entries] == [("otto", str(i)) for i in ids]
    detail = json.loads(entries[0]["detail"])
    assert detail["camera"] == "cam1"
    assert detail["start"] == 1e9
    # A second session, and a bearer token, are audited on their own.
    again = signed_in(app, app.state.users.get("otto"))
    assert again.get(f"/api/segments/{ids[0]}/video").status_code == 200
    _, token = app.state.sessions.create_token(app.state.users.get("otto"), "script")
    scripted = client(app)
    assert scripted.get(f"/api/segments/{ids[0]}/video",
                        headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert len(audit_entries(node, Action.SEGMENT_ORIGINAL)) == len(ids) + 2


# -- item 4: bodies before sign-in, and their size (real HTTP) -----------------------------------


class Meter:
    """Outermost ASGI wrapper: how many body bytes the application pulled from the server,
    and the statuses it answered."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.body = 0
        self.pieces: list[int] = []  # the size of each body message, in order
        self.statuses: list[int] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def counted() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                self.body += len(message.get("body", b""))
                self.pieces.append(len(message.get("body", b"")))
            return message

        async def seen(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.statuses.append(message["status"])
            await send(message)

        await self.app(scope, counted, seen)

    def pulled_past(self, limit: int) -> int:
        """How many body messages the application pulled after the one that took it past
        ``limit``: how long it went on reading what it should refuse."""
        total = 0
        for i, piece in enumerate(self.pieces):
            total += piece
            if total > limit:
                return len(self.pieces) - i - 1
        return 0


@contextmanager
def serving(app: FastAPI) -> Iterator[tuple[int, Meter]]:
    meter = Meter(app)
    server = uvicorn.Server(uvicorn.Config(meter, host="127.0.0.1", port=0, lifespan="off",
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield port, meter
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def spooled(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Bytes written to each temporary file the multipart parser opens."""
    sizes: list[int] = []

    class Counting(tempfile.SpooledTemporaryFile):  # type: ignore[type-arg]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._index = len(sizes)
            sizes.append(0)

        def write(self, s: Any) -> int:
            sizes[self._index] += len(s)
            return int(super().write(s))

    monkeypatch.setattr(formparsers, "SpooledTemporaryFile", Counting)
    return sizes


def head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def stream(port: int, request_head: bytes, *, total: int, chunk: int = 256 * 1024,
           chunked: bool = True) -> tuple[bytes, int]:
    """Send ``request_head`` and then up to ``total`` bytes of body (chunked encoding, or raw
    under a Content-Length), stopping when the server answers or cuts the connection; return
    (what the server answered, body bytes sent)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sent = 0
    answer = b""
    piece = b"x" * chunk
    try:
        sock.sendall(request_head)
        while sent < total:
            readable, _, _ = wait_readable([sock], [], [], 0)
            if readable:
                break
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(piece)
        sock.settimeout(10)
        try:
            while received := sock.recv(65536):
                answer += received
                if b"\r\n\r\n" in answer and b'"}' in answer:
                    break
        except (ConnectionResetError, TimeoutError):
            pass
    finally:
        sock.close()
    return answer, sent


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer.split(b" ", 2)[1])


MULTIPART = "multipart/form-data; boundary=b0undary"


def test_an_anonymous_body_is_refused_before_a_byte_of_it_is_read(
        app: FastAPI, spooled: list[int]) -> None:
    with serving(app) as (port, meter):
        # The attack of item 4: a 2 GB multipart to /api/cases without credentials, chunked
        # (no Content-Length to refuse it by), up to 256 MiB of it actually sent.
        answer, sent = stream(port, head("POST", "/api/cases", {
            "Content-Type": MULTIPART, "Transfer-Encoding": "chunked"}), total=256 * 2**20)
        assert status_of(answer) == 401
        assert b"sign in first" in answer
        assert meter.body == 0  # not one byte of the body reached the application
        assert spooled == []  # nothing was spooled to a temporary file
        assert sent < 64 * 2**20  # the connection was cut, not drained
        # Declared at 2 GB: the same answer, before anything is sent.
        answer, sent = stream(port, head("POST", "/api/cases", {
            "Content-Type": MULTIPART, "Content-Length": str(2 * 2**30)}),
            total=256 * 2**20, chunked=False)
        assert status_of(answer) == 401
        assert meter.body == 0
        # A made-up cookie or token is no sign-in.
        answer, _ = stream(port, head("POST", "/api/auth/tokens", {
            "Content-Type": "application/json", "Content-Length": "20",
            "Cookie": "custodes_session=made-up", "Authorization": "Bearer cst_made_up"}),
            total=0)
        assert status_of(answer) == 401
        assert meter.body == 0


def test_a_huge_sign_in_body_is_cut_at_the_json_limit(app: FastAPI) -> None:
    process = psutil.Process()
    with serving(app) as (port, meter):
        before = process.memory_info().rss
        # The attack: a 400 MB JSON sign-in (chunked, so no length announces it).
        answer, sent = stream(port, head("POST", "/api/auth/login", {
            "Content-Type": "application/json", "Transfer-Encoding": "chunked"}),
            total=400 * 2**20, chunk=64 * 1024)
        grown = process.memory_info().rss - before
        assert status_of(answer) == 413
        assert b"64 KiB" in answer
        # The server hands the body over in pieces of whatever one socket read returned (up
        # to 256 KiB under load), so the bound is in pieces: the guard stops at the first one
        # that passes the limit, and the refusal may pull one more while it answers.
        assert meter.pulled_past(JSON_BODY) <= 1, meter.pieces
        assert max(meter.pieces) <= 256 * 1024
        assert sent < 64 * 2**20
        assert grown < 50 * 2**20, f"the server grew by {grown / 2**20:.0f} MiB"
        # Announced by its Content-Length: refused before a byte is read.
        read_before = meter.body
        answer, _ = stream(port, head("POST", "/api/auth/login", {
            "Content-Type": "application/json", "Content-Length": str(400 * 2**20)}),
            total=0)
        assert status_of(answer) == 413
        assert meter.body == read_before
    # An ordinary sign-in still works.
    add_user(app, "vera", Role.VIEWER)
    ok = client(app).post("/api/auth/login", json={"name": "vera", "password": PASSWORD})
    assert ok.status_code == 200


def test_a_signed_in_upload_is_cut_at_its_routes_limit(app: FastAPI,
                                                       spooled: list[int]) -> None:
    token = token_for(app, Role.INVESTIGATOR)
    limit = MAX_PHOTO_BYTES + FORM_OVERHEAD
    part = (b"--b0undary\r\nContent-Disposition: form-data; name=\"photo\"; "
            b"filename=\"big.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n")
    with serving(app) as (port, meter):
        sock_head = head("POST", "/api/cases/1/subjects", {
            "Content-Type": MULTIPART, "Transfer-Encoding": "chunked",
            "Authorization": f"Bearer {token}"})
        answer, sent = stream(port, sock_head + b"%x\r\n%s\r\n" % (len(part), part),
                              total=80 * 2**20)
        assert status_of(answer) == 413
        assert meter.pulled_past(limit) <= 1, meter.pieces
        assert sum(spooled) <= limit
        assert sent < 60 * 2**20
        # A JSON route refuses a signed-in body over 64 KiB just the same.
        answer, _ = stream(port, head("POST", "/api/auth/tokens", {
            "Content-Type": "application/json", "Content-Length": str(JSON_BODY + 1),
            "Authorization": f"Bearer {token}"}), total=0)
        assert status_of(answer) == 413


def test_every_route_has_a_body_rule(app: FastAPI) -> None:
    rules = {(m, ctx.path): rule for ctx, rule in body_rules(app) for m in ctx.methods or ()}
    # Public: sign-in, health, the sign-in page and the icon; every other body needs a
    # sign-in first.
    assert {path for (_, path), rule in rules.items() if rule.public} <= {
        "/api/auth/login", "/api/health", "/login", "/favicon.ico"}
    assert rules[("POST", "/api/auth/login")].limit == JSON_BODY
    assert rules[("POST", "/api/exports")].limit == JSON_BODY
    assert rules[("POST", "/api/cases/{case_id}/subjects")].limit == \
        MAX_PHOTO_BYTES + FORM_OVERHEAD
    # Routes that take several photos get room for them; nothing else does.
    photo_routes = {path for (_, path), rule in rules.items() if rule.limit > JSON_BODY}
    assert {"/api/cases", "/api/gallery"} <= photo_routes
    assert all(rule.limit <= 10 * MAX_PHOTO_BYTES + FORM_OVERHEAD for rule in rules.values())


# -- item 5: decompression bombs -------------------------------------------------------------------


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """A real 20000 x 20000 grey PNG of about 400 KB: 400 MB of pixels once decoded."""
    width = height = 20000
    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte + pixels
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0,
                                                              0, 0, 0))
           + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    assert len(png) < MAX_PHOTO_BYTES
    return png


def test_a_decompression_bomb_is_refused_from_its_header(bomb: bytes) -> None:
    process = psutil.Process()
    before, started = process.memory_info().rss, time.monotonic()
    with pytest.raises(PhotoError, match="20000x20000"):
        read_image(bomb)
    assert time.monotonic() - started < 1.0
    assert process.memory_info().rss - before < 50 * 2**20
    # A formats whose header is not checked here is not decoded at all.
    ok, tiff = cv2.imencode(".tiff", np.zeros((8, 8, 3), np.uint8))
    assert ok
    with pytest.raises(PhotoError, match="not a JPEG"):
        read_image(tiff.tobytes())
    # Right at the cap is fine.
    assert check_photo(_png_header(MAX_PIXELS // 1000, 1000)) == (MAX_PIXELS // 1000, 1000)


def _png_header(width: int, height: int) -> bytes:
    return b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + struct.pack(">II", width, height) + b"\x08\x02"


def test_photo_routes_refuse_bombs_without_decoding(app: FastAPI, bomb: bytes,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[int] = []
    real = cv2.imdecode

    def counting(*args: Any) -> Any:
        decoded.append(1)
        return real(*args)

    monkeypatch.setattr(cv2, "imdecode", counting)
    investigator = signed_in(app, add_user(app, "ines", Role.INVESTIGATOR))
    now = time.time()
    started = time.monotonic()
    files = {"photos": ("bomb.png", bomb, "image/png")}
    r = investigator.post("/api/cases", data={
        "reference": "R-1", "legal_basis": "warrant 12", "purpose": "find a suspect",
        "cameras": ["cam1"], "start": str(now - 3600), "end": str(now),
        "expires_at": str(now + 86400)}, files=files)
    assert r.status_code == 400, r.text
    assert "Mpx" in r.json()["detail"]
    r = investigator.post("/api/gallery", data={
        "reference": "P-1", "basis_kind": "case", "basis_reference": "R-1",
        "expires_at": str(now + 86400)}, files=files)
    assert r.status_code == 400, r.text
    assert "Mpx" in r.json()["detail"]
    officer = signed_in(app, add_user(app, "olga", Role.APPROVER))
    r = officer.post("/api/subject-access/requests", data={
        "reference": "SAR-1", "requester": "Jo", "identity_check": "passport",
        "camera": "cam1", "start": str(now - 3600), "end": str(now)},
        files={"photo": ("bomb.png", bomb, "image/png")})
    assert r.status_code == 400, r.text
    assert "Mpx" in r.json()["detail"]
    assert decoded == []  # refused from the header: not one decode
    assert time.monotonic() - started < 10


def test_an_accepted_photo_is_not_decoded_to_be_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    ok, png = cv2.imencode(".png", np.zeros((64, 48, 3), np.uint8))
    assert ok

    def refuse(*_: Any) -> Any:
        raise AssertionError("decoded")

    monkeypatch.setattr(cv2, "imdecode", refuse)
    upload = types.SimpleNamespace(file=types.SimpleNamespace(read=lambda n: png.tobytes()[:n]),
                                   filename="a.png")
    assert photo_bytes(upload) == png.tobytes()  # type: ignore[arg-type]


# -- item 16: values that once made 500s -------------------------------------------------------


def test_out_of_range_values_are_4xx_with_a_reason(app: FastAPI) -> None:
    otto = signed_in(app, add_user(app, "otto", Role.OPERATOR))
    r = otto.get("/api/cameras/cam1/timeline", params={"day": "9999-12-31"})
    assert r.status_code == 400
    assert "out of range" in r.json()["detail"]
    token = token_for(app, Role.INVESTIGATOR, "ivan")
    r = client(app).post("/api/exports", json={
        "camera": "cam1", "start": 1, "end": 2, "case": 99999999999999999999999},
        headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"][-1] == "case"


# -- item 17: a token never outlives its parent ---------------------------------------------------


def test_a_token_cannot_mint_a_token_that_outlives_it(app: FastAPI, node: Node) -> None:
    vera = add_user(app, "vera", Role.VIEWER)
    browser = signed_in(app, vera)
    r = browser.post("/api/auth/tokens", json={"name": "short", "days": 1})
    assert r.status_code == 201
    short = {"Authorization": f"Bearer {r.json()['token']}"}
    c = client(app)
    # The attack: the one-day token asks for a token until revoked, or for a year.
    for days in (None, 365, 1.01):
        r = c.post("/api/auth/tokens", json={"name": "forever", "days": days}, headers=short)
        assert r.status_code == 400, r.text
        assert "must expire by then" in r.json()["detail"]
    refused = [e for e in audit_entries(node, Action.TOKEN_CREATE) if e["outcome"] == "refused"]
    assert len(refused) == 3
    # Within the parent's lifetime it may; the child is revoked with its parent.
    r = c.post("/api/auth/tokens", json={"name": "child", "days": 0.5}, headers=short)
    assert r.status_code == 201
    child = {"Authorization": f"Bearer {r.json()['token']}"}
    r = c.post("/api/auth/tokens", json={"name": "grandchild", "days": 0.25}, headers=child)
    assert r.status_code == 201
    grandchild = {"Authorization": f"Bearer {r.json()['token']}"}
    listed = {t["name"]: t for t in browser.get("/api/auth/tokens").json()}
    assert listed["child"]["expires_at"] <= listed["short"]["expires_at"]
    assert listed["child"]["parent_id"] == listed["short"]["id"]
    assert browser.delete(f"/api/auth/tokens/{listed['short']['id']}").status_code == 200
    for headers in (short, child, grandchild):
        assert c.get("/api/auth/me", headers=headers).status_code == 401
    # A signed-in browser (a password sign-in) still makes tokens until revoked.
    assert browser.post("/api/auth/tokens", json={"name": "ci"}).status_code == 201


def test_a_token_made_with_an_unlimited_token_goes_with_it(app: FastAPI, node: Node) -> None:
    vera = add_user(app, "vera", Role.VIEWER)
    parent_id, parent = app.state.sessions.create_token(vera, "ci")
    c = client(app)
    r = c.post("/api/auth/tokens", json={"name": "child"},
               headers={"Authorization": f"Bearer {parent}"})
    assert r.status_code == 201
    child = r.json()["token"]
    assert app.state.sessions.revoke_token(vera, parent_id)
    assert app.state.sessions.token_user(child) is None
    with node.store.read() as conn:
        revoked = conn.execute(select(schema.api_tokens.c.revoked_at)).scalars().all()
    assert all(revoked)


# -- item 18: the lock-out (also in test_auth) ---------------------------------------------------


def test_lock_outs_survive_a_restart_and_bind_account_and_address(node: Node) -> None:
    app = make_app(node)
    add_user(app, "vera", Role.VIEWER)
    guesser = client(app, ("127.0.0.9", 1))
    for _ in range(5):
        guesser.post("/api/auth/login", json={"name": "vera", "password": "nope-nope"})
    with node.store.read() as conn:
        rows = conn.execute(select(schema.login_failures)).all()
    assert {(r.scope, json.loads(r.key)[-1] if r.scope == "account" else r.key)
            for r in rows} == {("account", "127.0.0.9"), ("address", "127.0.0.9")}
    # The node restarts: a fresh application on the same database.
    restarted = make_app(node)
    r = client(restarted, ("127.0.0.9", 1)).post("/api/auth/login",
                                                  json={"name": "vera", "password": PASSWORD})
    assert r.status_code == 429
    ok = client(restarted).post("/api/auth/login", json={"name": "vera", "password": PASSWORD})
    assert ok.status_code == 200


# -- item 19: the redirect after sign-in -----------------------------------------------------------


@pytest.mark.parametrize("target", [
    "/\t/evil.example", "/\n/evil.example", "//evil.example", "/\\evil.example",
    "https://evil.example/", "javascript:alert(1)", " /x", "/ /evil.example", "\x00/x",
    "/\u2028/evil.example", "http:/evil.example", "evil.example",
])
def test_sign_in_never_redirects_off_the_server(app: FastAPI, target: str) -> None:
    assert safe_next(target) == "/"
    page = client(app).get("/login", params={"next": target})
    assert page.status_code == 200
    data = page.text.split('id="page-data"', 1)[1]
    assert "evil" not in data
    assert '"next": "/"' in data


def test_the_attack_url_and_a_signed_in_redirect(app: FastAPI) -> None:
    c = signed_in(app, add_user(app, "vera", Role.VIEWER))
    r = c.get("/login?next=/%09/evil.example", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/"
    r = c.get("/login?next=/timeline%3Fday%3D2024-01-02", follow_redirects=False)
    assert r.headers["location"] == "/timeline?day=2024-01-02"


# -- known gap: /api/status reads running totals ---------------------------------------------------


def test_status_reads_running_totals_kept_by_the_database(app: FastAPI, node: Node) -> None:
    rows = [{"camera": cam, "start": 1e9 + 10 * n, "end": 1e9 + 10 * n + 10, "duration": 10.0,
             "bytes": 1000 + n, "path": f"{cam}/{n}.mp4"}
            for cam in ("cam1", "cam2") for n in range(50)]
    seg, totals = schema.segments, schema.segment_totals
    node.store.write(lambda conn: conn.execute(insert(seg), rows))
    node.store.write(lambda conn: conn.execute(delete(seg).where(seg.c.camera == "cam2",
                                                                 seg.c.start < 1e9 + 100)))
    node.store.write(lambda conn: conn.execute(
        update(seg).where(seg.c.path == "cam1/0.mp4").values(bytes=5)))
    viewer = signed_in(app, add_user(app, "vera", Role.VIEWER))
    cams = {c["name"]: c for c in viewer.get("/api/status").json()["cameras"]}
    with node.store.read() as conn:
        for cam in ("cam1", "cam2"):
            count, size = conn.execute(
                select(func.count(), func.coalesce(func.sum(seg.c.bytes), 0))
                .where(seg.c.camera == cam)).one()
            assert (cams[cam]["segments"], cams[cam]["bytes"]) == (count, size)
    assert cams["cam1"]["oldest"] == 1e9
    assert cams["cam1"]["newest"] == 1e9 + 500
    assert cams["cam2"]["oldest"] == 1e9 + 100
    # What is shown is the running total, not a count made now: set it wrong and see.
    node.store.write(lambda conn: conn.execute(
        update(totals).where(totals.c.camera == "cam1").values(segments=12345)))
    cams = {c["name"]: c for c in viewer.get("/api/status").json()["cameras"]}
    assert cams["cam1"]["segments"] == 12345

