"""Face analytics with the default configuration: live on N cameras, and offline against the
naive per-frame pattern; optionally side by side with an older tree of custodes.

    python bench/analytics.py --cameras 8 --seconds 120                  # ~6 min on 2 cores
    python bench/analytics.py --baseline /tmp/old/src                    # the same, then old
    python bench/analytics.py --quick                                    # smoke test, < 1 min

Cameras: real clips from ../shared/data/video, made into 640x360 15 fps camera streams
(`prepare_clip`) and served over RTSP on loopback by a simulator in a helper process, whose CPU
is reported apart: it is the cameras, not the recorder. The load average and the busiest other
processes at the start are printed first: on a shared machine they take cores from the node.
Then, one after the other:

1. Live. `custodes run` with the configuration a user gets by default: each camera gives only
   what the config requires (site, location, purpose, URL); profile, analytics rate, face
   detection, descriptors, motion and snapshots are left as shipped (the effective analytics
   settings are printed). The bench adds a viewer with `custodes user add` before the node
   starts, signs in as it and reads /api/status with that session. Any answer but 2xx stops
   the bench with the status and body; only "connection refused" before the node is up counts
   as "not up yet". Over --seconds, /api/status is sampled every 2 s (each worker reports its
   analysed fps, p95 lag and dropped frames every 2 s) and psutil samples the node's process
   tree: CPU-seconds per camera-minute for recording (the ffmpeg children) and analysis (the
   rest: the spawned analysis workers and the node's own Python process), and peak RSS.
2. Offline, on one pinned core, on the same frames of each distinct clip (one pass, decoded at
   the default analysis rate with `file_frames`, decoding outside the timings):
   - naive: what face_recognition-style projects start from: on every frame, dlib's HOG
     detector on the full RGB frame upsampled once, then the 5-point landmarks and dlib's
     `compute_face_descriptor` for every face found; no motion gating, no tracking. To count
     the people it saw, its detections are fed through custodes' Tracker afterwards, outside
     its timings (the naive loop itself does not track).
   - custodes: `CameraAnalysis.process` per frame and `flush` at the end, as in a worker, with
     the default analytics settings plus descriptors on (the naive loop computes one per face,
     so custodes must pay for its one per track), including the redacted JPEG snapshots it
     writes per track and per motion span. People found = FaceTrack messages.
   Frames/s, faces found (detections), people found (tracks), per clip and in total, and the
   time per frame split into stages.

--baseline TREE runs this same script again afterwards against another checkout's `custodes`
package in this venv (PYTHONPATH=TREE/src when TREE has a src/ folder, else TREE), then prints
both runs side by side. The bench refuses (exit 2) when the package that run imports is not the
one asked for: the venv's editable install of this tree would otherwise answer silently.
--json writes the figures of one run; --baseline-json compares with such a file instead of
running again.
The analysis as issue 9 found it ("today" in its goals) is 40050df, the parent of its first
commit (dlib's HOG, one process per camera): `git worktree add /tmp/anbase 40050df` and
`--baseline /tmp/anbase`. That tree keeps the frame code in custodes.analytics, not
custodes.vision: the imports below fall back to it (the same classes, moved by 81ec682).

Last measured (2026-12-02, 8 cameras, 120 s live), three trees in two runs: this work
(balanced pool, detector at 3/4 size) with `--baseline` 40050df (today: HOG, one process per
camera), then with `--baseline` 271f219 (the pool before balancing). The 2-core box was NOT
quiet: load average 6 to 16, "other processes meanwhile" 0.5-1.5 cores, taking cores from the
niced workers, so no fps figure below says whether 2 quiet cores keep up (the first row is
each run's other load: compare fps within a pair only with it in mind). CPU per analysed
frame and the offline counts depend little or not at all on the load.

                                          this work  40050df today    this work     271f219
    other processes meanwhile (cores)          0.49           0.71         0.95        1.45
    live fps: slowest / mean median       3.35/4.13      2.33/3.44    2.44/2.86   0.99/1.24
    live lag p95 (s): worst med / p95     0.24/0.45      1.45/3.28    0.39/0.86   0.75/2.34
    worker CPU-ms per analysed frame           32.6           44.5         33.5        46.0
    cores for 8 cameras at 5 fps               1.30           1.78         1.34        1.84
    cameras moved between processes    (not logged)              -            1           0
    face tracks stored live                     929            185          974         627
    offline faces / tracks, 6 clips          192/25           50/6       192/25      178/24
    offline ms/frame: total, detect      17.7, 14.4              -   20.0, 16.2  31.5, 27.8

The supervisor measured (CPU-s per second at 5 fps) hamilton 0.22 x2, facenet 0.25, intel
walking 0.19, MOT20 0.12, store aisle 0.09, vtest 0.07 x2: 0.75 vs 0.47 cores with camera i
on worker i mod 2; it moved MOT20 (0.63 vs 0.59), which had no face tracked, in under 1 s.
"""

from __future__ import annotations

import argparse
import contextlib
import http.cookies
import itertools
import json
import multiprocessing
import multiprocessing.connection
import multiprocessing.synchronize
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dlib  # type: ignore[import-untyped]  # dlib ships no type information
import numpy as np
import psutil
import yaml

from custodes.analytics.motion import MotionDetector
from custodes.analytics.worker import CameraAnalysis, FaceTrack, Message, WorkerSpec
from custodes.api.deps import CSRF_COOKIE, CSRF_HEADER
from custodes.config import AnalyticsConfig, FacesConfig, load_config
from custodes.sim import SimServer, prepare_clip

try:
    from custodes.vision.decode import Frame, file_frames
    from custodes.vision.embedding import FaceEmbedder
    from custodes.vision.faces import Box, Face
    from custodes.vision.tracker import Tracker
    from custodes.vision.weights import face_model_files
