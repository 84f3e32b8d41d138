"""The redacted live grid: nine cameras watched at once by a viewer allowed redacted pictures
only, on a node that records and analyses them with the default configuration.

    python bench/live_grid.py                  # 2 rounds of 30 s per setup, ~7 min
    python bench/live_grid.py --seconds 60 --rounds 3
    python bench/live_grid.py --quick          # smoke test: before and after, one 5 s window

Cameras: the Hamilton clip (people: faces to blur) on odd cameras and the moving test pattern
on even ones, as camera-like 480x270 15 fps H.264 streams served over RTSP on loopback by the
simulator in a helper process of its own (its CPU is not the node's). The node runs in this
process with the configuration of tests/test_browser_live.py: recording (2 s segments) and
analysis at the defaults.

The viewer is emulated over HTTP as the browser's tiles do it (web/static/live.js): per tile, a
loop asking /api/cameras/<camera>/live.jpg?width=450&after=<capture time of the picture it
has>, which answers as soon as a newer picture exists. Every 0.25 s each tile's age is sampled
(now minus the capture time of its newest picture, as tests/test_browser_live.py does on
screen), without a browser: its JPEG decoding and painting are not counted.

Setups of the live picture process, measured in turn and alternating, with the same node,
cameras and viewer: before (Schedule.SAMPLED: frames sampled at the picture rate wait for the
one search thread), after (Schedule.NEWEST with the default threads: the newest frame when a
thread is free, two threads on a 2-core box), and, but with --quick, NEWEST with the threads of
before, which tells the schedule's share from the threads'. The process is replaced between
windows; each window starts once every tile shows a picture of the new process, plus WARMUP
seconds. Printed per window: pictures a second per tile (slowest, median), picture age p50 and
p90 over all tiles, the live process's CPU, and the load average; then each setup over all its
windows. On a shared box the load average says whether the figures mean anything: nine tiles
need ~0.6 of a core (custodes.live.service), which a box at load 20 does not give.
"""

from __future__ import annotations

import argparse
import contextlib
import http.cookies
import json
import multiprocessing
import multiprocessing.connection
import multiprocessing.synchronize
import os
import statistics
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import yaml

from custodes.app import Node, live_cameras
from custodes.auth.roles import Role
from custodes.auth.users import Users
from custodes.config import parse_config
from custodes.live.service import Schedule, default_threads
from custodes.live.supervisor import LiveSupervisor
from custodes.redaction.live import read_state
from custodes.sim import SimServer, ensure_sample, prepare_clip

VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "video"
PEOPLE = "face_recognition_short_hamilton_clip.mp4"
CAMERAS = [f"cam{i:02d}" for i in range(1, 10)]
VIEWER = "vera"
PASSWORD = "live-grid-bench-password"
TILE_WIDTH = 450  # a 9-tile grid on a 1400 px wide window: 320 px pictures (live_width)
SAMPLE_EVERY = 0.25  # seconds, as the browser test samples
WARMUP = 4.0  # seconds a live process gets after its first picture of every tile
READY_TIMEOUT = 120.0  # seconds for the node's parts, and for a new live process's pictures


# -- the cameras -------------------------------------------------------------------------------


def serve_cameras(clips: dict[str, Path], conn: multiprocessing.connection.Connection,
                  stop: multiprocessing.synchronize.Event) -> None:
    """Helper process: serve the clips until `stop`; send {name: url} once all listen."""
    with SimServer("127.0.0.1") as server:
        for name, clip in clips.items():
            server.add_camera(name, clip)
        conn.send(server.urls)
        stop.wait()


@contextlib.contextmanager
def simulator(clips: dict[str, Path]) -> Iterator[dict[str, str]]:
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    ours, theirs = ctx.Pipe()
    proc = ctx.Process(target=serve_cameras, args=(clips, theirs, stop), name="bench-sim")
    proc.start()
    try:
        if not ours.poll(60):
            raise SystemExit("the simulator did not start within 60 s")
        urls: dict[str, str] = ours.recv()
        yield urls
    finally:
        stop.set()
        proc.join(30)
        if proc.is_alive():
            proc.kill()


def camera_clips(cache: Path) -> dict[str, Path]:
    people = prepare_clip(VIDEOS / PEOPLE, cache, width=480, height=270, bitrate_kbps=500)
    pattern = ensure_sample(cache, width=480, height=270, fps=15, bitrate_kbps=300,
                            codec="h264", seconds=4)
    return {name: people if i % 2 == 0 else pattern for i, name in enumerate(CAMERAS)}


