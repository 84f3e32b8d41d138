"""How the live picture service's threads choose what to make (custodes.live.service.Schedule):
the newest frame of the camera whose picture is due and waited longest, each camera paced at
the service's rate, a late picture not lowering it.

The service's whole run (decoders, watch files, states, redaction) is tested in test_live.py,
whose service runs this schedule, the default."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from custodes.live.service import (
    SAMPLE_FPS,
    SHED_FLOOR,
    LiveCamera,
    LiveService,
    Schedule,
    _Feed,
)
from custodes.vision.decode import Frame, file_frames

HAMILTON = "face_recognition_short_hamilton_clip.mp4"


@pytest.fixture(scope="module")
def frames(shared_data: Path) -> list[Frame]:
    """Three successive frames of the people clip, as a 9-grid tile gets them."""
    return list(file_frames(shared_data / "video" / HAMILTON, 8, 320))[:3]


def service(folder: Path, names: list[str], fps: float = 4.0,
            min_fps: float = 2.0) -> LiveService:
    return LiveService(folder, [LiveCamera(n, "rtsp://unused") for n in names], fps=fps,
                       min_fps=min_fps)


def feeds(live: LiveService, frame: Frame) -> dict[str, _Feed]:
    """A feed for each camera, without a decoder, with `frame` waiting."""
    out = {}
    for name, camera in live.cameras.items():
        feed = out[name] = live._feeds[name] = _Feed(camera, 320)
        feed.pending = frame
    return out


def test_the_camera_whose_picture_is_oldest_goes_first(frames: list[Frame],
                                                       tmp_path: Path) -> None:
    live = service(tmp_path, ["a", "b", "c"])
    waiting = feeds(live, frames[0])
    now = time.monotonic()
    waiting["a"].written.append(now - 0.1)
    waiting["b"].written.append(now - 0.3)
    order = []
    for _ in range(3):
        job, _ = live._due()
        assert job is not None
        feed, frame = job
        assert feed.redacting
        assert feed.pending is None
        assert frame is frames[0]
        order.append(feed.camera.name)
    assert order == ["c", "b", "a"]  # "c" has had no picture yet
    job, _ = live._due()
    assert job is None  # every one is being made


def test_a_thread_takes_the_newest_frame_not_the_one_sampled_for_it(
        frames: list[Frame], tmp_path: Path) -> None:
    live = service(tmp_path, ["a"], fps=4.0)
    feed = feeds(live, frames[0])["a"]
    feed.due = time.monotonic() + 10  # not due yet
    job, _ = live._due()
    assert job is None
    feed.pending = frames[2]  # the decoder kept a newer one meanwhile (FrameSource.take)
    feed.due = time.monotonic()
    job, _ = live._due()
    assert job is not None
    assert job[1] is frames[2]


def test_a_camera_is_due_again_one_interval_after_it_was_due(frames: list[Frame],
                                                            tmp_path: Path) -> None:
    live = service(tmp_path, ["a"], fps=4.0)
    feed = feeds(live, frames[0])["a"]

    def take() -> None:
        feed.redacting, feed.pending = False, frames[1]
        job, _ = live._due()
        assert job is not None

    # Taken 0.1 s after it fell due: due again 0.15 s later, not 0.25 s, so that pictures
    # made late do not lower the rate.
    feed.due = time.monotonic() - 0.1
    take()
    assert feed.due - time.monotonic() == pytest.approx(0.15, abs=0.05)
    # Not due yet: nothing to take, and the thread is told how long to wait for it.
    feed.redacting, feed.pending = False, frames[2]
    job, wait = live._due()
    assert job is None
    assert 0.0 < wait <= 0.16
    # Taken long after it fell due (a busy server): one interval is caught up (due again at
    # once), then one interval each, not five seconds' worth of pictures in a row.
    feed.due = time.monotonic() - 5.0
    take()
    assert feed.due - time.monotonic() == pytest.approx(0.0, abs=0.05)
    take()
    assert feed.due - time.monotonic() == pytest.approx(0.25, abs=0.05)


def test_shedding_keeps_the_rate_above_the_busy_cut_and_the_decoders_above_it(
        tmp_path: Path) -> None:
    live = service(tmp_path, ["a"], fps=4.0, min_fps=2.0)
    live._busy = 10.0  # ten seconds of work in one: as busy as can be
    live._decide(1.0)
    assert live.fps == SHED_FLOOR > 2.0
    # The decoders keep frames faster than pictures are made, whatever the rate.
    assert live._sample_fps() == SAMPLE_FPS > live.max_fps
    # The schedule before: decoders sample at the picture rate, shed down to the busy cut.
    before = LiveService(tmp_path, [], fps=4.0, min_fps=2.0, schedule=Schedule.SAMPLED)
    before._busy = 10.0
    before._decide(1.0)
    assert before.fps == 2.0 == before._sample_fps()
