"""What a camera costs: bare ffmpeg, custodes recording only, and custodes as a user gets it,
on the same simulated cameras in the same run.

    python bench/record_cost.py --cameras 64 --seconds 120      # the goal's size
    python bench/record_cost.py --quick                         # CI: 4 small cameras, ~80 s

One simulator process serves N looping H.264 cameras (5 MP by default, main stream only: no
sub stream) over RTSP on loopback. Then, one after the other on those same streams:
  1. N bare `ffmpeg -rtsp_transport tcp -i URL -c copy -f segment` processes record them;
  2. `custodes run` records them with analytics disabled on every camera;
  3. `custodes run` with the default configuration: every camera analysed.
For each: CPU-seconds per camera-minute (median over 30 s windows, and overall), peak RSS and
peak PSS per camera (all of the run's processes together, divided by the cameras; PSS counts
shared libraries once), segments written and missing, and the seconds from SIGINT until every
process has exited. The simulator's own CPU is reported apart: it is the cameras, not the
recorder. The load average before each run says what else the machine was doing.

Goals (issue 9): 64 cameras of 5 MP on 2 cores with the default config record with no missing
segment and stop within 10 s; recording alone costs at most 1.5x bare ffmpeg; at most 120 MiB
per analysed camera.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import itertools
import json
import os
import re
import secrets
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml

from custodes.api.deps import CSRF_COOKIE, CSRF_HEADER
from custodes.media import ffmpeg_exe

WINDOW = 30.0
PSS_EVERY = 10.0  # seconds between PSS samples: reading every process's smaps is not free
STOP_WAIT = 60.0  # seconds to wait for a stop before killing (and reporting it as failed)


@dataclass
class Usage:
    """CPU and memory of a set of processes sampled over time."""

    cpu_samples: list[tuple[float, float]] = field(default_factory=list)  # (t, cpu seconds)
    peak_rss: int = 0
    peak_pss: int = 0
    _last_pss: float = float("-inf")

    def sample(self, procs: list[psutil.Process], dead_cpu: float = 0.0) -> None:
        cpu, rss, pss = dead_cpu, 0, 0
        now = time.monotonic()
        with_pss = now - self._last_pss >= PSS_EVERY
        for p in procs:
            try:
                t = p.cpu_times()
                cpu += t.user + t.system
                if with_pss:
                    full = p.memory_full_info()
                    rss += full.rss
                    pss += full.pss
                else:
                    rss += p.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        self.cpu_samples.append((now, cpu))
        self.peak_rss = max(self.peak_rss, rss)
        if with_pss:
            self._last_pss = now
            self.peak_pss = max(self.peak_pss, pss)

    def total_rate(self) -> float:
        (t0, c0), (t1, c1) = self.cpu_samples[0], self.cpu_samples[-1]
        return (c1 - c0) / (t1 - t0)

    def median_window_rate(self) -> float:
        rates, start = [], self.cpu_samples[0]
        for t, c in self.cpu_samples[1:]:
            if t - start[0] >= WINDOW:
                rates.append((c - start[1]) / (t - start[0]))
                start = (t, c)
        return statistics.median(rates) if rates else self.total_rate()


@dataclass
class Outcome:
    name: str
    usage: Usage
    load: tuple[float, float, float]  # load average just before the run
    segments: int
    expected: int  # segments a camera recording the whole run would have, all cameras
    missing: int
    stop_seconds: float | None  # None: still running after STOP_WAIT, then killed
    python_cpu: float = 0.0  # custodes' own Python process, within usage
    analysis_procs: int = 0
    analysis: dict[str, Any] = field(default_factory=dict)  # from /api/status


def tree(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def waited_children_cpu(root: psutil.Process) -> float:
    """CPU of children the process has already reaped (restarted ffmpegs and workers)."""
    try:
        t = root.cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return t.children_user + t.children_system


def own_cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def measure(
    procs_fn: Callable[[], list[psutil.Process]], seconds: float, dead_fn: Callable[[], float]
) -> Usage:
    usage = Usage()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        usage.sample(procs_fn(), dead_fn())
        time.sleep(min(2.0, max(0.0, end - time.monotonic())))
    usage.sample(procs_fn(), dead_fn())
    return usage


def start_sim(
    args: argparse.Namespace, cache: Path
) -> tuple[subprocess.Popen[str], dict[str, str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "custodes", "sim", "--cameras", str(args.cameras),
         "--width", str(args.width), "--height", str(args.height), "--fps", str(args.fps),
         "--bitrate", str(args.bitrate), "--codec", args.codec, "--base-port",
         str(args.base_port), "--cache", str(cache)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    urls: dict[str, str] = {}
    while len(urls) < args.cameras:
        line = proc.stdout.readline()
        if not line:
            raise SystemExit("the simulator exited early")
        name, _, url = line.strip().partition(" ")
        if url.startswith("rtsp://"):
            urls[name] = url
    return proc, urls


def analysis_status(stdout: str) -> dict[str, Any]:
    """Per-camera analysis figures from the node's /api/status, signed in as the first
    admin (whose password the node printed); empty if that failed."""
    url = re.search(r"web interface:\s*(\S+)", stdout)
    password = re.search(r"with the password\s+(\S+)", stdout)
    if url is None or password is None:
        return {}
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    login = urllib.request.Request(
        url[1].rstrip("/") + "/api/auth/login", method="POST",
        data=json.dumps({"name": "admin", "password": password[1]}).encode(),
        headers={"Content-Type": "application/json"})
    try:
        answer = json.loads(opener.open(login, timeout=10).read())
        if answer.get("must_change_password"):
            # The printed password is the admin's first: the node takes nothing else from
            # the account before it is replaced, as the browser's account page does.
            csrf = next(c.value or "" for c in jar if c.name == CSRF_COOKIE)
            change = urllib.request.Request(
                url[1].rstrip("/") + "/api/auth/password", method="POST",
                data=json.dumps({"old_password": password[1],
                                 "new_password": secrets.token_urlsafe(18)}).encode(),
                headers={"Content-Type": "application/json", CSRF_HEADER: csrf})
            opener.open(change, timeout=10).read()
        status = json.loads(opener.open(url[1].rstrip("/") + "/api/status", timeout=30).read())
    except (OSError, ValueError, StopIteration) as exc:
        return {"error": str(exc) or type(exc).__name__}
    rows = [c["analytics"] for c in status["cameras"] if c.get("analytics")]
    online = [r for r in rows if r["online"]]
    if not online:
        return {"online": 0}
    return {
        "online": len(online),
        "fps": statistics.median(r["fps"] for r in online),
        "analysis_fps": statistics.median(r.get("analysis_fps", 0.0) for r in online),
        "shed": sum(1 for r in online if r.get("shed")),
        "lag_p95": statistics.median(r["lag_p95"] for r in online),
    }


def run_custodes(name: str, urls: dict[str, str], work: Path, args: argparse.Namespace, *,
                 analytics: bool) -> Outcome:
    cameras: dict[str, Any] = {
        cam: {"site": "bench", "location": "corridor", "purpose": "benchmark",
              "main_url": url, "record": {"segment_seconds": args.segment}}
        for cam, url in urls.items()
    }
    if not analytics:
        for cam in cameras.values():
            cam["analytics"] = {"enabled": False}
    config = {
        "sites": {"bench": {"name": "Benchmark"}},
        "cameras": cameras,
        "storage": {"path": str(work)},
        "server": {"port": 0},
    }
    path = work / "bench.yaml"
    work.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    load = os.getloadavg()
    out = (work / "node.out").open("w")
    node = subprocess.Popen([sys.executable, "-m", "custodes", "run", "--config", str(path)],
                            stdout=out, stderr=(work / "node.log").open("w"),
                            env={**os.environ, "COLUMNS": "300", "PYTHONUNBUFFERED": "1"})
    root = psutil.Process(node.pid)
    started = time.time()
    time.sleep(args.warmup)
    python_before = own_cpu(root)
    usage = measure(lambda: tree(root), args.seconds, lambda: waited_children_cpu(root))
    python_cpu = own_cpu(root) - python_before
    procs = [p for p in tree(root) if "spawn_main" in " ".join(_cmdline(p))]
    status = analysis_status((work / "node.out").read_text()) if analytics else {}
    stop_seconds = _interrupt([node])
    out.close()
    stopped = time.time()
    db = sqlite3.connect(work / "custodes.db")
    segments, missing = 0, 0
    for (camera,) in db.execute("SELECT DISTINCT camera FROM segments"):
        spans = db.execute(
            'SELECT start, "end" FROM segments WHERE camera = ? ORDER BY start', (camera,)
        ).fetchall()
        segments += len(spans)
        missing += sum(
            round((b[0] - a[1]) / args.segment) for a, b in itertools.pairwise(spans)
            if b[0] - a[1] > 1.0
        )
    with_footage = db.execute("SELECT COUNT(DISTINCT camera) FROM segments").fetchone()[0]
    db.close()
    expected = int((stopped - started) / args.segment)
    missing += (args.cameras - with_footage) * expected
    return Outcome(name, usage, load, segments, expected * args.cameras, missing, stop_seconds,
                   python_cpu, len(procs), status)


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


def _interrupt(procs: list[subprocess.Popen[Any]]) -> float | None:
    """SIGINT to each; seconds until all (and their children) have exited, None if not
    within STOP_WAIT (then they are killed)."""
    trees = [tree(psutil.Process(p.pid)) for p in procs]
    sent = time.monotonic()
    for p in procs:
        p.send_signal(signal.SIGINT)
    everyone = [q for t in trees for q in t]
    _, alive = psutil.wait_procs(everyone, timeout=STOP_WAIT)
    if alive:
        for q in alive:
            q.kill()
        psutil.wait_procs(alive, timeout=10)
        return None
    for p in procs:
        p.wait()
    return time.monotonic() - sent


def run_bare(urls: dict[str, str], work: Path, args: argparse.Namespace) -> Outcome:
    load = os.getloadavg()
    procs = []
    for name, url in urls.items():
        out = work / name
        out.mkdir(parents=True)
        procs.append(subprocess.Popen(
            [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error",
             "-rtsp_transport", "tcp", "-i", url, "-map", "0:v:0", "-c", "copy", "-an",
             "-f", "segment", "-segment_time", str(args.segment), "-segment_format", "mp4",
             "-reset_timestamps", "1", str(out / "%06d.mp4")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))
    started = time.time()
    ps = [psutil.Process(p.pid) for p in procs]
    time.sleep(args.warmup)
    usage = measure(lambda: ps, args.seconds, lambda: 0.0)
    stop_seconds = _interrupt(procs)
    expected = int((time.time() - started) / args.segment)
    counts = [len(list((work / name).glob("*.mp4"))) for name in urls]
    # Bare ffmpeg keeps no index: a camera with fewer files than the run's length allows
    # (less the one cut short at each end) missed some.
    missing = sum(max(0, expected - 1 - n) for n in counts)
    return Outcome("bare ffmpeg", usage, load, sum(counts), expected * len(urls), missing,
                   stop_seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="CI size: 4 cameras of 1920x1080 (main stream: keyframes decoded), "
                        "15 s measured per run; a smoke test, not the goals' figures")
    parser.add_argument("--cameras", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--warmup", type=float, default=15, help="seconds before measuring")
    parser.add_argument("--width", type=int, default=2592)
    parser.add_argument("--height", type=int, default=1944)
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--bitrate", type=int, default=4000, help="kbit/s")
    parser.add_argument("--codec", default="h264", choices=["h264", "h265"])
    parser.add_argument("--segment", type=int, default=10)
    parser.add_argument("--base-port", type=int, default=18554)
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: temp)")
    parser.add_argument("--runs", default="bare,record,default",
                        help="which runs, comma-separated: bare, record, default")
    args = parser.parse_args()
    if args.quick:
        args.cameras, args.seconds, args.warmup = 4, 15.0, 6.0
        args.width, args.height, args.bitrate, args.segment = 1920, 1080, 2000, 5
    runs = args.runs.split(",")

    work = Path(args.work or tempfile.mkdtemp(prefix="custodes-bench-"))
    sim, urls = start_sim(args, work / "samples")
    sim_ps = psutil.Process(sim.pid)
    outcomes: list[Outcome] = []
    try:
        sim_before = sim_ps.cpu_times()
        t0 = time.monotonic()
        if "bare" in runs:
            outcomes.append(run_bare(urls, work / "bare", args))
            shutil.rmtree(work / "bare")
        if "record" in runs:
            outcomes.append(run_custodes("recording only", urls, work / "record", args,
                                         analytics=False))
            keep_log(work / "record")
        if "default" in runs:
            outcomes.append(run_custodes("default config", urls, work / "default", args,
                                         analytics=True))
            keep_log(work / "default")
        sim_after = sim_ps.cpu_times()
        sim_rate = ((sim_after.user + sim_after.system) - (sim_before.user + sim_before.system)) / (
            time.monotonic() - t0
        )
    finally:
        sim.send_signal(signal.SIGINT)
        sim.wait(30)
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    report(outcomes, args, sim_rate)


def keep_log(run: Path) -> None:
    """Keep the node's log beside the run's folder (`--work`), delete the footage."""
    shutil.copy(run / "node.log", run.with_suffix(".log"))
    shutil.rmtree(run)


def report(outcomes: list[Outcome], args: argparse.Namespace, sim_rate: float) -> None:
    n = args.cameras

    def stop(o: Outcome) -> str:
        return f"{o.stop_seconds:.1f}" if o.stop_seconds is not None else f"> {STOP_WAIT:.0f}"

    rows: list[tuple[str, Callable[[Outcome], str]]] = [
        ("load average before (1, 5, 15 min)",
         lambda o: " ".join(f"{x:.1f}" for x in o.load)),
        ("CPU-s per camera-minute (median of 30 s windows)",
         lambda o: f"{o.usage.median_window_rate() * 60 / n:.3f}"),
        ("CPU-s per camera-minute (whole run)",
         lambda o: f"{o.usage.total_rate() * 60 / n:.3f}"),
        ("peak RSS per camera (MiB)", lambda o: f"{o.usage.peak_rss / n / 2**20:.1f}"),
        ("peak PSS per camera (MiB)", lambda o: f"{o.usage.peak_pss / n / 2**20:.1f}"),
        ("segments written (expected)", lambda o: f"{o.segments} ({o.expected})"),
        ("segments missing", lambda o: str(o.missing)),
        ("seconds from SIGINT to exit", stop),
        ("analysis processes", lambda o: str(o.analysis_procs)),
    ]
    print(f"\n{n} cameras, {args.width}x{args.height} {args.codec} {args.bitrate} kbit/s "
          f"{args.fps} fps, main stream only, {args.seconds:.0f} s measured after "
          f"{args.warmup:.0f} s, {args.segment} s segments, {os.cpu_count()} CPUs")
    print(f"{'':52}" + "".join(f"{o.name:>18}" for o in outcomes))
    for label, cell in rows:
        print(f"{label:52}" + "".join(f"{cell(o):>18}" for o in outcomes))
    by_name = {o.name: o for o in outcomes}
    bare = by_name.get("bare ffmpeg")
    if bare is not None:
        base = bare.usage.median_window_rate()
        for o in outcomes:
            if o is not bare and base > 0:
                print(f"{o.name} / bare ffmpeg CPU (median windows): "
                      f"{o.usage.median_window_rate() / base:.2f}x")
    for o in outcomes:
        if o.name != "bare ffmpeg":
            print(f"{o.name}: custodes' main Python process alone "
                  f"{o.python_cpu / args.seconds * 60 / n:.3f} CPU-s per camera-minute")
        if o.analysis:
            print(f"{o.name}: analysis at the end (medians over online cameras): "
                  + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                              for k, v in o.analysis.items()))
    print(f"simulator (not included): {sim_rate * 60 / n:.3f} CPU-s per camera-minute")


if __name__ == "__main__":
    main()
