"""The analysis pipeline on real video: motion, one face record per appearance, redacted
snapshots, and the analysis processes' supervision (crash, outage)."""

from __future__ import annotations

import json
import multiprocessing
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import dlib  # type: ignore[import-untyped]
import face_recognition_models  # type: ignore[import-untyped]
import numpy as np
import psutil
import pytest
from sqlalchemy import select

from custodes.analytics.motion import MotionDetector, MotionTracker
from custodes.analytics.supervisor import SETTLE, AnalyticsSupervisor, plan_move, pool_size
from custodes.analytics.worker import (
    STATS_INTERVAL,
    Adopt,
    CameraAnalysis,
    Command,
    Control,
    FaceTrack,
    Message,
    MotionEnded,
    MotionStarted,
    Release,
    Shedder,
    Stats,
    WorkerSpec,
    analyse_cameras,
    detect_scale,
)
from custodes.config import AnalyticsConfig, FacesConfig, MotionConfig
from custodes.events.bus import EventBus
from custodes.events.maintainer import EventMaintainer
from custodes.events.types import EventKind
from custodes.faces.calibration import POSSIBLE_DISTANCE
from custodes.faces.photos import describe_photo, read_image
from custodes.media import ffmpeg_exe
from custodes.sim import SimServer, prepare_clip
from custodes.store import schema
from custodes.store.db import Store
from custodes.vision.decode import Frame, FrameSource, file_frames
from custodes.vision.embedding import FaceEmbedder
from custodes.vision.weights import face_model_files

HAMILTON = "video/face_recognition_short_hamilton_clip.mp4"
WALKING = "video/opencv_vtest_reencoded_480x360.avi"


class Outbox(list[Message]):
    def put(self, message: Message) -> None:
        self.append(message)


def motion_frames(path: Path, config: MotionConfig, seconds: float = 8) -> list[int]:
    """Number of moving regions in each analysed frame (5 fps) of the first seconds."""
    detector: MotionDetector | None = None
    counts = []
    for frame in file_frames(path, 5, 640):
        if frame.t > seconds:
            break
        if detector is None:
            detector = MotionDetector(config, frame.grey.shape[1], frame.grey.shape[0])
        counts.append(len(detector.update(frame.grey).boxes))
    return counts


