"""Redacted copies of recorded segments, for people who may only see redacted video.

    <storage>/redacted/<camera>/<id>-<digest>.boxes.json   where to blur: the search's result
    <storage>/redacted/<camera>/<id>-<digest>.mp4          the copy a viewer is sent

A segment is searched for faces once (the expensive part: `custodes.redaction.video.plan_boxes`)
and its boxes are kept beside the copies; every copy and every viewer of the segment reuses
them (exports do not yet: they join the range's segments into one file first, and search
that). The boxes' digest covers the redaction settings and the segment's file, so changed
settings search again rather than reuse; a copy's digest covers the boxes' and the camera's
privacy zones (zones are drawn at encoding, they do not change where the faces are).

Copies are made by a small pool of threads, as many as the machine has cores, one segment each
(the detector runs on one thread: a segment is a core's work, so viewers and prefetches share
the cores rather than each getting a thread of their own). A viewer's request goes ahead of
prefetches. A copy is at most PLAYBACK_LINES lines: a browser's picture, not the original's.
Nothing outlives its segment: retention's deletions are followed by a prune of both files.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import queue
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

from sqlalchemy import select

from custodes.record.playback import Segment
from custodes.redaction.detect import NODE_SETTINGS, RedactionSettings
from custodes.redaction.video import BoxPlan, plan_boxes, redact_file
from custodes.store import schema

if TYPE_CHECKING:
    from custodes.app import Node

log = logging.getLogger(__name__)

REDACTED_KEEP: Final = 24 * 3600.0  # seconds a redacted copy is kept after it was made
PLAYBACK_LINES: Final = 720  # copies for viewers are at most this tall
# Prefetches waiting beyond this many per worker are dropped: the viewer's own request makes
# the copy if it is still wanted.
PREFETCH_PER_WORKER: Final = 4
VIEWER, PREFETCH = 0, 1  # queue priorities: a viewer waiting goes first

_FILE_NAME = re.compile(r"^(\d+)-[0-9a-f]{12}\.(mp4|boxes\.json)$")


@dataclass(eq=False)
class _Job:
    node: Node
    segment: Segment
    target: Path
    done: threading.Event = field(default_factory=threading.Event)
    started: bool = False
    error: BaseException | None = None


class RedactedCopies:
    """Redacted copies of segments, made once and shared by every viewer who asks.

    Copies go when their segment is gone from the index (retention deleted it) or after
    ``keep`` seconds: a redacted copy must not outlive the footage it was made from. Box files
    go with their segment.
    """

    def __init__(self, keep: float = REDACTED_KEEP,
                 settings: RedactionSettings = NODE_SETTINGS,
                 workers: int | None = None) -> None:
        self.keep = keep
        self.settings = settings
        self.workers = max(1, workers or os.cpu_count() or 1)
        self._jobs: dict[int, _Job] = {}
        self._lock = threading.Lock()
        self._queue: queue.PriorityQueue[tuple[int, int, _Job]] = queue.PriorityQueue()
        self._order = itertools.count()  # FIFO within a priority; jobs are never compared
        self._threads: list[threading.Thread] = []

    def folder(self, node: Node, camera: str) -> Path:
        return node.layout.root / "redacted" / camera

    def boxes_path(self, node: Node, segment: Segment) -> Path:
        # The segment's path and start too: SQLite may reuse the id of a deleted last row.
        what = json.dumps([self.settings.digest(), segment.path, segment.start])
        digest = hashlib.sha256(what.encode()).hexdigest()[:12]
        return self.folder(node, segment.camera) / f"{segment.id}-{digest}.boxes.json"

    def path(self, node: Node, segment: Segment) -> Path:
        zones = node.config.cameras[segment.camera].privacy_zones
        what = json.dumps([self.boxes_path(node, segment).name, zones, PLAYBACK_LINES])
        digest = hashlib.sha256(what.encode()).hexdigest()[:12]
        return self.folder(node, segment.camera) / f"{segment.id}-{digest}.mp4"

    def boxes(self, node: Node, segment: Segment) -> BoxPlan:
        """Where to blur in ``segment``: from its box file, or searched now and saved."""
        path = self.boxes_path(node, segment)
        plan = BoxPlan.load(path, self.settings)
        if plan is not None:
            log.debug("segment %d: boxes reused", segment.id)
            return plan
        started = time.monotonic()
        plan = plan_boxes(self._source(node, segment), self.settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        plan.save(path)
        log.info("segment %d (%s): %d frames searched for faces in %.1f s", segment.id,
                 segment.camera, plan.frames, time.monotonic() - started)
        return plan

    def get(self, node: Node, segment: Segment) -> Path:
        """The redacted copy of ``segment``, made now if needed (one maker per segment)."""
        target = self.path(node, segment)
        if target.is_file():
            return target
        job = self._submit(node, segment, target, VIEWER)
        job.done.wait()
        if job.error is not None:
            raise job.error
        return target

    def prefetch(self, node: Node, segment: Segment) -> None:
        """Make the copy in the background, so it is ready when playback reaches it."""
        target = self.path(node, segment)
        if target.is_file():
            return
        if self._queue.qsize() >= PREFETCH_PER_WORKER * self.workers:
            return
        self._submit(node, segment, target, PREFETCH)

    def _submit(self, node: Node, segment: Segment, target: Path, priority: int) -> _Job:
        with self._lock:
            job = self._jobs.get(segment.id)
            if job is None or job.target != target:
                job = self._jobs[segment.id] = _Job(node, segment, target)
                self._queue.put((priority, next(self._order), job))
            elif priority == VIEWER and not job.started:
                # Queued as a prefetch: queue it again ahead; whichever entry comes first
                # makes it, the other is skipped.
                self._queue.put((priority, next(self._order), job))
            while len(self._threads) < self.workers:
                thread = threading.Thread(target=self._run, daemon=True,
                                          name=f"redact-{len(self._threads) + 1}")
                self._threads.append(thread)
                thread.start()
        return job

    def _run(self) -> None:
        while True:
            _, _, job = self._queue.get()
            with self._lock:
                if job.started:
                    continue
                job.started = True
            try:
                self._make(job.node, job.segment, job.target)
            except BaseException as exc:
                job.error = exc
                if not isinstance(exc, FileNotFoundError):
                    log.exception("could not make the redacted copy of segment %d",
                                  job.segment.id)
            finally:
                with self._lock:
                    if self._jobs.get(job.segment.id) is job:
                        del self._jobs[job.segment.id]
                job.done.set()

    def _source(self, node: Node, segment: Segment) -> Path:
        base = node.layout.recordings.resolve()
        source = (base / segment.path).resolve()
        if not source.is_relative_to(base) or not source.is_file():
            raise FileNotFoundError(source)
        return source

    def _make(self, node: Node, segment: Segment, target: Path) -> None:
        if target.is_file():  # made while this job waited in the queue
            return
        started = time.monotonic()
        plan = self.boxes(node, segment)
        redact_file(self._source(node, segment), target, settings=self.settings, plan=plan,
                    zones=node.config.cameras[segment.camera].privacy_zones,
                    max_lines=PLAYBACK_LINES)
        log.info("redacted copy of segment %d (%s, %.1f s of video) made in %.1f s",
                 segment.id, segment.camera, segment.duration, time.monotonic() - started)
        self.prune(node)

    def prune(self, node: Node) -> int:
        """Delete copies and box files whose segment is gone, and copies older than
        ``keep``."""
        root = node.layout.root / "redacted"
        if not root.is_dir():
            return 0
        files: dict[int, list[Path]] = {}
        for path in root.glob("*/*"):
            m = _FILE_NAME.match(path.name)
            if m:
                files.setdefault(int(m.group(1)), []).append(path)
        if not files:
            return 0
        with node.store.read() as conn:
            alive = set(conn.execute(
                select(schema.segments.c.id).where(schema.segments.c.id.in_(sorted(files)))
            ).scalars())
        now = time.time()
        removed = 0
        for segment_id, paths in files.items():
            for path in paths:
                try:
                    expired = path.suffix == ".mp4" and now - path.stat().st_mtime > self.keep
                    if segment_id not in alive or expired:
                        path.unlink()
                        removed += 1
                except FileNotFoundError:
                    continue
        return removed
