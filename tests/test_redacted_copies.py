"""Redacted copies for viewers: a segment searched for faces once, its boxes reused; a copy
in the making sent as it is written, to every viewer who asks, from one redaction."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from pathlib import Path

import av
import cv2
import httpx
import numpy as np
import numpy.typing as npt
import pytest
import uvicorn
from sqlalchemy import select

from custodes.api.app import create_app
from custodes.api.deps import SESSION_COOKIE
from custodes.app import Node
from custodes.audit.actions import Action
from custodes.auth.roles import Role
from custodes.media import ffmpeg_exe
from custodes.record.playback import Segment
from custodes.redaction.copies import (
    HOVER_LEAD,
    PLAYBACK_LINES,
    TAILS_KEPT,
    Abandoned,
    RedactedCopies,
)
from custodes.redaction.detect import RedactionSettings
from custodes.redaction.video import (
    BoxPlan,
    RedactionError,
    _sliced,  # the frames' matching to a kept plan, checked frame by frame
    frame_before,
    redact_stream,
)
from custodes.store import schema
from custodes.vision.faces import Box, FaceDetector
from footage import add_segments, encode_clips
from test_auth import add_user, audit_entries, client, open_node, signed_in

T0 = 1_714_557_600.0


@pytest.fixture
def segment(tmp_path: Path) -> Iterator[tuple[Node, Segment]]:
    clips = encode_clips(tmp_path / "clips", count=1)
    for node in open_node(tmp_path / "node"):
        add_segments(node.store, node.layout, "cam1", [T0], clips)
        with node.store.read() as conn:
            row = conn.execute(select(schema.segments)).one()
        yield node, Segment.from_row(row)


def test_a_segment_is_searched_once_and_its_boxes_go_with_it(
        segment: tuple[Node, Segment]) -> None:
    node, seg = segment
    copies = RedactedCopies(workers=1)

    copy = copies.get(node, seg)

    boxes = copies.boxes_path(node, seg)
    assert copy.is_file()
    assert boxes.is_file()
    assert decoded(copy) == decoded(node.layout.recordings / seg.path)
    searched = boxes.stat().st_mtime_ns
    # The copy expires (or zones change): the next viewer gets a new one from the same boxes.
    copy.unlink()
    assert copies.get(node, seg) == copy
    assert copy.is_file()
    assert boxes.stat().st_mtime_ns == searched
    # Other settings never reuse these boxes.
    other = RedactedCopies(settings=RedactionSettings(detect_fps=2.0))
    assert other.boxes_path(node, seg) != boxes
    assert other.path(node, seg) != copy

    node.store.write(lambda conn: conn.execute(
        schema.segments.delete().where(schema.segments.c.id == seg.id)))
    assert copies.prune(node) == 2
    assert not copy.exists()
    assert not boxes.exists()


def decoded(path: Path) -> int:
    """Frames in a file, decoded: a fragmented copy's header does not count them."""
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def made_files(node: Node) -> list[str]:
    folder = node.layout.root / "redacted"
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


async def read_all(chunks: Path | AsyncIterator[bytes]) -> bytes:
    assert not isinstance(chunks, Path), "the copy should still be in the making"
    return b"".join([chunk async for chunk in chunks])


def test_two_viewers_of_a_copy_in_the_making_get_it_from_one_redaction(
        segment: tuple[Node, Segment], caplog: pytest.LogCaptureFixture) -> None:
    node, seg = segment
    copies = RedactedCopies(workers=2)
    caplog.set_level(logging.INFO, logger="custodes.redaction.copies")

    async def two_viewers() -> tuple[bytes, bytes]:
        return await asyncio.gather(read_all(copies.open(node, seg)[0]),
                                    read_all(copies.open(node, seg)[0]))

    first, second = asyncio.run(two_viewers())

    copy = copies.path(node, seg)
    assert first == second == copy.read_bytes()
    assert decoded(copy) == decoded(node.layout.recordings / seg.path)
    made = [r for r in caplog.records if r.getMessage().startswith("redacted copy of segment")]
    assert len(made) == 1
    # The search's boxes are kept, as plan_boxes would have made them.
    kept = BoxPlan.load(copies.boxes_path(node, seg), copies.settings)
    assert kept is not None
    assert kept.frames == decoded(copy)
    assert not [name for name in made_files(node) if name.endswith(".partial")]
    # Whole now: a later viewer gets the file (with byte ranges).
    assert copies.open(node, seg) == (copy, 0.0)