except ModuleNotFoundError:  # a tree from before vision/ (e.g. 40050df, HOG): same code there
    from custodes.analytics.decode import Frame, file_frames  # type: ignore[no-redef,import-not-found]
    from custodes.analytics.embedding import FaceEmbedder  # type: ignore[no-redef,import-not-found]
    from custodes.analytics.faces import Box, Face  # type: ignore[no-redef,import-not-found]
    from custodes.analytics.tracker import Tracker  # type: ignore[no-redef,import-not-found]
    from custodes.analytics.weights import face_model_files  # type: ignore[no-redef,import-not-found]

VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "video"
CLIPS = (  # real footage with people in it, cycled over the cameras
    "face_recognition_short_hamilton_clip.mp4",
    "opencv_vtest_reencoded_480x360.avi",
    "dlib_MOT20-05-raw_even_shorter.mp4",
    "facenet-pytorch_video.mp4",
    "intel_face-demographics-walking_from-gif.mp4",
    "intel_store-aisle-detection_from-gif.mp4",
)
WIDTH, HEIGHT, STREAM_FPS = 640, 360, 15
ANALYSIS_FPS = AnalyticsConfig().fps  # the default rate, which the live node gets too
SAMPLE_EVERY = 2.0  # seconds; the workers report every 2 s too
KEEPS_UP = 0.95  # a camera analysed at >= this share of its rate (median) keeps up
BOUNDED_LAG = 1.0  # seconds: a median p95 lag above this means frames queue up somewhere
READY_TIMEOUT = 120.0  # seconds for the node to bring every camera's analysis online
DISTURBED = 0.9  # CPU/wall below this on the pinned core: something else shared it
MOVE_LOGGED = "moves from process"  # what the supervisor logs when it moves a camera
# What the supervisor logs when it starts the pool ("analysis of 8 cameras by 3 processes").
POOL_LOGGED = re.compile(r"analysis of \d+ cameras by (\d+) process")
ENV_ONE_THREAD = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


# -- the cameras -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Camera:
    name: str
    clip: Path  # the prepared, camera-like MP4


def prepare_cameras(count: int, cache: Path) -> list[Camera]:
    prepared = {
        name: prepare_clip(VIDEOS / name, cache, width=WIDTH, height=HEIGHT, fps=STREAM_FPS)
        for name in CLIPS[:count]
    }
    return [Camera(f"cam{i + 1:02d}", prepared[name])
            for i, name in zip(range(count), itertools.cycle(prepared))]


def serve_cameras(cameras: list[Camera], conn: multiprocessing.connection.Connection,
                  stop: multiprocessing.synchronize.Event) -> None:
    """Helper process: serve the clips until `stop`; send {name: url} once all listen."""
    with SimServer("127.0.0.1") as server:
        for camera in cameras:
            server.add_camera(camera.name, camera.clip)
        conn.send(server.urls)
        stop.wait()


@contextlib.contextmanager
def simulator(cameras: list[Camera]) -> Iterator[tuple[dict[str, str], psutil.Process]]:
    """The simulator in a process of its own, so that its CPU is not counted as custodes'."""
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    ours, theirs = ctx.Pipe()
    proc = ctx.Process(target=serve_cameras, args=(cameras, theirs, stop), name="bench-sim")
    proc.start()
    try:
        if not ours.poll(60):
            raise SystemExit("the simulator did not start within 60 s")
        urls: dict[str, str] = ours.recv()
        assert proc.pid is not None
        yield urls, psutil.Process(proc.pid)
    finally:
        stop.set()
        proc.join(30)
        if proc.is_alive():
            proc.kill()


# -- live: the node ----------------------------------------------------------------------------


def category(proc: psutil.Process, root: psutil.Process) -> str:
    if proc.pid == root.pid:
        return "node"
    with contextlib.suppress(psutil.Error):
        if "ffmpeg" in proc.name():
            return "recording"
    return "analysis"


@dataclass
class TreeUsage:
    """CPU per category of a process tree. Processes that end (a restarted ffmpeg or worker)
    keep the CPU last seen of them, so a restart does not make CPU vanish from the totals."""

    root: psutil.Process
    seen: dict[tuple[int, float], tuple[str, float]] = field(default_factory=dict)
    peak_rss: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    peak_rss_total: int = 0

    def sample(self) -> None:
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        rss: dict[str, int] = defaultdict(int)
        for proc in procs:
            try:
                kind = category(proc, self.root)
                times = proc.cpu_times()
                self.seen[(proc.pid, proc.create_time())] = (kind, times.user + times.system)
                rss[kind] += proc.memory_info().rss
            except psutil.Error:
                continue
        for kind, value in rss.items():
            self.peak_rss[kind] = max(self.peak_rss[kind], value)
        self.peak_rss_total = max(self.peak_rss_total, sum(rss.values()))

    def cpu(self) -> dict[str, float]:
        totals: dict[str, float] = defaultdict(float)
        for kind, seconds in self.seen.values():
            totals[kind] += seconds
        return totals


@dataclass
class CameraLive:
    fps: list[float] = field(default_factory=list)
    lag_p95: list[float] = field(default_factory=list)
    offline_samples: int = 0
    dropped: list[int] = field(default_factory=list)
    segments: list[int] = field(default_factory=list)
    # The rate the node aims at when it sheds load (below the configured one); absent from
    # nodes that do not shed, whose target is always the configured rate.
    target: list[float] = field(default_factory=list)
    shed_samples: int = 0

    def dropped_in_window(self) -> int:
        if not self.dropped:
            return 0
        delta = self.dropped[-1] - self.dropped[0]
        return delta if delta >= 0 else self.dropped[-1]  # the stream reconnected: count anew

    def median_fps(self) -> float:
        return statistics.median(self.fps) if self.fps else 0.0

    def median_lag(self) -> float:
        return statistics.median(self.lag_p95) if self.lag_p95 else float("inf")

    def p95_lag(self) -> float:
        if len(self.lag_p95) < 2:
            return self.lag_p95[0] if self.lag_p95 else float("inf")
        return statistics.quantiles(self.lag_p95, n=20)[-1]


