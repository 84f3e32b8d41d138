"""One supervised ffmpeg per camera: start, watch, restart with backoff, report health.

A camera that fails is retried after 1, 2, 4 ... 60 s. It is logged once when it goes
down and once when it comes back, however many retries happen in between, so that a
flapping camera does not flood the log. A process that stays alive but produces no segment
for twice the segment length is considered stalled and restarted.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from custodes.capture.ffmpeg import parse_list_line, record_argv, record_env
from custodes.masking import mask_credentials
from custodes.process import backoff, die_with_parent

log = logging.getLogger(__name__)

STOP_GRACE = 5.0  # seconds ffmpeg gets to close its last segment after SIGINT
CLOCK_DRIFT_LIMIT = 2.0  # re-anchor stream time to the wall clock beyond this


class State(StrEnum):
    STARTING = "starting"
    ONLINE = "online"
    OFFLINE = "offline"
    STOPPED = "stopped"


@dataclass(frozen=True)
class CompletedSegment:
    """A segment ffmpeg has closed, still in the cache folder."""

    camera: str
    path: Path
    start: float  # UTC epoch seconds
    end: float


@dataclass
class Health:
    state: State = State.STARTING
    reason: str = ""
    since: float = field(default_factory=time.time)
    last_segment_at: float | None = None
    segments: int = 0
    restarts: int = 0


class _FfmpegRun:
    """One ffmpeg process: its output read line by line, its stop and its outcome."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=record_env(dict(os.environ)),
            preexec_fn=die_with_parent,  # noqa: PLW1509 - only a prctl, no locks taken
        )
        self.errors: deque[str] = deque(maxlen=10)
        self.anchor: float | None = None  # wall clock minus stream time, for this run
        self.produced = False
        self._interrupted_at: float | None = None
        self._killed_for = ""

    def lines(self, tick: float = 0.5) -> Iterator[tuple[str, str]]:
        """("stdout" | "stderr", line) as ffmpeg writes them, ("tick", "") when idle;
        ends when ffmpeg has closed both pipes."""
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        names = {self.proc.stdout.fileno(): "stdout", self.proc.stderr.fileno(): "stderr"}
        partial = dict.fromkeys(names, b"")
        with selectors.DefaultSelector() as sel:
            for pipe in (self.proc.stdout, self.proc.stderr):
                sel.register(pipe, selectors.EVENT_READ)
            while sel.get_map():
                ready = sel.select(timeout=tick)
                for key, _ in ready:
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        sel.unregister(key.fileobj)
                        continue
                    *complete, partial[key.fd] = (partial[key.fd] + chunk).split(b"\n")
                    for raw in complete:
                        if line := raw.decode("utf-8", "replace").strip():
                            yield names[key.fd], line
                if not ready:
                    yield "tick", ""
                if (
                    self._interrupted_at is not None
                    and time.monotonic() - self._interrupted_at > STOP_GRACE
                ):
                    self.kill("did not stop in time")
                    break
        self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()

    def interrupt(self) -> None:
        """SIGINT once: ffmpeg closes its current segment and reports it, then exits."""
        if self._interrupted_at is None:
            self._interrupted_at = time.monotonic()
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)

    def kill(self, reason: str) -> None:
        if self.proc.poll() is None:
            self._killed_for = reason
            self.proc.kill()

    def outcome(self) -> str:
        if self._killed_for:
            return self._killed_for
        last = f": {self.errors[-1]}" if self.errors else ""
        return f"ffmpeg exited with code {self.proc.returncode}{last}"


SegmentSink = Callable[[CompletedSegment], None]
StateSink = Callable[[str, State, str], None]


