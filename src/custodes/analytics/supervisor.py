"""Keeps a pool of analysis processes running, sized to the machine; restarts one that dies.

Processes, not threads: the detector and the decoder hold the GIL for milliseconds at a time,
and a crash in native code must take down one worker's analysis, not the recorder. Each
process is limited to one thread of native maths and analyses its share of the cameras in
turn (worker.py), so analysis costs what the machine has, not what the camera count asks:
the pool has at most one process per core but one (that core is left to recording and the
web server), fewer when memory is short, and never more than the cameras. A worker that
cannot keep up lowers its cameras' rates instead of asking for more.

Every process gets a queue of its own, emptied by a thread into the one ``queue`` the node
reads: a process killed while writing to a shared multiprocessing queue would leave its lock
held and silence every other camera.
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
from collections.abc import Sequence
from dataclasses import dataclass, field

import psutil

from custodes.analytics.worker import MIN_FPS, Message, WorkerSpec, run_worker
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


@dataclass
class WorkerHealth:
    cameras: list[str] = field(default_factory=list)
    running: bool = False
    restarts: int = 0
    last_exit: str = ""
    pid: int | None = None
    started: float = 0.0  # monotonic time of the last start


def pool_size(cameras: int, *, cpus: int | None = None, memory_mib: int | None = None,
              configured: int | None = None) -> int:
    """How many analysis processes for ``cameras``: ``configured`` if given, else bounded by
    the cores and by the memory analysis may use; never more than cameras. All the cores, not
    all but one: the workers run at NICENESS 10, so recording, live view and the web server
    take a core from them whenever they need it, and otherwise a second core stays idle
    while analysis sheds its rate (bench/analytics.py, 8 cameras on 2 cores: 2.2 of 5 fps
    with the node using 0.45 of the cores)."""
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
    return max(1, min(cameras, cpus, by_memory))


class AnalyticsSupervisor:
    """Starts, watches and stops the analysis pool; their messages go to ``queue``.

    ``workers``: how many processes (None: sized to the machine, `pool_size`);
    ``keyframes``: decode only the keyframes of main streams; ``min_fps``: the least rate
    load shedding may go down to.
    """

    def __init__(self, specs: list[WorkerSpec], *, workers: int | None = None,
                 keyframes: bool = True, min_fps: float = MIN_FPS) -> None:
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

    def _spawn(self, index: int) -> None:
        outbox: multiprocessing.queues.Queue[Message] = self._ctx.Queue()
        proc = self._ctx.Process(
            target=_worker_main,
            args=(self._shares[index], outbox, self._stop, self.keyframes, self.min_fps),
            name=f"analytics-{index}", daemon=True,
        )
        proc.start()
        self._procs[index] = proc
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
                self.queue.put(outbox.get(timeout=0.5))
            except queue.Empty:
                if not proc.is_alive():
                    break
            except (EOFError, OSError, pickle.UnpicklingError):
                break  # a message cut off by the process's death
        outbox.close()

    def _watch(self) -> None:
        failures = [0] * len(self._procs)
        due: dict[int, float] = {}
        while not self._stop.wait(0.5):
            now = time.monotonic()
            for index, proc in enumerate(self._procs):
                health = self.workers[index]
                if health.running and proc is not None and not proc.is_alive():
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


def _worker_main(specs: Sequence[WorkerSpec], outbox: multiprocessing.queues.Queue[Message],
                 stop: multiprocessing.synchronize.Event, keyframes: bool,
                 min_fps: float) -> None:
    """A pool process: analyse, hand over the last messages, and exit at once.

    ``os._exit`` rather than a normal exit: dozens of decoder threads may still be inside
    FFmpeg, and an interpreter shutting down under them can hang or crash; everything worth
    keeping is in the queue, whose feeder thread is waited for first.
    """
    code = 0
    try:
        run_worker(specs, outbox, stop, keyframes=keyframes, min_fps=min_fps)
    except BaseException:  # the process ends here either way; the watchdog sees the code
        log.exception("analysis of %s failed", ", ".join(s.camera for s in specs))
        code = 1
    finally:
        outbox.close()
        outbox.join_thread()
        os._exit(code)
