"""Retention: delete footage by age, by disk quota and when the disk runs short of space.

Each run makes up to three passes, in this order:

1. age: a camera's segments whose end is older than its retention hours (cameras no longer
   configured: ``retention.default_hours``); no retention exceeds ``retention.ceiling_days``;
   then, for cameras recording in ``motion`` mode, segments with no motion within
   ``MOTION_MARGIN`` seconds, once analysis has had ``MOTION_SETTLE`` seconds to report it;
2. quota: while the index says recordings use more than ``storage.quota``, oldest first
   across all cameras;
3. emergency: while the filesystem has less than ``storage.min_free`` free, oldest first,
   until free space is back above it plus a margin.

Segments that overlap an active hold are never deleted, in any pass. Every pass that deletes
something leaves one ``deletion_passes`` row, the proof of deletion an inspector reads, and,
when an audit log is given, one "retention.delete" entry with the same summary.
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    and_,
    delete,
    exists,
    func,
    insert,
    select,
    true,
    tuple_,
    update,
)

from custodes.audit.actions import Action
from custodes.audit.log import SYSTEM, AuditLog
from custodes.config import Config, RecordMode
from custodes.record.holds import Hold, active_holds, segment_is_held
from custodes.record.layout import Layout
from custodes.store.db import Store
from custodes.store.schema import deletion_passes, events, holds, motion, segments

log = logging.getLogger(__name__)

# Rows deleted per write: small enough that the recorder's inserts never wait long behind us.
BATCH_SIZE = 200
# The emergency pass frees min_free plus this share of it, so that the footage recorded until
# the next pass does not push the disk straight back into an emergency.
EMERGENCY_MARGIN = 0.1
# Motion-only recording keeps this much footage before and after each motion span...
MOTION_MARGIN = 10.0
# ...and judges a segment only this long after it ended: motion spans are stored when they
# end, and an open span is visible only as a motion event without an end.
MOTION_SETTLE = 120.0


class _Candidate(NamedTuple):
    """A segment that a pass may delete."""

    id: int
    camera: str
    start: float
    end: float
    bytes: int
    path: str


class Trigger(StrEnum):
    AGE = "age"
    MOTION = "motion"  # motion-only recording: footage without motion
    QUOTA = "quota"
    EMERGENCY = "emergency"
    RECONCILE = "reconcile"  # rows whose files were found gone at start-up


class DiskUsage(Protocol):
    """What retention reads of ``shutil.disk_usage``."""

    @property
    def total(self) -> int: ...

    @property
    def free(self) -> int: ...


@dataclass(frozen=True)
class CameraDeletion:
    """What one pass deleted of one camera."""

    segments: int
    bytes: int
    start: float  # start of the oldest segment deleted
    end: float  # end of the newest segment deleted
    missing: int = 0  # rows whose file was already gone: nothing left to delete on disk

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "segments": self.segments, "bytes": self.bytes, "from": self.start, "to": self.end,
        }
        if self.missing:
            out["missing"] = self.missing
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CameraDeletion:
        return cls(
            data["segments"], data["bytes"], data["from"], data["to"], data.get("missing", 0)
        )


@dataclass(frozen=True)
class DeletionPass:
    id: int
    at: float
    trigger: Trigger
    segments: int
    bytes: int
    details: dict[str, CameraDeletion]

    @classmethod
    def from_row(cls, row: Row[Any]) -> DeletionPass:
        details = {cam: CameraDeletion.from_json(d) for cam, d in json.loads(row.details).items()}
        return cls(row.id, row.at, Trigger(row.trigger), row.segments, row.bytes, details)


@dataclass
class _PassLog:
    """The proof of one pass, written with every batch so it never lags the deletions."""

    trigger: Trigger
    at: float
    id: int | None = None
    details: dict[str, CameraDeletion] = field(default_factory=dict)

    @property
    def bytes(self) -> int:
        return sum(d.bytes for d in self.details.values())

    def add(self, row: _Candidate, *, missing: bool) -> None:
        d = self.details.get(row.camera)
        if d is None:
            d = CameraDeletion(0, 0, row.start, row.end)
        self.details[row.camera] = CameraDeletion(
            d.segments + 1, d.bytes + row.bytes, min(d.start, row.start), max(d.end, row.end),
            d.missing + missing,
        )

    def write(self, conn: Connection, ids: list[int]) -> None:
        """Delete the rows of ``ids`` and bring the pass row up to date, in one transaction."""
        conn.execute(delete(segments).where(segments.c.id.in_(ids)))
        values = {
            "segments": sum(d.segments for d in self.details.values()),
            "bytes": self.bytes,
            "details": json.dumps({cam: d.to_json() for cam, d in sorted(self.details.items())}),
        }
        if self.id is None:
            self.id = int(conn.execute(
                insert(deletion_passes)
                .values(at=self.at, trigger=self.trigger.value, **values)
                .returning(deletion_passes.c.id)
            ).scalar_one())
        else:
            conn.execute(update(deletion_passes).where(deletion_passes.c.id == self.id)
                         .values(**values))

    def result(self) -> DeletionPass | None:
        if self.id is None:
            return None
        count = sum(d.segments for d in self.details.values())
        return DeletionPass(self.id, self.at, self.trigger, count, self.bytes, dict(self.details))


class Retention:
    """Deletes footage that the configuration no longer allows to keep; see the module doc."""

    def __init__(
        self,
        store: Store,
        layout: Layout,
        config: Config,
        *,
        clock: Callable[[], float] = time.time,
        disk_usage: Callable[[Path], DiskUsage] = shutil.disk_usage,
        audit: AuditLog | None = None,
    ) -> None:
        self.store = store
        self.audit = audit
        self.layout = layout
        self.config = config
        self.clock = clock
        self.disk_usage = disk_usage
        self._failing = False
        self._holds_checked_at = clock()

    # -- the loop -------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        interval = self.config.retention.interval_seconds
        while not stop.wait(interval):
            try:
                self.run_once()
            except Exception:
                # Log a failure once, not every minute while it lasts, and say when it ends.
                if not self._failing:
                    log.exception("retention pass failed; retrying every %g s", interval)
                self._failing = True
            else:
                if self._failing:
                    log.info("retention passes work again")
                self._failing = False

    def run_once(self) -> list[DeletionPass]:
        """Run the age, quota and emergency passes; return those that deleted something."""
        self._log_expired_holds()
        done = [self._age_pass(), self._motion_pass(), self._quota_pass(),
                self._emergency_pass()]
        return [p for p in done if p is not None]

    # -- the passes -----------------------------------------------------------------------

    def _age_pass(self) -> DeletionPass | None:
        now = self.clock()
        ceiling = self.config.retention.ceiling_days * 24
        pass_log = _PassLog(Trigger.AGE, now)
        with self.store.read() as conn:
            cameras = _cameras_with_footage(conn)
        for camera in cameras:
            if camera in self.config.cameras:
                hours = self.config.retention_hours(camera)
            else:
                hours = self.config.retention.default_hours  # removed from the config
            # The config already refuses retention above the ceiling; enforce it here too,
            # because this is the line that must never be crossed.
            cutoff = now - min(hours, ceiling) * 3600
            # start < cutoff is implied by end < cutoff; it lets the (camera, start) index
            # bound the scan.
            condition = and_(
                segments.c.camera == camera, segments.c.start < cutoff, segments.c.end < cutoff
            )
            self._sweep(pass_log, condition, need=None)
        return self._finish(pass_log)

    def _motion_pass(self) -> DeletionPass | None:
        cameras = [name for name, cam in self.config.cameras.items()
                   if cam.record.mode == RecordMode.MOTION]
        if not cameras:
            return None
        pass_log = _PassLog(Trigger.MOTION, self.clock())
        cutoff = pass_log.at - MOTION_SETTLE
        near_motion = exists().where(
            motion.c.camera == segments.c.camera,
            motion.c.start < segments.c.end + MOTION_MARGIN,
            motion.c.end > segments.c.start - MOTION_MARGIN,
        )
        still_moving = exists().where(
            events.c.camera == segments.c.camera,
            events.c.kind == "motion",
            events.c.end.is_(None),
            events.c.start < segments.c.end + MOTION_MARGIN,
        )
        for camera in cameras:
            condition = and_(
                segments.c.camera == camera, segments.c.start < cutoff, segments.c.end < cutoff,
                ~near_motion, ~still_moving,
            )
            self._sweep(pass_log, condition, need=None)
        return self._finish(pass_log)

    def _quota_pass(self) -> DeletionPass | None:
        limit = self.config.storage.quota_limit
        if limit is None:
            return None
        quota = limit.bytes_of(self.disk_usage(self.layout.root).total)
        with self.store.read() as conn:
            # A sum over the index, not a walk of the disk: cheap enough to run every minute.
            total = select(func.coalesce(func.sum(segments.c.bytes), 0))
            used = int(conn.execute(total).scalar_one())
        if used <= quota:
            return None
        pass_log = _PassLog(Trigger.QUOTA, self.clock())
        freed = self._sweep(pass_log, true(), need=used - quota)
        if freed < used - quota:
            log.warning(
                "recordings use %s, over the quota of %s, but the rest of the footage is held",
                _size(used - freed), _size(quota),
            )
        return self._finish(pass_log)

    def _emergency_pass(self) -> DeletionPass | None:
        usage = self.disk_usage(self.layout.root)
        min_free = self.config.storage.min_free_limit.bytes_of(usage.total)
        if usage.free >= min_free:
            return None
        need = min_free + int(min_free * EMERGENCY_MARGIN) - usage.free
        log.warning(
            "only %s free on %s, below the minimum of %s: deleting the oldest footage",
            _size(usage.free), self.layout.root, _size(min_free),
        )
        pass_log = _PassLog(Trigger.EMERGENCY, self.clock())
        freed = self._sweep(pass_log, true(), need=need)
        if freed < need:
            # Once per pass: the next pass will try again, and say so again if still stuck.
            log.error(
                "emergency deletion freed only %s of the %s needed: the remaining footage is "
                "held or could not be deleted; recording may stop when the disk is full",
                _size(freed), _size(need),
            )
        return self._finish(pass_log)

    # -- deleting -------------------------------------------------------------------------

    def _sweep(self, pass_log: _PassLog, condition: ColumnElement[bool], need: int | None) -> int:
        """Delete unheld segments matching ``condition``, oldest first, until ``need`` bytes
        are freed (None: all of them); return the bytes freed."""
        freed = 0
        for candidates in self._batches(pass_log.at, condition):
            batch = candidates if need is None else _enough(candidates, need - freed)
            ids: list[int] = []
            folders: set[Path] = set()
            for row in batch:
                file = self.layout.recordings / row.path
                # The file goes first: a crash before the row is deleted leaves a row without
                # a file, which start-up reconciliation removes. The other order would leave a
                # file without a row, which reconciliation would index again: deleted footage
                # would come back.
                try:
                    file.unlink()
                except FileNotFoundError:
                    log.warning("%s was already gone; removing its index entry", row.path)
                    pass_log.add(row, missing=True)
                except OSError as exc:
                    log.error("cannot delete %s: %s; keeping it for now", row.path, exc.strerror)
                    continue
                else:
                    pass_log.add(row, missing=False)
                    freed += row.bytes
                ids.append(row.id)
                folders.add(file.parent)
            if ids:
                self.store.write(functools.partial(pass_log.write, ids=ids))
            for folder in folders:
                self._remove_empty(folder)
            if need is not None and freed >= need:
                break
        return freed

    def _batches(self, now: float, condition: ColumnElement[bool]) -> Iterator[list[_Candidate]]:
        """Unheld segments matching ``condition`` in batches, oldest first.

        The next batch starts after the last row of the previous one, so a segment whose file
        could not be deleted (and whose row therefore stays) is not picked again and again.
        """
        query = (
            select(segments.c.id, segments.c.camera, segments.c.start, segments.c.end,
                   segments.c.bytes, segments.c.path)
            .where(condition, ~segment_is_held(now))
            .order_by(segments.c.start, segments.c.id)
            .limit(BATCH_SIZE)
        )
        after: tuple[float, int] | None = None
        while True:
            page = query if after is None else query.where(
                tuple_(segments.c.start, segments.c.id) > tuple_(*after)
            )
            with self.store.read() as conn:
                batch = [_Candidate(*row) for row in conn.execute(page)]
            if not batch:
                return
            after = (batch[-1].start, batch[-1].id)
            yield batch

    def _remove_empty(self, folder: Path) -> None:
        """Remove ``folder`` (an hour) and its parent (a day) if deleting left them empty."""
        # Camera folders stay: the recorder may be about to move a segment into one.
        while folder.parent != self.layout.recordings and folder.is_relative_to(
            self.layout.recordings
        ):
            try:
                folder.rmdir()
            except OSError:  # not empty (or already gone): nothing more to remove above it
                return
            folder = folder.parent

    def _finish(self, pass_log: _PassLog) -> DeletionPass | None:
        result = pass_log.result()
        if result is not None and self.audit is not None:
            # The summary, once per pass: the deletion_passes row is updated batch by batch,
            # an audit entry cannot be, and one per batch would bury the other entries.
            self.audit.record(SYSTEM, Action.RETENTION_DELETE, result.trigger.value, detail={
                "pass": result.id, "segments": result.segments, "bytes": result.bytes,
                "cameras": {cam: d.to_json() for cam, d in sorted(result.details.items())},
            })
        if result is not None:
            log.info(
                "%s pass deleted %d segments (%s) of %s", result.trigger, result.segments,
                _size(result.bytes), ", ".join(sorted(result.details)),
            )
        return result

    def _log_expired_holds(self) -> None:
        """Say when a hold expires: from the next pass on, its footage may be deleted."""
        now = self.clock()
        with self.store.read() as conn:
            expired = conn.execute(
                select(holds.c.id, holds.c.camera, holds.c.reason).where(
                    holds.c.released_at.is_(None),
                    holds.c.expires_at > self._holds_checked_at,
                    holds.c.expires_at <= now,
                )
            ).all()
        for hold in expired:
            log.info("hold %d on %s expired (%s); its footage is subject to retention again",
                     hold.id, hold.camera or "all cameras", hold.reason)
        self._holds_checked_at = now


def _cameras_with_footage(conn: Connection) -> list[str]:
    # One index seek per camera instead of a scan of every segment (SQLite has no skip-scan
    # for DISTINCT on a large index).
    cameras: list[str] = []
    while True:
        query = select(func.min(segments.c.camera))
        if cameras:
            query = query.where(segments.c.camera > cameras[-1])
        camera = conn.execute(query).scalar_one()
        if camera is None:
            return cameras
        cameras.append(camera)


def _enough(batch: list[_Candidate], need: int) -> list[_Candidate]:
    """The first rows of ``batch`` whose sizes add up to at least ``need`` bytes."""
    total = 0
    for n, row in enumerate(batch):
        total += row.bytes
        if total >= need:
            return batch[: n + 1]
    return batch


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if abs(value) < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


# -- status -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CameraFootage:
    camera: str
    configured: bool  # False: removed from the config, kept under the default retention
    retention_hours: float
    oldest: float | None  # start of the oldest segment kept
    newest: float | None  # end of the newest segment
    segments: int
    bytes: int


@dataclass(frozen=True)
class RetentionStatus:
    cameras: list[CameraFootage]
    holds: list[Hold]  # active now
    passes: list[DeletionPass]  # most recent first


def retention_status(
    conn: Connection, config: Config, now: float, *, last_passes: int = 10
) -> RetentionStatus:
    """What a status page shows about retention: footage per camera, holds, recent passes."""
    rows = conn.execute(
        select(segments.c.camera, func.min(segments.c.start).label("oldest"),
               func.max(segments.c.end).label("newest"), func.count().label("segments"),
               func.sum(segments.c.bytes).label("bytes"))
        .group_by(segments.c.camera)
    )
    found = {row.camera: row for row in rows}
    cameras = []
    for camera in sorted(set(config.cameras) | set(found)):
        row = found.get(camera)
        configured = camera in config.cameras
        cameras.append(CameraFootage(
            camera=camera,
            configured=configured,
            retention_hours=(
                config.retention_hours(camera) if configured else config.retention.default_hours
            ),
            oldest=row.oldest if row else None,
            newest=row.newest if row else None,
            segments=row.segments if row else 0,
            bytes=row.bytes if row else 0,
        ))
    passes = conn.execute(
        select(deletion_passes).order_by(deletion_passes.c.at.desc(), deletion_passes.c.id.desc())
        .limit(last_passes)
    )
    return RetentionStatus(
        cameras, active_holds(conn, now), [DeletionPass.from_row(row) for row in passes]
    )