class CaptureSupervisor:
    """Keeps one camera recording to ``cache_dir`` until ``stop`` is called."""

    def __init__(
        self,
        camera: str,
        url: str,
        cache_dir: Path,
        segment_seconds: int,
        *,
        on_segment: SegmentSink,
        on_state: StateSink | None = None,
    ) -> None:
        self.camera = camera
        self.url = url
        self.cache_dir = cache_dir
        self.segment_seconds = segment_seconds
        self.on_segment = on_segment
        self.on_state = on_state
        self.health = Health()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"capture-{camera}", daemon=True)
        self._proc: subprocess.Popen[bytes] | None = None
        self._run_number = 0

    def start(self) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Ask ffmpeg to close its current segment; the loop sends it SIGINT."""
        self._stop.set()

    def join(self) -> None:
        self._thread.join(timeout=STOP_GRACE + 5)

    def stop(self) -> None:
        self.request_stop()
        self.join()

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    # -- the loop -------------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            produced, reason = self._record_once()
            if self._stop.is_set():
                break
            failures = 0 if produced else failures + 1
            self.health.restarts += 1
            self._set_state(State.OFFLINE, reason)
            delay = backoff(failures)
            log.debug("%s: retrying in %.0f s (%s)", self.camera, delay, reason)
            self._stop.wait(delay)
        self._set_state(State.STOPPED, "")

    def _record_once(self) -> tuple[bool, str]:
        """Run ffmpeg until it exits or stalls; return (produced a segment, why it ended)."""
        self._run_number += 1
        prefix = f"r{self._run_number}-"
        argv = record_argv(self.url, self.cache_dir, self.segment_seconds, self._run_number)
        try:
            run = _FfmpegRun(argv)
        except OSError as exc:
            return False, f"cannot start ffmpeg: {exc}"
        self._proc = run.proc
        stall_limit = 2 * self.segment_seconds
        progress_at = time.monotonic()
        for source, line in run.lines():
            now = time.monotonic()
            if source == "stdout":
                run.anchor = self._segment_done(line, run.anchor)
                run.produced = True
                progress_at = now
            elif source == "stderr":
                run.errors.append(mask_credentials(line, self.url))
                log.debug("%s ffmpeg: %s", self.camera, run.errors[-1])
            if self._stop.is_set():
                run.interrupt()
            elif not run.produced and self.health.state != State.ONLINE and self._writing(prefix):
                self._set_state(State.ONLINE, "")
                progress_at = now
            elif now - progress_at > stall_limit:
                run.kill(f"stalled: no segment for {stall_limit} s")
        self._proc = None
        return run.produced, run.outcome()

    def _writing(self, prefix: str) -> bool:
        """Has ffmpeg opened a segment file in this run, i.e. is the stream flowing?"""
        try:
            with os.scandir(self.cache_dir) as entries:
                return any(e.name.startswith(prefix) for e in entries)
        except OSError:
            return False

    def _segment_done(self, line: str, anchor: float | None) -> float | None:
        entry = parse_list_line(line)
        if entry is None:
            log.warning("%s: unexpected segment list line %r", self.camera, line)
            return anchor
        now = time.time()
        # ffmpeg reports stream times; the segment closed just now, so its end is "now".
        # Keeping one anchor per run keeps consecutive segments exactly contiguous.
        if anchor is None or abs(anchor + entry.end - now) > CLOCK_DRIFT_LIMIT:
            anchor = now - entry.end
        segment = CompletedSegment(
            camera=self.camera,
            path=self.cache_dir / entry.name,
            start=anchor + entry.start,
            end=anchor + entry.end,
        )
        self.health.segments += 1
        self.health.last_segment_at = now
        if self.health.state != State.ONLINE:
            self._set_state(State.ONLINE, "")
        self.on_segment(segment)
        return anchor

    def _set_state(self, state: State, reason: str) -> None:
        # The reason is shown to every role with status.view and logged: never a password,
        # whichever of ffmpeg's messages or our own it came from.
        reason = mask_credentials(reason, self.url)
        previous = self.health
        if previous.state == state:
            return
        # A failed retry moves "offline" to "starting" and back: that is not news.
        if previous.state == State.OFFLINE and state == State.STARTING:
            return
        now = time.time()
        if state == State.OFFLINE:
            log.warning("camera %s is offline: %s (retrying)", self.camera, reason)
        elif state == State.ONLINE and previous.state == State.OFFLINE:
            log.info("camera %s is back online after %.0f s", self.camera, now - previous.since)
        elif state == State.ONLINE:
            log.info("camera %s is recording", self.camera)
        self.health.state = state
        self.health.reason = reason
        self.health.since = now
        if self.on_state is not None:
            self.on_state(self.camera, state, reason)
