"""Live video by stream copy (custodes.live.stream, api/routes/live_stream.py): the camera's own
H.264, remuxed to fragmented MP4 over a WebSocket, only to roles allowed originals.

Against the simulator's real RTSP on loopback: the WebSocket's init segment and fragments decode
with PyAV at the camera's resolution, carry the camera's own coded frames byte for byte (no
re-encode), one upstream serves two viewers, and the refusals (anonymous, another origin, a
camera outside the user's, a redacted-only role, no CSRF token) open no stream at all.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import pytest
import yaml
from fastapi import FastAPI
from starlette.websockets import WebSocketDisconnect

from custodes.api.deps import SESSION_COOKIE
from custodes.api.routes import live_stream as live_stream_route
from custodes.app import Node
from custodes.audit.actions import Action
from custodes.auth.roles import Role
from custodes.auth.sessions import digest
from custodes.config import parse_config
from custodes.live.stream import (
    QUEUE_ITEMS,
    CameraStreams,
    Fragment,
    LiveStreams,
    Message,
    StreamKind,
    Viewer,
    parse_fragment,
)
from custodes.sim import SimServer, ensure_sample
from test_auth import PASSWORD, add_user, audit_entries, get_users_of, make_app, signed_in

with warnings.catch_warnings():
    # As test_auth: Starlette's test client warns that it is driven by httpx.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient, WebSocketDenialResponse

ORIGIN = "http://testserver"  # TestClient's own origin
MAIN = (640, 360)
SUB = (320, 180)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    return {
        "main": ensure_sample(folder, width=MAIN[0], height=MAIN[1], fps=15, bitrate_kbps=600,
                              codec="h264", seconds=4),
        "sub": ensure_sample(folder, width=SUB[0], height=SUB[1], fps=15, bitrate_kbps=200,
                             codec="h264", seconds=4),
    }


@pytest.fixture
def sim(clips: dict[str, Path]) -> Iterator[SimServer]:
    with SimServer() as server:
        server.add_camera("cam1-main", clips["main"])
        server.add_camera("cam1-sub", clips["sub"])
        server.add_camera("cam2-main", clips["main"])
        yield server


@pytest.fixture
def node(tmp_path: Path, sim: SimServer) -> Iterator[Node]:
    urls = sim.urls
    node = Node(parse_config(yaml.safe_dump({
        "profile": "school",
        "sites": {"site": {"name": "Test site"}},
        "cameras": {
            "cam1": {"site": "site", "location": "corridor", "purpose": "stream test",
                     "main_url": urls["cam1-main"], "sub_url": urls["cam1-sub"]},
            "cam2": {"site": "site", "location": "entrance", "purpose": "stream test",
                     "main_url": urls["cam2-main"]},
        },
        "storage": {"path": str(tmp_path / "var")},
    })))
    node.layout.create()
    node.store.open()
    node.live_streams.linger = 0.5
    try:
        yield node
    finally:
        node.live_streams.stop()
        node.store.close()


@pytest.fixture
def app(node: Node) -> FastAPI:
    return make_app(node)


def url(camera: str, stream: str = "sub") -> str:
    return f"/api/cameras/{camera}/live/stream?stream={stream}"


def watch(c: TestClient, camera: str, stream: str = "sub", *, origin: str | None = ORIGIN,
          csrf: str | None = None, headers: dict[str, str] | None = None) -> Any:
    headers = {**({"origin": origin} if origin is not None else {}), **(headers or {})}
    ws = c.websocket_connect(url(camera, stream), headers=headers)
    return ws, (c.headers.get("X-CSRF-Token", "") if csrf is None else csrf)


def receive_video(ws: Any, fragments: int, timeout: float = 60) -> tuple[
        list[dict[str, Any]], bytes, list[bytes]]:
    """Messages until `fragments` media fragments came: the JSON ones, the init segment and the
    fragments (each a moof+mdat)."""
    control: list[dict[str, Any]] = []
    init = b""
    media: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(media) < fragments:
        assert time.monotonic() < deadline, f"only {len(media)} fragments in {timeout} s"
        message = ws.receive()
        if message.get("text") is not None:
            control.append(json.loads(message["text"]))
        elif message.get("bytes") is not None:
            data = message["bytes"]
            if data[4:8] == b"ftyp":
                init, media = data, []
            else:
                media.append(data)
        else:
            raise AssertionError(f"closed: {message}")
    return control, init, media


def packets_of(data: bytes) -> tuple[av.VideoCodecContext, list[bytes], list[av.VideoFrame]]:
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.video[0]
        packets = [bytes(p) for p in container.demux(stream) if p.size]
    with av.open(io.BytesIO(data), mode="r") as container:
        frames = list(container.decode(video=0))
        ctx = container.streams.video[0].codec_context
    return ctx, packets, frames


def nal_units(packet: bytes) -> list[bytes]:
    """The NAL units of an MP4 (length-prefixed) H.264 sample."""
    out, pos = [], 0
    while pos + 4 <= len(packet):
        size = int.from_bytes(packet[pos:pos + 4], "big")
        out.append(packet[pos + 4:pos + 4 + size])
        pos += 4 + size
    return out


@pytest.mark.slow
def test_the_websocket_sends_the_cameras_own_video(app: FastAPI, node: Node,
                                                   clips: dict[str, Path]) -> None:
    olga = add_user(app, "olga", Role.OPERATOR)
    c = signed_in(app, olga)
    for stream, size in (("sub", SUB), ("main", MAIN)):
        ws, csrf = watch(c, "cam1", stream)
        with ws:
            ws.send_text(json.dumps({"csrf": csrf}))
            control, init, media = receive_video(ws, 30)
        [info] = [m for m in control if m["type"] == "init"]
        assert (info["width"], info["height"]) == size
        assert info["mime"].startswith('video/mp4; codecs="avc1.')
        assert any(m["type"] == "state" and m["state"] == "live" for m in control)
        # A new viewer starts at a keyframe: its first fragment is one.
        assert parse_fragment(media[0])[1]
        ctx, packets, frames = packets_of(init + b"".join(media))
        assert (ctx.name, ctx.width, ctx.height) == ("h264", *size)
        assert len(frames) == len(media) >= 30
        assert all((f.width, f.height) == size for f in frames)
        assert frames[0].key_frame
        # No re-encode: every coded picture (slice) is one of the camera's, byte for byte
        # (keyframes arrive with the parameter sets in band), and the parameter sets are the
        # camera's.
        source_ctx, source_packets, _ = packets_of(clips[stream].read_bytes())
        slices = {n for p in packets for n in nal_units(p) if n[0] & 0x1F in (1, 5)}
        assert len(slices) >= 30
        assert slices <= {n for p in source_packets for n in nal_units(p)}
        assert source_ctx.extradata is not None
        assert ctx.extradata == source_ctx.extradata
        assert (ctx.profile, ctx.pix_fmt) == (source_ctx.profile, source_ctx.pix_fmt)
    # Watching originals is on the record: once per session and camera (the hour's rule).
    entries = audit_entries(node, Action.LIVE_ORIGINAL)
    assert [(e["actor"], e["target"]) for e in entries] == [("olga", "cam1")]
    assert json.loads(entries[0]["detail"])["stream"] == "sub"


@pytest.mark.slow
def test_one_upstream_feeds_two_viewers_and_stops_after_them(app: FastAPI,
                                                             node: Node) -> None:
    c1 = signed_in(app, add_user(app, "olga", Role.OPERATOR))
    c2 = signed_in(app, add_user(app, "ivan", Role.INVESTIGATOR))
    ws1, csrf1 = watch(c1, "cam2")
    ws2, csrf2 = watch(c2, "cam2")
    with ws1, ws2:
        ws1.send_text(json.dumps({"csrf": csrf1}))
        ws2.send_text(json.dumps({"csrf": csrf2}))
        got: dict[str, Any] = {}
        threads = [threading.Thread(target=lambda k=k, w=w: got.__setitem__(
            k, receive_video(w, 20))) for k, w in (("one", ws1), ("two", ws2))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        assert set(got) == {"one", "two"}
        upstreams = node.live_streams.upstreams
        # cam2 has no sub stream: its main stream serves the grid, one ffmpeg for both.
        assert list(upstreams) == [("cam2", StreamKind.SUB)]
        [upstream] = upstreams.values()
        assert upstream.started == 1
        assert len(upstream.viewers) == 2
        for _control, init, media in got.values():
            _ctx, _packets, frames = packets_of(init + b"".join(media))
            assert (frames[0].width, frames[0].height) == MAIN
    wait_for("the upstream to stop after its viewers", lambda: not node.live_streams.upstreams)


def wait_for(what: str, condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
        time.sleep(0.1)


def refused(ws: Any, csrf: str | None = None) -> tuple[int, str]:
    """The close code and reason of a WebSocket the server closes at once."""
    with ws:
        if csrf is not None:
            ws.send_text(json.dumps({"csrf": csrf}))
        message = ws.receive()
    assert message["type"] == "websocket.close", message
    return message["code"], message.get("reason") or ""


def test_refusals_open_no_stream(app: FastAPI, node: Node) -> None:
    viewer = add_user(app, "vera", Role.VIEWER)  # redacted pictures only
    admin = add_user(app, "root", Role.ADMIN)
    cleo = add_user(app, "cleo", Role.OPERATOR, ["cam2"])
    olga = add_user(app, "olga", Role.OPERATOR)

    # Anonymous: no session cookie.
    anonymous = TestClient(app, client=("127.0.0.1", 50000))
    assert refused(watch(anonymous, "cam1")[0])[0] == 4401
    # The attack the profile exists for: a redacted-only role asks for the originals.
    for user in (viewer, admin):
        code, reason = refused(watch(signed_in(app, user), "cam1")[0])
        assert code == 4403
        assert "may not see original video" in reason
    # A camera outside the user's cameras.
    code, reason = refused(watch(signed_in(app, cleo), "cam1")[0])
    assert (code, reason) == (4403, "you have no access to camera 'cam1'")
    # A camera that does not exist.
    assert refused(watch(signed_in(app, olga), "cam9")[0])[0] == 4404
    # An operator whose password someone else made (a new account, a reset): nothing before
    # their own password, as over HTTP.
    fresh = get_users_of(app).add("fred", Role.OPERATOR, PASSWORD, temporary=True)
    code, reason = refused(watch(signed_in(app, fresh), "cam1")[0])
    assert code == 4403
    assert "password" in reason
    # A page of another site (or no Origin at all) opening it with olga's cookie: the
    # handshake itself is refused.
    for origin in ("http://evil.example", None, "https://testserver"):
        ws, _ = watch(signed_in(app, olga), "cam1", origin=origin)
        with pytest.raises((WebSocketDisconnect, WebSocketDenialResponse)), ws:
            ws.receive()
    # A phone, under the school profile's device policy (custodes.api.devices).
    phone = {"user-agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile"}
    ws, _ = watch(signed_in(app, olga), "cam1", headers=phone)
    with pytest.raises(WebSocketDisconnect) as closed, ws:
        ws.receive()
    assert closed.value.code == 4403
    assert "phones" in closed.value.reason
    # No CSRF token, or another session's.
    other = signed_in(app, cleo).headers["X-CSRF-Token"]
    for csrf in ("", "forged", other):
        ws, _ = watch(signed_in(app, olga), "cam1")
        assert refused(ws, csrf) == (4403, "missing or wrong CSRF token")

    # Nothing was streamed to anyone: no camera connection was even opened.
    assert node.live_streams.upstreams == {}
    assert audit_entries(node, Action.LIVE_ORIGINAL) == []
    refusals = [(e["actor"], e["action"], e["target"]) for e in audit_entries(node)
                if e["outcome"] == "refused"]
    path = "/api/cameras/cam1/live/stream"
    assert ("vera", "access", path) in refusals
    assert ("root", "access", path) in refusals
    assert ("cleo", "camera.access", "cam1") in refusals
    assert ("fred", "access", path) in refusals
    assert ("olga", "device.refused", path) in refusals
    assert refusals.count(("olga", "access", path)) == 3 + 3  # three origins, three tokens


@pytest.mark.slow
def test_api_tokens_do_not_open_live_video(app: FastAPI, node: Node) -> None:
    """Live originals are a person's view in a browser: a script's token is refused with the
    reason (HTTP 401 at the handshake), even beside a valid session cookie."""
    olga = add_user(app, "olga", Role.OPERATOR)
    _, token = app.state.sessions.create_token(olga, "script")
    for c, bearer in ((TestClient(app, client=("127.0.0.1", 50000)), token),
                      (signed_in(app, olga), token),
                      (TestClient(app, client=("127.0.0.1", 50000)), "cst_unknown")):
        ws, _ = watch(c, "cam1", headers={"authorization": f"Bearer {bearer}"})
        with pytest.raises(WebSocketDenialResponse) as denied, ws:
            ws.receive()
        assert denied.value.status_code == 401
        assert "API tokens do not open live video" in denied.value.json()["detail"]
    assert node.live_streams.upstreams == {}
    assert audit_entries(node, Action.LIVE_ORIGINAL) == []
    # The two attempts with olga's token are on record as hers; the unknown one names nobody.
    refusals = [(e["actor"], e["target"]) for e in audit_entries(node, Action.ACCESS)
                if e["outcome"] == "refused"]
    assert refusals == [("olga", "/api/cameras/cam1/live/stream")] * 2


# -- the fan-out's queues, without a camera -----------------------------------------------------

def test_a_slow_viewer_skips_to_a_keyframe_and_holds_up_nobody() -> None:
    async def run() -> tuple[Viewer, list[int], int]:
        loop = asyncio.get_running_loop()
        slow, fast = Viewer(loop), Viewer(loop)
        total = QUEUE_ITEMS + 64
        for i in range(total):  # a keyframe every 50 fragments
            fragment = Fragment(i.to_bytes(4, "big"), i, keyframe=i % 50 == 0)
            for viewer in (slow, fast):
                viewer.put(Message(fragment.data, 4), fragment=fragment)
            await fast.get()  # the fast one keeps up; the slow one takes nothing
        queued = []
        while slow._queue:  # what is waiting for the slow one
            data = (await slow.get()).data
            assert isinstance(data, bytes)
            queued.append(int.from_bytes(data, "big"))
        return fast, queued, total

    fast, queued, total = asyncio.run(run())
    assert fast.dropped == 0
    # Full at QUEUE_ITEMS: what it had was dropped, and it took up again at the next keyframe.
    resumed = (QUEUE_ITEMS // 50 + 1) * 50
    assert queued == list(range(resumed, total))


def receive_until(ws: Any, want: Callable[[dict[str, Any]], bool], timeout: float = 60
                  ) -> dict[str, Any]:
    """JSON messages (fragments skipped) until one that `want`s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = ws.receive()
        if message["type"] == "websocket.close":
            raise AssertionError(f"closed: {message}")
        if message.get("text") is None:
            continue
        data: dict[str, Any] = json.loads(message["text"])
        if want(data):
            return data
    raise AssertionError(f"not within {timeout} s")


