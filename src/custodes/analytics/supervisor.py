"""Keeps one analysis process per camera running, and restarts one that dies.

Processes, not threads: the detector and the decoder hold the GIL for milliseconds at a time,
and a crash in native code must take down one camera's analysis, not the recorder. Each
process is limited to one thread of native maths so that N cameras share the cores evenly.

Every process gets a queue of its own, emptied by a thread into the one ``queue`` the node
reads: a process killed while writing to a shared multiprocessing queue would leave its lock
held and silence every other camera.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.context
import multiprocessing.queues
import os
import pickle
import queue
import threading
import time
from dataclasses import dataclass

from custodes.analytics.worker import Message, WorkerSpec, run_worker
from custodes.process import backoff

log = logging.getLogger(__name__)

STOP_GRACE = 5.0
# One thread each for the maths libraries: parallelism comes from running cameras side by side.
_SINGLE_THREAD = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass
class WorkerHealth:
    running: bool = False
    restarts: int = 0
    last_exit: str = ""


class AnalyticsSupervisor:
    """Starts, watches and stops the analysis processes; their messages go to ``queue``."""

    def __init__(self, specs: list[WorkerSpec]) -> None:
        self.specs = specs
        self._ctx = multiprocessing.get_context("spawn")
        self.queue: queue.Queue[Message] = queue.Queue()
        self._stop = self._ctx.Event()
        self._procs: dict[str, multiprocessing.context.SpawnProcess] = {}
        self.health = {spec.camera: WorkerHealth() for spec in specs}
        self._watcher = threading.Thread(target=self._watch, name="analytics-watch", daemon=True)

    def start(self) -> None:
        for name in _SINGLE_THREAD:
            os.environ.setdefault(name, "1")  # inherited by the spawned processes
        for spec in self.specs:
            self._spawn(spec)
        self._watcher.start()

    def stop(self) -> None:
        self._stop.set()
        deadline = time.monotonic() + STOP_GRACE
        for proc in self._procs.values():
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()
        self._watcher.join(timeout=5)

    def pid(self, camera: str) -> int | None:
        proc = self._procs.get(camera)
        return proc.pid if proc is not None and proc.is_alive() else None

    def _spawn(self, spec: WorkerSpec) -> None:
        outbox: multiprocessing.queues.Queue[Message] = self._ctx.Queue()
        proc = self._ctx.Process(
            target=run_worker, args=(spec, outbox, self._stop),
            name=f"analytics-{spec.camera}", daemon=True,
        )
        proc.start()
        self._procs[spec.camera] = proc
        self.health[spec.camera].running = True
        threading.Thread(target=self._forward, args=(proc, outbox),
                         name=f"analytics-{spec.camera}-out", daemon=True).start()

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
        failures = dict.fromkeys(self._procs, 0)
        due: dict[str, float] = {}
        while not self._stop.wait(0.5):
            now = time.monotonic()
            for spec in self.specs:
                proc = self._procs[spec.camera]
                health = self.health[spec.camera]
                if health.running and not proc.is_alive():
                    health.running = False
                    health.last_exit = f"exit code {proc.exitcode}"
                    failures[spec.camera] += 1
                    delay = backoff(failures[spec.camera])
                    due[spec.camera] = now + delay
                    log.error("analysis of %s died (%s); restarting in %.0f s",
                              spec.camera, health.last_exit, delay)
                elif not health.running and now >= due.get(spec.camera, now):
                    health.restarts += 1
                    self._spawn(spec)
