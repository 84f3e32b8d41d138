"""ONVIF, WS-Discovery and RTSP Digest on loopback: the simulator's services against the real
clients (onvif-zeep-async, WSDiscovery's messages, ffmpeg)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from custodes.cameras.discovery import discover
from custodes.cameras.models import FindingCode, StreamRole
from custodes.cameras.probe import probe
from custodes.cameras.rtsp import check_rtsp
from custodes.capture.ffmpeg import ListEntry, parse_list_line, record_argv, record_env
from custodes.cli import app
from custodes.sim import SimServer
from custodes.sim.digest import AuthScheme, response
from custodes.sim.onvif import OnvifIdentity, OnvifSim, SimProfile
from custodes.sim.runner import SimOptions, run_sim

USER, PASSWORD = "admin", "Dahua#2026:pw"
DAHUA = OnvifIdentity(manufacturer="Dahua", model="IPC-HFW2531S-S-S2",
                      firmware="2.800.0000000.16.R, Build Date: 2021-02-22", serial="7A0B1C2D",
                      hardware_id="1.00")


@pytest.fixture
def rtsp(sample_video: Path) -> Iterator[tuple[SimServer, str, str]]:
    """A Digest-protected camera with a main and a sub stream."""
    with SimServer() as sim:
        main = sim.add_camera("main", sample_video, username=USER, password=PASSWORD,
                              auth=AuthScheme.DIGEST)
        sub = sim.add_camera("sub", sample_video, username=USER, password=PASSWORD,
                             auth=AuthScheme.DIGEST)
        yield sim, main, sub


def _profiles(main: str, sub: str) -> list[SimProfile]:
    return [SimProfile("MediaProfile00000", main, "H264", 2592, 1944, 15),
            SimProfile("MediaProfile00001", sub, "H264", 704, 576, 15, bitrate_kbps=512)]


@pytest.fixture
def onvif() -> Iterator[OnvifSim]:
    with OnvifSim() as sim:
        yield sim


# --- WS-Discovery -----------------------------------------------------------------------------


def test_discovery_unicast_finds_the_device(onvif: OnvifSim) -> None:
    device = onvif.add_device(DAHUA, _profiles("rtsp://127.0.0.1:1/a", "rtsp://127.0.0.1:1/b"))
    assert onvif.discovery_port is not None
    found = discover(2.0, hosts=["127.0.0.1"], port=onvif.discovery_port)
    assert [d.xaddrs for d in found] == [(device.url,)]
    assert found[0].endpoint == device.endpoint
    assert found[0].hardware == DAHUA.model
    assert found[0].address == "127.0.0.1"
    assert onvif.probes >= 1


def test_discovery_multicast_on_loopback(onvif: OnvifSim) -> None:
    if not onvif.multicast:
        pytest.skip("this kernel refuses multicast group membership on loopback")
    onvif.add_device(DAHUA, [])
    second = onvif.add_device(OnvifIdentity(manufacturer="HIKVISION", model="DS-2CD2143G2-I"),
                              [])
    assert onvif.discovery_port is not None
    found = discover(2.0, interfaces=["127.0.0.1"], port=onvif.discovery_port)
    assert {d.hardware for d in found} == {DAHUA.model, "DS-2CD2143G2-I"}
    assert second.url in {x for d in found for x in d.xaddrs}


def test_discovery_ignores_other_answers_and_nothing_found_is_empty() -> None:
    # A socket that answers with a ProbeMatch for another probe: not ours, not listed.
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    ident = OnvifIdentity()
    stray = OnvifSim(discovery_port=None)
    device = stray.add_device(ident, [])

    def answer() -> None:
        _, addr = sock.recvfrom(65535)
        sock.sendto(device.probe_match("urn:uuid:someone-else"), addr)

    thread = threading.Thread(target=answer)
    thread.start()
    try:
        assert discover(1.0, hosts=["127.0.0.1"], port=port) == []
    finally:
        thread.join(timeout=5)
        sock.close()


# --- ONVIF probe ------------------------------------------------------------------------------


def test_probe_reads_device_streams_clock_and_protocols(
    rtsp: tuple[SimServer, str, str], onvif: OnvifSim
) -> None:
    _, main, sub = rtsp
    # The camera's clock is 20 minutes ahead: its token check only passes if the client signs
    # with the camera's time (adjust_time), and the drift must be reported.
    identity = dataclasses.replace(DAHUA, clock_offset_s=1200.0, ntp=False)
    device = onvif.add_device(identity, _profiles(main, sub), username=USER, password=PASSWORD)
    result = asyncio.run(probe(device.url, USER, PASSWORD))
    assert result.error is None, result.findings
    assert result.reachable
    assert result.authenticated
    assert result.device is not None
    assert (result.device.manufacturer, result.device.model, result.device.firmware,
            result.device.serial) == (DAHUA.manufacturer, DAHUA.model, DAHUA.firmware,
                                      DAHUA.serial)
    main_stream, sub_stream = result.stream(StreamRole.MAIN), result.stream(StreamRole.SUB)
    assert main_stream is not None
    assert sub_stream is not None
    assert (main_stream.uri, main_stream.width, main_stream.height, main_stream.fps,
            main_stream.codec) == (main, 2592, 1944, 15.0, "H264")
    assert (sub_stream.uri, sub_stream.width, sub_stream.height) == (sub, 704, 576)
    assert result.clock is not None
    assert 1195 <= result.clock.drift_s <= 1205
    assert result.clock.ntp is False
    assert {p.name for p in result.protocols if p.enabled} == {"HTTP", "RTSP"}
    codes = {f.code for f in result.findings}
    assert FindingCode.CLOCK_DRIFT in codes
    assert FindingCode.CLEARTEXT_PROTOCOL in codes
    # Digest-protected RTSP and an ONVIF service that wants credentials: nothing open.
    assert not codes & {FindingCode.RTSP_WITHOUT_AUTH, FindingCode.ONVIF_WITHOUT_AUTH,
                        FindingCode.USERS_LISTED_ANONYMOUSLY, FindingCode.RTSP_BASIC_AUTH}
    assert ("GetDeviceInformation", True) in device.requests
    assert ("GetDeviceInformation", False) in device.requests  # the anonymous attempt, refused


def test_probe_with_a_wrong_password_fails_with_a_reason(
    rtsp: tuple[SimServer, str, str], onvif: OnvifSim
) -> None:
    _, main, sub = rtsp
    device = onvif.add_device(DAHUA, _profiles(main, sub), username=USER, password=PASSWORD)
    result = asyncio.run(probe(device.url, USER, "wrong"))
    assert result.reachable
    assert not result.authenticated
    assert result.error is not None
    assert "refused the credentials" in result.error
    assert result.device is None
    assert result.streams == []
    assert FindingCode.AUTH_FAILED in {f.code for f in result.findings}
    assert ("GetDeviceInformation", True) not in device.requests


def test_anonymous_probe_says_credentials_are_needed(
    rtsp: tuple[SimServer, str, str], onvif: OnvifSim
) -> None:
    _, main, sub = rtsp
    device = onvif.add_device(DAHUA, _profiles(main, sub), username=USER, password=PASSWORD)
    result = asyncio.run(probe(device.url))
    assert result.reachable
    assert not result.authenticated
    assert result.error is not None
    assert "needs credentials" in result.error
    assert result.device is None
    assert {f.code for f in result.findings} == {FindingCode.NO_CREDENTIALS}


def test_anonymous_user_list_and_device_information_are_findings(
    rtsp: tuple[SimServer, str, str], onvif: OnvifSim
) -> None:
    _, main, sub = rtsp
    leaky = OnvifIdentity(manufacturer="Dahua", model="IPC-HDW1230T", anonymous_users=True,
                          anonymous_access=True, users=[("admin", "Administrator"),
                                                        ("installer", "Operator")])
    device = onvif.add_device(leaky, _profiles(main, sub), username=USER, password=PASSWORD)
    result = asyncio.run(probe(device.url))  # no credentials at all
    codes = {f.code for f in result.findings}
    assert FindingCode.USERS_LISTED_ANONYMOUSLY in codes
    assert FindingCode.ONVIF_WITHOUT_AUTH in codes
    listed = next(f for f in result.findings if f.code is FindingCode.USERS_LISTED_ANONYMOUSLY)
    assert "installer" in listed.message
    # What an anonymous client can read, it reads: the device and its streams.
    assert result.device is not None
    assert result.device.model == "IPC-HDW1230T"
    assert {s.uri for s in result.streams} == {main, sub}


def test_unreachable_camera_fails_cleanly() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    result = asyncio.run(probe(f"http://127.0.0.1:{port}/onvif/device_service", USER, PASSWORD,
                               timeout=10))
    assert not result.reachable
    assert result.error is not None
    assert "cannot connect" in result.error
    assert {f.code for f in result.findings} == {FindingCode.UNREACHABLE}
    rtsp_result = asyncio.run(probe(f"rtsp://127.0.0.1:{port}/stream"))
    assert not rtsp_result.reachable
    assert rtsp_result.error is not None


def test_probe_refuses_other_schemes() -> None:
    result = asyncio.run(probe("ftp://127.0.0.1/x"))
    assert result.error is not None
    assert "rtsp://" in result.error


# --- RTSP Digest ------------------------------------------------------------------------------


def test_rtsp_digest_check(rtsp: tuple[SimServer, str, str]) -> None:
    _, main, _ = rtsp
    anonymous = asyncio.run(check_rtsp(main))
    assert anonymous.reachable
    assert not anonymous.open_without_credentials
    assert anonymous.schemes == ["digest"]
    assert anonymous.error is not None
    assert "requires credentials" in anonymous.error
    wrong = asyncio.run(check_rtsp(main, USER, "nope"))
    assert wrong.authenticated is False
    assert "refused" in (wrong.error or "")
    right = asyncio.run(check_rtsp(main, USER, PASSWORD))
    assert right.authenticated is True
    assert right.error is None
    assert right.codec == "H264"


def test_rtsp_probe_of_a_digest_camera(rtsp: tuple[SimServer, str, str]) -> None:
    _, main, _ = rtsp
    result = asyncio.run(probe(main, USER, PASSWORD))
    assert result.error is None
    assert result.authenticated
    assert [(s.role, s.uri, s.codec) for s in result.streams] == [(StreamRole.MAIN, main,
                                                                   "H264")]
    assert not {f.code for f in result.findings} & {FindingCode.RTSP_WITHOUT_AUTH,
                                                    FindingCode.RTSP_BASIC_AUTH}


def test_digest_server_checks_the_response(rtsp: tuple[SimServer, str, str]) -> None:
    """Raw requests: a Basic answer to a Digest camera, a replayed made-up nonce and a response
    for another method are all refused; the right response for DESCRIBE is not."""
    _, main, _ = rtsp
    host, port = main.split("/")[2].split(":")

    def describe(sock: socket.socket, cseq: int, authorization: str | None) -> tuple[int, str]:
        lines = [f"DESCRIBE {main} RTSP/1.0", f"CSeq: {cseq}"]
        if authorization:
            lines.append(f"Authorization: {authorization}")
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(4096)
        head = data.split(b"\r\n\r\n")[0].decode()
        status = int(head.split()[1])
        challenge = next((line.split(":", 1)[1].strip() for line in head.split("\r\n")
                          if line.lower().startswith("www-authenticate")), "")
        length = next((int(line.split(":")[1]) for line in head.split("\r\n")
                       if line.lower().startswith("content-length")), 0)
        rest = data.split(b"\r\n\r\n", 1)[1]
        while len(rest) < length:
            rest += sock.recv(4096)
        return status, challenge

    with socket.create_connection((host, int(port)), timeout=10) as sock:
        status, challenge = describe(sock, 1, None)
        assert status == 401
        assert challenge.startswith("Digest ")
        realm = challenge.split('realm="')[1].split('"')[0]
        nonce = challenge.split('nonce="')[1].split('"')[0]

        def header(method: str, nonce_: str, password: str = PASSWORD) -> str:
            answer = response(username=USER, password=password, realm=realm, method=method,
                              uri=main, nonce=nonce_)
            return (f'Digest username="{USER}", realm="{realm}", nonce="{nonce_}", '
                    f'uri="{main}", response="{answer}"')

        assert describe(sock, 2, "Basic YWRtaW46cHc=")[0] == 401
        assert describe(sock, 3, header("DESCRIBE", "0" * 32))[0] == 401
        assert describe(sock, 4, header("PLAY", nonce))[0] == 401
        assert describe(sock, 5, header("DESCRIBE", nonce, "wrong"))[0] == 401
        assert describe(sock, 6, header("DESCRIBE", nonce))[0] == 200


@pytest.mark.slow
def test_recorder_records_a_digest_protected_camera(
    rtsp: tuple[SimServer, str, str], tmp_path: Path
) -> None:
    """The recorder's own ffmpeg command (capture.ffmpeg) writes segments from a camera that
    asks for Digest, and is refused without the password."""
    _, main, _ = rtsp
    cache = tmp_path / "cache"
    cache.mkdir()
    with_creds = main.replace("rtsp://", f"rtsp://{USER}:Dahua%232026%3Apw@")
    argv = record_argv(with_creds, cache, segment_seconds=1, run=1)
    env = record_env({"PATH": "/usr/bin:/bin"})
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=env) as ffmpeg:
        assert ffmpeg.stdout is not None
        segments: list[ListEntry] = []
        deadline = time.monotonic() + 60
        while len(segments) < 2 and time.monotonic() < deadline:
            line = ffmpeg.stdout.readline()
            if not line:
                break
            if (entry := parse_list_line(line)) is not None:
                segments.append(entry)
        ffmpeg.terminate()
        _, stderr = ffmpeg.communicate(timeout=20)
    assert len(segments) >= 2, stderr
    for entry in segments:
        path = cache / entry.name
        assert path.stat().st_size > 1000
        assert entry.end > entry.start
    refused = subprocess.run(record_argv(main, tmp_path, 1, 2), capture_output=True, text=True,
                             timeout=60, check=False, env=env)
    assert refused.returncode != 0
    assert "401" in refused.stderr


# --- the simulator and the commands ---------------------------------------------------------


@pytest.mark.slow
def test_sim_command_serves_onvif_and_digest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    stop = threading.Event()
    monkeypatch.setenv("CUSTODES_SIM_PASSWORD", PASSWORD)
    options = SimOptions(auth=AuthScheme.DIGEST, onvif=DAHUA, discovery_port=0)
    runner = threading.Thread(target=run_sim, args=(tmp_path, 1), kwargs={
        "width": 320, "height": 240, "fps": 15, "bitrate_kbps": 300, "codec": "h264",
        "base_port": 0, "stop": stop, "options": options})
    runner.start()
    out = ""
    try:
        deadline = time.monotonic() + 60
        while "discovery " not in out and time.monotonic() < deadline and runner.is_alive():
            out += capsys.readouterr().out
            time.sleep(0.1)
        lines = dict(line.split(" ", 1) for line in out.splitlines())
        assert lines["credentials"] == f"{USER} {PASSWORD}"
        onvif_url = next(line.split(" ")[2] for line in out.splitlines() if " onvif " in line)
        discovery_port = int(lines["discovery"].rsplit(":", 1)[1])
        found = discover(2.0, hosts=["127.0.0.1"], port=discovery_port)
        assert [d.xaddrs for d in found] == [(onvif_url,)]
        result = asyncio.run(probe(onvif_url, USER, PASSWORD))
        assert result.error is None
        assert result.device is not None
        assert result.device.model == DAHUA.model
        assert [s.role for s in result.streams] == [StreamRole.MAIN, StreamRole.SUB]
        main = result.streams[0]
        assert (main.width, main.height, main.codec) == (320, 240, "H264")
        assert asyncio.run(check_rtsp(main.uri, USER, PASSWORD)).authenticated is True
    finally:
        stop.set()
        runner.join(timeout=20)
    assert not runner.is_alive()


def test_cli_probe_and_discover(
    rtsp: tuple[SimServer, str, str], onvif: OnvifSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, main, sub = rtsp
    device = onvif.add_device(DAHUA, _profiles(main, sub), username=USER, password=PASSWORD)
    cli = CliRunner()
    monkeypatch.setenv("CUSTODES_CAMERA_PASSWORD", PASSWORD)
    ok = cli.invoke(app, ["cameras", "probe", device.url, "--username", USER])
    assert ok.exit_code == 0, ok.output
    probed = json.loads(ok.stdout)
    assert probed["device"]["model"] == DAHUA.model
    assert probed["streams"][0]["uri"] == main
    # The shipped risk data knows Dahua: the probe says what to check.
    assert {"check_firmware", "fcc_covered"} <= {f["code"] for f in probed["findings"]}
    assert PASSWORD not in ok.output
    monkeypatch.setenv("CUSTODES_CAMERA_PASSWORD", "wrong")
    refused = cli.invoke(app, ["cameras", "probe", device.url, "--username", USER])
    assert refused.exit_code == 1
    assert "refused the credentials" in json.loads(refused.stdout)["error"]
    monkeypatch.delenv("CUSTODES_CAMERA_PASSWORD")
    missing = cli.invoke(app, ["cameras", "probe", device.url, "--username", USER])
    assert missing.exit_code == 2
    assert onvif.discovery_port is not None
    found = cli.invoke(app, ["cameras", "discover", "--host", "127.0.0.1", "--port",
                             str(onvif.discovery_port), "--timeout", "1.5"])
    assert found.exit_code == 0, found.output
    rows = [json.loads(line) for line in found.stdout.splitlines() if line.startswith("{")]
    assert [r["xaddrs"] for r in rows] == [[device.url]]
    assert rows[0]["hardware"] == DAHUA.model


def test_discovery_that_cannot_send_says_why() -> None:
    # An address (documentation range) that no interface of this machine holds: bind fails.
    with pytest.raises(OSError, match="no discovery probe could be sent"):
        discover(0.5, interfaces=["192.0.2.99"])
    failed = CliRunner().invoke(app, ["cameras", "discover", "--interface", "192.0.2.99",
                                      "--timeout", "0.5"])
    assert failed.exit_code == 1
    assert "discovery failed" in failed.output


def test_a_web_server_that_is_not_onvif_is_a_protocol_error() -> None:
    from http.server import BaseHTTPRequestHandler, HTTPServer  # noqa: PLC0415

    class NotOnvif(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = b"<html><body>login page</body></html>"
            self.send_response(404)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), NotOnvif)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/onvif/device_service"
        result = asyncio.run(probe(url, USER, PASSWORD))
    finally:
        server.shutdown()
        server.server_close()
    assert result.error is not None
    assert "not a usable ONVIF answer" in result.error
    assert {f.code for f in result.findings} == {FindingCode.PROTOCOL_ERROR}
    assert result.device is None
