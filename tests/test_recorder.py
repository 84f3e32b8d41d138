"""The recorder end to end: simulated RTSP cameras -> ffmpeg -> segments -> index."""

from __future__ import annotations

import itertools
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest
import yaml
from sqlalchemy import select

from custodes.app import Node
from custodes.capture.supervisor import State
from custodes.config import Config, parse_config
from custodes.media import probe
from custodes.record.layout import Layout
from custodes.sim import SimServer
from custodes.store import schema
from custodes.store.db import Store

pytestmark = pytest.mark.slow

SEGMENT = 2


def make_config(urls: dict[str, str], root: Path, **server: object) -> dict[str, object]:
    return {
        "sites": {"test-site": {"name": "Test site"}},
        "cameras": {
            name: {
                "site": "test-site",
                "location": "corridor",
                "purpose": "test camera",
                "main_url": url,
                "record": {"segment_seconds": SEGMENT},
            }
            for name, url in urls.items()
        },
        "storage": {"path": str(root)},
        "server": {"host": "127.0.0.1", "port": 0, **server},
    }


def load(raw: dict[str, object]) -> Config:
    return parse_config(yaml.safe_dump(raw))


@pytest.fixture
def sim(sample_video: Path) -> Iterator[SimServer]:
    with SimServer() as server:
        for i in (1, 2, 3):
            server.add_camera(f"cam{i}", sample_video)
        yield server


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def rows(store: Store, camera: str) -> list[tuple[float, float, float, int, str]]:
    s = schema.segments.c
    with store.read() as conn:
        return [
            (r.start, r.end, r.duration, r.bytes, r.path)
            for r in conn.execute(
                select(s.start, s.end, s.duration, s.bytes, s.path)
                .where(s.camera == camera).order_by(s.start)
            )
        ]


def files_on_disk(layout: Layout) -> set[str]:
    return {
        p.relative_to(layout.recordings).as_posix()
        for p in layout.recordings.rglob("*.mp4")
    }


def gaps(segments: list[tuple[float, float, float, int, str]]) -> list[float]:
    return [b[0] - a[1] for a, b in itertools.pairwise(segments)]


def test_round_trip_segments_indexed_and_durations_add_up(sim: SimServer, tmp_path: Path) -> None:
    node = Node(load(make_config(sim.urls, tmp_path)))
    node.start()
    try:
        assert node.web is not None
        wait_for(lambda: all(s.health.segments >= 4 for s in node.supervisors.values()), 30,
                 "4 segments per camera")
        assert node.first_admin_password is not None
        with httpx.Client(base_url=node.web.url) as client:
            client.post("api/auth/login",
                        json={"name": "admin", "password": node.first_admin_password})
            # The printed password must be replaced before anything else answers.
            client.post("api/auth/password", json={
                "old_password": node.first_admin_password,
                "new_password": "the recorder test's password"},
                headers={"X-CSRF-Token": client.cookies["custodes_csrf"]}).raise_for_status()
            status = client.get("api/status").json()
    finally:
        node.stop()

    assert {c["name"]: c["state"] for c in status["cameras"]} == dict.fromkeys(sim.urls, "online")
    store = Store(node.layout.database)
    store.open()
    try:
        all_paths = set()
        for camera in sim.urls:
            segs = rows(store, camera)
            assert len(segs) >= 4
            # Segments are cut at keyframes (1 s GOP here): the first is cut relative to the
            # stream's first timestamp and the last where we stopped; the rest are exact.
            assert segs[0][2] == pytest.approx(SEGMENT, abs=1.0)
            for start, end, duration, size, path in segs:
                if (start, end) not in (segs[0][:2], segs[-1][:2]):
                    assert duration == pytest.approx(SEGMENT, abs=0.05)
                assert end - start == pytest.approx(duration)
                assert size > 0
                assert path.startswith(f"{camera}/")
            # Consecutive segments of one ffmpeg run are contiguous: no gap, no overlap.
            assert all(abs(g) < 0.05 for g in gaps(segs)), gaps(segs)
            # The index agrees with the files themselves.
            start, end, duration, _, path = segs[1]
            assert probe(node.layout.recordings / path).duration == pytest.approx(duration, abs=0.1)
            # Recorded time is wall time: the span matches the sum of durations.
            assert segs[-1][1] - segs[0][0] == pytest.approx(sum(s[2] for s in segs), abs=0.1)
            assert abs(segs[-1][1] - time.time()) < 10
            all_paths |= {s[4] for s in segs}
        assert all_paths == files_on_disk(node.layout)
        assert not list(node.layout.cache.rglob("*.mp4")), "cache left behind"
    finally:
        store.close()


