"""Keeps the live picture service's process running; restarts it when it dies.

A process of its own, not threads of the node: the decoders and the detector are native code,
and a crash there must cost the live pictures for a second, not the recorder. It is not niced
like analysis (custodes.analytics.worker.NICENESS): someone is looking at its pictures now,
while analysis can fall behind and catch up; the service's own bounds (custodes.live.service)
keep it from taking more than its threads' cores.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.context
import multiprocessing.synchronize
import os
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from custodes.live.service import LiveCamera, LiveService, Schedule
from custodes.process import backoff, die_with_parent

log = logging.getLogger(__name__)

STOP_GRACE = 3.0  # seconds the process gets to end after the stop event; then it is killed
STEADY = 60.0  # a process that ran this long before dying is restarted without backoff
_SINGLE_THREAD = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


class LiveSupervisor:
    """Starts, watches and stops the live picture process for `cameras`."""

    def __init__(self, folder: Path, cameras: Sequence[LiveCamera], *,
                 threads: int | None = None, schedule: Schedule = Schedule.NEWEST) -> None:
        self.folder = folder
        self.cameras = list(cameras)
        self.threads = threads
        self.schedule = schedule
        self._ctx = multiprocessing.get_context("spawn")
        self._stop = self._ctx.Event()
        self._proc: multiprocessing.context.SpawnProcess | None = None
        self._started = 0.0
        self._failures = 0
        self.restarts = 0
        self._watcher = threading.Thread(target=self._watch, name="live-watch", daemon=True)

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.is_alive() else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    def start(self) -> None:
        if not self.cameras:
            return
        for name in _SINGLE_THREAD:
            os.environ.setdefault(name, "1")  # inherited by the spawned process
        self._spawn()
        self._watcher.start()

    def request_stop(self) -> None:
        self._stop.set()

    def stop(self) -> None:
        self._stop.set()
        if self._watcher.is_alive():
            self._watcher.join(timeout=2)
        proc = self._proc
        if proc is None:
            return
        proc.join(STOP_GRACE)
        if proc.is_alive():
            log.warning("live picture process %s did not stop in %.0f s: killed", proc.pid,
                        STOP_GRACE)
            proc.kill()
            proc.join(1.0)

    def _spawn(self) -> None:
        proc = self._ctx.Process(target=_main, args=(self.folder, self.cameras, self._stop,
                                                     self.threads, self.schedule),
                                 name="live", daemon=True)
        proc.start()
        self._proc, self._started = proc, time.monotonic()

    def _watch(self) -> None:
        due: float | None = None
        while not self._stop.wait(0.5):
            proc, now = self._proc, time.monotonic()
            if due is None and proc is not None and not proc.is_alive():
                if now - self._started > STEADY:
                    self._failures = 0
                self._failures += 1
                delay = backoff(self._failures)
                log.error("live picture process died (exit code %s); restarting in %.0f s",
                          proc.exitcode, delay)
                due = now + delay
            elif due is not None and now >= due:
                due = None
                self.restarts += 1
                self._spawn()


def _main(folder: Path, cameras: Sequence[LiveCamera], stop: multiprocessing.synchronize.Event,
          threads: int | None, schedule: Schedule) -> None:
    parent = os.getppid()
    die_with_parent()
    if os.getppid() != parent:  # the parent died before prctl took effect
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the node stops us itself, in order
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    code = 0
    try:
        LiveService(folder, cameras, threads=threads, schedule=schedule).run(stop)
    except BaseException:
        log.exception("the live picture service failed")
        code = 1
    finally:
        # As analysis workers do: decoder threads may still be inside FFmpeg, and an
        # interpreter shutting down under them can hang.
        os._exit(code)
