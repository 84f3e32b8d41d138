"""The face descriptors of people seen on camera: sealed at rest, searched in memory.

A descriptor (128 float32, one per face track) is biometric data. It reaches the database only
sealed with the node's biometric key (AES-256-GCM, key file outside the database), bound to its
row's camera and start time so that a sealed blob copied to another row does not open. Searching
decrypts every stored descriptor once per process into an in-memory VectorIndex, kept up to date
incrementally (new rows by id, deleted rows by a count check) before each search; decrypted
vectors never go back to disk.

    descriptors = FaceDescriptors(store, keys)
    sealed = descriptors.seal(track.embedding, track.camera, track.start)   # the maintainer
    hits = descriptors.search(photo_vectors, cameras={"cam1"}, start=t0, end=t1)
    descriptors.coverage(cameras={"cam1"}, start=t0, end=t1)   # {camera: (tracks, searchable)}

A search sees only the faces of the cameras and the time range it is given (a case's scope);
the caller decides the scope and audits the search.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from sqlalchemy import Connection, and_, delete, exists, func, select, update

from custodes.faces.index import DIM, VectorIndex
from custodes.keys import NodeKeys
from custodes.store import schema
from custodes.store.db import Store
from custodes.vision.embedding import MATCH_THRESHOLD

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
VECTOR_BYTES: Final = DIM * 4
BATCH: Final = 500  # rows sealed or deleted per write, so other writers never wait long
# A face row of a camera that has no footage at all is kept this long (its segment may simply
# not be indexed yet) before it counts as footage that is gone.
NO_FOOTAGE_GRACE: Final = 3600.0

__all__ = ["MATCH_THRESHOLD", "FaceDescriptors", "FaceHit", "face_context"]


@dataclass(frozen=True)
class FaceHit:
    face_id: int
    camera: str
    start: float
    end: float
    distance: float
    event_id: int | None
    snapshot: str | None  # relative to the snapshots folder


def face_context(camera: str, start: float) -> bytes:
    """What a face row's sealed descriptor is bound to: its purpose, camera and start time."""
    return b"faces.embedding\0" + camera.encode() + b"\0" + repr(float(start)).encode()


