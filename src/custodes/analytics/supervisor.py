"""Keeps a pool of analysis processes running, sized to the machine; restarts one that dies.

Processes, not threads: the detector and the decoder hold the GIL for milliseconds at a time,
and a crash in native code must take down one worker's analysis, not the recorder. Each
process is limited to one thread of native maths and analyses its share of the cameras in
turn (worker.py), so analysis costs what the machine has, not what the camera count asks:
the pool has one process per core and one more (`pool_size`), fewer when memory is short,
and never more than the cameras. A worker that cannot keep up lowers its cameras' rates
instead of asking for more.

Every process gets a queue of its own, emptied by a thread into the one ``queue`` the node
reads: a process killed while writing to a shared multiprocessing queue would leave its lock
held and silence every other camera.

Cameras cost very different amounts (a corridor full of faces several times an empty one),
so the first share (camera i to worker i mod n) can leave one worker shedding its rates while
another idles. Every statistics message says what its camera costs; from it the supervisor
moves a camera from the busiest worker to the least busy one when that lowers the busiest
worker's load (`plan_move`), one camera at a time: every REBALANCE_EVERY seconds, and at once
(SETTLE seconds after the last move) while a worker sheds. The old worker lets go of the
camera when none of its faces is tracked (worker.Release), and only then does the new one
take it on, so a camera is never analysed twice at once.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.context
import multiprocessing.queues
import multiprocessing.synchronize
import os
import pickle
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import psutil

from custodes.analytics.worker import (
    MIN_FPS,
    STATS_INTERVAL,
    Adopt,
    Command,
    Control,
    Message,
    Release,
    Stats,
    WorkerSpec,
    run_worker,
)
from custodes.process import backoff

log = logging.getLogger(__name__)

# Seconds the workers get to end their motion spans and tracks after the stop event; then they
# are killed. The node's whole stop must fit in 10 s, recorders included.
STOP_GRACE = 4.0
# One thread each for the maths libraries: parallelism comes from the pool's processes.
_SINGLE_THREAD = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
# A worker that ran this long before dying is restarted without the backoff of a crash loop.
STEADY = 60.0
# Memory of a worker before its cameras (Python, numpy, OpenCV, onnxruntime, dlib), measured
# at ~90 MiB; each camera adds its detectors (~90 MiB today) and a decoder (~10-25 MiB).
WORKER_MIB = 150
CAMERA_MIB = 110
# Share of the machine's memory analysis may plan for; the rest is the recorder's, the page
# cache's (recording writes through it) and the web server's.
MEMORY_SHARE = 0.5
# Rebalancing: a decision at most this often (seconds; the cost of a camera just moved is
# measured in its new worker before the next), and a move only if it takes at least MIN_GAIN
# cores off the busiest worker (moving ends the camera's motion span, and its tracks after
# RELEASE_WAIT).
REBALANCE_EVERY = 20.0
MIN_GAIN = 0.05
# While a worker sheds its rates and another does not, a move is looked for at once rather
# than at the next REBALANCE_EVERY, but no sooner than this after the last move ended: the
# camera moved must be measured in its new worker first (two statistics messages).
# Measured: a shedding worker otherwise waited 20 s per move while another one idled.
SETTLE = 3 * STATS_INTERVAL
# Processes beyond one per core. A worker is one thread: with exactly one per core, a worker
# holding the costly cameras sheds at 0.85 of its thread while a core idles (bench/analytics.py,
# 8 cameras on 2 cores: 0.6 core idle, three cameras shed). With one more, no worker needs a
# whole core; when the machine is really full every worker's thread waits and sheds alike.
SPARE_WORKERS = 1
# Weight of a new statistics message in a camera's cost (reports every 2 s: ~10 s memory).
COST_WEIGHT = 0.3


@dataclass
class WorkerHealth:
    cameras: list[str] = field(default_factory=list)
    running: bool = False
    restarts: int = 0
    last_exit: str = ""
    pid: int | None = None
    started: float = 0.0  # monotonic time of the last start


def plan_move(shares: Sequence[Sequence[str]], cost: Mapping[str, float], *,
              min_gain: float = MIN_GAIN) -> tuple[str, int, int] | None:
    """The camera to move, from which worker to which, so that the busiest worker's load
    drops the most; None if no move lowers it by ``min_gain``. ``cost``: CPU-s per second
    of each camera at its configured rate; a camera not measured yet counts as the mean of
    those that are."""
    if len(shares) < 2:
        return None
    known = [cost[c] for share in shares for c in share if c in cost]
    mean = sum(known) / len(known) if known else 0.0
    loads = [sum(cost.get(c, mean) for c in share) for share in shares]
    source = max(range(len(shares)), key=loads.__getitem__)
    target = min(range(len(shares)), key=loads.__getitem__)
    best: tuple[float, str] | None = None
    for camera in shares[source]:
        moved = cost.get(camera, mean)
        gain = loads[source] - max(loads[source] - moved, loads[target] + moved)
        if gain >= min_gain and (best is None or gain > best[0]):
            best = (gain, camera)
    return None if best is None else (best[1], source, target)


def pool_size(cameras: int, *, cpus: int | None = None, memory_mib: int | None = None,
              configured: int | None = None) -> int:
    """How many analysis processes for ``cameras``: ``configured`` if given, else bounded by
    the cores (one per core and SPARE_WORKERS more) and by the memory analysis may use; never
    more than cameras. All the cores and more, not all but one: the workers run at NICENESS
    10, so recording, live view and the web server take a core from them whenever they need
    it, and otherwise a core stays idle while analysis sheds its rate (bench/analytics.py,
    8 cameras on 2 cores: 2.2 of 5 fps with the node using 0.45 of the cores; with one
    worker per core, 3.9 of 5 fps on the busiest worker's cameras with 0.6 core idle)."""
    if cameras <= 0:
        return 0
    if configured is not None:
        return min(cameras, configured)
    # The cores this process may run on (a container or taskset may allow fewer than exist).
    cpus = cpus if cpus is not None else len(os.sched_getaffinity(0))
    if memory_mib is None:
        memory_mib = int(psutil.virtual_memory().total * MEMORY_SHARE / 2**20)
    # Every camera costs its memory whichever worker has it; what more workers add is their
    # base. At least one worker even when memory is short: fewer workers would not help.
    spare = memory_mib - cameras * CAMERA_MIB
    by_memory = max(1, spare // WORKER_MIB)
    if spare < WORKER_MIB:
        log.warning("analysis of %d cameras needs ~%d MiB, more than the %d MiB planned for it",
                    cameras, cameras * CAMERA_MIB + WORKER_MIB, memory_mib)
    return max(1, min(cameras, cpus + SPARE_WORKERS, by_memory))


class AnalyticsSupervisor:
    """Starts, watches and stops the analysis pool; their messages go to ``queue``.

    ``workers``: how many processes (None: sized to the machine, `pool_size`);
    ``keyframes``: decode only the keyframes of main streams; ``min_fps``: the least rate
    load shedding may go down to; ``rebalance``: seconds between decisions to move a camera
    to a less busy worker (None: never, the cameras stay where they were first put).
    """

    def __init__(self, specs: list[WorkerSpec], *, workers: int | None = None,
                 keyframes: bool = True, min_fps: float = MIN_FPS,
                 rebalance: float | None = REBALANCE_EVERY) -> None:
        self.specs = specs
        self.keyframes = keyframes
        self.min_fps = min_fps
        self._ctx = multiprocessing.get_context("spawn")
        self.queue: queue.Queue[Message] = queue.Queue()
        self._stop = self._ctx.Event()
        self._stop_requested: float | None = None  # monotonic time of the first request
        size = pool_size(len(specs), configured=workers)
        # Camera i goes to worker i mod size: the same cameras after a restart, and cameras
        # listed together (often a site's) spread over the workers.
        self._shares: list[list[WorkerSpec]] = [specs[i::size] for i in range(size)]
        self._procs: list[multiprocessing.context.SpawnProcess | None] = [None] * size
        self._controls: list[_Line | None] = [None] * size
        self.rebalance_every = rebalance
        # Seconds per second of each camera at its configured rate, from its statistics: its
        # worker thread's wall time (CPU-s from a worker that does not say it) plus its share
        # of the worker's other CPU.
        self.cost: dict[str, float] = {}
        # Workers whose last statistics said they shed their rates: a reason to move at once.
        self._shedding: set[int] = set()
        # No move decided before this (monotonic): the last one's camera is being measured.
        self._settled = 0.0
        # The camera being handed over: (camera, from worker, to worker). One at a time.
        self._moving: tuple[str, int, int] | None = None
        self._lock = threading.Lock()  # _shares, _moving, _worker_of, health
        self.moves = 0
        self._forwarders: list[threading.Thread] = []
        self.workers = [WorkerHealth([s.camera for s in share]) for share in self._shares]
        self._worker_of = {s.camera: i for i, share in enumerate(self._shares) for s in share}
        # By camera: its worker's health (shared by the worker's cameras).
        self.health = {camera: self.workers[i] for camera, i in self._worker_of.items()}
        self._watcher = threading.Thread(target=self._watch, name="analytics-watch", daemon=True)

    def start(self) -> None:
        for name in _SINGLE_THREAD:
            os.environ.setdefault(name, "1")  # inherited by the spawned processes
        for index in range(len(self._shares)):
            self._spawn(index)
        if self._shares:
            self._watcher.start()
            log.info("analysis of %d cameras by %d processes", len(self.specs),
                     len(self._shares))

    def request_stop(self) -> None:
        """Tell the workers to finish; returns at once (see `stop`)."""
        if self._stop_requested is None:
            self._stop_requested = time.monotonic()
        self._stop.set()

    def stop(self) -> None:
        """Stop the workers within STOP_GRACE of the first stop request, killing those that
        take longer."""
        self.request_stop()
        # From the request: the node asks first, waits for its recorders, then calls this.
        deadline = (self._stop_requested or time.monotonic()) + STOP_GRACE
        # The watchdog first (it sees the event within 0.5 s): it must not start a worker
        # after the ones below have been waited for.
        if self._watcher.is_alive():
            self._watcher.join(timeout=2)
        for proc in self._procs:
            if proc is not None:
                proc.join(max(0.0, deadline - time.monotonic()))
        for proc in self._procs:
            if proc is not None and proc.is_alive():
                log.warning("analysis process %s did not stop in %.0f s: killed", proc.pid,
                            STOP_GRACE)
                proc.kill()
                proc.join(1.0)
        for health in self.workers:
            health.running, health.pid = False, None
        # The forwarders end once their process has exited and its queue is read out.
        deadline = time.monotonic() + 2
        for thread in self._forwarders:
            thread.join(max(0.0, deadline - time.monotonic()))

    def pid(self, camera: str) -> int | None:
        """The process analysing ``camera`` (shared with other cameras), if running."""
        index = self._worker_of.get(camera)
        proc = None if index is None else self._procs[index]
        return proc.pid if proc is not None and proc.is_alive() else None

    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p is not None and p.is_alive() and p.pid]

    def shares(self) -> list[list[str]]:
        """The cameras of each worker (a camera being handed over is in neither)."""
        with self._lock:
            return [[s.camera for s in share] for share in self._shares]

    def rebalance(self, cost: Mapping[str, float] | None = None) -> tuple[str, int, int] | None:
        """Start moving one camera to a less busy worker if that helps (`plan_move`), by
        ``cost`` or else the costs measured; the move, or None. Nothing while a move is
        under way."""
        cost = dict(self.cost if cost is None else cost)
        with self._lock:
            if self._moving is not None:
                return None
            move = plan_move([[s.camera for s in share] for share in self._shares], cost)
            if move is None:
                return None
            camera, source, target = move
            line = self._controls[source]
            # Out of the share now: a restart of the old worker must not take it back.
            self._shares[source] = [s for s in self._shares[source] if s.camera != camera]
            self._moving = move
        log.info("analysis of %s moves from process %d to %d (CPU-s/s by camera: %s)",
                 camera, source, target,
                 ", ".join(f"{c} {v:.2f}" for c, v in sorted(cost.items())))
        if line is not None:
            line.commands.put(Release(camera))
        return move

    def _released(self, camera: str) -> None:
        """The old worker has let go of ``camera`` (or died): the new one takes it on."""
        with self._lock:
            if self._moving is None or self._moving[0] != camera:
                return  # a late answer of a move already completed
            _, source, target = self._moving
            spec = next(s for s in self.specs if s.camera == camera)
            self._shares[target].append(spec)
            self._moving = None
            self._settled = time.monotonic() + SETTLE
            self.moves += 1
            self._worker_of[camera] = target
            self.health[camera] = self.workers[target]
            self.workers[source].cameras.remove(camera)
            self.workers[target].cameras.append(camera)
            line = self._controls[target]
        if line is not None:
            line.commands.put(Adopt(spec))

    def _spawn(self, index: int) -> None:
        outbox: multiprocessing.queues.Queue[Message] = self._ctx.Queue()
        line = _Line(self._ctx.Queue(), self._ctx.Queue())
        with self._lock:
            share = list(self._shares[index])
        proc = self._ctx.Process(
            target=_worker_main,
            args=(share, outbox, self._stop),
            kwargs={"keyframes": self.keyframes, "min_fps": self.min_fps, "line": line},
            name=f"analytics-{index}", daemon=True,
        )
        proc.start()
        self._procs[index] = proc
        self._controls[index] = line
        health = self.workers[index]
        health.running, health.pid, health.started = True, proc.pid, time.monotonic()
        forwarder = threading.Thread(target=self._forward, args=(proc, outbox),
                                     name=f"analytics-{index}-out", daemon=True)
        forwarder.start()
        self._forwarders = [t for t in self._forwarders if t.is_alive()] + [forwarder]

    def _forward(self, proc: multiprocessing.context.SpawnProcess,
                 outbox: multiprocessing.queues.Queue[Message]) -> None:
        """Move one process's messages to the node's queue until it has exited."""
        while True:
            try:
                message = outbox.get(timeout=0.5)
                self.note(message)
                self.queue.put(message)
            except queue.Empty:
                if not proc.is_alive():
                    break
            except (EOFError, OSError, pickle.UnpicklingError):
                break  # a message cut off by the process's death
        outbox.close()

    def note(self, message: Message) -> None:
        """Keep what a camera costs at its configured rate, and whether its worker sheds,
        from its statistics."""
        if not isinstance(message, Stats):
            return
        with self._lock:
            worker = self._worker_of.get(message.camera)
            if worker is not None and message.online:
                # Every camera of a worker sheds by the same factor: one report says it.
                (self._shedding.add if message.shed else self._shedding.discard)(worker)
        if not message.online:
            self.cost[message.camera] = 0.0  # a camera without a stream costs nothing
            return
        if message.cpu_per_frame <= 0:
            return  # no frame analysed in the interval, or a worker of an older version
        spec = next((s for s in self.specs if s.camera == message.camera), None)
        configured = spec.config.fps if spec is not None else message.analysis_fps
        per_frame = message.wall_per_frame or message.cpu_per_frame
        now = per_frame * configured + message.cpu_other
        before = self.cost.get(message.camera)
        self.cost[message.camera] = now if before is None else (
            before + COST_WEIGHT * (now - before))

    def _watch(self) -> None:
        failures = [0] * len(self._procs)
        due: dict[int, float] = {}
        next_balance = time.monotonic() + (self.rebalance_every or 0.0)
        while not self._stop.wait(0.5):
            now = time.monotonic()
            self._read_released()
            if self.rebalance_every is not None and (now >= next_balance or self._urgent(now)):
                self.rebalance()
                next_balance = now + self.rebalance_every
                self._settled = max(self._settled, now + STATS_INTERVAL)
            for index, proc in enumerate(self._procs):
                health = self.workers[index]
                if health.running and proc is not None and not proc.is_alive():
                    moving = self._moving
                    if moving is not None and moving[1] == index:
                        self._released(moving[0])  # it died: nobody analyses the camera now
                    health.running, health.pid = False, None
                    health.last_exit = f"exit code {proc.exitcode}"
                    if now - health.started > STEADY:  # a crash now and then: retry at once
                        failures[index] = 0
                    failures[index] += 1
                    delay = backoff(failures[index])
                    due[index] = now + delay
                    log.error("analysis of %s died (%s); restarting in %.0f s",
                              ", ".join(health.cameras), health.last_exit, delay)
                elif not health.running and now >= due.get(index, now):
                    if self._stop.is_set():
                        return
                    health.restarts += 1
                    self._spawn(index)

    def _urgent(self, now: float) -> bool:
        """A worker sheds while another does not, and the last move has settled: look for a
        move now. When every worker sheds the machine is full: moves wait for the next round
        (each one ends a camera's motion span, and would gain little)."""
        shedding = len(self._shedding)
        return (0 < shedding < len(self._procs) and self._moving is None
                and now >= self._settled)

    def _read_released(self) -> None:
        for line in self._controls:
            if line is None:
                continue
            while True:
                try:
                    camera = line.released.get_nowait()
                except (queue.Empty, EOFError, OSError, pickle.UnpicklingError):
                    break
                self._released(camera)


@dataclass(frozen=True)
class _Line:
    """A worker's control queues: commands to it, the cameras it has let go of from it."""

    commands: multiprocessing.queues.Queue[Command]
    released: multiprocessing.queues.Queue[str]


def _worker_main(specs: Sequence[WorkerSpec], outbox: multiprocessing.queues.Queue[Message],
                 stop: multiprocessing.synchronize.Event, *, keyframes: bool,
                 min_fps: float, line: _Line | None = None) -> None:
    """A pool process: analyse, hand over the last messages, and exit at once.

    ``os._exit`` rather than a normal exit: dozens of decoder threads may still be inside
    FFmpeg, and an interpreter shutting down under them can hang or crash; everything worth
    keeping is in the queue, whose feeder thread is waited for first.
    """
    code = 0
    try:
        control = None if line is None else Control(line.commands, line.released)
        run_worker(specs, outbox, stop, keyframes=keyframes, min_fps=min_fps, control=control)
    except BaseException:  # the process ends here either way; the watchdog sees the code
        log.exception("analysis of %s failed", ", ".join(s.camera for s in specs))
        code = 1
    finally:
        outbox.close()
        outbox.join_thread()
        if line is not None:  # a camera let go of just before the stop is said so
            line.released.close()
            line.released.join_thread()
        os._exit(code)