@dataclass
class LiveResult:
    cameras: dict[str, CameraLive]
    cpu: dict[str, float]  # CPU-seconds per category over the window
    seconds: float  # length of the measured window
    peak_rss: dict[str, int]
    peak_rss_total: int
    face_tracks: dict[str, int]  # stored by the node over its whole run
    sim_cpu: float  # the simulator's CPU-seconds over the window
    machine_cpu: float  # every process's CPU-seconds over the window, for the disturbance check
    configured_fps: float  # the analysis rate the cameras were given (the default)
    missed_samples: int  # status requests that timed out
    # Cameras the supervisor moved to a less busy analysis process (from the node's log;
    # always 0 for a tree that does not rebalance).
    moves: int = 0
    processes: int = 0  # analysis processes the node started (0: not logged by that tree)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


Figures = dict[str, float | int | str]  # label: value, in the order printed


class NodeError(SystemExit):
    """The node answered, but not with 2xx, or not at all when it had to: the bench stops."""


class NotUp(Exception):
    """Connection refused: nothing listens on the port (yet)."""


class Slow(Exception):
    """The node accepted the request but did not answer within the timeout."""


class NodeApi:
    """The node's HTTP API as a signed-in viewer would use it (session cookie)."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.cookies: dict[str, str] = {}

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             timeout: float = 10.0) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.cookies:
            request.add_header("Cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items()))
        if CSRF_COOKIE in self.cookies:  # what the browser's pages send with every change
            request.add_header(CSRF_HEADER, self.cookies[CSRF_COOKIE])
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:
                for header in reply.headers.get_all("Set-Cookie") or []:
                    for name, morsel in http.cookies.SimpleCookie(header).items():
                        self.cookies[name] = morsel.value
                return json.load(reply)
        except urllib.error.HTTPError as exc:
            # A 401 or 403 here once made this bench wait for a node that was long up.
            text = exc.read().decode(errors="replace")[:500]
            exc.close()
            raise NodeError(f"{method} {path}: HTTP {exc.code} {exc.reason}: {text}") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, ConnectionRefusedError):
                raise NotUp from None
            if isinstance(exc.reason, TimeoutError):
                raise Slow from None
            raise NodeError(f"{method} {path}: {exc.reason}") from None
        except TimeoutError:  # raised while reading the body rather than connecting
            raise Slow from None
        except (OSError, ValueError) as exc:
            raise NodeError(f"{method} {path}: {exc!r}") from None

    def sign_in(self, name: str, password: str) -> None:
        """Sign in; a password someone else made (`custodes user add` prints it) is replaced
        first, as the node asks of every such account before anything else."""
        answer = self.call("POST", "/api/auth/login", {"name": name, "password": password})
        if answer.get("must_change_password"):
            self.call("POST", "/api/auth/password", {
                "old_password": password, "new_password": secrets.token_urlsafe(18)})

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = self.call("GET", "/api/status")
        return status


BENCH_USER = "bench"


def write_config(urls: dict[str, str], work: Path, port: int) -> Path:
    """What a user writes: the fields without defaults, and nothing else (the port and folder
    only so that the bench does not collide with a node already on this machine)."""
    config = {
        "sites": {"bench": {"name": "Benchmark"}},
        "cameras": {
            name: {"site": "bench", "location": "corridor", "purpose": "benchmark",
                   "main_url": url}
            for name, url in urls.items()
        },
        "storage": {"path": str(work)},
        "server": {"port": port},
    }
    path = work / "bench.yaml"
    work.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


def add_viewer(config: Path) -> str:
    """A viewer made the documented way, `custodes user add`; its password, printed once."""
    done = subprocess.run([sys.executable, "-m", "custodes", "user", "add", "--config",
                           str(config), BENCH_USER, "--role", "viewer"],
                          capture_output=True, text=True, timeout=120, check=False)
    prefix = f"password for {BENCH_USER}: "
    for line in done.stdout.splitlines():
        if line.startswith(prefix):
            return line.removeprefix(prefix).strip()
    raise SystemExit(f"custodes user add failed (exit {done.returncode}):\n"
                     f"{done.stdout}{done.stderr}")


def sign_in_when_up(api: NodeApi, password: str, node: subprocess.Popen[bytes]) -> None:
    started = time.monotonic()
    while time.monotonic() - started < READY_TIMEOUT:
        if node.poll() is not None:
            raise SystemExit(f"the node exited with code {node.returncode}; see node.log")
        try:
            api.sign_in(BENCH_USER, password)
            return
        except (NotUp, Slow):
            time.sleep(1.0)
    raise SystemExit(f"the node's web server did not answer within {READY_TIMEOUT:.0f} s")


def wait_until_analysing(api: NodeApi, cameras: int, node: subprocess.Popen[bytes]) -> float:
    """Seconds until every camera's worker reports itself online (models loaded, stream open)."""
    started = time.monotonic()
    while time.monotonic() - started < READY_TIMEOUT:
        if node.poll() is not None:
            raise SystemExit(f"the node exited with code {node.returncode}; see node.log")
        try:
            status = api.status()
        except Slow:  # a node busy loading models answers late: ask again
            continue
        except NotUp:  # it answered the sign-in, so it has gone
            raise SystemExit("the node stopped listening; see node.log") from None
        online = [c for c in status["cameras"] if (c["analytics"] or {}).get("online")]
        if len(online) == cameras:
            return time.monotonic() - started
        time.sleep(1.0)
    raise SystemExit(f"not every camera's analysis came online within {READY_TIMEOUT:.0f} s")