@pytest.fixture
def long_segment(segment: tuple[Node, Segment], shared_data: Path) -> tuple[Node, Segment]:
    """The segment's file replaced by 10 s of real 640x360 footage with faces: a copy that
    takes seconds to make, so that a viewer can leave long before it is done."""
    node, seg = segment
    subprocess.run([
        ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-i", str(shared_data / "video" / "face_recognition_short_hamilton_clip.mp4"),
        "-t", "10", "-vf", "scale=640:-2,fps=15", "-c:v", "libx264", "-preset", "ultrafast",
        "-g", "30",  # a keyframe every 2 s, as cameras send them
        "-an", str(node.layout.recordings / seg.path),
    ], check=True)
    return node, seg


def test_a_copy_whose_viewer_left_is_given_up_and_made_again_for_the_next(
        long_segment: tuple[Node, Segment]) -> None:
    node, seg = long_segment
    copies = RedactedCopies(workers=1)

    async def look_and_leave() -> bytes:
        chunks, _ = copies.open(node, seg)
        assert isinstance(chunks, AsyncGenerator)
        first: bytes = await anext(chunks)
        await chunks.aclose()  # what the server does when the browser goes
        return first

    first = asyncio.run(look_and_leave())
    assert first[4:8] == b"ftyp"
    # The thread gives it up at its next frame: nothing of it is kept, not even its boxes.
    assert asyncio.run(wait_for(lambda: not made_files(node))), "not given up"
    assert not copies._jobs

    copy = copies.get(node, seg)
    assert copy.is_file()
    assert decoded(copy) == decoded(node.layout.recordings / seg.path)


def test_stopping_gives_up_the_copies_in_the_making_and_ends_the_threads(
        long_segment: tuple[Node, Segment]) -> None:
    """A thread left in the detector's native code when the process exits aborts it, so the
    node's stop ends them: the copy under way is given up at its next frame, those waiting
    are refused, and a request after the stop is refused at once rather than never made."""
    node, seg = long_segment
    copies = RedactedCopies(workers=1)
    copies.start(node, seg)  # as a viewer's click does
    threads = list(copies._threads)
    assert threads
    assert asyncio.run(wait_for(lambda: any(j.started for j in copies._jobs.values())))

    copies.stop()

    assert not [t for t in threads if t.is_alive()]
    assert not made_files(node)
    with pytest.raises(Abandoned, match="stopping"):
        copies.get(node, seg)


async def wait_for(condition: Callable[[], bool], seconds: float = 60.0) -> bool:
    """Whether ``condition`` came true within ``seconds`` (not a timing check: a copy of the
    whole segment takes far longer than giving it up)."""
    for _ in range(int(seconds / 0.05)):
        if condition():
            return True
        await asyncio.sleep(0.05)
    return False


def test_a_browser_that_goes_away_stops_its_redaction(
        long_segment: tuple[Node, Segment]) -> None:
    """Over real HTTP (uvicorn): the server notices the closed connection, the copy is given
    up, and no ffmpeg or file is left of it."""
    node, seg = long_segment
    app = create_app(node)
    session = app.state.sessions.create(add_user(app, "viktor", Role.VIEWER), "127.0.0.1")
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        assert asyncio.run(wait_for(lambda: server.started, 30))
        port = server.servers[0].sockets[0].getsockname()[1]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}",
                          cookies={SESSION_COOKIE: session.token}) as c, \
                c.stream("GET", f"/api/segments/{seg.id}/redacted") as answer:
            assert answer.status_code == 200
            assert "content-length" not in answer.headers  # sent as it is made
            assert next(answer.iter_raw())[4:8] == b"ftyp"
        assert asyncio.run(wait_for(lambda: not made_files(node))), "not given up"
        assert not node.redacted_copies._jobs
        assert not ffmpegs_of(os.getpid())
    finally:
        server.should_exit = True
        thread.join(30)


