"""Retention and holds on real segment files, a real index and (where allowed) a real small disk."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from sqlalchemy import insert, select

from custodes.config import Config
from custodes.record.cleanup import (
    CameraDeletion,
    Retention,
    Trigger,
    retention_status,
)
from custodes.record.holds import active_holds, add_hold, release_hold
from custodes.record.layout import Layout
from custodes.store.db import Store
from custodes.store.schema import deletion_passes, holds, segments
from custodes.store.schema import events as events_table
from custodes.store.schema import motion as motion_table
from footage import SEGMENT_SECONDS, add_segments, encode_clips, open_node

NOW = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
HOUR = 3600.0


def make_config(
    cameras: dict[str, float | None],
    *,
    default_hours: float = 72,
    quota: str | int | None = None,
    min_free: str | int = "5%",
    interval: float = 60,
) -> Config:
    """A config with ``cameras`` (name: retention hours, None for the default)."""
    return Config.model_validate({
        "sites": {"school": {"name": "School"}},
        "cameras": {
            name: {
                "site": "school", "location": "corridor", "purpose": "test camera",
                "main_url": f"rtsp://192.0.2.1/{name}",
                "record": {"retention_hours": hours},
            }
            for name, hours in cameras.items()
        },
        "storage": {"quota": quota, "min_free": min_free},
        "retention": {"default_hours": default_hours, "interval_seconds": interval},
    })


class Disk(NamedTuple):
    total: int
    used: int
    free: int


def roomy(_path: Path) -> Disk:
    """A disk with plenty of room, so that only the pass under test deletes anything."""
    return Disk(10**12, 0, 10**12)


class SmallDisk:
    """A disk of ``total`` bytes holding nothing but the recordings under ``root``."""

    def __init__(self, root: Path, total: int) -> None:
        self.root = root
        self.total = total

    def __call__(self, _path: Path) -> Disk:
        used = sum(f.stat().st_size for f in self.root.rglob("*.mp4"))
        return Disk(self.total, used, self.total - used)


def remaining(store: Store) -> list[tuple[str, float]]:
    with store.read() as conn:
        rows = conn.execute(
            select(segments.c.camera, segments.c.start).order_by(segments.c.start,
                                                                 segments.c.camera)
        )
        return [(r.camera, r.start) for r in rows]


def all_files_present(store: Store, layout: Layout) -> bool:
    with store.read() as conn:
        paths = conn.execute(select(segments.c.path)).scalars().all()
    return all((layout.recordings / p).is_file() for p in paths)


def pass_rows(store: Store) -> list[dict[str, Any]]:
    with store.read() as conn:
        rows = conn.execute(select(deletion_passes).order_by(deletion_passes.c.id))
        return [{**r._asdict(), "details": json.loads(r.details)} for r in rows]


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return encode_clips(tmp_path_factory.mktemp("clips"))


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Store, Layout]]:
    with open_node(tmp_path / "var") as opened:
        yield opened


# -- age ----------------------------------------------------------------------------------


def test_age_pass_respects_each_cameras_retention(
    node: tuple[Store, Layout], clips: list[Path]
) -> None:
    store, layout = node
    config = make_config({"cam01": 1, "cam02": None}, default_hours=2)
    # Segments ending 0.5, 1.5, 2.5 and 3.5 hours ago, each in its own hour folder.
    starts = [NOW - age * HOUR - SEGMENT_SECONDS for age in (0.5, 1.5, 2.5, 3.5)]
    for camera in ("cam01", "cam02", "removed"):  # "removed": no longer in the config
        add_segments(store, layout, camera, starts, clips)
    sizes = {p.name: p.stat().st_size for p in clips}

    passes = Retention(store, layout, config, clock=lambda: NOW, disk_usage=roomy).run_once()

    assert remaining(store) == sorted(
        [("cam01", starts[0])] + [(cam, s) for cam in ("cam02", "removed") for s in starts[:2]],
        key=lambda r: (r[1], r[0]),
    )
    [done] = passes
    assert done.trigger == Trigger.AGE
    assert done.segments == 7
    assert done.details["cam01"] == CameraDeletion(
        segments=3,
        bytes=sizes["clip001.mp4"] + sizes["clip002.mp4"] + sizes["clip003.mp4"],
        start=starts[3], end=starts[1] + SEGMENT_SECONDS,
    )
    assert done.details["removed"].segments == 2
    assert done.details["removed"].start == starts[3]
    assert done.details["removed"].end == starts[2] + SEGMENT_SECONDS
    # The proof in the database says the same, in the documented JSON shape.
    [row] = pass_rows(store)
    assert (row["trigger"], row["segments"], row["bytes"]) == ("age", 7, done.bytes)
    assert row["details"]["cam02"] == {
        "segments": 2, "bytes": done.details["cam02"].bytes,
        "from": starts[3], "to": starts[2] + SEGMENT_SECONDS,
    }
    # Files are gone, and so are the hour folders they emptied; the day folder still has footage.
    cam01 = layout.recordings / "cam01"
    assert sorted(p.relative_to(cam01).as_posix() for p in cam01.rglob("*")) == [
        "2023-11-14", "2023-11-14/21", "2023-11-14/21/43.18.mp4"
    ]

    # A second run finds nothing more to delete and records no empty pass.
    again = Retention(store, layout, config, clock=lambda: NOW, disk_usage=roomy).run_once()
    assert again == []
    assert len(pass_rows(store)) == 1


def test_age_pass_deletes_in_batches(
    node: tuple[Store, Layout], clips: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, layout = node
    monkeypatch.setattr("custodes.record.cleanup.BATCH_SIZE", 3)
    starts = [NOW - 2 * HOUR + n * SEGMENT_SECONDS for n in range(8)]
    add_segments(store, layout, "cam01", starts, clips)

    [done] = Retention(store, layout, make_config({"cam01": 1}), clock=lambda: NOW,
                       disk_usage=roomy).run_once()

    assert remaining(store) == []
    assert done.segments == 8  # one pass row, brought up to date by each of the three batches
    assert [r["segments"] for r in pass_rows(store)] == [8]
    # Every folder the camera had is gone, but not the camera folder itself.
    assert list((layout.recordings / "cam01").iterdir()) == []


def test_a_file_already_gone_is_recorded_not_fatal(
    node: tuple[Store, Layout], clips: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    store, layout = node
    starts = [NOW - 3 * HOUR, NOW - 3 * HOUR + SEGMENT_SECONDS]
    add_segments(store, layout, "cam01", starts, clips)
    next((layout.recordings / "cam01").rglob("*.mp4")).unlink()

    [done] = Retention(store, layout, make_config({"cam01": 1}), clock=lambda: NOW,
                       disk_usage=roomy).run_once()

    assert remaining(store) == []
    assert done.details["cam01"].segments == 2
    assert done.details["cam01"].missing == 1
    assert pass_rows(store)[0]["details"]["cam01"]["missing"] == 1
    assert "was already gone" in caplog.text


# -- quota --------------------------------------------------------------------------------


def test_quota_pass_deletes_oldest_first_across_cameras(
    node: tuple[Store, Layout], clips: list[Path]
) -> None:
    store, layout = node
    t0 = NOW - HOUR
    # The cameras' segments interleave in time: cam01 at t0, t0+4, ...; cam02 at t0+2, t0+6, ...
    add_segments(store, layout, "cam01", [t0 + n * 4 for n in range(5)], clips)
    add_segments(store, layout, "cam02", [t0 + 2 + n * 4 for n in range(5)], clips)
    with store.read() as conn:
        by_age = conn.execute(
            select(segments.c.camera, segments.c.start, segments.c.bytes).order_by(segments.c.start)
        ).all()
    total = sum(r.bytes for r in by_age)
    quota = total - by_age[0].bytes - by_age[1].bytes - by_age[2].bytes // 2

    [done] = Retention(store, layout, make_config({"cam01": None, "cam02": None}, quota=quota),
                       clock=lambda: NOW, disk_usage=roomy).run_once()

    # The three oldest go (cam01, cam02, cam01): the third is what brings the total under.
    assert remaining(store) == [(r.camera, r.start) for r in by_age[3:]]
    assert sum(r.bytes for r in by_age[3:]) <= quota
    assert done.trigger == Trigger.QUOTA
    assert (done.details["cam01"].segments, done.details["cam02"].segments) == (2, 1)
    assert done.details["cam01"].start == t0
    assert done.details["cam01"].end == t0 + 4 + SEGMENT_SECONDS


def test_quota_as_share_of_the_disk(node: tuple[Store, Layout], clips: list[Path]) -> None:
    store, layout = node
    add_segments(store, layout, "cam01", [NOW - 60 + n * 2 for n in range(4)], clips)
    disk = SmallDisk(layout.recordings, total=1_000_000)
    used = disk(layout.root).used

    # 25 % of a 1 MB disk is about two of these ~140 kB segments.
    Retention(store, layout, make_config({"cam01": None}, quota="25%"),
              clock=lambda: NOW, disk_usage=disk).run_once()

    assert disk(layout.root).used <= 250_000 < used
    assert len(remaining(store)) == 1


# -- emergency ----------------------------------------------------------------------------


def test_emergency_pass_frees_space_oldest_first(
    node: tuple[Store, Layout], clips: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    store, layout = node
    starts = [NOW - 60 + n * 2 for n in range(10)]
    add_segments(store, layout, "cam01", starts, clips)
    disk = SmallDisk(layout.recordings, total=2 * disk_bytes(layout))  # half full
    config = make_config({"cam01": None}, min_free="60%")

    [done] = Retention(store, layout, config, clock=lambda: NOW, disk_usage=disk).run_once()

    after = disk(layout.root)
    min_free = 0.6 * disk.total
    assert after.free >= min_free
    # It stops soon after min_free plus the 10 % margin: within one segment of it.
    assert after.free < min_free * 1.1 + max(p.stat().st_size for p in clips)
    kept = [start for _cam, start in remaining(store)]
    assert kept == starts[-len(kept):]  # the oldest went
    assert done.trigger == Trigger.EMERGENCY
    assert done.segments == len(starts) - len(kept)
    assert "below the minimum" in caplog.text


def disk_bytes(layout: Layout) -> int:
    return sum(f.stat().st_size for f in layout.recordings.rglob("*.mp4"))


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A real 8 MB filesystem (tmpfs), when this process may mount one."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8M", "tmpfs", str(mount_point)],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def test_emergency_pass_on_a_real_full_filesystem(
    small_filesystem: Path, clips: list[Path]
) -> None:
    with open_node(small_filesystem) as (store, layout):
        starts = [NOW - 120 + n * 2 for n in range(40)]  # about 5.6 MB of the 8
        add_segments(store, layout, "cam01", starts, clips)
        before = shutil.disk_usage(small_filesystem)
        config = make_config({"cam01": None}, min_free="40%")
        assert before.free < 0.4 * before.total  # the test is about an emergency

        [done] = Retention(store, layout, config, clock=lambda: NOW).run_once()

        after = shutil.disk_usage(small_filesystem)
        assert after.free >= 0.4 * after.total
        assert done.trigger == Trigger.EMERGENCY
        assert len(remaining(store)) == len(starts) - done.segments > 0


# -- holds --------------------------------------------------------------------------------


@pytest.mark.parametrize("trigger", [Trigger.AGE, Trigger.QUOTA, Trigger.EMERGENCY])
def test_held_footage_survives_every_pass(
    node: tuple[Store, Layout], clips: list[Path], trigger: Trigger,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, layout = node
    t0 = NOW - 5 * HOUR
    starts = [t0 + n * SEGMENT_SECONDS for n in range(6)]
    for camera in ("cam01", "cam02"):
        add_segments(store, layout, camera, starts, clips)
    # One hold on one camera's third segment, one on every camera's sixth (by a second only).
    add_hold(store, camera="cam01", start=starts[2] + 0.5, end=starts[2] + 1, reason="case 17",
             created_by="dpo", expires_at=None, now=t0)
    add_hold(store, camera=None, start=starts[5] + 1.5, end=NOW, reason="complaint 4",
             created_by="dpo", expires_at=NOW + HOUR, now=t0)
    # Each configuration makes one pass want every segment gone.
    cameras: dict[str, float | None] = {"cam01": None, "cam02": None}
    disk = roomy
    if trigger == Trigger.AGE:
        config = make_config(cameras, default_hours=1)
    elif trigger == Trigger.QUOTA:
        config = make_config(cameras, quota=1)
    else:
        config = make_config(cameras, min_free="5%")
        disk = lambda _path: Disk(10**9, 10**9, 0)  # noqa: E731 - full whatever we delete

    [done] = Retention(store, layout, config, clock=lambda: NOW, disk_usage=disk).run_once()

    assert done.trigger == trigger
    assert remaining(store) == [("cam01", starts[2]), ("cam01", starts[5]), ("cam02", starts[5])]
    assert done.segments == 9
    assert all_files_present(store, layout)
    if trigger == Trigger.EMERGENCY:
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1
        assert "held or could not be deleted" in errors[0].getMessage()


def test_expired_and_released_holds_stop_protecting(
    node: tuple[Store, Layout], clips: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    store, layout = node
    caplog.set_level(logging.INFO)
    starts = [NOW - 5 * HOUR + n * SEGMENT_SECONDS for n in range(3)]
    add_segments(store, layout, "cam01", starts, clips)
    expiring = add_hold(store, camera="cam01", start=starts[0], end=starts[0] + 1,
                        reason="incident 3", created_by="caretaker", expires_at=NOW - 5,
                        now=NOW - HOUR)
    released = add_hold(store, camera=None, start=starts[1], end=starts[1] + 1,
                        reason="case 9", created_by="dpo", expires_at=None, now=NOW - HOUR)
    release_hold(store, released, by="dpo", now=NOW - 60)
    kept = add_hold(store, camera="cam01", start=starts[2], end=starts[2] + 1,
                    reason="case 10", created_by="dpo", expires_at=None, now=NOW - HOUR)
    with store.read() as conn:
        assert [h.id for h in active_holds(conn, NOW)] == [kept]
        assert [h.id for h in active_holds(conn, NOW - 10)] == [expiring, kept]

    clock = [NOW - 10]
    retention = Retention(store, layout, make_config({"cam01": 1}), clock=lambda: clock[0],
                          disk_usage=roomy)
    retention.run_once()
    assert remaining(store) == [("cam01", starts[0]), ("cam01", starts[2])]
    clock[0] = NOW
    retention.run_once()

    assert remaining(store) == [("cam01", starts[2])]
    assert f"hold {expiring} on cam01 expired" in caplog.text
    # The hold rows stay: they explain why footage outlived its retention.
    with store.read() as conn:
        assert len(conn.execute(select(holds.c.id)).all()) == 3
    assert [p["trigger"] for p in pass_rows(store)] == ["age", "age"]


def test_hold_input_is_checked(node: tuple[Store, Layout]) -> None:
    store, _layout = node
    with pytest.raises(ValueError, match="must end after it starts"):
        add_hold(store, camera="cam01", start=NOW, end=NOW, reason="case 1", created_by="dpo",
                 expires_at=None)
    with pytest.raises(ValueError, match="needs a reason"):
        add_hold(store, camera="cam01", start=NOW, end=NOW + 1, reason="  ", created_by="dpo",
                 expires_at=None)
    with pytest.raises(ValueError, match="cannot expire in the past"):
        add_hold(store, camera=None, start=NOW, end=NOW + 1, reason="case 1", created_by="dpo",
                 expires_at=NOW - 1, now=NOW)
    with pytest.raises(ValueError, match="there is no hold 42"):
        release_hold(store, 42, by="dpo")
    hold = add_hold(store, camera=None, start=NOW, end=NOW + 1, reason="case 1",
                    created_by="dpo", expires_at=None)
    release_hold(store, hold, by="dpo")
    with pytest.raises(ValueError, match=f"hold {hold} was already released"):
        release_hold(store, hold, by="dpo")


def test_hold_covers_overlapping_footage_of_its_cameras(node: tuple[Store, Layout]) -> None:
    store, _layout = node
    add_hold(store, camera="cam01", start=NOW, end=NOW + 10, reason="case 5", created_by="dpo",
             expires_at=None)
    add_hold(store, camera=None, start=NOW + 100, end=NOW + 110, reason="case 6",
             created_by="dpo", expires_at=None)
    with store.read() as conn:
        one, every = active_holds(conn, NOW)
    assert one.covers("cam01", NOW - 2, NOW + 0.1)
    assert not one.covers("cam01", NOW - 2, NOW)  # [start, end): touching is not overlapping
    assert not one.covers("cam02", NOW, NOW + 2)
    assert every.covers("cam02", NOW + 109, NOW + 111)
    assert not every.covers("cam02", NOW + 110, NOW + 112)


# -- the loop and the status page ---------------------------------------------------------


@pytest.mark.slow
def test_loop_survives_a_failing_pass(
    node: tuple[Store, Layout], clips: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    store, layout = node
    caplog.set_level(logging.INFO)
    add_segments(store, layout, "cam01", [NOW - 3 * HOUR], clips)
    calls = []

    def flaky_disk(path: Path) -> Disk:
        calls.append(path)
        if len(calls) <= 2:
            raise OSError(5, "Input/output error")
        return roomy(path)

    retention = Retention(store, layout, make_config({"cam01": 1}, interval=1),
                          clock=lambda: NOW, disk_usage=flaky_disk)
    stop = threading.Event()
    worker = threading.Thread(target=retention.run, args=(stop,))
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while "work again" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        worker.join(timeout=5)
    assert not worker.is_alive()
    assert "retention passes work again" in caplog.text
    # Two failed passes, one error logged.
    failures = [r for r in caplog.records if "retention pass failed" in r.getMessage()]
    assert len(failures) == 1
    assert remaining(store) == []  # the age pass ran before the disk check failed


def test_status_summarises_footage_holds_and_passes(
    node: tuple[Store, Layout], clips: list[Path]
) -> None:
    store, layout = node
    add_segments(store, layout, "cam01", [NOW - 3 * HOUR, NOW - 60, NOW - 30], clips)
    add_segments(store, layout, "old-cam", [NOW - 90], clips)
    hold = add_hold(store, camera="cam01", start=NOW - 60, end=NOW, reason="case 2",
                    created_by="dpo", expires_at=None, now=NOW)
    config = make_config({"cam01": 1, "cam02": None})
    Retention(store, layout, config, clock=lambda: NOW, disk_usage=roomy).run_once()

    with store.read() as conn:
        status = retention_status(conn, config, NOW)

    cam01, cam02, old = status.cameras
    assert (cam01.camera, cam01.configured, cam01.retention_hours) == ("cam01", True, 1)
    assert (cam01.oldest, cam01.newest, cam01.segments) == (NOW - 60, NOW - 30 + 2, 2)
    assert cam01.bytes == sum(
        p.stat().st_size for p in (layout.recordings / "cam01").rglob("*.mp4")
    )
    assert (cam02.segments, cam02.bytes, cam02.oldest) == (0, 0, None)
    assert (old.camera, old.configured, old.retention_hours) == ("old-cam", False, 72)
    assert [h.id for h in status.holds] == [hold]
    [last] = status.passes
    assert (last.trigger, last.segments) == (Trigger.AGE, 1)


def test_motion_only_recording_keeps_footage_near_motion(
    node: tuple[Store, Layout], clips: list[Path]
) -> None:
    store, layout = node
    config = Config.model_validate({
        "sites": {"school": {"name": "School"}},
        "cameras": {
            name: {"site": "school", "location": "corridor", "purpose": "test",
                   "main_url": "rtsp://127.0.0.1/x", "record": {"mode": mode}}
            for name, mode in (("hall", "motion"), ("door", "continuous"))
        },
    })
    # Ten minutes of 2 s segments, ending 5 minutes ago, on both cameras.
    start = NOW - 900
    starts = [start + n * SEGMENT_SECONDS for n in range(300)]
    add_segments(store, layout, "hall", starts, clips)
    add_segments(store, layout, "door", starts, clips)
    store.write(lambda conn: conn.execute(insert(motion_table), [
        {"camera": "hall", "start": start + 100, "end": start + 130, "peak": 0.2},
        {"camera": "door", "start": start + 400, "end": start + 410, "peak": 0.1},
    ]))
    # A motion span still going on (started, not yet ended) protects what follows its start.
    store.write(lambda conn: conn.execute(insert(events_table).values(
        camera="hall", kind="motion", start=start + 500, end=None, data="{}")))

    (done,) = Retention(store, layout, config, clock=lambda: NOW, disk_usage=roomy).run_once()

    assert done.trigger == Trigger.MOTION
    kept = [t - start for cam, t in remaining(store) if cam == "hall"]
    # Kept: the segments overlapping 10 s either side of the span (90 .. 140 s), and those from
    # 10 s before the open span on (which also covers the last two minutes, not yet judged).
    assert [t for t in kept if t < 480] == [90 + n * SEGMENT_SECONDS for n in range(25)]
    assert min(t for t in kept if t > 200) == 490
    assert len([1 for cam, _ in remaining(store) if cam == "door"]) == 300
    assert set(done.details) == {"hall"}
    assert all_files_present(store, layout)


def test_motion_only_recording_needs_motion_detection() -> None:
    with pytest.raises(ValueError, match="motion-only recording needs motion detection"):
        Config.model_validate({
            "sites": {"s": {"name": "S"}},
            "cameras": {"hall": {
                "site": "s", "location": "corridor", "purpose": "test",
                "main_url": "rtsp://127.0.0.1/x", "record": {"mode": "motion"},
                "analytics": {"motion": {"enabled": False}},
            }},
        })
