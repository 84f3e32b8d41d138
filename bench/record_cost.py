"""What recording costs: custodes vs bare ffmpeg on the same simulated cameras, same run.

    python bench/record_cost.py --cameras 64 --seconds 300

One simulator process serves N looping 5 MP H.264 cameras over RTSP on loopback. Then, one
after the other on those same streams:
  1. `custodes run` records them (its Python process plus one ffmpeg per camera);
  2. N bare `ffmpeg -rtsp_transport tcp -i URL -c copy -f segment` processes record them.
For each: CPU-seconds per camera-minute (median over 30 s windows, and overall), peak RSS per
camera, segments written and segments missing (gaps in the index or in the numbering).
The simulator's own CPU is reported apart; it is the cameras, not the recorder.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import yaml

from custodes.media import ffmpeg_exe

WINDOW = 30.0


@dataclass
class Usage:
    """CPU and memory of a set of processes sampled over time."""

    cpu_samples: list[tuple[float, float]] = field(default_factory=list)  # (t, cpu seconds)
    peak_rss: int = 0

    def sample(self, procs: list[psutil.Process], dead_cpu: float = 0.0) -> None:
        cpu, rss = dead_cpu, 0
        for p in procs:
            try:
                t = p.cpu_times()
                cpu += t.user + t.system
                rss += p.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        self.cpu_samples.append((time.monotonic(), cpu))
        self.peak_rss = max(self.peak_rss, rss)

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
    usage: Usage
    segments: int
    missing: int | None = None  # None: not known (bare ffmpeg keeps no index)
    python_cpu: float = 0.0  # custodes' own Python process, within usage


def tree(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def waited_children_cpu(root: psutil.Process) -> float:
    """CPU of children the process has already reaped (restarted ffmpegs)."""
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


def run_custodes(urls: dict[str, str], work: Path, args: argparse.Namespace) -> Outcome:
    config = {
        "sites": {"bench": {"name": "Benchmark"}},
        "cameras": {
            name: {"site": "bench", "location": "corridor", "purpose": "benchmark",
                   "main_url": url, "record": {"segment_seconds": args.segment}}
            for name, url in urls.items()
        },
        "storage": {"path": str(work)},
        "server": {"port": 0},
    }
    path = work / "bench.yaml"
    work.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    node = subprocess.Popen([sys.executable, "-m", "custodes", "run", "--config", str(path)],
                            stdout=subprocess.DEVNULL, stderr=(work / "node.log").open("w"))
    root = psutil.Process(node.pid)
    started = time.time()
    time.sleep(args.warmup)
    python_before = own_cpu(root)
    usage = measure(lambda: tree(root), args.seconds, lambda: waited_children_cpu(root))
    python_cpu = own_cpu(root) - python_before
    node.send_signal(signal.SIGINT)
    node.wait(60)
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
    cameras_with_footage = db.execute("SELECT COUNT(DISTINCT camera) FROM segments").fetchone()[0]
    db.close()
    missing += (args.cameras - cameras_with_footage) * int((stopped - started) / args.segment)
    return Outcome(usage, segments, missing, python_cpu)


def run_bare(urls: dict[str, str], work: Path, args: argparse.Namespace) -> Outcome:
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
    ps = [psutil.Process(p.pid) for p in procs]
    time.sleep(args.warmup)
    usage = measure(lambda: ps, args.seconds, lambda: 0.0)
    for p in procs:
        p.send_signal(signal.SIGINT)
    for p in procs:
        p.wait(60)
    segments = sum(len(list((work / name).glob("*.mp4"))) for name in urls)
    return Outcome(usage, segments)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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
    args = parser.parse_args()

    work = Path(args.work or tempfile.mkdtemp(prefix="custodes-bench-"))
    sim, urls = start_sim(args, work / "samples")
    sim_ps = psutil.Process(sim.pid)
    try:
        sim_before = sim_ps.cpu_times()
        t0 = time.monotonic()
        ours = run_custodes(urls, work / "custodes", args)
        shutil.rmtree(work / "custodes")
        bare = run_bare(urls, work / "bare", args)
        shutil.rmtree(work / "bare")
        sim_after = sim_ps.cpu_times()
        sim_rate = ((sim_after.user + sim_after.system) - (sim_before.user + sim_before.system)) / (
            time.monotonic() - t0
        )
    finally:
        sim.send_signal(signal.SIGINT)
        sim.wait(30)
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)

    n = args.cameras
    expected = int(args.seconds // args.segment)
    u_ours, u_bare = ours.usage, bare.usage
    rows = [
        ("CPU-s per camera-minute (median of 30 s windows)",
         f"{u_ours.median_window_rate() * 60 / n:.3f}",
         f"{u_bare.median_window_rate() * 60 / n:.3f}"),
        ("CPU-s per camera-minute (whole run)",
         f"{u_ours.total_rate() * 60 / n:.3f}", f"{u_bare.total_rate() * 60 / n:.3f}"),
        ("peak RSS per camera (MiB)",
         f"{u_ours.peak_rss / n / 2**20:.1f}", f"{u_bare.peak_rss / n / 2**20:.1f}"),
        ("segments written (>= expected per camera)",
         f"{ours.segments} (>= {expected * n})", f"{bare.segments} (>= {expected * n})"),
        ("segments missing (gaps in the index)", f"{ours.missing}", "n/a"),
    ]
    ratio = u_ours.median_window_rate() / u_bare.median_window_rate()
    print(f"\n{n} cameras, {args.width}x{args.height} {args.codec} {args.bitrate} kbit/s "
          f"{args.fps} fps, {args.seconds:.0f} s each, {args.segment} s segments")
    print(f"{'':52} {'custodes':>18} {'bare ffmpeg':>18}")
    for label, a, b in rows:
        print(f"{label:52} {a:>18} {b:>18}")
    print(f"\ncustodes / bare ffmpeg CPU (median windows): {ratio:.2f}x")
    print(f"custodes Python process alone: {ours.python_cpu / args.seconds * 60 / n:.3f} "
          "CPU-s per camera-minute (included above)")
    print(f"simulator (not included): {sim_rate * 60 / n:.3f} CPU-s per camera-minute")


if __name__ == "__main__":
    main()