def ffmpegs_of(pid: int) -> list[int]:
    """ffmpeg processes started by process ``pid`` (any of its threads) still running."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if parent == pid and b"ffmpeg" in command:
            found.append(int(stat.parent.name))
    return found


def test_a_viewer_who_starts_mid_segment_gets_a_redacted_tail_from_the_frame_clicked(
        long_segment: tuple[Node, Segment], caplog: pytest.LogCaptureFixture) -> None:
    """A click ~7 s into a 10 s segment, between two keyframes: the copy starts at the frame
    showing then (decoded from the keyframe before, the frames between dropped), searched from
    there, instead of after the search of the 7 s before. Its faces are blurred as in the
    whole copy; its copy is not kept (a whole copy is what later viewers get), its search is
    (test_a_tails_search_is_kept_for_the_next_click_into_that_segment)."""
    node, seg = long_segment
    source = node.layout.recordings / seg.path
    copies = RedactedCopies(workers=1)
    caplog.set_level(logging.INFO, logger="custodes.redaction.copies")
    keyframes = keyframe_times(source)
    times = frame_times(source)
    # Half way between the keyframes around 7 s, a third of a frame after a frame's time.
    key_before = max(k for k in keyframes if k <= 7.0)
    key_after = min([k for k in keyframes if k > 7.0] + [times[-1]])
    clicked = min(times, key=lambda t: abs(t - (key_before + key_after) / 2))
    assert clicked > key_before
    at = clicked + (times[1] - times[0]) / 3

    chunks, begins = copies.open(node, seg, at)
    tail = asyncio.run(read_all(chunks))

    assert begins == pytest.approx(clicked, abs=1e-6)  # not the keyframe before it
    # Every frame from the one clicked on, none before; the faces the node's detector finds
    # in the original frames are blurred in the tail: their detail, all together, mostly gone
    # (as test_redact_video judges exports).
    assert faces_blurred(source, tail, begins, node.layout.root / "tail.mp4") >= 5
    made = [r.getMessage() for r in caplog.records
            if r.getMessage().startswith("redacted copy of segment")]
    assert len(made) == 1
    assert f"from {begins:.1f} s" in made[0]
    # Nothing of the tail's copy is kept (no copy, no partial file): its search only.
    assert made_files(node) == [copies.tail_path(node, seg, begins).name]
    # A viewer near the start gets the whole copy, as before.
    chunks, begins = copies.open(node, seg, 0.3)
    assert begins == 0.0
    asyncio.run(read_all(chunks))
    assert copies.path(node, seg).is_file()


def keyframe_times(path: Path) -> list[float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        first = stream.start_time or 0
        base = float(stream.time_base or 0)
        return [(p.pts - first) * base for p in container.demux(stream)
                if p.is_keyframe and p.pts is not None]


def frame_times(path: Path) -> list[float]:
    """Each frame's time, seconds after the first, in order."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        first = stream.start_time or 0
        base = float(stream.time_base or 0)
        return sorted((p.pts - first) * base for p in container.demux(stream)
                      if p.pts is not None)


