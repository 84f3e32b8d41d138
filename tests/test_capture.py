"""Capture supervision against cameras that are dead or hang (no simulator needed)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from custodes.capture.ffmpeg import parse_list_line, record_argv, start_from_cache_name
from custodes.capture.supervisor import CaptureSupervisor, CompletedSegment, State


def test_segment_list_lines_are_parsed() -> None:
    entry = parse_list_line("r3-20261128T101500.mp4,10.000000,20.040000\n")
    assert entry is not None
    assert (entry.name, entry.start, entry.end) == ("r3-20261128T101500.mp4", 10.0, 20.04)
    assert parse_list_line("garbage") is None
    assert start_from_cache_name("r3-20261128T101500.mp4") == 1795860900.0
    assert start_from_cache_name("other.mp4") is None


def test_record_argv_copies_video_only_over_tcp(tmp_path: Path) -> None:
    argv = record_argv("rtsp://u:p@127.0.0.1:8554/s", tmp_path, 10, 1)
    joined = " ".join(argv)
    assert "-rtsp_transport tcp" in joined
    assert "-c copy" in joined
    assert "-an" in argv
    assert "-segment_time 10" in joined
    assert argv[-1] == str(tmp_path / "r1-%Y%m%dT%H%M%S.mp4")


@pytest.fixture
def refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def silent_camera() -> Iterator[int]:
    """Accepts RTSP connections and never answers: a hung camera."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


@pytest.mark.slow
def test_dead_camera_is_retried_with_backoff_and_logged_once(
    refused_port: int, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="custodes.capture")
    states: list[tuple[State, str]] = []
    segments: list[CompletedSegment] = []
    sup = CaptureSupervisor(
        "door", f"rtsp://viewer:hunter2@127.0.0.1:{refused_port}/stream", tmp_path, 2,
        on_segment=segments.append, on_state=lambda _c, s, r: states.append((s, r)),
    )
    sup.start()
    time.sleep(6.5)
    sup.stop()
    # Attempts at 0, ~1, ~3 s and ~7 s would be the 4th: backoff doubles 1, 2, 4 ...
    assert 3 <= sup.health.restarts <= 4
    assert [s for s, _ in states] == [State.OFFLINE, State.STOPPED]
    assert "Connection refused" in states[0][1] or "exited" in states[0][1]
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "camera door is offline" in warnings[0].getMessage()
    assert all("hunter2" not in r.getMessage() for r in caplog.records)
    assert not segments


@pytest.mark.slow
def test_hung_camera_is_restarted_by_the_stall_watchdog(silent_camera: int, tmp_path: Path) -> None:
    states: list[tuple[State, str]] = []
    sup = CaptureSupervisor(
        "hall", f"rtsp://127.0.0.1:{silent_camera}/stream", tmp_path, 2,
        on_segment=lambda _s: None, on_state=lambda _c, s, r: states.append((s, r)),
    )
    sup.start()
    deadline = time.monotonic() + 10
    while not states and time.monotonic() < deadline:
        time.sleep(0.1)
    sup.stop()
    assert states
    assert states[0] == (State.OFFLINE, "stalled: no segment for 4 s")