class FaceDescriptors:
    """Seals descriptors for storage and searches them; one per process (it holds the cache)."""

    def __init__(self, store: Store, keys: NodeKeys) -> None:
        self.store = store
        self.keys = keys
        self._index = VectorIndex()
        self._last_id = 0
        self._lock = threading.Lock()

    # -- sealing ------------------------------------------------------------------------

    def seal(self, vector_bytes: bytes, camera: str, start: float) -> bytes:
        """One descriptor (128 float32 bytes) sealed for the face row (camera, start)."""
        if len(vector_bytes) != VECTOR_BYTES:
            raise ValueError(f"a descriptor is {VECTOR_BYTES} bytes, got {len(vector_bytes)}")
        return self.keys.seal(vector_bytes, face_context(camera, start))

    def open(self, sealed: bytes, camera: str, start: float) -> F32:
        """A sealed descriptor, in memory; SealError if it was altered or belongs elsewhere."""
        return np.frombuffer(self.keys.open(sealed, face_context(camera, start)),
                             dtype=np.float32)

    def seal_legacy(self) -> int:
        """Seal the plaintext descriptors stored before migration 0005, and erase the plaintext.

        Call once at node start, after the store is open. Returns the rows sealed. The old
        bytes are overwritten in the database file (secure_delete) and the WAL is truncated,
        so no copy of them is left in either; the store's pre-migration backups lose their
        plaintext descriptors too.
        """
        total = 0
        while True:
            done = self.store.write(self._seal_batch)
            total += done
            if done < BATCH:
                break
        if total:
            _truncate_wal(self.store)
            log.info("sealed %d face descriptors stored in plaintext before", total)
        for backup in self.store.path.parent.glob(f"{self.store.path.name}.before-*.bak"):
            if scrubbed := _scrub_backup(backup):
                log.info("erased %d plaintext face descriptors from %s", scrubbed, backup)
        return total

    def _seal_batch(self, conn: Connection) -> int:
        f = schema.faces
        rows = conn.execute(
            select(f.c.id, f.c.camera, f.c.start, f.c.embedding)
            .where(f.c.embedding.is_not(None)).limit(BATCH)
        ).all()
        previous = conn.exec_driver_sql("PRAGMA secure_delete").scalar()
        conn.exec_driver_sql("PRAGMA secure_delete=ON")
        try:
            for row in rows:
                sealed = None
                if len(row.embedding) == VECTOR_BYTES:
                    sealed = self.seal(row.embedding, row.camera, row.start)
                conn.execute(update(f).where(f.c.id == row.id)
                             .values(sealed=sealed, embedding=None))
        finally:
            conn.exec_driver_sql(f"PRAGMA secure_delete={int(previous or 0)}")
        return len(rows)

    # -- retention ----------------------------------------------------------------------

    def forget_without_footage(self, now: float | None = None) -> int:
        """Delete the face rows whose footage retention has deleted; return how many.

        A face row goes when no segment of its camera overlaps its track and the camera has
        newer footage (so a face in the segment being recorded now stays), or when its camera
        has no footage at all and the face is older than NO_FOOTAGE_GRACE.
        """
        now = time.time() if now is None else now
        f, s = schema.faces, schema.segments
        newest = select(func.max(s.c.end)).where(s.c.camera == f.c.camera).scalar_subquery()
        overlapping = exists().where(s.c.camera == f.c.camera, s.c.start < f.c.end,
                                     s.c.end > f.c.start)
        gone = and_(
            ~overlapping,
            ((newest.is_not(None)) & (f.c.end < newest))
            | ((newest.is_(None)) & (f.c.end < now - NO_FOOTAGE_GRACE)),
        )

        def batch(conn: Connection) -> int:
            ids = select(f.c.id).where(gone).limit(BATCH).scalar_subquery()
            return int(conn.execute(delete(f).where(f.c.id.in_(ids))).rowcount)

        total = 0
        while (done := self.store.write(batch)) > 0:
            total += done
        if total:
            log.info("deleted %d face rows whose footage is gone", total)
        return total

    # -- search -------------------------------------------------------------------------

    def warm(self) -> int:
        """Decrypt what is new into the in-memory index (a search does this itself); its size."""
        with self._lock:
            self._refresh()
            return len(self._index)

    def search(self, queries: npt.ArrayLike, *, cameras: Collection[str], start: float,
               end: float, k: int = 10,
               max_distance: float = MATCH_THRESHOLD) -> list[FaceHit]:
        """The k faces nearest to any of ``queries`` (photos of one subject), nearest first.

        Only faces of ``cameras`` whose track overlaps [start, end] are considered; each face
        appears once, with its best distance over the queries, if within ``max_distance``.
        """
        q = np.asarray(queries, dtype=np.float32).reshape(-1, DIM)
        if not cameras or not len(q) or end < start:
            return []
        f = schema.faces
        with self._lock:
            self._refresh()
            with self.store.read() as conn:
                allowed = np.fromiter(conn.execute(
                    select(f.c.id).where(f.c.camera.in_(sorted(cameras)), f.c.start <= end,
                                         f.c.end >= start, f.c.sealed.is_not(None))
                ).scalars(), dtype=np.int64)
            if not len(allowed):
                return []
            # The overall k best (by best distance over the queries) are among each query's k
            # best: a face beaten by k others for its nearest query is beaten by them overall.
            per_query = self._index.search(q, k, allowed)
        best: dict[int, float] = {}
        for hits in per_query:
            for face_id, distance in hits:
                if distance <= max_distance and distance < best.get(face_id, np.inf):
                    best[face_id] = distance
        chosen = sorted(best.items(), key=lambda item: (item[1], item[0]))[:k]
        return self._hits(chosen)

    def coverage(self, *, cameras: Collection[str], start: float, end: float,
                 within: tuple[float, float] | None = None) -> dict[str, tuple[int, int]]:
        """Per camera, (face tracks, tracks with a descriptor) that ``search`` would consider
        for the same cameras and window; ``within``, if given, keeps only the tracks that lie
        wholly inside it (a case's scope). Cameras without any track are left out."""
        if not cameras or end < start:
            return {}
        f = schema.faces
        where = [f.c.camera.in_(sorted(cameras)), f.c.start <= end, f.c.end >= start]
        if within is not None:
            where += [f.c.start >= within[0], f.c.end <= within[1]]
        with self.store.read() as conn:
            rows = conn.execute(
                select(f.c.camera, func.count(), func.count(f.c.sealed))
                .where(*where).group_by(f.c.camera)).all()
        return {row[0]: (int(row[1]), int(row[2])) for row in rows}

    def _hits(self, chosen: Sequence[tuple[int, float]]) -> list[FaceHit]:
        if not chosen:
            return []
        f, e = schema.faces, schema.events
        with self.store.read() as conn:
            rows = {row.id: row for row in conn.execute(
                select(f.c.id, f.c.camera, f.c.start, f.c.end, f.c.event_id, e.c.snapshot)
                .select_from(f.outerjoin(e, e.c.id == f.c.event_id))
                .where(f.c.id.in_([face_id for face_id, _ in chosen]))
            )}
        return [FaceHit(face_id, rows[face_id].camera, rows[face_id].start, rows[face_id].end,
                        distance, rows[face_id].event_id, rows[face_id].snapshot)
                for face_id, distance in chosen if face_id in rows]  # deleted meanwhile

    def _refresh(self) -> None:
        """Bring the index up to the database: add new rows, drop deleted ones."""
        f = schema.faces
        with self.store.read() as conn:
            kept = conn.execute(select(func.count()).select_from(f).where(
                f.c.id <= self._last_id, f.c.sealed.is_not(None))).scalar_one()
            gone: Any = None
            if kept != len(self._index):
                present = np.fromiter(conn.execute(select(f.c.id).where(
                    f.c.id <= self._last_id, f.c.sealed.is_not(None))).scalars(),
                    dtype=np.int64)
                stored = self._index.ids()
                gone = stored[~np.isin(stored, present)]
            new = conn.execute(
                select(f.c.id, f.c.camera, f.c.start, f.c.sealed)
                .where(f.c.id > self._last_id, f.c.sealed.is_not(None)).order_by(f.c.id)
            ).all()
        if gone is not None:
            self._index.remove(gone.tolist())
        if not new:
            return
        vectors = np.empty((len(new), DIM), dtype=np.float32)
        for i, row in enumerate(new):
            vectors[i] = self.open(row.sealed, row.camera, row.start)
        self._index.add(np.array([row.id for row in new], dtype=np.int64), vectors)
        self._last_id = int(new[-1].id)


def _truncate_wal(store: Store) -> None:
    """Copy the WAL into the database and empty it, so no old page images stay in it."""
    raw = store.engine.raw_connection()
    try:
        raw.driver_connection.execute(  # type: ignore[union-attr]
            "PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        raw.close()


def _scrub_backup(path: Path) -> int:
    """Erase plaintext descriptors from a pre-migration backup the store made; return how many.

    The store copies the database before migrating, so the copy made before 0005 still holds
    the plaintext. The backup is kept for rolling a failed migration back; it loses only the
    descriptors (their sealed copies are in the database), and the file is rewritten so the
    old bytes are not left in free pages.
    """
    db = sqlite3.connect(path)
    try:
        columns = {row[1] for row in db.execute("PRAGMA table_info(faces)")}
        if "embedding" not in columns:
            return 0
        db.execute("PRAGMA secure_delete=ON")
        with db:
            erased = db.execute(
                "UPDATE faces SET embedding = NULL WHERE embedding IS NOT NULL").rowcount
        if erased:
            db.execute("VACUUM")
        return int(erased)
    finally:
        db.close()