def start_node(urls: dict[str, str], work: Path) -> Node:
    config = parse_config(yaml.safe_dump({
        "node": {"name": "live-grid-bench"},
        "sites": {"school": {"name": "Bench school"}},
        "cameras": {
            name: {"site": "school", "location": "corridor", "purpose": "live grid bench",
                   "main_url": url, "record": {"segment_seconds": 2},
                   "analytics": {"width": 480}}
            for name, url in urls.items()
        },
        "storage": {"path": str(work / "var")},
        "server": {"host": "127.0.0.1", "port": 0},
    }))
    node = Node(config)
    node.start()
    Users(node.store).add(VIEWER, Role.VIEWER, PASSWORD)
    deadline = time.monotonic() + READY_TIMEOUT
    while not (node.live.running and len(node.events.stats) == len(urls)):
        if time.monotonic() > deadline:
            node.stop()
            raise SystemExit(f"the node did not start its parts within {READY_TIMEOUT:.0f} s")
        time.sleep(0.5)
    return node


@dataclass(frozen=True)
class Setup:
    """A way of running the live picture process."""

    label: str
    schedule: Schedule
    threads: int | None  # None: the service's default (custodes.live.service.default_threads)


def old_threads() -> int:
    """The threads of the service before (all cores but one)."""
    return max(1, len(os.sched_getaffinity(0)) - 1)


def use(node: Node, setup: Setup) -> None:
    """Replace the node's live picture process by one run as `setup` says."""
    node.live.stop()
    node.live = LiveSupervisor(node.layout.live, live_cameras(node.config),
                               threads=setup.threads, schedule=setup.schedule)
    node.live.start()


# -- the viewer --------------------------------------------------------------------------------