@pytest.mark.slow
def test_a_camera_that_goes_down_says_so_and_comes_back(app: FastAPI, node: Node,
                                                        sim: SimServer) -> None:
    c = signed_in(app, add_user(app, "olga", Role.OPERATOR))
    ws, csrf = watch(c, "cam2")
    with ws:
        ws.send_text(json.dumps({"csrf": csrf}))
        receive_video(ws, 5)
        sim.stop_camera("cam2-main")
        down = receive_until(ws, lambda m: m.get("state") == "down")
        assert down["detail"].startswith("camera down")
        sim.start_camera("cam2-main")
        # Back on the same connection: a new init segment, then video.
        receive_until(ws, lambda m: m["type"] == "init")
        _control, init, media = receive_video(ws, 5)
        assert init
        assert len(media) == 5
    [upstream] = node.live_streams.upstreams.values()
    assert upstream.started >= 2


@pytest.mark.slow
def test_the_video_ends_with_the_session(app: FastAPI, node: Node,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live_stream_route, "RECHECK", 0.3)
    c = signed_in(app, add_user(app, "olga", Role.OPERATOR))
    ws, csrf = watch(c, "cam2")
    with ws:
        ws.send_text(json.dumps({"csrf": csrf}))
        receive_video(ws, 3)
        cookie = c.cookies.get(SESSION_COOKIE)
        assert cookie is not None
        app.state.sessions.end(digest(cookie))  # signed out elsewhere
        deadline = time.monotonic() + 30
        while (message := ws.receive())["type"] != "websocket.close":
            assert time.monotonic() < deadline
    assert (message["code"], message["reason"]) == (4401, "the session ended")


@pytest.mark.slow
def test_an_h265_camera_is_announced_with_its_codec(tmp_path: Path) -> None:
    clip = ensure_sample(tmp_path, width=320, height=240, fps=15, bitrate_kbps=200,
                         codec="h265", seconds=2)

    async def first_init(url: str) -> dict[str, object]:
        hub = LiveStreams(lambda: {"cam": CameraStreams(url)})
        viewer = Viewer(asyncio.get_running_loop())
        hub.subscribe("cam", StreamKind.SUB, viewer)
        try:
            while True:
                message = await asyncio.wait_for(viewer.get(), 60)
                if isinstance(message.data, dict) and message.data["type"] == "init":
                    return message.data
        finally:
            hub.stop()

    with SimServer() as server:
        info = asyncio.run(first_init(server.add_camera("h265", clip)))
    # A browser asks MediaSource.isTypeSupported with this, and falls back to the redacted
    # pictures when it says no.
    assert re.fullmatch(r'video/mp4; codecs="(hvc1|hev1)\.1\.6\.L\d+(\.[0-9A-F]+)*"',
                        str(info["mime"])), info["mime"]
    assert (info["width"], info["height"]) == (320, 240)
