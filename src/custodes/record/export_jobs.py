"""The exports a node makes in the background: their records, their queue, and what a restart
does to the ones it cut short.

```
<storage>/exports/<id>/
  export.json   the job's record (ExportRecord): the request and its state
  bundle/       what custodes.record.bundle.create_export made, once complete
  .*            work in progress: create_export's hidden folder and unredacted source
```

The exports routes and the subject access routes decide who may have which export; both hand
the job here (``node.exports``): one record format, one queue, ``workers`` jobs at a time (one
by default: making an export decodes and encodes video, and the CPU belongs to capture first).
The record on disk is the job's truth for every reader; while a job is in this process its
record is also held in memory, so a reader never sees a half-written state.

A restart does not resume an export: every job the node was making or had queued when it
stopped is marked failed, "interrupted by a restart", its work in progress deleted and the
failure audited (``recover``, at start; a job still queued at a clean stop is failed at once).
Resuming would be wrong twice over. A subject access job carries the requester's face only in
memory (the photo is wiped as the export starts), so it cannot be rebuilt. And an export is
made in its requester's name on the strength of checks done when they asked (role, cameras,
an active case); made hours later, after a restart, it would be an export nobody asked for at
that moment. The requester sees why it failed and asks again, under the rules of that moment.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import re
import secrets
import shutil
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, TypeVar

from sqlalchemy import select

from custodes.audit.actions import Action
from custodes.audit.log import SYSTEM, AuditLog, Outcome
from custodes.auth.roles import Actor
from custodes.keys import NodeKeys
from custodes.media import MediaError, probe
from custodes.privacy.exports import EXPORT_ID
from custodes.record.bundle import Transform, create_export
from custodes.record.layout import Layout
from custodes.record.manifest import MANIFEST, iso
from custodes.record.readme import NAME as README
from custodes.record.readme import export_readme
from custodes.sitetime import SiteZone
from custodes.store.db import Store
from custodes.store.schema import cases

log = logging.getLogger(__name__)

RECORD: Final = "export.json"
BUNDLE: Final = "bundle"
INTERRUPTED: Final = ("interrupted by a restart: the node stopped before the export was "
                      "finished; ask for it again")

_T = TypeVar("_T")

__all__ = ["EXPORT_ID", "INTERRUPTED", "ExportJobs", "ExportRecord", "JobState",
           "SubjectAccessRef", "new_export_id"]


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED)


@dataclass(frozen=True)
class SubjectAccessRef:
    """The subject access request an export answers."""

    reference: str
    request: int


@dataclass(frozen=True)
class ExportRecord:
    """One export job, as ``export.json`` holds it (and the API shows it)."""

    id: str
    camera: str
    start: float
    end: float
    redacted: bool  # False also for a subject access export: one person is shown
    case: int | None
    allow_gaps: bool
    created_by: str
    created_at: float
    state: JobState = JobState.QUEUED
    error: str | None = None
    size: int | None = None  # of the bundle, bytes
    duration: float | None = None  # of the video, seconds
    audit_seq: int | None = None  # the audit entry of the made export
    subject_access: SubjectAccessRef | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id, "camera": self.camera, "start": self.start, "end": self.end,
            "redacted": self.redacted, "case": self.case, "allow_gaps": self.allow_gaps,
            "created_by": self.created_by, "created_at": self.created_at,
            "state": self.state.value, "error": self.error, "bytes": self.size,
            "duration": self.duration, "audit_seq": self.audit_seq,
        }
        # Absent rather than null: the privacy rules and the retention of exports tell a
        # subject access export by the key (custodes.privacy.exports).
        if self.subject_access is not None:
            out["subject_access"] = {"reference": self.subject_access.reference,
                                     "request": self.subject_access.request}
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExportRecord:
        """Raises KeyError, TypeError or ValueError for a record that is not one."""
        access = data.get("subject_access")
        case = data.get("case")
        return cls(
            id=str(data["id"]), camera=str(data["camera"]), start=float(data["start"]),
            end=float(data["end"]), redacted=bool(data["redacted"]),
            case=None if case is None else int(case), allow_gaps=bool(data["allow_gaps"]),
            created_by=str(data["created_by"]), created_at=float(data["created_at"]),
            state=JobState(data["state"]), error=_optional(str, data.get("error")),
            size=_optional(int, data.get("bytes")),
            duration=_optional(float, data.get("duration")),
            audit_seq=_optional(int, data.get("audit_seq")),
            subject_access=None if access is None else SubjectAccessRef(
                str(access["reference"]), int(access["request"])),
        )


def _optional(kind: Callable[[Any], _T], value: Any) -> _T | None:
    return None if value is None else kind(value)


def new_export_id(now: float | None = None) -> str:
    """A new export's id: its UTC creation time (so names sort by age) and 32 random bits."""
    now = time.time() if now is None else now
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime(now)) + "-" + secrets.token_hex(4)


def valid_id(name: str) -> bool:
    return re.match(EXPORT_ID, name) is not None


@dataclass(frozen=True)
class _Job:
    record: ExportRecord
    actor: Actor
    transform: Transform | None