class Viewer:
    """A signed-in session (its cookies), as the browser holds it."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.cookie = ""

    def sign_in(self) -> None:
        request = urllib.request.Request(
            self.base + "/api/auth/login", method="POST",
            data=json.dumps({"name": VIEWER, "password": PASSWORD}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as reply:
            answer = json.load(reply)
            jar = http.cookies.SimpleCookie()
            for header in reply.headers.get_all("Set-Cookie") or []:
                jar.load(header)
        if answer.get("must_change_password"):
            raise SystemExit("the bench's viewer must change its password: not expected")
        self.cookie = "; ".join(f"{k}={m.value}" for k, m in jar.items())

    def picture(self, camera: str, after: float | None) -> float | None:
        """The capture time of the newest picture (waiting for one after `after`), or None
        while the tile has none (503)."""
        query = f"width={TILE_WIDTH}" + (f"&after={after:.3f}" if after else "")
        request = urllib.request.Request(f"{self.base}/api/cameras/{camera}/live.jpg?{query}",
                                         headers={"Cookie": self.cookie})
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                reply.read()
                return float(reply.headers.get("X-Capture-Time", "0"))
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 503:
                return None
            raise Refused(f"live picture of {camera}: HTTP {exc.code}") from None


class Refused(Exception):
    """The node refused the viewer (not a 503, which is "no picture yet")."""


@dataclass
class Tile:
    camera: str
    capture: float = 0.0  # of the newest picture received
    pictures: int = 0  # received since the tile started
    errors: int = 0  # requests that failed (timed out, connection lost)
    refused: str = ""  # why the node refused the viewer, which ends the tile


class Grid:
    """Nine tiles, each asking for its pictures in a thread of its own, as long as it runs."""

    def __init__(self, viewer: Viewer) -> None:
        self.viewer = viewer
        self.tiles = {c: Tile(c) for c in CAMERAS}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._ask, args=(t,), daemon=True)
                         for t in self.tiles.values()]

    def __enter__(self) -> Grid:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)

    def _ask(self, tile: Tile) -> None:
        while not self._stop.is_set():
            try:
                capture = self.viewer.picture(tile.camera, tile.capture or None)
            except Refused as exc:
                tile.refused = str(exc)
                return
            except OSError:  # timed out or cut off, as a browser's request may be: again
                tile.errors += 1
                time.sleep(0.5)
                continue
            if capture is None:
                time.sleep(0.5)
            elif capture > tile.capture:
                tile.capture = capture
                tile.pictures += 1

    def window(self, seconds: float) -> tuple[dict[str, float], dict[str, list[float]]]:
        """Pictures a second per tile and the ages sampled over `seconds`."""
        first = {name: tile.pictures for name, tile in self.tiles.items()}
        ages: dict[str, list[float]] = {name: [] for name in self.tiles}
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            now = time.time()
            for name, tile in self.tiles.items():
                if tile.capture:
                    ages[name].append(now - tile.capture)
            time.sleep(SAMPLE_EVERY)
        elapsed = time.monotonic() - started
        rates = {name: (tile.pictures - first[name]) / elapsed
                 for name, tile in self.tiles.items()}
        return rates, ages


# -- the measurement ---------------------------------------------------------------------------


@dataclass
class Window:
    setup: Setup
    rates: dict[str, float]
    ages: list[float]
    live_cpu: float  # cores used by the live picture process
    cost_ms: float  # CPU per picture in the search thread, as the service reports it
    load: tuple[float, float, float]

    def line(self) -> str:
        rates = sorted(self.rates.values())
        p50, p90 = quantiles(self.ages)
        return (f"  {self.setup.label}: pictures/s per tile slowest {rates[0]:.2f} median "
                f"{statistics.median(rates):.2f}; age p50 {p50:.2f} s p90 {p90:.2f} s; "
                f"live process {100 * self.live_cpu:.0f}% of a core, {self.cost_ms:.0f} ms "
                f"CPU/picture; load average {self.load[0]:.2f} {self.load[1]:.2f} "
                f"{self.load[2]:.2f}")


def quantiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return (values[0], values[0]) if values else (float("nan"), float("nan"))
    return statistics.median(values), statistics.quantiles(values, n=10)[-1]


def process_cpu(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return times.user + times.system


def measure(node: Node, grid: Grid, setup: Setup, seconds: float) -> Window:
    use(node, setup)
    # Until every tile shows a picture of the new process (loading it and opening nine
    # streams takes seconds on a busy box), then WARMUP for its rate to settle.
    replaced = time.time()
    deadline = time.monotonic() + READY_TIMEOUT
    while any(tile.capture <= replaced for tile in grid.tiles.values()):
        refused = [tile.refused for tile in grid.tiles.values() if tile.refused]
        if refused:
            raise SystemExit(refused[0])
        if time.monotonic() > deadline:
            raise SystemExit(f"{setup.label}: no picture on some tiles within "
                             f"{READY_TIMEOUT:.0f} s")
        time.sleep(0.25)
    time.sleep(WARMUP)
    pid = node.live.pid
    cpu = process_cpu(pid)
    started = time.monotonic()
    rates, ages = grid.window(seconds)
    used = (process_cpu(pid) - cpu) / (time.monotonic() - started)
    costs = [s.cost_ms for c in CAMERAS if (s := read_state(node.layout.live, c)) is not None]
    return Window(setup, rates, [a for tile in ages.values() for a in tile], used,
                  statistics.mean(costs) if costs else float("nan"), psutil.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each window")
    parser.add_argument("--rounds", type=int, default=2, help="windows per setup")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: before and after, one 5 s window each")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rounds = 5.0, 1
    if not (VIDEOS / PEOPLE).is_file():
        raise SystemExit(f"the shared clip {VIDEOS / PEOPLE} is missing")
    setups = [Setup(f"before: {Schedule.SAMPLED}, {old_threads()} thread(s)", Schedule.SAMPLED,
                    old_threads()),
              Setup(f"after: {Schedule.NEWEST}, {default_threads()} thread(s)", Schedule.NEWEST,
                    None)]
    if not args.quick and default_threads() != old_threads():
        # The schedule alone, with the threads of before.
        setups.append(Setup(f"{Schedule.NEWEST}, {old_threads()} thread(s)", Schedule.NEWEST,
                            old_threads()))
    print(f"9 cameras recorded and analysed; a viewer watching all 9 redacted tiles "
          f"({TILE_WIDTH} px wide); {args.rounds} x {args.seconds:.0f} s windows per setup "
          f"on {psutil.cpu_count()} cores; load average at the start "
          + " ".join(f"{x:.2f}" for x in psutil.getloadavg()))
    windows: list[Window] = []
    with tempfile.TemporaryDirectory(prefix="live-grid-") as tmp:
        work = Path(tmp)
        clips = camera_clips(work / "clips")
        with simulator(clips) as urls:
            node = start_node(urls, work)
            try:
                assert node.web is not None
                viewer = Viewer(node.web.url.rstrip("/"))
                viewer.sign_in()
                with Grid(viewer) as grid:
                    for _ in range(args.rounds):
                        for setup in setups:
                            windows.append(measure(node, grid, setup, args.seconds))
                            print(windows[-1].line(), flush=True)
            finally:
                node.stop()
    print("\n| live picture process | pictures/s per tile: slowest / median | age p50 | "
          "age p90 | its CPU | load average (1 min) |")
    print("|---|---|---|---|---|---|")
    for setup in setups:
        mine = [w for w in windows if w.setup == setup]
        rates = [r for w in mine for r in w.rates.values()]
        p50, p90 = quantiles([a for w in mine for a in w.ages])
        print(f"| {setup.label} | {min(rates):.2f} / {statistics.median(rates):.2f} | "
              f"{p50:.2f} s | {p90:.2f} s | "
              f"{100 * statistics.mean(w.live_cpu for w in mine):.0f}% of a core | "
              f"{statistics.mean(w.load[0] for w in mine):.2f} |")
    print("goal: >= 2 pictures/s on every tile, age p90 <= 1 s")


if __name__ == "__main__":
    main()