def record_status(status: dict[str, Any], cameras: dict[str, CameraLive]) -> None:
    for cam in status["cameras"]:
        live = cameras[cam["name"]]
        live.segments.append(cam["segments"])
        analytics = cam["analytics"]
        if not analytics or not analytics["online"]:
            live.offline_samples += 1
            continue
        live.fps.append(analytics["fps"])
        live.lag_p95.append(analytics["lag_p95"])
        live.dropped.append(analytics["dropped"])
        if "analysis_fps" in analytics:
            live.target.append(analytics["analysis_fps"])
            live.shed_samples += bool(analytics.get("shed"))


def stored_face_tracks(database: Path) -> dict[str, int]:
    db = sqlite3.connect(database)
    try:
        rows = db.execute("SELECT camera, COUNT(*) FROM faces GROUP BY camera").fetchall()
    finally:
        db.close()
    return {camera: count for camera, count in rows}


def process_cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def machine_cpu() -> float:
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def run_live(urls: dict[str, str], sim: psutil.Process, work: Path,
             args: argparse.Namespace) -> LiveResult:
    port = free_port()
    config = write_config(urls, work, port)
    settings = load_config(config).cameras[next(iter(urls))].analytics
    print(f"analytics settings of every camera (defaults): "
          f"{json.dumps(settings.model_dump(mode='json'))}", flush=True)
    password = add_viewer(config)
    with (work / "node.log").open("w") as log:
        node = subprocess.Popen([sys.executable, "-m", "custodes", "run", "--config", str(config)],
                                stdout=subprocess.DEVNULL, stderr=log)
    api = NodeApi(port)
    missed = 0
    try:
        sign_in_when_up(api, password, node)
        ready = wait_until_analysing(api, len(urls), node)
        print(f"node: every camera analysed after {ready:.0f} s; warming up {args.warmup:.0f} s",
              flush=True)
        time.sleep(args.warmup)
        usage = TreeUsage(psutil.Process(node.pid))
        cameras = {name: CameraLive() for name in urls}
        usage.sample()
        before, t0 = usage.cpu(), time.monotonic()
        sim_before, machine_before = process_cpu(sim), machine_cpu()
        end = t0 + args.seconds
        while (now := time.monotonic()) < end:
            try:
                record_status(api.status(), cameras)
            except Slow:
                missed += 1  # reported: a node too busy to answer is a finding, not noise
            except NotUp:
                raise SystemExit("the node stopped listening during the measurement; "
                                 "see node.log") from None
            usage.sample()
            time.sleep(max(0.0, min(SAMPLE_EVERY - (time.monotonic() - now),
                                    end - time.monotonic())))
        usage.sample()
        seconds = time.monotonic() - t0
        after = usage.cpu()
        sim_cpu, machine = process_cpu(sim) - sim_before, machine_cpu() - machine_before
    finally:
        node.send_signal(signal.SIGINT)
        try:
            node.wait(60)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait()
    cpu = {kind: after.get(kind, 0.0) - before.get(kind, 0.0) for kind in after}
    return LiveResult(cameras, cpu, seconds, dict(usage.peak_rss), usage.peak_rss_total,
                      stored_face_tracks(work / "custodes.db"), sim_cpu, machine,
                      settings.fps, missed, moves_logged(work / "node.log"),
                      pool_logged(work / "node.log"))


def pool_logged(log: Path) -> int:
    with contextlib.suppress(OSError):
        found = POOL_LOGGED.search(log.read_text(errors="replace"))
        return int(found.group(1)) if found else 0
    return 0


def moves_logged(log: Path) -> int:
    with contextlib.suppress(OSError):
        return sum(MOVE_LOGGED in line for line in log.read_text(errors="replace").splitlines())
    return 0


# -- offline: the same frames, naive vs custodes -----------------------------------------------


class Stopwatch:
    """Wall seconds per named stage. A stage entered inside another counts in the outer one
    only (the snapshot's redaction runs the detector: that is snapshot cost, not detection)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._depth = 0

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self._depth += 1
        started = time.perf_counter()
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                self.seconds[name] += time.perf_counter() - started
                self.calls[name] += 1

    def wrap(self, obj: object, attr: str, name: str) -> None:
        """Time every call of obj.attr as stage `name` (an instance attribute shadows it)."""
        original: Callable[..., Any] = getattr(obj, attr)

        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.stage(name):
                return original(*args, **kwargs)

        setattr(obj, attr, timed)


@dataclass
class Run:
    frames: int = 0
    wall: float = 0.0  # seconds inside the timed per-frame work
    cpu: float = 0.0  # this thread's CPU-seconds over the same work
    faces: int = 0  # detections
    people: int = 0  # tracks
    # Naive only: the same counts for faces custodes would keep (smaller side >= min_size).
    faces_sized: int = 0
    people_sized: int = 0
    stages: dict[str, float] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)

    @property
    def fps(self) -> float:
        return self.frames / self.wall if self.wall else 0.0

    def add(self, other: Run) -> None:
        self.frames += other.frames
        self.wall += other.wall
        self.cpu += other.cpu
        self.faces += other.faces
        self.people += other.people
        self.faces_sized += other.faces_sized
        self.people_sized += other.people_sized
        for name, seconds in other.stages.items():
            self.stages[name] = self.stages.get(name, 0.0) + seconds
        for name, count in other.calls.items():
            self.calls[name] = self.calls.get(name, 0) + count


@dataclass
class ClipResult:
    clip: str
    naive: Run
    ours: Run


class Timed:
    """Accumulates wall and thread-CPU time over the `with` blocks it is used in."""

    def __init__(self, run: Run) -> None:
        self.run = run

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            self.run.wall += time.perf_counter() - wall
            self.run.cpu += time.thread_time() - cpu


class Naive:
    """face_recognition's `face_locations` + `face_encodings` (model="small"), per frame."""

    def __init__(self) -> None:
        files = face_model_files()
        self.detector: Any = dlib.get_frontal_face_detector()
        self.predictor: Any = dlib.shape_predictor(str(files.shape_predictor_5))
        self.encoder: Any = dlib.face_recognition_model_v1(str(files.resnet))

    def faces(self, frame: Frame, watch: Stopwatch) -> list[Face]:
        with watch.stage("rgb"):
            rgb = frame.rgb()
        with watch.stage("detect"):
            # == detector(rgb, 1), which face_recognition calls; run() also gives the scores.
            rects, scores, _ = self.detector.run(rgb, 1, 0.0)
        found = []
        for rect, score in zip(rects, scores, strict=True):
            with watch.stage("landmarks"):
                shape = self.predictor(rgb, rect)
            with watch.stage("embed"):
                self.encoder.compute_face_descriptor(rgb, shape)
            box = Box.from_corners(rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1)
            points = np.array([(shape.part(i).x, shape.part(i).y) for i in range(5)], np.int32)
            found.append(Face(box, float(score), points))
        return found