class ExportJobs:
    """The node's export jobs: submitted by the routes, made by ``workers`` threads."""

    def __init__(self, store: Store, layout: Layout, keys: NodeKeys, audit: AuditLog, *,
                 node: str, workers: int = 1, zone: SiteZone | None = None) -> None:
        self.store = store
        self.zone = zone  # the site's: the README gives times in it too
        self.layout = layout
        self.keys = keys
        self.audit = audit
        self.node = node
        self.workers = workers
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._lock = threading.Lock()
        # The jobs of this process, by id: what a reader is shown while they are made.
        self._active: dict[str, ExportRecord] = {}
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    @property
    def root(self) -> Path:
        return self.layout.exports

    # -- jobs --------------------------------------------------------------------------------

    def submit(self, record: ExportRecord, actor: Actor,
               transform: Transform | None = None) -> ExportRecord:
        """Queue ``record`` (its id from new_export_id) to be made as ``actor``; ``transform``
        makes the bundle's video from the exported footage (e.g. blurs it)."""
        if not valid_id(record.id):  # ids become paths
            raise ValueError(f"not an export id: {record.id!r}")
        record = replace(record, state=JobState.QUEUED)
        folder = self.root / record.id
        folder.mkdir(parents=True)
        with self._lock:
            if self._stopping.is_set():
                shutil.rmtree(folder, ignore_errors=True)
                raise RuntimeError("the node is stopping: no new exports")
            self._save(record)
            self._start_workers()
        self._queue.put(_Job(record, actor, transform))
        return record

    def _start_workers(self) -> None:
        # Started with the first job, not with the node: a node (or a test) that never
        # exports runs no export threads.
        while len(self._threads) < self.workers:
            worker = threading.Thread(target=self._work, name=f"export-{len(self._threads)}",
                                      daemon=True)
            # Daemons: a stop does not wait for a long export; what it cuts short is failed
            # at the next start (recover).
            worker.start()
            self._threads.append(worker)

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            try:
                if self._stopping.is_set():  # taken between stop's drain and its sentinels
                    self._interrupt(job.record)
                else:
                    self._make(job)
            except Exception:  # a full disk, a closed store: the next job still gets its turn
                log.exception("export %s: its record could not be kept", job.record.id)

    def _make(self, job: _Job) -> None:
        record = replace(job.record, state=JobState.RUNNING)
        try:
            with self._lock:
                self._save(record)
            bundle = create_export(
                self.store, self.layout, self.keys, self.audit, record.camera, record.start,
                record.end, self.root / record.id / BUNDLE, actor=job.actor,
                case=None if record.case is None else str(record.case),
                transform=job.transform, allow_gaps=record.allow_gaps, node=self.node,
            )
            record = replace(record, state=JobState.DONE, duration=bundle.duration,
                             audit_seq=bundle.audit_seq, size=_size(bundle.folder))
        except Exception as exc:
            # A stop (Ctrl-C reaches the ffmpeg children too) makes its own errors: say why.
            error = INTERRUPTED if self._stopping.is_set() else str(exc)
            log.warning("export %s failed: %s", record.id, exc)
            record = replace(record, state=JobState.FAILED, error=error)
        finally:
            with self._lock:
                try:
                    self._save(record)
                finally:
                    self._active.pop(record.id, None)

    def _save(self, record: ExportRecord) -> None:
        """Write ``record`` (under the lock) and hold it while it is unfinished."""
        folder = self.root / record.id
        tmp = folder / f".{RECORD}.partial"
        tmp.write_text(json.dumps(record.to_json(), indent=1), encoding="utf-8")
        os.replace(tmp, folder / RECORD)
        self._active[record.id] = record

    def stop(self) -> None:
        """Take no new job; fail the queued ones now. A job being made goes on until the
        process ends (it is not waited for); if that cuts it short, the next start fails it."""
        with self._lock:
            self._stopping.set()
            threads = len(self._threads)
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                continue
            try:
                self._interrupt(job.record)
            except Exception:  # the stop goes on; the next start fails it (recover)
                log.exception("export %s: could not be marked interrupted", job.record.id)
        for _ in range(threads):
            self._queue.put(None)

    def _interrupt(self, record: ExportRecord) -> None:
        self._write(replace(record, state=JobState.FAILED, error=INTERRUPTED))
        self._audit_interrupted(record)

    def _audit_interrupted(self, record: ExportRecord) -> None:
        # create_export records the failures it sees; this one it never saw.
        self.audit.record(SYSTEM, Action.EXPORT, record.camera, outcome=Outcome.FAILED, detail={
            "export": record.id, "created_by": record.created_by, "from": record.start,
            "to": record.end, "case": record.case, "was": record.state.value,
            "error": INTERRUPTED,
        })

    # -- at start ----------------------------------------------------------------------------

    def recover(self) -> list[ExportRecord]:
        """At start, before any job: settle the jobs the last run left unfinished (see the
        module doc) and delete their work in progress. Returns the records it changed."""
        settled: list[ExportRecord] = []
        if not self.root.is_dir():
            return settled
        for folder in sorted(self.root.iterdir()):
            if not folder.is_dir() or not valid_id(folder.name):
                continue
            record = _read(folder)
            if record is None or record.state.finished:
                continue
            with self._lock:
                if record.id in self._active:  # this run's own job (recover came late)
                    continue
            _remove_work(folder)
            bundle = folder / BUNDLE
            if (bundle / "manifest.sig").is_file():
                # create_export renames the bundle into place only once complete and on
                # record in the audit log: the stop fell between that and the record's update.
                done = replace(record, state=JobState.DONE, size=_size(bundle),
                               duration=_duration(bundle))
                self._write(done)
                log.info("export %s was finished before the restart: done", record.id)
                settled.append(done)
                continue
            shutil.rmtree(bundle, ignore_errors=True)
            failed = replace(record, state=JobState.FAILED, error=INTERRUPTED)
            self._write(failed)
            self._audit_interrupted(record)
            log.warning("export %s (%s) %s", record.id, record.state.value, INTERRUPTED)
            settled.append(failed)
        return settled

    def _write(self, record: ExportRecord) -> None:
        """Write a finished ``record``: readers go back to the file."""
        with self._lock:
            try:
                self._save(record)
            finally:
                self._active.pop(record.id, None)

    # -- reading -----------------------------------------------------------------------------

    def get(self, export_id: str) -> ExportRecord | None:
        """The export's record, or None (no such export, or no readable record)."""
        if not valid_id(export_id):
            return None
        with self._lock:
            active = self._active.get(export_id)
        if active is not None:
            return active
        # Not this process's job: its record was finished before it left ``_active``. One
        # still unfinished on disk belongs to a run that stopped (and a start not yet
        # through recover): show it as what recover will make it.
        record = _read(self.root / export_id)
        if record is not None and not record.state.finished:
            record = replace(record, state=JobState.FAILED, error=INTERRUPTED)
        return record

    def newest(self, limit: int,
               where: Callable[[ExportRecord], bool] = lambda _: True) -> list[ExportRecord]:
        """Up to ``limit`` records that pass ``where``, newest first."""
        found: list[ExportRecord] = []
        if not self.root.is_dir():
            return found
        for name in sorted((p.name for p in self.root.iterdir() if valid_id(p.name)),
                           reverse=True):
            record = self.get(name)
            if record is not None and where(record):
                found.append(record)
                if len(found) >= limit:
                    break
        return found

    def bundle(self, export_id: str) -> Path:
        return self.root / export_id / BUNDLE

    def zip(self, export_id: str) -> Path:
        """The export's bundle in a temporary zip beside the exports; the caller removes it
        (custodes.privacy.exports.prune removes one forgotten)."""
        handle, name = tempfile.mkstemp(prefix=".download-", suffix=".zip", dir=self.root)
        os.close(handle)
        archive = Path(name)
        try:
            # Stored, not deflated: the video is compressed already and the rest is tiny.
            with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
                for path in sorted(self.bundle(export_id).iterdir()):
                    if path.is_file():
                        zf.write(path, f"{export_id}/{path.name}")
                # Beside the bundle's folder, not in it: the signed folder stays as signed.
                zf.writestr(README, self._readme(export_id))
        except BaseException:
            archive.unlink(missing_ok=True)
            raise
        return archive

    def _readme(self, export_id: str) -> str:
        record = self.get(export_id)
        manifest: dict[str, Any] = {} if record is None else {
            "node": self.node, "camera": record.camera, "start": iso(record.start),
            "end": iso(record.end), "created_at": iso(record.created_at),
            "created_by": record.created_by, "case": record.case,
            "redaction": {"applied": record.redacted},
        }
        # The signed facts, where the bundle has them (a made bundle always does).
        with contextlib.suppress(OSError, ValueError):
            manifest.update(json.loads((self.bundle(export_id) / MANIFEST).read_text("utf-8")))
        reference = None
        if record is not None and record.case is not None:
            with self.store.read() as conn:
                reference = conn.execute(
                    select(cases.c.reference).where(cases.c.id == record.case)
                ).scalar()
        access = None if record is None or record.subject_access is None else (
            record.subject_access.reference
        )
        return export_readme(manifest, export_id, case_reference=reference,
                             subject_access=access, zone=self.zone)


def _read(folder: Path) -> ExportRecord | None:
    try:
        data = json.loads((folder / RECORD).read_text("utf-8"))
        return ExportRecord.from_json(data)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _remove_work(folder: Path) -> None:
    """Delete what an interrupted job left in its folder: everything but its record and a
    finished bundle (create_export's work folder, the unredacted source, a half-written
    record)."""
    for path in folder.iterdir():
        if path.name in (RECORD, BUNDLE):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _size(bundle: Path) -> int:
    return sum(p.stat().st_size for p in bundle.iterdir() if p.is_file())


def _duration(bundle: Path) -> float | None:
    try:
        [video] = bundle.glob("*.mp4")
        return probe(video).duration
    except (ValueError, MediaError, OSError):
        return None
