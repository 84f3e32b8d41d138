"""Redacted copies of recorded segments, for people who may only see redacted video.

A copy is made on first request (faces and privacy zones blurred, re-encoded), shared by
every viewer, and never outlives its segment: retention's deletions are followed by a prune.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import queue
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select

from custodes.record.playback import Segment
from custodes.redaction.video import redact_file
from custodes.store import schema

if TYPE_CHECKING:
    from custodes.app import Node

log = logging.getLogger(__name__)

REDACTED_KEEP = 24 * 3600.0  # seconds a redacted copy is kept after it was made

_COPY_NAME = re.compile(r"^(\d+)-[0-9a-f]{12}\.mp4$")


@dataclass
class _Job:
    done: threading.Event
    error: BaseException | None = None


class RedactedCopies:
    """Redacted copies of segments, made once and shared by every viewer who asks.

    The file name carries the segment id and a digest of the camera's privacy zones and the
    segment's file, so a change of zones makes new copies rather than serving old ones.
    Copies go when their segment is gone from the index (retention deleted it) or after
    ``keep`` seconds: a redacted copy must not outlive the footage it was made from.
    """

    def __init__(self, keep: float = REDACTED_KEEP) -> None:
        self.keep = keep
        self._jobs: dict[int, _Job] = {}
        self._lock = threading.Lock()
        self._queue: queue.Queue[tuple[Node, Segment]] = queue.Queue(maxsize=8)
        self._worker: threading.Thread | None = None

    def folder(self, node: Node, camera: str) -> Path:
        return node.layout.root / "redacted" / camera

    def path(self, node: Node, segment: Segment) -> Path:
        # The segment's path and start too: SQLite may reuse the id of a deleted last row.
        zones = node.config.cameras[segment.camera].privacy_zones
        what = json.dumps([zones, segment.path, segment.start])
        digest = hashlib.sha256(what.encode()).hexdigest()[:12]
        return self.folder(node, segment.camera) / f"{segment.id}-{digest}.mp4"

    def get(self, node: Node, segment: Segment) -> Path:
        """The redacted copy of ``segment``, made now if needed (one maker per segment)."""
        target = self.path(node, segment)
        if target.is_file():
            return target
        with self._lock:
            job = self._jobs.get(segment.id)
            mine = job is None
            if job is None:
                job = self._jobs[segment.id] = _Job(threading.Event())
        if not mine:
            job.done.wait()
            if job.error is not None:
                raise job.error
            return target
        try:
            self._make(node, segment, target)
        except BaseException as exc:
            job.error = exc
            raise
        finally:
            job.done.set()
            with self._lock:
                self._jobs.pop(segment.id, None)
        return target

    def prefetch(self, node: Node, segment: Segment) -> None:
        """Make the copy in the background, so it is ready when playback reaches it."""
        if self.path(node, segment).is_file():
            return
        with self._lock:
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name="redact-prefetch",
                                                daemon=True)
                self._worker.start()
        with contextlib.suppress(queue.Full):  # if full, the viewer's own request makes it
            self._queue.put_nowait((node, segment))

    def _run(self) -> None:
        while True:
            node, segment = self._queue.get()
            try:
                self.get(node, segment)
            except Exception:
                log.exception("could not make the redacted copy of segment %d", segment.id)

    def _make(self, node: Node, segment: Segment, target: Path) -> None:
        base = node.layout.recordings.resolve()
        source = (base / segment.path).resolve()
        if not source.is_relative_to(base) or not source.is_file():
            raise FileNotFoundError(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        redact_file(source, target, zones=node.config.cameras[segment.camera].privacy_zones)
        log.info("redacted copy of segment %d (%s, %.1f s of video) made in %.1f s",
                 segment.id, segment.camera, segment.duration, time.monotonic() - started)
        self.prune(node)

    def prune(self, node: Node) -> int:
        """Delete copies whose segment is gone or that are older than ``keep``."""
        root = node.layout.root / "redacted"
        if not root.is_dir():
            return 0
        copies: dict[int, list[Path]] = {}
        for path in root.glob("*/*.mp4"):
            m = _COPY_NAME.match(path.name)
            if m:
                copies.setdefault(int(m.group(1)), []).append(path)
        if not copies:
            return 0
        with node.store.read() as conn:
            alive = set(conn.execute(
                select(schema.segments.c.id).where(schema.segments.c.id.in_(sorted(copies)))
            ).scalars())
        now = time.time()
        removed = 0
        for segment_id, paths in copies.items():
            for path in paths:
                try:
                    if segment_id not in alive or now - path.stat().st_mtime > self.keep:
                        path.unlink()
                        removed += 1
                except FileNotFoundError:
                    continue
        return removed