class PeopleCounter:
    """Counts tracks among detections, with the Tracker a custodes worker uses (max_age 1 s),
    optionally only of faces at least `min_size` pixels on their smaller side."""

    def __init__(self, min_size: int = 0) -> None:
        self.tracker = Tracker(max_age=1.0)
        self.min_size = min_size
        self.faces = self.people = 0

    def update(self, frame: Frame, faces: list[Face]) -> None:
        kept = [f for f in faces if min(f.box.w, f.box.h) >= self.min_size]
        self.faces += len(kept)
        self.people += len(self.tracker.update(frame.t, kept, frame.grey, frame.rgb))

    def flush(self) -> None:
        self.people += len(self.tracker.flush())


def run_naive(clip: Path, naive: Naive, max_frames: int) -> Run:
    run, watch = Run(), Stopwatch()
    timed = Timed(run)
    everyone, sized = PeopleCounter(), PeopleCounter(FacesConfig().min_size)
    for frame in itertools.islice(file_frames(clip, ANALYSIS_FPS, WIDTH, t0=time.time()),
                                  max_frames or None):
        with timed():
            faces = naive.faces(frame, watch)
        run.frames += 1
        everyone.update(frame, faces)  # outside the timings: the naive loop does not track
        sized.update(frame, faces)
    everyone.flush()
    sized.flush()
    run.faces, run.people = everyone.faces, everyone.people
    run.faces_sized, run.people_sized = sized.faces, sized.people
    run.stages, run.calls = dict(watch.seconds), dict(watch.calls)
    return run


