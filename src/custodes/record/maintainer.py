"""The record maintainer: completed segments go from the cache into the index.

Each segment ffmpeg announces is checked (cheaply, from its box structure), moved to its
place under ``recordings/`` and given a row; a file that cannot be used is moved to
``quarantine/`` with the reason. At start, ``reconcile`` repairs whatever a crash left:
segments still in the cache, files without rows and rows without files.

The file is always moved before its row is written: a crash in between leaves a file
without a row, which reconciliation indexes, rather than a row pointing at nothing.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Connection, delete, insert, select

from custodes.capture.ffmpeg import start_from_cache_name
from custodes.capture.supervisor import CompletedSegment
from custodes.media import MediaError, mp4_is_complete, probe
from custodes.record.layout import Layout, start_from_path
from custodes.store import schema
from custodes.store.db import Store

log = logging.getLogger(__name__)

BATCH_WAIT = 0.2  # seconds to gather segments from many cameras into one transaction


@dataclass
class ReconcileReport:
    recovered_from_cache: int = 0
    indexed_orphans: int = 0
    removed_rows: int = 0
    quarantined: list[str] = field(default_factory=list)

    @property
    def repaired(self) -> bool:
        return bool(
            self.recovered_from_cache or self.indexed_orphans or self.removed_rows
            or self.quarantined
        )

    def __str__(self) -> str:
        return (
            f"{self.recovered_from_cache} segments recovered from the cache, "
            f"{self.indexed_orphans} unindexed files indexed, "
            f"{self.removed_rows} rows without files removed, "
            f"{len(self.quarantined)} files quarantined"
        )


@dataclass(frozen=True)
class _Row:
    camera: str
    start: float
    end: float
    bytes: int
    path: str

    def values(self) -> dict[str, object]:
        return {
            "camera": self.camera, "start": self.start, "end": self.end,
            "duration": self.end - self.start, "bytes": self.bytes, "path": self.path,
        }


class Maintainer:
    """Owns the move of segments from cache to recordings and their rows in the index."""

    def __init__(self, store: Store, layout: Layout) -> None:
        self.store = store
        self.layout = layout
        self._queue: queue.Queue[CompletedSegment | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="record-maintainer", daemon=True)
        self.indexed = 0
        self.quarantined = 0

    # -- live path ------------------------------------------------------------------------

    def submit(self, segment: CompletedSegment) -> None:
        """Called by capture supervisors (any thread) for each closed segment."""
        self._queue.put(segment)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Index everything already submitted, then stop."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        running = True
        while running:
            batch = [self._queue.get()]
            deadline = time.monotonic() + BATCH_WAIT
            while (left := deadline - time.monotonic()) > 0:
                try:
                    batch.append(self._queue.get(timeout=left))
                except queue.Empty:
                    break
            if None in batch:
                running = False
            segments = [s for s in batch if s is not None]
            if segments:
                try:
                    self._index(segments)
                except Exception:
                    # Files stay where they are; reconciliation picks them up at next start.
                    log.exception("could not index %d segments", len(segments))

    def _index(self, segments: list[CompletedSegment]) -> None:
        rows = []
        for seg in segments:
            problem = mp4_is_complete(seg.path)
            if problem is not None:
                self._quarantine(seg.camera, seg.path, problem)
                continue
            rows.append(self._file_away(seg.camera, seg.path, seg.start, seg.end))
        if rows:
            self.store.write(lambda conn: _insert(conn, rows))
            self.indexed += len(rows)

    def _file_away(self, camera: str, path: Path, start: float, end: float) -> _Row:
        target = self.layout.segment_path(camera, start)
        size = path.stat().st_size
        for attempt in (1, 2):
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(path, target)
                break
            except FileNotFoundError:
                # Retention removes hour folders it has emptied; it may have removed this one
                # between our mkdir and the move. Once more is enough.
                if attempt == 2 or not path.exists():
                    raise
        return _Row(camera, start, end, size, target.relative_to(self.layout.recordings).as_posix())

    def _quarantine(self, camera: str, path: Path, reason: str) -> None:
        folder = self.layout.quarantine / camera
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / path.name
        n = 1
        while target.exists():
            target = folder / f"{path.stem}-{n}{path.suffix}"
            n += 1
        try:
            size = path.stat().st_size
            os.replace(path, target)
        except OSError as exc:
            log.error("%s: cannot quarantine %s: %s", camera, path, exc)
            return
        log.warning("%s: quarantined %s: %s", camera, path.name, reason)
        self.quarantined += 1
        values = {
            "camera": camera, "at": time.time(), "bytes": size, "reason": reason,
            "path": target.relative_to(self.layout.quarantine).as_posix(),
        }
        self.store.write(lambda conn: conn.execute(insert(schema.quarantine).values(values)))

    # -- start-up repair ------------------------------------------------------------------

    def reconcile(self) -> ReconcileReport:
        """Make disk and index agree; run before capture starts."""
        report = ReconcileReport()
        self._recover_cache(report)
        self._sync_recordings(report)
        if report.repaired:
            log.warning("index repaired at start: %s", report)
        return report

    def _recover_cache(self, report: ReconcileReport) -> None:
        """Segments left in the cache by a crash: complete ones are kept, partial ones set aside."""
        if not self.layout.cache.exists():
            return
        rows = []
        for camera_dir in sorted(p for p in self.layout.cache.iterdir() if p.is_dir()):
            for path in sorted(camera_dir.iterdir()):
                start = start_from_cache_name(path.name)
                problem = mp4_is_complete(path) if start is not None else "not a segment file"
                duration = 0.0
                if problem is None:
                    try:
                        duration = probe(path).duration
                    except MediaError as exc:
                        problem = str(exc)
                if problem is not None or start is None:
                    self._quarantine(camera_dir.name, path, f"left in cache by a crash: {problem}")
                    report.quarantined.append(f"{camera_dir.name}/{path.name}")
                    continue
                rows.append(self._file_away(camera_dir.name, path, start, start + duration))
        if rows:
            self.store.write(lambda conn: _insert(conn, rows))
            report.recovered_from_cache = len(rows)

    def _sync_recordings(self, report: ReconcileReport) -> None:
        with self.store.read() as conn:
            indexed = set(conn.execute(select(schema.segments.c.path)).scalars())
        on_disk: set[str] = set()
        orphans = []
        recordings = self.layout.recordings
        for dirpath, _dirs, files in os.walk(recordings):
            for name in files:
                rel = (Path(dirpath) / name).relative_to(recordings).as_posix()
                on_disk.add(rel)
                if rel not in indexed:
                    orphans.append(rel)
        rows = []
        for rel in orphans:
            camera, _, below = rel.partition("/")
            start = start_from_path(Path(below))
            path = recordings / rel
            problem = mp4_is_complete(path) if start is not None else "name is not a segment time"
            try:
                duration = probe(path).duration if problem is None else 0.0
            except MediaError as exc:
                problem = str(exc)
            if problem is not None or start is None:
                self._quarantine(camera, path, f"unindexed and unusable: {problem}")
                report.quarantined.append(rel)
                continue
            rows.append(_Row(camera, start, start + duration, path.stat().st_size, rel))
        missing = sorted(indexed - on_disk)
        if rows or missing:
            def repair(conn: Connection) -> None:
                _insert(conn, rows)
                if missing:
                    _record_lost(conn, missing)
            self.store.write(repair)
        report.indexed_orphans = len(rows)
        report.removed_rows = len(missing)


def _record_lost(conn: Connection, paths: list[str]) -> None:
    """Remove rows whose files are gone, and say so in the proof of deletion.

    Files vanish when a crash came between retention deleting a file and its row, or when
    someone deleted them by hand: either way the record must show that footage went.
    """
    seg = schema.segments.c
    per_camera: dict[str, dict[str, float]] = {}
    for i in range(0, len(paths), 500):
        chunk = paths[i : i + 500]
        for row in conn.execute(select(seg.camera, seg.start, seg.end, seg.bytes)
                                .where(seg.path.in_(chunk))):
            d = per_camera.setdefault(
                row.camera, {"segments": 0, "bytes": 0, "from": row.start, "to": row.end}
            )
            d["segments"] += 1
            d["bytes"] += row.bytes
            d["from"], d["to"] = min(d["from"], row.start), max(d["to"], row.end)
        conn.execute(delete(schema.segments).where(seg.path.in_(chunk)))
    conn.execute(insert(schema.deletion_passes).values(
        at=time.time(), trigger="reconcile", segments=len(paths),
        bytes=int(sum(d["bytes"] for d in per_camera.values())),
        details=json.dumps(per_camera, sort_keys=True),
    ))
    log.warning("%d indexed segments had no file: rows removed and recorded", len(paths))


def _insert(conn: Connection, rows: list[_Row]) -> None:
    if rows:
        conn.execute(insert(schema.segments), [r.values() for r in rows])