@pytest.fixture(scope="module")
def still_clip(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The walking scene's first frame held for 4 s: a camera on an empty, still scene
    (with real encoding noise)."""
    folder = tmp_path_factory.mktemp("still")
    still = folder / "still.png"
    clip = folder / "still.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(shared_data / WALKING),
                    "-frames:v", "1", str(still)], check=True)
    subprocess.run([ffmpeg_exe(), "-v", "error", "-loop", "1", "-i", str(still), "-t", "4",
                    "-r", "15", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(clip)], check=True)
    return clip


def test_motion_is_found_where_people_walk_and_not_in_a_still_scene(
    shared_data: Path, still_clip: Path
) -> None:
    walking = motion_frames(shared_data / WALKING, MotionConfig())
    still = motion_frames(still_clip, MotionConfig())
    assert sum(1 for n in walking[1:] if n) >= 0.9 * (len(walking) - 1)
    assert not any(still)


def test_masks_suppress_motion(shared_data: Path) -> None:
    everything = [[(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]]
    assert not any(motion_frames(shared_data / WALKING, MotionConfig(masks=everything)))
    # Masking the left half leaves only moving regions on the right.
    left = [[(0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0)]]
    detector: MotionDetector | None = None
    seen = 0
    for frame in file_frames(shared_data / WALKING, 5, 640):
        if frame.t > 8:
            break
        if detector is None:
            detector = MotionDetector(MotionConfig(masks=left), 480, 360)
        for box in detector.update(frame.grey).boxes:
            seen += 1
            assert box.right > 240 - 8, box  # the dilation may reach a few pixels over
    assert seen


def test_motion_spans_start_and_end() -> None:
    spans = MotionTracker(end_after=1.0)
    moving = MotionDetector(MotionConfig(), 64, 64).update  # only for its result type
    still_result = moving(np.zeros((64, 64), np.uint8))
    frame = np.zeros((64, 64), np.uint8)
    detector = MotionDetector(MotionConfig(), 64, 64)
    detector.update(frame)
    frame[20:40, 20:40] = 255
    result = detector.update(frame)
    assert result.boxes
    started, ended = spans.update(0.0, result)
    assert started is not None
    assert ended is None
    assert spans.update(0.5, still_result) == (None, None)
    _, ended = spans.update(1.2, still_result)
    assert ended is not None
    assert (ended.start, ended.last, ended.peak) == (0.0, 0.0, result.area)


@pytest.fixture(scope="module")
def hamilton(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Outbox, Path]:
    """The Hamilton clip through one camera's analysis, descriptors on."""
    snapshots = tmp_path_factory.mktemp("snapshots")
    config = AnalyticsConfig(faces=FacesConfig(embeddings=True))
    out = Outbox()
    analysis = CameraAnalysis(WorkerSpec("stage", "unused", config, snapshots), out)
    for frame in file_frames(shared_data / HAMILTON, 5, 640):
        analysis.process(frame)
    analysis.flush()
    return out, snapshots


@pytest.mark.slow
def test_one_face_record_per_appearance(hamilton: tuple[Outbox, Path]) -> None:
    out, _ = hamilton
    tracks = [m for m in out if isinstance(m, FaceTrack)]
    # Lin-Manuel Miranda faces the camera from 3.65 s to 7.86 s: one appearance, so exactly
    # one record, however many frames it spans; the cut to the audience at 8.06 s ends it
    # (a guest sits where he was, at his size).
    miranda = [t for t in tracks if t.start < 6 < t.end]
    assert len(miranda) == 1
    assert miranda[0].start == pytest.approx(3.65, abs=0.25)
    assert miranda[0].end == pytest.approx(7.86, abs=0.25)
    assert miranda[0].detections >= 20  # of 22 frames
    # The other faces (the opening wide shot, the close-ups in profile, five guests in the
    # audience shot, each seen ~10 times): one record per appearance, not one per frame.
    audience = [t for t in tracks if t.start >= 8.0]
    assert 5 <= len(audience) <= 8
    assert sum(t.detections for t in tracks) >= 3 * len(tracks)
    assert all(t.embedding is not None and len(t.embedding) == 128 * 4 for t in tracks)
    started = [m for m in out if isinstance(m, MotionStarted)]
    ended = [m for m in out if isinstance(m, MotionEnded)]
    assert len(started) == len(ended) >= 1


@pytest.mark.slow
def test_snapshots_show_no_recognisable_face(hamilton: tuple[Outbox, Path],
                                             shared_data: Path) -> None:
    out, snapshots = hamilton
    paths = [m.snapshot for m in out if isinstance(m, FaceTrack | MotionEnded) and m.snapshot]
    assert len(paths) >= 2
    # Audited by detectors other than the redactor's (a redactor checked by its own detector
    # passes itself): dlib's HOG upsampled once (faces from ~40 px) and dlib's CNN (MMOD,
    # trained on other data than CenterFace, sees turned faces too). The blur keeps a head's
    # shape on purpose, so a detector may still see "a face" in it (HOG does, in the wide shot);
    # what must be gone is who it is: every face they find is far from Lin-Manuel Miranda's
    # reference photo (his unblurred 44 px face in that shot is 0.57 from it).
    reference = describe_photo(read_image(
        (shared_data / "faces" / "face_recognition" / "Lin-Manuel_Miranda" /
         "lin-manuel-miranda.png").read_bytes())).vector
    hog = dlib.get_frontal_face_detector()
    mmod = dlib.cnn_face_detection_model_v1(
        face_recognition_models.cnn_face_detector_model_location())
    landmarks = dlib.shape_predictor(str(face_model_files().shape_predictor_5))
    embedder = FaceEmbedder("onnx", threads=1)
    audited = 0
    for relative in paths:
        image = cv2.imread(str(snapshots / relative), cv2.IMREAD_COLOR)
        assert image is not None, relative
        rgb = np.ascontiguousarray(image[:, :, ::-1], dtype=np.uint8)
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        rects = [*hog(grey, 1), *(d.rect for d in mmod(rgb, 0))]
        for rect in rects:
            audited += 1
            vector = embedder.embed(rgb, [landmarks(grey, rect)])[0]
            assert float(np.linalg.norm(vector - reference)) > POSSIBLE_DISTANCE, relative
    assert audited <= len(paths)  # a blurred head now and then, not a face in every picture


def test_descriptors_are_not_computed_unless_allowed(shared_data: Path, tmp_path: Path) -> None:
    out = Outbox()
    analysis = CameraAnalysis(WorkerSpec("stage", "unused", AnalyticsConfig(), tmp_path), out)
    assert analysis.embedder is None
    for frame in file_frames(shared_data / HAMILTON, 5, 640):
        if 3.5 < frame.t < 6:
            analysis.process(frame)
    analysis.flush()
    tracks = [m for m in out if isinstance(m, FaceTrack)]
    assert tracks
    assert all(t.embedding is None for t in tracks)


def test_event_maintainer_stores_and_publishes(tmp_path: Path) -> None:
    source: queue.Queue[Message] = queue.Queue()
    bus = EventBus()
    with Store(tmp_path / "x.db") as store, bus.subscribe() as events:
        maintainer = EventMaintainer(store, bus, {"door": "school"}, source)
        maintainer.handle(MotionStarted("door", 1, 100.0))
        maintainer.handle(MotionEnded("door", 1, 100.0, 104.5, 0.12, "door/x.jpg"))
        maintainer.handle(FaceTrack("door", 101.0, 103.0, 9, (1, 2, 30, 30), 0.7, None, None))
        maintainer.handle(Stats("door", True, "", 5.0, 0.1, 0, 640, 360))
        with store.read() as conn:
            rows = conn.execute(select(schema.events).order_by(schema.events.c.id)).all()
            motion = conn.execute(select(schema.motion)).one()
            face = conn.execute(select(schema.faces)).one()
        published = [events.get(timeout=1) for _ in range(3)]
    assert [(r.kind, r.start, r.end) for r in rows] == [
        ("motion", 100.0, 104.5), ("face", 101.0, 103.0)]
    assert json.loads(rows[0].data) == {"peak": 0.12, "ended": "quiet"}
    assert (motion.start, motion.end, motion.peak) == (100.0, 104.5, 0.12)
    assert (face.event_id, face.detections, face.embedding) == (rows[1].id, 9, None)
    assert [(e.kind, e.end, e.site) for e in published if e is not None] == [
        (EventKind.MOTION, None, "school"), (EventKind.MOTION, 104.5, "school"),
        (EventKind.FACE, 103.0, "school")]
    assert maintainer.stats["door"].fps == 5.0


# -- the processes --------------------------------------------------------------------------


def wait_for_stats(source: AnalyticsSupervisor, camera: str, *, online: bool,
                   timeout: float) -> Stats:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            message = source.queue.get(timeout=1.0)
        except queue.Empty:
            continue
        if isinstance(message, Stats) and message.camera == camera and message.online == online:
            return message
    pytest.fail(f"no {'online' if online else 'offline'} statistics from {camera}")


@pytest.fixture
def walking_camera(shared_data: Path, tmp_path: Path) -> Iterator[tuple[SimServer, str]]:
    clip = prepare_clip(shared_data / WALKING, tmp_path / "clips")
    with SimServer() as sim:
        yield sim, sim.add_camera("hall", clip)


@pytest.mark.slow
def test_analysis_process_is_restarted_and_follows_camera_outages(
    walking_camera: tuple[SimServer, str], tmp_path: Path
) -> None:
    sim, url = walking_camera
    spec = WorkerSpec("hall", url, AnalyticsConfig(), tmp_path / "snapshots")
    supervisor = AnalyticsSupervisor([spec])
    supervisor.start()
    try:
        stats = wait_for_stats(supervisor, "hall", online=True, timeout=60)
        assert stats.fps > 3
        assert (stats.width, stats.height) == (640, 360)
        assert stats.lag_p95 < 1.5

        # A crash (here: SIGKILL) is noticed and the process restarted.
        first = supervisor.pid("hall")
        assert first is not None
        os.kill(first, signal.SIGKILL)
        wait_for_stats(supervisor, "hall", online=True, timeout=60)
        assert supervisor.pid("hall") not in (None, first)
        assert supervisor.health["hall"].restarts == 1

        # The camera goes away: analysis says so and waits; it comes back: analysis resumes.
        sim.stop_camera("hall")
        offline = wait_for_stats(supervisor, "hall", online=False, timeout=30)
        assert offline.reason
        sim.start_camera("hall")
        wait_for_stats(supervisor, "hall", online=True, timeout=30)
    finally:
        supervisor.stop()
    assert supervisor.pid("hall") is None


# -- the pool -------------------------------------------------------------------------------


def test_the_pool_is_sized_by_the_machine_not_the_camera_count() -> None:
    plenty = 64 * 1024
    # One per core and one more: no worker (one thread) needs a whole core while one idles.
    assert pool_size(64, cpus=2, memory_mib=plenty) == 3
    assert pool_size(64, cpus=16, memory_mib=plenty) == 17
    assert pool_size(8, cpus=2, memory_mib=plenty) == 3
    assert pool_size(3, cpus=16, memory_mib=plenty) == 3
    assert pool_size(1, cpus=1, memory_mib=plenty) == 1
    # Memory for 64 cameras' models and three workers' bases, not the sixteen cores allow.
    assert pool_size(64, cpus=16, memory_mib=64 * 110 + 3 * 150) == 3
    # Short of memory: one worker still (the cameras' models, not the workers, take it).
    assert pool_size(64, cpus=16, memory_mib=1024) == 1
    assert pool_size(64, cpus=2, memory_mib=plenty, configured=4) == 4
    assert pool_size(3, cpus=2, memory_mib=plenty, configured=4) == 3
    assert pool_size(0, cpus=2, memory_mib=plenty) == 0


def test_the_detector_sees_a_smaller_frame_but_never_the_smallest_faces_too_small() -> None:
    assert detect_scale(FacesConfig().min_size) == 0.75
    assert detect_scale(40) == 0.75
    assert detect_scale(10) == 1.0  # 10 px faces stay at full size
    assert 0.75 < detect_scale(16) < 1.0


def test_shedding_lowers_the_rate_to_the_floor_and_restores_it() -> None:
    shedder = Shedder(min_fps=0.5)
    assert shedder.rate(5) == 5
    shedder.update(0.75)  # busy, but within the band: no change
    assert shedder.rate(5) == 5
    rates = []
    for _ in range(20):
        shedder.update(1.0)
        rates.append(shedder.rate(5))
    assert rates == sorted(rates, reverse=True)
    assert rates[0] < 5
    assert rates[-1] == 0.5  # never below the floor
    assert shedder.rate(0.2) == 0.2  # nor above a camera's own rate
    for _ in range(40):
        shedder.update(0.1)
    assert shedder.rate(5) == 5


def analysis_processes() -> list[psutil.Process]:
    """This test process's children started by multiprocessing's spawn (not its resource
    tracker, not the simulator's ffmpeg)."""
    out = []
    for child in psutil.Process().children(recursive=True):
        try:
            if any("spawn_main" in part for part in child.cmdline()):
                out.append(child)
        except psutil.NoSuchProcess:
            continue
    return out


def wait_all_online(supervisor: AnalyticsSupervisor, cameras: set[str],
                    timeout: float) -> dict[str, Stats]:
    seen: dict[str, Stats] = {}
    deadline = time.monotonic() + timeout
    while set(seen) != cameras and time.monotonic() < deadline:
        try:
            message = supervisor.queue.get(timeout=1.0)
        except queue.Empty:
            continue
        if (isinstance(message, Stats) and message.camera in cameras and message.online
                and message.fps > 0):
            seen[message.camera] = message
    assert set(seen) == cameras, f"analysed: {sorted(seen)}"
    return seen


@pytest.fixture
def three_cameras(shared_data: Path, tmp_path: Path) -> Iterator[list[str]]:
    clip = prepare_clip(shared_data / WALKING, tmp_path / "clips")
    with SimServer() as sim:
        yield [sim.add_camera(name, clip) for name in ("a", "b", "c")]


@pytest.mark.slow
def test_more_cameras_than_processes_are_all_analysed_and_survive_a_crash(
    three_cameras: list[str], tmp_path: Path
) -> None:
    specs = [WorkerSpec(name, url, AnalyticsConfig(), tmp_path / "snapshots")
             for name, url in zip("abc", three_cameras, strict=True)]
    supervisor = AnalyticsSupervisor(specs, workers=2)
    supervisor.start()
    try:
        wait_all_online(supervisor, {"a", "b", "c"}, timeout=90)
        assert len(analysis_processes()) == 2
        # Cameras a and c share the first worker; killing it stops both, and both go on in
        # its replacement while b's worker is left alone.
        assert supervisor.pid("a") == supervisor.pid("c") != supervisor.pid("b")
        shared, other = supervisor.pid("a"), supervisor.pid("b")
        assert shared is not None
        os.kill(shared, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while supervisor.pid("a") in (None, shared) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert supervisor.pid("a") not in (None, shared)
        while not supervisor.queue.empty():  # what the killed worker said before it died
            supervisor.queue.get()
        wait_all_online(supervisor, {"a", "c"}, timeout=90)
        assert supervisor.health["a"].restarts == supervisor.health["c"].restarts == 1
        assert supervisor.health["b"].restarts == 0
        assert supervisor.pid("b") == other
        assert len(analysis_processes()) == 2

        # A worker that no longer answers (stopped by a signal) is killed at the stop.
        stuck = supervisor.pid("b")
        assert stuck is not None
        os.kill(stuck, signal.SIGSTOP)
    finally:
        supervisor.stop()
    assert analysis_processes() == []
    assert supervisor.pids() == []


@pytest.mark.slow
def test_an_analysis_that_cannot_keep_up_is_shed_and_says_so(
    walking_camera: tuple[SimServer, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, url = walking_camera
    out: queue.Queue[Message] = queue.Queue()
    analysis = CameraAnalysis(WorkerSpec("hall", url, AnalyticsConfig(fps=5), tmp_path), out)
    slow = threading.Event()
    slow.set()
    real = analysis.process

    def process(frame: Frame) -> None:
        if slow.is_set():
            time.sleep(0.4)  # an analysis that can do 2.5 frames a second, not 5
        real(frame)

    monkeypatch.setattr(analysis, "process", process)
    stop = multiprocessing.get_context("spawn").Event()
    worker = threading.Thread(target=analyse_cameras, args=([analysis], out, stop),
                              kwargs={"min_fps": 0.5})
    worker.start()
    try:
        shed = next_stats(out, lambda s: s.online and s.shed, timeout=60)
        assert 0.5 <= shed.analysis_fps < 5
        slow.clear()  # the load goes away: the configured rate comes back
        restored = next_stats(out, lambda s: s.online and not s.shed, timeout=90)
        assert restored.analysis_fps == 5
    finally:
        stop.set()
        worker.join(30)
    assert not worker.is_alive()


def next_stats(out: queue.Queue[Message], want: Callable[[Stats], bool],
               timeout: float) -> Stats:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            message = out.get(timeout=1.0)
        except queue.Empty:
            continue
        if isinstance(message, Stats) and want(message):
            return message
    pytest.fail("no such statistics")


@pytest.mark.slow
def test_a_main_stream_is_decoded_keyframes_only(shared_data: Path, tmp_path: Path) -> None:
    clip = prepare_clip(shared_data / WALKING, tmp_path / "clips", width=1280, height=720)
    with SimServer() as sim:
        url = sim.add_camera("main", clip)
        with FrameSource(url, 5, 320) as source:
            frames = []
            for frame in source:
                frames.append(frame)
                if len(frames) == 3:
                    break
        assert source.keyframes_only
        # The simulator sends a keyframe a second at 15 fps: only those are decoded.
        assert source.stats.decoded <= 4
        assert source.stats.packets >= 15 * (len(frames) - 1)
        assert all(f.grey.shape == (180, 320) for f in frames)
        with FrameSource(url, 5, 320, keyframes=False) as source:
            frames = [f for f, _ in zip(source, range(3), strict=False)]
        assert not source.keyframes_only
        assert source.stats.decoded > 4


@pytest.mark.slow
def test_one_cameras_failure_leaves_the_workers_other_cameras_running(
    walking_camera: tuple[SimServer, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, url = walking_camera
    out: queue.Queue[Message] = queue.Queue()
    good = CameraAnalysis(WorkerSpec("good", url, AnalyticsConfig(), tmp_path), out)
    bad = CameraAnalysis(WorkerSpec("bad", url, AnalyticsConfig(), tmp_path), out)

    def broken(frame: Frame) -> None:
        raise ValueError("a frame it cannot handle")

    monkeypatch.setattr(bad, "process", broken)
    stop = multiprocessing.get_context("spawn").Event()
    worker = threading.Thread(target=analyse_cameras, args=([good, bad], out, stop))
    worker.start()
    try:
        failed = next_stats(out, lambda s: s.camera == "bad" and not s.online, timeout=60)
        assert "cannot handle" in failed.reason
        analysed = next_stats(out, lambda s: s.camera == "good" and s.online, timeout=60)
        assert analysed.fps > 0
    finally:
        stop.set()
        worker.join(30)
    assert not worker.is_alive()


# -- balancing the workers by what their cameras cost ---------------------------------------


def test_a_move_takes_the_most_off_the_busiest_worker() -> None:
    # Worker 0 holds the costly cameras (CPU-s per second at their configured rates).
    cost = {"a": 0.4, "c": 0.3, "e": 0.3, "b": 0.05, "d": 0.05}
    # Moving a leaves 0.6 / 0.5; moving c or e would leave 0.7 / 0.4.
    assert plan_move([["a", "c", "e"], ["b", "d"]], cost) == ("a", 0, 1)
    # To the least busy of three workers.
    assert plan_move([["a", "c", "e"], ["b"], ["d"]], cost | {"b": 0.2}) == ("a", 0, 2)
    # Balanced already, or a move would only make the other worker the busiest: nothing.
    assert plan_move([["a", "b"], ["c", "e"]], cost) is None
    assert plan_move([["a"], []], cost) is None
    # A gain too small to be worth ending a camera's motion span.
    assert plan_move([["c", "b"], ["x"]], cost | {"x": 0.28}) is None
    assert plan_move([["c", "b"], ["x"]], cost | {"x": 0.28}, min_gain=0.01) == ("b", 0, 1)
    # One worker: nowhere to go.
    assert plan_move([["a", "b", "c"]], cost) is None
    # A camera not measured yet counts as the mean of the measured ones.
    assert plan_move([["x", "y", "b"], ["d"]], {"b": 0.3, "d": 0.3}) == ("x", 0, 1)


class Lines:
    """A worker thread's control: commands to it, cameras it let go of from it."""

    def __init__(self) -> None:
        self.commands: queue.Queue[Command] = queue.Queue()
        self.released: queue.Queue[str] = queue.Queue()
        self.control = Control(self.commands, self.released)


@pytest.mark.slow
def test_a_camera_is_handed_over_between_workers(
    walking_camera: tuple[SimServer, str], tmp_path: Path
) -> None:
    _, url = walking_camera
    specs = {name: WorkerSpec(name, url, AnalyticsConfig(), tmp_path) for name in "abc"}
    outs: list[queue.Queue[Message]] = [queue.Queue(), queue.Queue()]
    lines = [Lines(), Lines()]
    stop = multiprocessing.get_context("spawn").Event()
    workers = [
        threading.Thread(target=analyse_cameras, args=(
            [CameraAnalysis(specs[name], out) for name in names], out, stop),
            kwargs={"control": line.control})
        for names, out, line in zip((("a", "b"), ("c",)), outs, lines, strict=True)
    ]
    for worker in workers:
        worker.start()
    try:
        measured = next_stats(outs[0], lambda s: s.camera == "a" and s.online and s.fps > 0,
                              timeout=60)
        assert measured.cpu_per_frame > 0  # what the supervisor balances by
        lines[0].commands.put(Release("a"))
        assert lines[0].released.get(timeout=60) == "a"
        said = drain(outs[0])
        # The camera's motion span and tracks were ended by the worker that let it go.
        spans = [m for m in said if isinstance(m, MotionStarted | MotionEnded)
                 and m.camera == "a"]
        if spans:
            assert isinstance(spans[-1], MotionEnded)
        lines[1].commands.put(Adopt(specs["a"]))
        lines[1].commands.put(Adopt(specs["a"]))  # said twice: still analysed once
        next_stats(outs[1], lambda s: s.camera == "a" and s.online and s.fps > 0, timeout=60)
        # One statistics message per camera and report: "a" is analysed once, like "c".
        time.sleep(3 * STATS_INTERVAL)
        reports = [m.camera for m in drain(outs[1]) if isinstance(m, Stats)]
        assert reports.count("a") <= reports.count("c") + 1
        assert reports.count("a") >= 2
        # The old worker says nothing more of it, and goes on with its other camera.
        next_stats(outs[0], lambda s: s.camera == "b" and s.online, timeout=30)
        assert not [m for m in drain(outs[0]) if m.camera == "a"]
        # Asked to let go of a camera it does not have, a worker says it has none.
        lines[0].commands.put(Release("a"))
        assert lines[0].released.get(timeout=30) == "a"
    finally:
        stop.set()
        for worker in workers:
            worker.join(30)
    assert not any(worker.is_alive() for worker in workers)


def drain(out: queue.Queue[Message]) -> list[Message]:
    said = []
    while True:
        try:
            said.append(out.get_nowait())
        except queue.Empty:
            return said


@pytest.mark.slow
def test_the_supervisor_moves_a_camera_to_the_less_busy_process(
    three_cameras: list[str], tmp_path: Path
) -> None:
    specs = [WorkerSpec(name, url, AnalyticsConfig(), tmp_path / "snapshots")
             for name, url in zip("abc", three_cameras, strict=True)]
    supervisor = AnalyticsSupervisor(specs, workers=2, rebalance=None)
    supervisor.start()
    try:
        wait_all_online(supervisor, {"a", "b", "c"}, timeout=90)
        assert supervisor.shares() == [["a", "c"], ["b"]]
        assert supervisor.cost.keys() == {"a", "b", "c"}  # measured from their statistics
        busy, idle = supervisor.pid("a"), supervisor.pid("b")
        assert supervisor.rebalance({"a": 0.1, "c": 0.5, "b": 0.05}) == ("a", 0, 1)
        deadline = time.monotonic() + 60
        while supervisor.pid("a") != idle and time.monotonic() < deadline:
            time.sleep(0.2)
        assert supervisor.pid("a") == idle
        assert supervisor.pid("c") == busy
        assert supervisor.shares() == [["c"], ["b", "a"]]
        assert supervisor.moves == 1
        while not supervisor.queue.empty():
            supervisor.queue.get()
        wait_all_online(supervisor, {"a", "b", "c"}, timeout=60)
        # A restarted process gets the cameras it has now, not those it started with.
        assert idle is not None
        os.kill(idle, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while supervisor.pid("a") in (None, idle) and time.monotonic() < deadline:
            time.sleep(0.2)
        while not supervisor.queue.empty():
            supervisor.queue.get()
        wait_all_online(supervisor, {"a", "b"}, timeout=90)
        assert supervisor.pid("a") == supervisor.pid("b") not in (None, idle)
        assert supervisor.health["a"].restarts == 1
        assert supervisor.health["c"].restarts == 0
    finally:
        supervisor.stop()
    assert supervisor.pids() == []


def test_a_camera_costs_its_workers_wall_time_not_only_its_cpu(tmp_path: Path) -> None:
    """A worker is one thread: what fills it, and makes it shed, is the wall time its cameras
    take (CPU plus waiting for a core or the GIL). Balanced by CPU alone, a worker shed at
    0.85 of its thread while the supervisor saw the two workers as even."""
    specs = [WorkerSpec(name, "rtsp://unused", AnalyticsConfig(fps=5), tmp_path)
             for name in "ab"]
    supervisor = AnalyticsSupervisor(specs, workers=2)  # not started: only its bookkeeping
    supervisor.note(Stats("a", True, "", 5.0, 0.1, 0, 640, 360, cpu_per_frame=0.02,
                          cpu_other=0.01, wall_per_frame=0.05))
    assert supervisor.cost["a"] == pytest.approx(0.05 * 5 + 0.01)
    # A worker that does not report its wall time is measured by CPU, as before.
    supervisor.note(Stats("b", True, "", 5.0, 0.1, 0, 640, 360, cpu_per_frame=0.02))
    assert supervisor.cost["b"] == pytest.approx(0.02 * 5)


@pytest.mark.slow
def test_a_shedding_worker_has_a_camera_moved_at_once(shared_data: Path, tmp_path: Path) -> None:
    """Worker 0 gets two cameras it cannot analyse at their rates (the whole 720p frame
    searched, every frame, 15 a second: several times a core) and sheds; worker 1 idles with
    a camera at 1 fps. Balancing every hour only, a camera moves all the same: shedding while
    another worker has room is a reason to move now, not at the next round (which once left a
    worker shedding for 20 s a move)."""
    heavy = AnalyticsConfig(fps=15, width=1280, motion=MotionConfig(enabled=False),
                            faces=FacesConfig(min_size=10))
    configs = {"a": heavy, "b": AnalyticsConfig(fps=1), "c": heavy}
    clip = prepare_clip(shared_data / WALKING, tmp_path / "clips", width=1280, height=720)
    with SimServer() as sim:
        specs = [WorkerSpec(name, sim.add_camera(name, clip), configs[name],
                            tmp_path / "snapshots") for name in "abc"]
        shedding_worker_moves_a_camera(specs)


def shedding_worker_moves_a_camera(specs: list[WorkerSpec]) -> None:
    supervisor = AnalyticsSupervisor(specs, workers=2, rebalance=3600)
    supervisor.start()
    try:
        assert supervisor.shares() == [["a", "c"], ["b"]]
        shed = next_shed(supervisor, timeout=120)
        assert shed.camera in {"a", "c"}
        deadline = time.monotonic() + 60 + SETTLE
        while supervisor.moves == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert supervisor.moves == 1, "a shedding worker waited for the next round"
        shares = supervisor.shares()
        assert len(shares[0]) == 1
        assert shares[0][0] in {"a", "c"}
        assert sorted(shares[1]) == sorted(["b", *({"a", "c"} - set(shares[0]))])
    finally:
        supervisor.stop()
    assert supervisor.pids() == []


def next_shed(supervisor: AnalyticsSupervisor, timeout: float) -> Stats:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            message = supervisor.queue.get(timeout=1.0)
        except queue.Empty:
            continue
        if isinstance(message, Stats) and message.online and message.shed:
            return message
    pytest.fail("no worker shed")