class Collect:
    """The worker's outbox, kept in a list."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    def put(self, message: Message) -> None:
        self.messages.append(message)


def instrument(analysis: CameraAnalysis, first: Frame, watch: Stopwatch) -> None:
    # The motion detector is made on the first frame; made here, its method can be timed.
    height, width = first.grey.shape
    analysis.motion = MotionDetector(analysis.config.motion, width, height)
    watch.wrap(analysis.motion, "update", "motion")
    watch.wrap(analysis.detector, "detect", "detect")
    watch.wrap(analysis.tracker, "update", "track")  # includes RGB conversion when needed
    watch.wrap(analysis.embedder, "embed", "embed")
    watch.wrap(analysis, "_snapshot", "snapshot")  # its full-frame redaction detector included


def run_custodes(clip: Path, camera: str, embedder: FaceEmbedder, snapshots: Path,
                 max_frames: int) -> Run:
    # The defaults, with descriptors on: the naive loop computes one per face it finds.
    config = AnalyticsConfig(faces=FacesConfig(embeddings=True))
    outbox = Collect()
    analysis = CameraAnalysis(WorkerSpec(camera, "file://unused", config, snapshots), outbox,
                              embedder)
    run, watch = Run(), Stopwatch()
    timed = Timed(run)
    frames = itertools.islice(file_frames(clip, ANALYSIS_FPS, WIDTH, t0=time.time()),
                              max_frames or None)
    for frame in frames:
        if run.frames == 0:
            instrument(analysis, frame, watch)
        with timed():
            analysis.process(frame)
        run.frames += 1
    with timed():
        analysis.flush()
    tracks = [m for m in outbox.messages if isinstance(m, FaceTrack)]
    run.people = len(tracks)
    run.faces = sum(t.detections for t in tracks)
    run.stages, run.calls = dict(watch.seconds), dict(watch.calls)
    return run


def compare_offline(clips: list[Path], snapshots: Path, max_frames: int) -> list[ClipResult]:
    """In a process of its own, pinned to one core: naive then custodes, clip by clip."""
    os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    naive = Naive()
    embedder = FaceEmbedder("onnx", threads=1)  # what a worker makes
    # First calls allocate and plan: keep that out of the timings of either side.
    chips = np.zeros((1, 150, 150, 3), np.uint8)
    embedder.embed_chips(chips)
    naive.encoder.compute_face_descriptor(chips[0])
    results = []
    for index, clip in enumerate(clips):
        ours = run_custodes(clip, f"clip{index + 1}", embedder, snapshots, max_frames)
        results.append(ClipResult(clip_label(clip), run_naive(clip, naive, max_frames), ours))
    return results


def run_offline(cameras: list[Camera], work: Path, max_frames: int) -> list[ClipResult]:
    clips = list(dict.fromkeys(camera.clip for camera in cameras))
    # One thread of native maths, as the node gives each worker (spawn children inherit it).
    for name in ENV_ONE_THREAD:
        os.environ[name] = "1"
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(compare_offline, clips, work / "snapshots", max_frames).result()


# -- the report ----------------------------------------------------------------------------------


def clip_label(clip: Path) -> str:
    stem = clip.stem.removeprefix("clip-r1-")
    return stem.split(f"-{WIDTH}x{HEIGHT}")[0][:30]


def mib(n: float) -> str:
    return f"{n / 2**20:.0f}"


def print_live(live: LiveResult, cameras: list[Camera], args: argparse.Namespace) -> Figures:
    n = len(cameras)
    rate = live.configured_fps
    print(f"\n== Live: {n} cameras {WIDTH}x{HEIGHT} {STREAM_FPS} fps, recorded and analysed with "
          f"the default settings ({rate:g} fps configured), {live.seconds:.0f} s measured ==")
    expected = int(live.seconds * rate)
    print(f"{'camera':8} {'clip':30} {'fps med':>8} {'fps min':>8} {'target':>7} "
          f"{'lag p95 med':>12} {'lag p95 p95':>12} {'dropped':>8} {'offline':>8} {'shed':>5} "
          f"{'segments':>9} {'tracks':>7}")
    for camera in cameras:
        c = live.cameras[camera.name]
        segments = c.segments[-1] - c.segments[0] if c.segments else 0
        target = f"{statistics.median(c.target):7.2f}" if c.target else f"{'-':>7}"
        print(f"{camera.name:8} {clip_label(camera.clip):30} {c.median_fps():8.2f} "
              f"{min(c.fps, default=0.0):8.2f} {target} {c.median_lag():11.2f}s "
              f"{c.p95_lag():11.2f}s {c.dropped_in_window():8d} {c.offline_samples:8d} "
              f"{c.shed_samples:5d} {segments:9d} {live.face_tracks.get(camera.name, 0):7d}")
    medians = [c.median_fps() for c in live.cameras.values()]
    # On a machine shared with other work the node gets fewer cores than it would alone, so
    # fps alone does not tell what analysis costs; CPU per frame analysed does, and from it
    # the cores that N cameras at the configured rate would need (decoding included, which
    # is paid per stream frame, so this is an upper bound at rates above the one reached).
    analysed = sum(statistics.fmean(c.fps) for c in live.cameras.values() if c.fps)
    analysed *= live.seconds
    slowest = min(medians)
    worst_med = max(c.median_lag() for c in live.cameras.values())
    worst_p95 = max(c.p95_lag() for c in live.cameras.values())
    dropped = sum(c.dropped_in_window() for c in live.cameras.values())
    per_cam_min = 60 / live.seconds / n
    rec = live.cpu.get("recording", 0.0)
    workers, node = live.cpu.get("analysis", 0.0), live.cpu.get("node", 0.0)
    cores = psutil.cpu_count() or 1
    # What else ran on the machine meanwhile (other engineers' tests): it takes cores from ours.
    others = max(0.0, live.machine_cpu - sum(live.cpu.values()) - live.sim_cpu) / live.seconds
    figures: Figures = {
        "configured fps": rate,
        "fps per camera: slowest median": slowest,
        "fps per camera: mean of medians": statistics.fmean(medians),
        "samples with analysis shed (all cameras)": sum(
            c.shed_samples for c in live.cameras.values()),
        "lag p95: worst camera's median (s)": worst_med,
        "lag p95: worst p95 of reports (s)": worst_p95,
        "frames dropped, all cameras": dropped,
        "frames due, all cameras": expected * n,
        "CPU-s/camera-min recording": rec * per_cam_min,
        "CPU-s/camera-min analysis (workers+node)": (workers + node) * per_cam_min,
        "  of which workers": workers * per_cam_min,
        "  of which node process": node * per_cam_min,
        f"node tree CPU, share of {cores} cores": (rec + workers + node) / live.seconds / cores,
        "worker CPU-ms per analysed frame": 1000 * workers / analysed if analysed else 0.0,
        f"cores for {n} cameras at {rate:g} fps (from it)":
            workers / analysed * n * rate if analysed else 0.0,
        "peak RSS total (MiB)": live.peak_rss_total / 2**20,
        "face tracks stored (all cameras)": sum(live.face_tracks.values()),
        "status samples timed out": live.missed_samples,
        "cameras moved to a less busy process": live.moves,
        "analysis processes (0: not logged)": live.processes,
        "other processes meanwhile (cores)": others,
        "simulator CPU-s/camera-min (not incl.)": live.sim_cpu * per_cam_min,
    }
    for label, value in figures.items():
        print(f"{label:54} {value:>20.2f}" if isinstance(value, float) else
              f"{label:54} {value:>20}")
    print("peak RSS node / recording / analysis (MiB)".ljust(54) + " / ".join(
        mib(live.peak_rss.get(k, 0)) for k in ("node", "recording", "analysis")).rjust(21))
    if others > 0.15:
        print("  <- other processes took CPU during the measurement: rerun on a quiet machine")
    realtime = slowest >= KEEPS_UP * rate and worst_med <= BOUNDED_LAG
    print(f"real time for all {n} cameras (each >= {KEEPS_UP * rate:.2f} fps, median p95 lag "
          f"<= {BOUNDED_LAG:g} s): {'YES' if realtime else 'NO'}")
    if args.warmup < 10:
        print("(short warm-up: the first reports may include model loading)")
    return figures


def print_offline(results: list[ClipResult], max_frames: int, cameras: int) -> Figures:
    limit = f", first {max_frames} frames each" if max_frames else ""
    print(f"\n== Offline, one pinned core, same frames ({ANALYSIS_FPS:g} fps, one pass per "
          f"distinct clip{limit}) ==")
    min_size = FacesConfig().min_size
    print(f"faces = detections, people = tracks; 'naive>={min_size}': the naive loop's faces of "
          f"at least custodes' min_size ({min_size} px)")
    print(f"{'clip':30} {'frames':>6} {'naive fps':>9} {'ours fps':>9} {'speedup':>8} "
          f"{'faces naive/ours':>17} {'people naive/ours':>18} {f'naive>={min_size}':>13}")
    total_naive, total_ours = Run(), Run()
    for r in results:
        total_naive.add(r.naive)
        total_ours.add(r.ours)
        print_offline_row(r.clip, r.naive, r.ours)
    print_offline_row("total", total_naive, total_ours)
    print_mix_checks(results, total_naive, cameras)
    for name, run in (("naive", total_naive), ("custodes", total_ours)):
        ratio = run.cpu / run.wall if run.wall else 1.0
        note = "" if ratio >= DISTURBED else "  <- another load shared the core: rerun"
        print(f"CPU/wall on the pinned core, {name}: {ratio:.2f}{note}")
    print_stages(total_naive, total_ours)
    # The naive loop is the same code in any tree: equal naive counts in two runs show that
    # both saw the same frames, so their custodes counts can be compared.
    figures: Figures = {
        "offline frames": total_ours.frames,
        "offline fps custodes (one core)": total_ours.fps,
        "offline fps naive HOG (one core)": total_naive.fps,
        "offline faces custodes, total": total_ours.faces,
        "offline tracks custodes, total": total_ours.people,
        "offline faces naive HOG, total": total_naive.faces,
        "offline tracks naive HOG, total": total_naive.people,
    }
    for r in results:
        figures[f"  faces/tracks {r.clip}"] = f"{r.ours.faces}/{r.ours.people}"
    return figures


def print_mix_checks(results: list[ClipResult], naive: Run, cameras: int) -> None:
    """The total is weighted by frames, so a long clip with nobody's face in it (cheap for
    motion gating) can carry it: show the speedup with each clip weighing the same, and on the
    clips where faces were found."""
    speedups = [r.ours.fps / r.naive.fps for r in results if r.naive.fps and r.ours.fps]
    if speedups:
        print(f"speedup, each clip weighing the same (geometric mean): "
              f"{statistics.geometric_mean(speedups):.1f}x")
    faces_naive, faces_ours = Run(), Run()
    for r in results:
        if r.naive.faces:
            faces_naive.add(r.naive)
            faces_ours.add(r.ours)
    if faces_naive.frames and faces_ours.fps:
        print(f"speedup on the clips where faces were found ({faces_naive.frames} frames): "
              f"{faces_ours.fps / faces_naive.fps:.1f}x")
    if naive.fps:
        print(f"naive pattern for {cameras} cameras at {ANALYSIS_FPS:g} fps: "
              f"{cameras * ANALYSIS_FPS / naive.fps:.2f} cores for its analysis alone "
              f"(this machine has {psutil.cpu_count()})")


def print_offline_row(label: str, naive: Run, ours: Run) -> None:
    speedup = ours.fps / naive.fps if naive.fps else float("inf")
    print(f"{label:30} {naive.frames:6d} {naive.fps:9.1f} {ours.fps:9.1f} {speedup:7.1f}x "
          f"{f'{naive.faces}/{ours.faces}':>17} {f'{naive.people}/{ours.people}':>18} "
          f"{f'{naive.faces_sized}f {naive.people_sized}p':>13}")


def print_stages(naive: Run, ours: Run) -> None:
    print("\nms per frame by stage (naive: rgb, detect on full frame, landmarks, embed every "
          "face;\ncustodes: motion, detect in moving regions incl. landmarks, track incl. RGB "
          "when needed,\nembed once per track, snapshot = redaction detector + blur + JPEG)")
    for name, run in (("naive", naive), ("custodes", ours)):
        stages = dict(run.stages)
        stages["other"] = max(0.0, run.wall - sum(stages.values()))
        parts = "  ".join(f"{k} {v / run.frames * 1000:.1f}" for k, v in stages.items())
        print(f"{name:9} total {run.wall / run.frames * 1000:6.1f}   {parts}")
    for name, run, stage in (("naive", naive, "embed"), ("custodes", ours, "embed"),
                             ("custodes", ours, "snapshot")):
        calls = run.calls.get(stage, 0)
        if calls:
            each = run.stages[stage] / calls * 1000
            print(f"{name} {stage}: {calls} calls, {each:.1f} ms each")


# -- what ran, and against what ----------------------------------------------------------------


def code_version() -> str:
    """The tree whose `custodes` this process imported (PYTHONPATH decides), as git names it."""
    import custodes  # noqa: PLC0415  # its path is the point, not its contents

    tree = Path(custodes.__file__).resolve().parents[2]
    done = subprocess.run(["git", "-C", str(tree), "describe", "--always", "--dirty"],
                          capture_output=True, text=True, check=False)
    return f"{done.stdout.strip() or 'unknown'} ({tree})"


def machine_load() -> str:
    """Load average, and the processes that already use a core's tenth (sampled over 1 s)."""
    one, five, fifteen = os.getloadavg()
    procs = list(psutil.process_iter(["name", "cmdline"]))
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.cpu_percent(None)
    time.sleep(1.0)
    busy = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            share = proc.cpu_percent(None)
            if share >= 10 and proc.pid != os.getpid():
                words = proc.info["cmdline"] or [proc.info["name"] or "?"]
                command = " ".join(" ".join(words).split())  # `python -c` scripts span lines
                busy.append(f"{share:.0f}% {command[:90]}")
    lines = [f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {psutil.cpu_count()} cores"]
    lines += [f"  busy: {line}" for line in sorted(busy, reverse=True)[:6]]
    return "\n".join(lines)


def package_dir() -> str:
    """The folder of the `custodes` package this process imported."""
    import custodes  # noqa: PLC0415  # its path is the point, not its contents

    return str(Path(custodes.__file__).resolve().parent)


def baseline_path(tree: Path) -> Path:
    """What goes on PYTHONPATH for the checkout ``tree``: its src/ folder when it has one (the
    package lives there since the src layout), else ``tree`` itself; refused when neither
    holds a `custodes` package."""
    for candidate in (tree / "src", tree):
        if (candidate / "custodes" / "__init__.py").is_file():
            return candidate.resolve()
    raise SystemExit(f"--baseline {tree}: no custodes package in {tree / 'src'} or {tree}")


def imported_package(path: Path) -> str:
    """The `custodes` package a Python with PYTHONPATH=path imports (the venv's editable
    install of another tree wins when ``path`` has none)."""
    done = subprocess.run(
        [sys.executable, "-c", "import custodes, pathlib; "
         "print(pathlib.Path(custodes.__file__).resolve().parent)"],
        env={**os.environ, "PYTHONPATH": str(path)}, capture_output=True, text=True,
        timeout=60, check=False)
    if done.returncode != 0:
        raise SystemExit(f"--baseline: importing custodes from {path} failed:\n{done.stderr}")
    return done.stdout.strip()


def check_imported(asked: Path, imported: str, what: str) -> None:
    """Refuse to compare with a run that imported another tree than the one asked for."""
    want = str((asked / "custodes").resolve())
    if imported != want:
        print(f"REFUSED: {what} imported custodes from {imported}, not {want}: its figures "
              f"would be this tree's, not the baseline's", file=sys.stderr)
        raise SystemExit(2)


def checked_baseline(tree: Path) -> Path:
    """PYTHONPATH for the checkout ``tree`` (`baseline_path`), refused at once, before the
    minutes of our own run, when a Python given it would import another `custodes`."""
    source = baseline_path(tree)
    check_imported(source, imported_package(source), f"a Python with PYTHONPATH={source}")
    return source


def run_baseline(source: Path, args: argparse.Namespace, cache: Path) -> dict[str, Any]:
    """This script again, importing `custodes` from ``source`` (`checked_baseline`), on the
    same clips. With --json its figures are kept next to ours (NAME-baseline.json), for a
    later --baseline-json. Refused when that run says it imported another package."""
    if args.json:
        out = args.json.with_name(f"{args.json.stem}-baseline.json")
    else:
        out = Path(tempfile.mkdtemp(prefix="custodes-bench-baseline-")) / "baseline.json"
    argv = [sys.executable, __file__, "--cameras", str(args.cameras), "--seconds",
            str(args.seconds), "--warmup", str(args.warmup), "--max-frames",
            str(args.max_frames), "--cache", str(cache), "--json", str(out)]
    env = {**os.environ, "PYTHONPATH": str(source.resolve())}
    print(f"\n==== baseline: the same bench with PYTHONPATH={source} ====", flush=True)
    done = subprocess.run(argv, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the baseline run failed with exit code {done.returncode}")
    result: dict[str, Any] = json.loads(out.read_text())
    check_imported(source, str(result.get("package", "unknown (an older bench)")),
                   "the baseline run")
    if not args.json:
        shutil.rmtree(out.parent, ignore_errors=True)
    return result


def cell(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def print_side_by_side(ours: dict[str, Any], base: dict[str, Any]) -> None:
    print("\n==== side by side ====")
    print(f"this:     {ours['code']}\n  {ours['load']}")
    print(f"baseline: {base['code']}\n  {base['load']}")
    print(f"{'figure':46} {'this':>16} {'baseline':>16}")
    labels = list(dict.fromkeys([*ours["figures"], *base["figures"]]))
    for label in labels:
        print(f"{label:46} {cell(ours['figures'].get(label, '-')):>16} "
              f"{cell(base['figures'].get(label, '-')):>16}")


# -- main ----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cameras", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=120, help="live seconds measured")
    parser.add_argument("--warmup", type=float, default=10,
                        help="seconds after every camera is analysed, before measuring")
    parser.add_argument("--max-frames", type=int, default=0,
                        help="offline: frames per clip (0: all)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 2 cameras, 10 s live, 2 s warm-up, 10 frames per clip")
    parser.add_argument("--cache", type=Path, default=None,
                        help="folder for the prepared clips, kept between runs (default: temp)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: temp)")
    parser.add_argument("--json", type=Path, default=None, help="write this run's figures here")
    parser.add_argument("--baseline", type=Path, default=None, metavar="TREE",
                        help="then run again importing custodes from the checkout TREE "
                             "(TREE/src if it exists), and compare")
    parser.add_argument("--baseline-json", type=Path, default=None, metavar="FILE",
                        help="compare with the figures an earlier --json run wrote")
    args = parser.parse_args()
    if args.quick:
        # Every stage still runs (sign-in, live node, offline both ways); only its length shrinks.
        args.cameras, args.seconds, args.warmup = min(args.cameras, 2), 10.0, 2.0
        args.max_frames = args.max_frames or 10

    baseline = checked_baseline(args.baseline) if args.baseline else None
    header = {"code": code_version(), "package": package_dir(), "load": machine_load()}
    print(f"custodes from {header['code']}\n{header['load']}", flush=True)
    work = Path(args.work or tempfile.mkdtemp(prefix="custodes-bench-analytics-"))
    try:
        cache = args.cache or work / "clips"
        cameras = prepare_cameras(args.cameras, cache)
        with simulator(cameras) as (urls, sim):
            live = run_live(urls, sim, work / "node", args)
        figures = print_live(live, cameras, args)
        print("\noffline comparison running...", flush=True)
        figures |= print_offline(run_offline(cameras, work, args.max_frames),
                                 args.max_frames, len(cameras))
        ours = {**header, "figures": figures}
        if args.json:
            args.json.write_text(json.dumps(ours, indent=1))
        if baseline is not None:
            print_side_by_side(ours, run_baseline(baseline, args, cache))
        if args.baseline_json:
            print_side_by_side(ours, json.loads(args.baseline_json.read_text()))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