def test_outage_is_retried_logged_once_and_visible_as_a_gap(
    sim: SimServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="custodes.capture")
    node = Node(load(make_config(sim.urls, tmp_path)))
    node.start(web=False)
    cam2 = node.supervisors["cam2"]
    try:
        wait_for(lambda: cam2.health.segments >= 2, 30, "cam2 recording")
        sim.stop_camera("cam2")
        down_at = time.time()
        wait_for(lambda: cam2.health.state == State.OFFLINE, 15, "cam2 offline")
        time.sleep(5)
        sim.start_camera("cam2")
        up_at = time.time()
        before = cam2.health.segments
        wait_for(lambda: cam2.health.state == State.ONLINE, 15, "cam2 back online")
        resumed_after = time.time() - up_at
        wait_for(lambda: cam2.health.segments >= before + 2, 15, "cam2 segments again")
    finally:
        node.stop()

    assert resumed_after < 6, f"recording resumed {resumed_after:.1f} s after the stream returned"
    store = Store(node.layout.database)
    store.open()
    try:
        cam2_gaps = gaps(rows(store, "cam2"))
        big = [g for g in cam2_gaps if g > 1]
        assert len(big) == 1, cam2_gaps
        assert big[0] >= up_at - down_at - SEGMENT
        for other in ("cam1", "cam3"):
            assert all(abs(g) < 0.05 for g in gaps(rows(store, other))), other
    finally:
        store.close()
    messages = [r.getMessage() for r in caplog.records if "cam2" in r.getMessage()]
    assert sum("is offline" in m for m in messages) == 1, messages
    assert sum("back online" in m for m in messages) == 1, messages


def test_kill_9_mid_segment_loses_no_completed_segment(sim: SimServer, tmp_path: Path) -> None:
    config = tmp_path / "custodes.yaml"
    config.write_text(yaml.safe_dump(make_config(sim.urls, tmp_path / "var")))
    layout = Layout(tmp_path / "var")
    argv = [sys.executable, "-m", "custodes", "run", "--config", str(config)]

    first = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: len(files_on_disk(layout)) >= 6, 40, "segments from the first run")
        # Kill in the middle of a segment, when ffmpeg has a half-written file open.
        time.sleep(SEGMENT / 2)
        completed_before = files_on_disk(layout)
        children = psutil.Process(first.pid).children(recursive=True)
        ffmpegs = [c for c in children if "ffmpeg" in c.name()]
        assert len(ffmpegs) == len(sim.urls)  # one recorder per camera
        assert len(children) > len(ffmpegs)  # and the analysis pool, shared by the cameras
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        first.kill()
        first.wait(10)
        assert first.stderr is not None
        first.stderr.close()
    # ffmpeg and analysis die with their recorder rather than working on as orphans.
    _, alive = psutil.wait_procs(children, timeout=5)
    assert not alive
    partial = list(layout.cache.rglob("*.mp4"))
    assert partial, "expected the segments being written at the kill to be left in the cache"

    second = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: len(files_on_disk(layout)) >= len(completed_before) + 3, 40,
                 "segments from the second run")
    finally:
        second.send_signal(signal.SIGINT)
        _, stderr = second.communicate(timeout=30)
    assert second.returncode == 0, stderr.decode()
    assert b"index repaired at start" in stderr

    store = Store(layout.database)
    store.open()
    try:
        indexed = {r[4] for cam in sim.urls for r in rows(store, cam)}
        assert indexed == files_on_disk(layout), "index and disk disagree"
        assert completed_before <= indexed, "a completed segment was lost"
        with store.read() as conn:
            reasons = conn.execute(select(schema.quarantine.c.reason)).scalars().all()
        # Only the half-written segments were set aside, each with its reason.
        assert 1 <= len(reasons) <= len(partial)
        assert all("left in cache by a crash" in r for r in reasons)
    finally:
        store.close()


def test_reconcile_indexes_orphans_and_drops_rows_without_files(
    sim: SimServer, tmp_path: Path
) -> None:
    node = Node(load(make_config({"cam1": sim.urls["cam1"]}, tmp_path)))
    node.start(web=False)
    try:
        wait_for(lambda: node.supervisors["cam1"].health.segments >= 4, 30, "4 segments")
    finally:
        node.stop()
    store = Store(node.layout.database)
    store.open()
    try:
        segs = rows(store, "cam1")
        # Forget one row (as if the crash came between move and insert) and delete one file.
        forgotten, deleted = segs[1], segs[2]
        store.write(lambda c: c.execute(
            schema.segments.delete().where(schema.segments.c.path == forgotten[4])))
        (node.layout.recordings / deleted[4]).unlink()
        (node.layout.recordings / "cam1" / "junk").mkdir()
        (node.layout.recordings / "cam1" / "junk" / "notes.mp4").write_bytes(b"not a video")
    finally:
        store.close()

    node2 = Node(load(make_config({}, tmp_path)))
    node2.start(web=False)
    report = node2.reconcile_report
    node2.stop()
    assert report is not None
    assert (report.indexed_orphans, report.removed_rows) == (1, 1)
    assert report.quarantined == ["cam1/junk/notes.mp4"]
    store = Store(node.layout.database)
    store.open()
    try:
        after = rows(store, "cam1")
        restored = next(r for r in after if r[4] == forgotten[4])
        # Rebuilt from the file: start from the path (whole seconds), duration from the file.
        assert restored[0] == pytest.approx(forgotten[0], abs=1.0)
        assert restored[2] == pytest.approx(forgotten[2], abs=0.1)
        assert deleted[4] not in {r[4] for r in after}
        with store.read() as conn:
            proof = conn.execute(select(schema.deletion_passes)).one()
        assert (proof.trigger, proof.segments, proof.bytes) == ("reconcile", 1, deleted[3])
    finally:
        store.close()
