"""The camera simulator against real clients (ffmpeg, and a raw RTSP client) on loopback."""

from __future__ import annotations

import itertools
import os
import queue
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

import av
import imageio_ffmpeg
import pytest

from custodes.config import parse_config
from custodes.sim import SimServer, ensure_sample, run_sim
from custodes.sim.rtp import load_clip

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
FPS = 15
SAMPLE_SECONDS = 2


@pytest.fixture(scope="session")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    cache = tmp_path_factory.mktemp("samples")
    return {
        codec: ensure_sample(
            cache,
            width=320,
            height=240,
            fps=FPS,
            bitrate_kbps=300,
            codec=codec,
            seconds=SAMPLE_SECONDS,
        )
        for codec in ("h264", "h265")
    }


@pytest.fixture
def server() -> Iterator[SimServer]:
    with SimServer() as sim:
        yield sim


# --- helpers -------------------------------------------------------------------------------


@dataclass
class Recording:
    codec: str
    width: int
    height: int
    pts: list[float]  # seconds, in file order

    @property
    def duration(self) -> float:
        return self.pts[-1] - self.pts[0] + 1 / FPS


def record(
    url: str, out: Path, seconds: float, *, transport: str | None = "tcp", timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    cmd = [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin"]
    if transport:
        cmd += ["-rtsp_transport", transport]
    cmd += ["-i", url, "-t", str(seconds), "-c", "copy", "-y", str(out)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def probe(path: Path) -> Recording:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.time_base is not None
        time_base = Fraction(stream.time_base)
        pts = [
            float(packet.pts * time_base)
            for packet in container.demux(stream)
            if packet.pts is not None and packet.size
        ]
        return Recording(stream.codec_context.name, stream.width, stream.height, pts)


def assert_continuous(rec: Recording) -> None:
    steps = [b - a for a, b in itertools.pairwise(rec.pts)]
    assert all(step > 0 for step in steps), "timestamps must increase"
    # ffmpeg leaves the very first packet of an RTSP stream without a pts (it does the same with
    # real cameras) and the mp4 muxer then gives it one tick; only the rest must be regular.
    assert max(steps[1:]) < 2.5 / FPS, f"gap of {max(steps[1:]):.3f} s"


def free_ports(count: int) -> int:
    """A base port with `count` free consecutive ports after it (racy, fine on loopback)."""
    for base in range(20_000 + os.getpid() % 20_000, 65_000, 7):
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no free ports")


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class Rtp:
    channel: int
    seq: int
    timestamp: int
    ssrc: int
    marker: bool
    payload: bytes

    @classmethod
    def parse(cls, channel: int, packet: bytes) -> Rtp:
        seq, timestamp, ssrc = struct.unpack("!HII", packet[2:12])
        return cls(channel, seq, timestamp, ssrc, bool(packet[1] & 0x80), packet[12:])

    @property
    def h264_type(self) -> int:
        return self.payload[0] & 0x1F


class RawClient:
    """Just enough RTSP to look at what the server sends, byte for byte."""

    def __init__(self, url: str, *, rcvbuf: int | None = None) -> None:
        parts = urlsplit(url)
        assert parts.hostname is not None
        assert parts.port is not None
        self.url = url
        self.sock = socket.socket()
        self.sock.settimeout(5)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect((parts.hostname, parts.port))
        self.buf = bytearray()
        self.cseq = 0
        self.session: str | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.sock.close()

    def request(self, method: str, url: str | None = None, **headers: str) -> Response:
        self.cseq += 1
        lines = [f"{method} {url or self.url} RTSP/1.0", f"CSeq: {self.cseq}"]
        if self.session:
            lines.append(f"Session: {self.session}")
        lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        while not isinstance(message := self.next_message(), Response):
            pass  # RTP still queued from before the request
        assert message.headers["cseq"] == str(self.cseq)
        if "session" in message.headers:
            self.session = message.headers["session"].split(";")[0]
        return message

    def play(self) -> None:
        assert self.request("DESCRIBE").status == 200
        setup = self.request(
            "SETUP", f"{self.url}/track1", Transport="RTP/AVP/TCP;unicast;interleaved=0-1"
        )
        assert setup.status == 200
        assert self.request("PLAY").status == 200

    def rtp(self, count: int, channel: int = 0) -> list[Rtp]:
        """The next `count` RTP packets, skipping RTCP."""
        packets: list[Rtp] = []
        while len(packets) < count:
            message = self.next_message()
            if isinstance(message, tuple) and message[0] == channel:
                packets.append(Rtp.parse(*message))
        return packets

    def _fill(self, size: int) -> None:
        while len(self.buf) < size:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError
            self.buf += data

    def next_message(self) -> Response | tuple[int, bytes]:
        """A response, or an interleaved (channel, packet)."""
        self._fill(1)
        if self.buf[0:1] == b"$":
            self._fill(4)
            size = int.from_bytes(self.buf[2:4], "big")
            self._fill(4 + size)
            channel, packet = self.buf[1], bytes(self.buf[4 : 4 + size])
            del self.buf[: 4 + size]
            return channel, packet
        while b"\r\n\r\n" not in self.buf:
            self._fill(len(self.buf) + 1)
        end = self.buf.index(b"\r\n\r\n")
        head = self.buf[:end].decode().split("\r\n")
        del self.buf[: end + 4]
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        size = int(headers.get("content-length", "0"))
        self._fill(size)
        body = bytes(self.buf[:size])
        del self.buf[:size]
        return Response(int(head[0].split()[1]), headers, body)


# --- samples and packetization ---------------------------------------------------------------


def test_sample_is_encoded_like_a_camera_and_cached(samples: dict[str, Path]) -> None:
    path = samples["h264"]
    with av.open(str(path)) as container:
        assert len(container.streams) == 1
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.width, stream.height) == ("h264", 320, 240)
        packets = [p for p in container.demux(stream) if p.size]
    assert len(packets) == FPS * SAMPLE_SECONDS
    assert [i for i, p in enumerate(packets) if p.is_keyframe] == [0, FPS]
    assert all(p.pts == p.dts for p in packets), "no B-frames"

    mtime = path.stat().st_mtime_ns
    again = ensure_sample(
        path.parent,
        width=320,
        height=240,
        fps=FPS,
        bitrate_kbps=300,
        codec="h264",
        seconds=SAMPLE_SECONDS,
    )
    assert again == path
    assert path.stat().st_mtime_ns == mtime
    assert not list(path.parent.glob(".*")), "no temp files left behind"


@pytest.mark.parametrize("codec", ["h264", "h265"])
def test_fragmented_payloads_reassemble_to_the_same_nal_units(
    samples: dict[str, Path], codec: str
) -> None:
    whole = load_clip(samples[codec])
    small = load_clip(samples[codec], max_payload=300)
    header = 1 if codec == "h264" else 2
    for big_unit, small_unit in zip(whole.units, small.units, strict=True):
        assert big_unit.pts == small_unit.pts
        nals: list[bytes] = []
        pending = b""
        for payload in small_unit.payloads:
            assert len(payload) <= 300
            kind = payload[0] & 0x1F if codec == "h264" else (payload[0] >> 1) & 0x3F
            if kind not in (28, 49):
                nals.append(payload)
                continue
            fu = payload[header]
            if fu & 0x80:  # start: rebuild the NAL header the fragments share
                if codec == "h264":
                    pending = bytes(((payload[0] & 0xE0) | (fu & 0x1F),))
                else:
                    pending = bytes(((payload[0] & 0x81) | ((fu & 0x3F) << 1), payload[1]))
            pending += payload[header + 1 :]
            if fu & 0x40:
                nals.append(pending)
        assert nals == list(big_unit.payloads)
    assert whole.period == SAMPLE_SECONDS * 90_000


# --- RTSP protocol, with a raw client ----------------------------------------------------------


def test_rtsp_requests_and_errors(server: SimServer, samples: dict[str, Path]) -> None:
    url = server.add_camera("cam", samples["h264"])
    assert url.startswith("rtsp://127.0.0.1:")
    assert url.endswith("/stream")
    assert server.urls == {"cam": url}
    with RawClient(url) as client:
        options = client.request("OPTIONS")
        assert options.status == 200
        assert "GET_PARAMETER" in options.headers["public"]
        assert client.request("PLAY").status == 455  # no SETUP yet
        assert client.request("DESCRIBE", url + "/nope").status == 404
        assert client.request("RECORD").status == 501
        sdp = client.request("DESCRIBE")
        assert sdp.headers["content-type"] == "application/sdp"
        text = sdp.body.decode()
        for line in (
            "a=rtpmap:96 H264/90000",
            "sprop-parameter-sets=",
            "a=framerate:15",
            "a=range:npt=0-",
            "a=control:track1",
        ):
            assert line in text
        udp = client.request(
            "SETUP", f"{url}/track1", Transport="RTP/AVP;unicast;client_port=5000-5001"
        )
        assert udp.status == 461
        tcp = client.request(
            "SETUP", f"{url}/track1", Transport="RTP/AVP/TCP;unicast;interleaved=2-3"
        )
        assert tcp.status == 200
        assert "interleaved=2-3" in tcp.headers["transport"]
        assert client.session
        assert client.request("GET_PARAMETER").status == 200
        assert client.request("PLAY").status == 200
        # A sender report (and SDES) on the RTCP channel first, for clients that want wall time.
        report = client.next_message()
        assert isinstance(report, tuple)
        assert report[0] == 3
        assert (report[1][1], report[1][29]) == (200, 202)
        ssrc, _ntp, rtp_time = struct.unpack("!IQI", report[1][4:20])
        # Then RTP from a keyframe, parameter sets first.
        first = client.rtp(1, channel=2)[0]
        assert first.h264_type == 7
        assert (first.ssrc, first.timestamp) == (ssrc, rtp_time)
        assert client.request("TEARDOWN").status == 200


def test_h265_sdp_has_parameter_sets(server: SimServer, samples: dict[str, Path]) -> None:
    with RawClient(server.add_camera("cam", samples["h265"])) as client:
        text = client.request("DESCRIBE").body.decode()
    assert "a=rtpmap:96 H265/90000" in text
    for name in ("sprop-vps=", "sprop-sps=", "sprop-pps="):
        assert name in text


@pytest.mark.slow
def test_clients_join_the_same_live_stream(server: SimServer, samples: dict[str, Path]) -> None:
    url = server.add_camera("cam", samples["h264"])
    with RawClient(url) as first, RawClient(url) as second:
        first.play()
        seen = first.rtp(FPS // 2)  # past its first keyframe: the second joins at a later one
        second.play()
        joined = second.rtp(5)
        assert joined[0].h264_type == 7
        for _ in range(3 * FPS):
            if seen[-1].seq == joined[-1].seq:
                break
            seen += first.rtp(1)
    by_seq = {p.seq: p for p in seen}
    for packet in joined:
        # Same sequence number, timestamp and bytes: one live stream, not a per-client replay.
        assert by_seq[packet.seq] == packet
    markers = [p for p in seen if p.marker]
    steps = {(b.timestamp - a.timestamp) % 2**32 for a, b in itertools.pairwise(markers)}
    assert steps == {90_000 // FPS}, "one frame per marker, 90 kHz clock"


def test_basic_auth_on_raw_requests(server: SimServer, samples: dict[str, Path]) -> None:
    url = server.add_camera("cam", samples["h264"], username="admin", password="s3cret")
    with RawClient(url) as client:
        assert client.request("OPTIONS").status == 200
        denied = client.request("DESCRIBE")
        assert denied.status == 401
        assert denied.headers["www-authenticate"].startswith("Basic")
        assert client.request("DESCRIBE", Authorization="Basic YWRtaW46d3Jvbmc=").status == 401
        assert client.request("DESCRIBE", Authorization="Basic YWRtaW46czNjcmV0").status == 200


@pytest.mark.slow
def test_slow_client_is_dropped(samples: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    with SimServer(max_client_buffer=16 * 1024) as sim:
        url = sim.add_camera("cam", samples["h264"])
        with RawClient(url, rcvbuf=4096) as client:
            client.play()
            deadline = time.monotonic() + 20
            # Not reading: the server's queue for this client grows until it gives up on it.
            while "dropping slow client" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.2)
            assert "dropping slow client" in caplog.text
            with pytest.raises((EOFError, ConnectionResetError)):
                client.rtp(10_000)


# --- real clients: ffmpeg ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("codec", "name"), [("h264", "h264"), ("h265", "hevc")])
def test_ffmpeg_records(
    server: SimServer, samples: dict[str, Path], tmp_path: Path, codec: str, name: str
) -> None:
    url = server.add_camera("cam", samples[codec])
    result = record(url, tmp_path / "out.mp4", 3)
    assert result.returncode == 0, result.stderr
    rec = probe(tmp_path / "out.mp4")
    assert (rec.codec, rec.width, rec.height) == (name, 320, 240)
    assert 2.7 <= rec.duration <= 3.3
    assert_continuous(rec)


@pytest.mark.slow
def test_recording_across_loops_is_continuous(
    server: SimServer, samples: dict[str, Path], tmp_path: Path
) -> None:
    url = server.add_camera("cam", samples["h264"])
    seconds = 2.5 * SAMPLE_SECONDS
    result = record(url, tmp_path / "out.mp4", seconds)
    assert result.returncode == 0, result.stderr
    rec = probe(tmp_path / "out.mp4")
    assert seconds - 0.3 <= rec.duration <= seconds + 0.3
    assert_continuous(rec)


@pytest.mark.slow
def test_two_ffmpeg_clients_at_once(
    server: SimServer, samples: dict[str, Path], tmp_path: Path
) -> None:
    url = server.add_camera("cam", samples["h264"])
    outs = [tmp_path / "a.mp4", tmp_path / "b.mp4"]
    threads = [threading.Thread(target=record, args=(url, out, 3)) for out in outs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for out in outs:
        rec = probe(out)
        assert 2.7 <= rec.duration <= 3.3
        assert_continuous(rec)


@pytest.mark.slow
def test_ffmpeg_falls_back_from_udp_to_tcp(
    server: SimServer, samples: dict[str, Path], tmp_path: Path
) -> None:
    url = server.add_camera("cam", samples["h264"])
    result = record(url, tmp_path / "out.mp4", 1, transport=None)
    assert result.returncode == 0, result.stderr
    assert probe(tmp_path / "out.mp4").duration > 0.7


@pytest.mark.slow
def test_ffmpeg_basic_auth(server: SimServer, samples: dict[str, Path], tmp_path: Path) -> None:
    url = server.add_camera("cam", samples["h264"], username="admin", password="s3cret")
    with_creds = url.replace("rtsp://", "rtsp://admin:{}@")
    for password in (None, "wrong"):
        target = url if password is None else with_creds.format(password)
        result = record(target, tmp_path / "denied.mp4", 1)
        assert result.returncode != 0
        assert "401" in result.stderr
    result = record(with_creds.format("s3cret"), tmp_path / "out.mp4", 1)
    assert result.returncode == 0, result.stderr
    assert probe(tmp_path / "out.mp4").duration > 0.7


@pytest.mark.slow
def test_ffmpeg_gets_a_password_with_url_characters_from_the_config(
    server: SimServer, samples: dict[str, Path], tmp_path: Path
) -> None:
    password = "p@ss#w/rd:?"
    url = server.add_camera("cam", samples["h264"], username="admin", password=password)
    config = parse_config(
        "sites: {a: {name: A}}\n"
        "cameras:\n  cam:\n    site: a\n    location: entrance\n    purpose: test camera\n"
        f"    main_url: {url}\n    username: admin\n    password: ${{CAM_PASS}}\n",
        env={"CAM_PASS": password},
    )
    result = record(config.cameras["cam"].main_source, tmp_path / "out.mp4", 1)
    assert result.returncode == 0, result.stderr
    assert probe(tmp_path / "out.mp4").duration > 0.7


@pytest.mark.slow
def test_stopped_camera_refuses_then_comes_back(
    server: SimServer, samples: dict[str, Path], tmp_path: Path
) -> None:
    url = server.add_camera("cam", samples["h264"])
    port = urlsplit(url).port
    cmd = [
        FFMPEG,
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostdin",
        "-rtsp_transport",
        "tcp",
        "-i",
        url,
        "-t",
        "30",
        "-c",
        "copy",
        "-y",
        str(tmp_path / "cut.mp4"),
    ]
    with subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as ffmpeg:
        time.sleep(2.5)
        server.stop_camera("cam")
        started = time.monotonic()
        ffmpeg.wait(timeout=15)
    assert time.monotonic() - started < 5, "a client sees the stream end at once"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()

    server.start_camera("cam")
    assert server.urls["cam"] == url
    result = record(url, tmp_path / "out.mp4", 1)
    assert result.returncode == 0, result.stderr
    assert probe(tmp_path / "out.mp4").duration > 0.7


# --- the runner behind `custodes sim` ---------------------------------------------------------


def test_run_sim_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stop = threading.Event()
    base = free_ports(2)
    kwargs = {"width": 320, "height": 240, "fps": FPS, "bitrate_kbps": 300, "codec": "h264"}
    runner = threading.Thread(
        target=run_sim, args=(tmp_path, 2), kwargs={**kwargs, "base_port": base, "stop": stop}
    )
    runner.start()
    try:
        deadline = time.monotonic() + 30
        while capsys.readouterr().out.count("\n") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        with RawClient(f"rtsp://127.0.0.1:{base + 1}/stream") as client:
            assert client.request("DESCRIBE").status == 200
    finally:
        stop.set()
        runner.join(timeout=10)
    assert not runner.is_alive()


@pytest.mark.slow
def test_run_sim_takes_commands_on_stdin(tmp_path: Path) -> None:
    base = free_ports(2)
    code = (
        "import sys; from pathlib import Path; from custodes.sim import run_sim; "
        f"run_sim(Path(sys.argv[1]), 2, width=320, height=240, fps={FPS}, bitrate_kbps=300, "
        f"codec='h264', base_port={base})"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdin is not None
        assert proc.stdout is not None
        lines: queue.Queue[str] = queue.Queue()
        stdout = proc.stdout
        threading.Thread(target=lambda: list(map(lines.put, stdout))).start()

        def answer() -> str:
            return lines.get(timeout=30).strip()

        assert answer() == f"cam01 rtsp://127.0.0.1:{base}/stream"
        assert answer() == f"cam02 rtsp://127.0.0.1:{base + 1}/stream"
        proc.stdin.write("stop cam02\n")
        proc.stdin.flush()
        assert answer() == "ok"
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", base + 1), timeout=2).close()
        proc.stdin.write("start cam02\nstop cam99\n")
        proc.stdin.flush()
        assert answer() == "ok"
        assert answer().startswith("error:")
        with RawClient(f"rtsp://127.0.0.1:{base + 1}/stream") as client:
            assert client.request("DESCRIBE").status == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