def sharpness(rgb: npt.NDArray[np.uint8], box: Box) -> float:
    grey = cv2.cvtColor(np.ascontiguousarray(rgb[box.y:box.bottom, box.x:box.right]),
                        cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def test_a_failed_redaction_leaves_no_copy(segment: tuple[Node, Segment]) -> None:
    node, seg = segment
    (node.layout.recordings / seg.path).write_bytes(b"not a video" * 1000)
    copies = RedactedCopies(workers=1)

    with pytest.raises(RedactionError):
        asyncio.run(read_all(copies.open(node, seg)[0]))

    assert made_files(node) == []
    (node.layout.recordings / seg.path).unlink()
    with pytest.raises(FileNotFoundError):
        copies.open(node, seg)


def test_a_click_into_a_segment_gets_a_tail_from_that_frame_over_http(
        segment: tuple[Node, Segment]) -> None:
    """Through the routes a browser uses: a viewer's playback answer 0.75 s into a segment
    whose copy is not made names a tail from the frame showing then (11 of 15 fps, between the
    1 s GOP's keyframes), the copy's answer says so (X-Copy-From, which the player places the
    frames by) and holds the frames from there on; nothing of it is kept."""
    node, seg = segment
    app = create_app(node)
    with signed_in(app, add_user(app, "viktor", Role.VIEWER)) as viewer:
        answer = viewer.get(f"/api/cameras/{seg.camera}/playback",
                            params={"at": seg.start + 0.75})
        assert answer.status_code == 200
        first = answer.json()["segments"][0]
        assert first["from"] == pytest.approx(11 / 15, abs=1e-6)
        assert first["url"] == f"/api/segments/{seg.id}/redacted?from={11 / 15:.6f}"
        copy = viewer.get(first["url"])
    assert copy.status_code == 200
    assert copy.headers["x-copy-from"] == f"{11 / 15:.6f}"
    path = node.layout.root / "tail.mp4"
    path.write_bytes(copy.content)
    assert decoded(path) == decoded(node.layout.recordings / seg.path) - 11
    assert not [name for name in made_files(node) if name.endswith((".mp4", ".partial"))]


def faces_blurred(source: Path, copy: bytes, begins: float, scratch: Path) -> int:
    """How many faces the node's detector finds in every 5th original frame from ``begins``;
    asserts that the copy has each such frame and that their detail is mostly gone in it."""
    scratch.write_bytes(copy)
    with av.open(str(scratch)) as container:
        frames = [np.asarray(v.to_ndarray(format="rgb24"), dtype=np.uint8)
                  for v in container.decode(video=0)]
    with av.open(str(source)) as container:
        stream = container.streams.video[0]
        originals = [v for v in container.decode(stream)
                     if v.time is not None and v.time - (stream.start_time or 0)
                     * float(stream.time_base or 0) >= begins - 1e-6]
    assert len(frames) == len(originals)
    detector = FaceDetector()
    before = after = 0.0
    checked = 0
    for original, shown in list(zip(originals, frames, strict=True))[::5]:
        rgb = np.asarray(original.to_ndarray(format="rgb24"), dtype=np.uint8)
        for face in detector.detect(rgb):
            box = face.box.expand(-0.15).clip(rgb.shape[1], rgb.shape[0])
            before += sharpness(rgb, box)
            after += sharpness(shown, box)
            checked += 1
    assert after < 0.1 * before
    return checked


def test_a_tails_search_is_kept_for_the_next_click_into_that_segment(
        long_segment: tuple[Node, Segment]) -> None:
    """A tail's boxes are kept (not its copy): a later click at or after its start, by
    anyone, gets a copy from its own frame blurred with those boxes, matched by the frames'
    times, and nothing is searched; a click before it is searched (fail closed: no boxes
    there). The whole segment's boxes, once kept, replace the tails'; settings of their own
    never see them; they go with the segment."""
    node, seg = long_segment
    source = node.layout.recordings / seg.path
    copies = RedactedCopies(workers=1)
    times = frame_times(source)

    def click(at: float) -> tuple[bytes, float, str]:
        chunks, begins = copies.open(node, seg, at)
        copy = asyncio.run(read_all(chunks))
        [made] = [t for t in copies.timings() if t["begins"] == begins][-1:]
        return copy, begins, str(made["boxes"])

    _, first, how = click(6.0)
    assert how == "searched"
    assert [origin for origin, _ in copies.tail_plans(node, seg)] == [
        pytest.approx(first, abs=1e-6)]
    # Later in the same segment: a slice of the kept search, from the frame clicked.
    later = times[times.index(min(times, key=lambda t: abs(t - 8.2)))]
    copy, begins, how = click(later + 0.01)
    assert begins == pytest.approx(later, abs=1e-6)
    assert how == "tail"
    assert faces_blurred(source, copy, begins, node.layout.root / "slice.mp4") >= 3
    # Exactly the kept boxes of those frames: as made from the kept plan directly.
    plan = BoxPlan.load(copies.tail_path(node, seg, first), copies.settings)
    assert plan is not None
    with (node.layout.root / "again.mp4").open("w+b") as again:
        redact_stream(source, again, settings=copies.settings, plan=plan, origin=first,
                      start=begins, max_lines=PLAYBACK_LINES,
                      zones=node.config.cameras[seg.camera].privacy_zones)
    assert (node.layout.root / "again.mp4").read_bytes() == copy
    # Each frame got the boxes the tail's search found for that very frame (by its time).
    searched = [t for t in times if t >= first - 1e-6]
    sliced = list(_sliced(source, plan, first, begins))
    assert len(sliced) == len([t for t in times if t >= begins - 1e-6])
    with av.open(str(source)) as container:
        zero = float((container.streams.video[0].start_time or 0)
                     * (container.streams.video[0].time_base or 0))
    for index, video, boxes in sliced:
        assert searched[index] == pytest.approx((video.time or 0) - zero, abs=1e-6)
        assert boxes == plan.boxes.get(index, [])
    assert any(boxes for _, _, boxes in sliced)  # faces were there to blur
    # Before the kept tail's start: no boxes for those frames, searched.
    _, _, how = click(3.0)
    assert how == "searched"
    assert len(copies.tail_plans(node, seg)) == 2
    # Other settings do not see these boxes.
    other = RedactedCopies(settings=RedactionSettings(detect_fps=2.0))
    assert other.tail_plans(node, seg) == []
    # The whole segment searched: its boxes serve every click, the tails' are dropped.
    copies.get(node, seg)
    assert copies.tail_plans(node, seg) == []
    copies.path(node, seg).unlink()  # the copy expired; its boxes stay
    _, begins, how = click(5.0)
    assert begins > 0
    assert how == "kept"
    assert [t["boxes"] for t in copies.timings()].count("searched") == 3  # 6 s, 3 s, whole

    node.store.write(lambda conn: conn.execute(
        schema.segments.delete().where(schema.segments.c.id == seg.id)))
    copies.prune(node)
    assert made_files(node) == []


def test_kept_tails_are_bounded_per_segment(segment: tuple[Node, Segment]) -> None:
    node, seg = segment
    copies = RedactedCopies(workers=1)
    for at in (1.8, 1.6, 1.4, 1.2, 1.0):  # each before the last: each searched
        asyncio.run(read_all(copies.open(node, seg, at)[0]))
    assert [t["boxes"] for t in copies.timings()] == ["searched"] * 5
    kept = [origin for origin, _ in copies.tail_plans(node, seg)]
    assert len(kept) == TAILS_KEPT
    assert max(kept) < 1.8 - 1 / 15  # the oldest went


def test_a_hover_prepares_the_copy_a_click_there_gets(segment: tuple[Node, Segment]) -> None:
    """Over the routes: the viewer's pointer rests on a moment, the copy a click there would
    get is made (its search kept), and the click that follows is not searched again."""
    node, seg = segment
    app = create_app(node)
    copies = node.redacted_copies
    with signed_in(app, add_user(app, "viktor", Role.VIEWER)) as viewer:
        asked = viewer.post(f"/api/cameras/{seg.camera}/prefetch",
                            params={"at": seg.start + 1.4})
        assert asked.status_code == 202, asked.text
        begins = asked.json()["from"]
        # From the frame HOVER_LEAD before: a click a little off still finds it.
        assert begins == pytest.approx(frame_before(node.layout.recordings / seg.path,
                                                    1.4 - HOVER_LEAD), abs=1e-6)
        assert 0 < begins < 1.4
        assert asyncio.run(wait_for(lambda: bool(copies.timings())))
        [made] = copies.timings()
        assert (made["priority"], made["hover"], made["boxes"]) == ("hover", True, "searched")
        answer = viewer.get(f"/api/cameras/{seg.camera}/playback",
                            params={"at": seg.start + 1.4}).json()["segments"][0]
        copy = viewer.get(answer["url"])
        assert copy.status_code == 200
        assert float(copy.headers["x-copy-from"]) > begins
        # Hovering where it is prepared already makes nothing.
        again = viewer.post(f"/api/cameras/{seg.camera}/prefetch",
                            params={"at": seg.start + 1.4})
        assert again.json()["from"] is None
    assert [t["boxes"] for t in copies.timings()] == ["searched", "tail"]


def test_a_hover_is_refused_for_a_camera_the_user_may_not_see(
        segment: tuple[Node, Segment]) -> None:
    node, seg = segment
    app = create_app(node)
    with signed_in(app, add_user(app, "carla", Role.VIEWER, ["cam2"])) as limited:
        refused = limited.post(f"/api/cameras/{seg.camera}/prefetch",
                               params={"at": seg.start + 1})
        assert refused.status_code == 403
    with client(app) as anonymous:
        assert anonymous.post(f"/api/cameras/{seg.camera}/prefetch",
                              params={"at": seg.start + 1}).status_code == 401
    assert not node.redacted_copies._jobs
    assert node.redacted_copies.timings() == []
    assert audit_entries(node, Action.CAMERA_ACCESS)


def test_a_viewer_has_one_hover_at_a_time(tmp_path: Path) -> None:
    """A pointer swept over many segments: each hover replaces the viewer's last, given up
    (taken off the queue, or stopped at its next frame); at most one waits or runs per viewer,
    and a hover never takes a thread a click is waiting for."""
    clips = encode_clips(tmp_path / "clips", count=6)
    for node in open_node(tmp_path / "node"):
        add_segments(node.store, node.layout, "cam1", [T0 + 2 * n for n in range(6)], clips)
        with node.store.read() as conn:
            segments = [Segment.from_row(r) for r in conn.execute(
                select(schema.segments).order_by(schema.segments.c.start))]
        copies = RedactedCopies(workers=1)
        for seg in segments:
            copies.hover(node, seg, 1.5, "viewer-a")
            with copies._lock:
                pending = [j for j in copies._jobs.values()
                           if j.hover == "viewer-a" and not j.left]
            assert len(pending) <= 1
            assert len(copies._hovers) <= 1
        copies.hover(node, segments[0], 1.5, "viewer-b")  # another viewer's is their own
        assert asyncio.run(wait_for(lambda: not copies._jobs))  # noqa: B023 (run at once)
        made = [t for t in copies.timings() if t["hover"]]
        # Each asked for once; the first twice if viewer-a's was stopped before viewer-b came.
        assert {t["segment"] for t in made} == {s.id for s in segments}
        assert len(made) <= len(segments) + 1
        searched = [t["segment"] for t in made if "searched" in t]
        # The last of viewer-a's and viewer-b's made whole; of the rest at most the one
        # running when it was replaced got further than its first frame.
        assert segments[-1].id in searched
        assert len([s for s in searched if s not in (segments[-1].id, segments[0].id)]) <= 1
        assert len([s for s in segments[1:-1] if copies.tail_plans(node, s)]) <= 1
        copies.stop()


def test_a_click_takes_the_thread_of_a_hover_nobody_asked_for(
        long_segment: tuple[Node, Segment]) -> None:
    """One thread, busy with a viewer's hover (7.5 s of 10 s to search): another click is a
    viewer waiting, so the hover gives way at its next frame, and nothing of it is kept."""
    node, seg = long_segment
    copies = RedactedCopies(workers=1)
    assert copies.hover(node, seg, 3.0, "viewer-a") == pytest.approx(3.0 - HOVER_LEAD, abs=0.07)
    assert asyncio.run(wait_for(lambda: any(j.started for j in copies._jobs.values())))

    chunks, begins = copies.open(node, seg, 1.0)  # before it: not a slice of it
    asyncio.run(read_all(chunks))

    [hover] = [t for t in copies.timings() if t["hover"]]
    assert "sent" not in hover
    assert [origin for origin, _ in copies.tail_plans(node, seg)] == [
        pytest.approx(begins, abs=1e-6)]
    [given_up] = [job for job in copies._timed if job.hover]
    assert isinstance(given_up.error, Abandoned)
