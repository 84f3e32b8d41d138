"""Face descriptors of people seen on camera: sealed at rest, searched only within a scope."""

from __future__ import annotations

import queue
import sqlite3
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from sqlalchemy import Connection, insert, select, update

from conftest import require
from custodes.analytics.worker import FaceTrack, Message
from custodes.events.bus import EventBus
from custodes.events.maintainer import EventMaintainer
from custodes.faces.descriptors import FaceDescriptors
from custodes.faces.photos import describe_photo, read_image
from custodes.keys import NodeKeys, SealError
from custodes.store import schema
from custodes.store.db import Store, _migrations

F32 = npt.NDArray[np.float32]
PHOTOS = {
    "kim": ["lfw/Kim_Clijsters/Kim_Clijsters_0001.jpg", "lfw/Kim_Clijsters/Kim_Clijsters_0005.jpg",
            "lfw/Kim_Clijsters/Kim_Clijsters_0009.jpg"],
    "john": ["lfw/John_Snow/John_Snow_0002.jpg", "lfw/John_Snow/John_Snow_0008.jpg"],
    "obama": ["face_recognition/Barack_Obama/obama.jpg"],
}


@pytest.fixture(scope="module")
def vectors(shared_data: Path) -> dict[str, list[F32]]:
    """Real dlib descriptors of a few people, each from several photos."""
    out: dict[str, list[F32]] = {}
    for who, paths in PHOTOS.items():
        for path in paths:
            file = shared_data / "faces" / path
            require(file.is_file(), str(file))
            out.setdefault(who, []).append(describe_photo(read_image(file.read_bytes())).vector)
    return out


def track(camera: str, start: float, vector: F32 | None) -> FaceTrack:
    embedding = None if vector is None else vector.tobytes()
    return FaceTrack(camera, start, start + 2.0, 5, (10, 10, 80, 80), 0.8, embedding, None)


def raw_bytes(store: Store) -> bytes:
    """Everything SQLite has on disk for this database: the file and its WAL."""
    return b"".join(p.read_bytes() for p in (store.path, store.path.with_name(
        store.path.name + "-wal")) if p.exists())


def test_the_maintainer_stores_descriptors_only_sealed(tmp_path: Path,
                                                      vectors: dict[str, list[F32]]) -> None:
    keys = NodeKeys.load_or_create(tmp_path / "keys")
    seen: list[tuple[int, FaceTrack]] = []
    source: queue.Queue[Message] = queue.Queue()
    with Store(tmp_path / "node.db") as store:
        descriptors = FaceDescriptors(store, keys)
        maintainer = EventMaintainer(store, EventBus(), {}, source, descriptors=descriptors,
                                     on_face=lambda face_id, t: seen.append((face_id, t)))
        maintainer.handle(track("door", 100.0, vectors["kim"][0]))
        maintainer.handle(track("door", 200.0, None))
        with store.read() as conn:
            rows = conn.execute(select(schema.faces).order_by(schema.faces.c.id)).all()
        secret = vectors["kim"][0].tobytes()
        on_disk = raw_bytes(store)
        # Not the whole descriptor, and not even a quarter of it, anywhere on disk.
        assert secret not in on_disk
        assert secret[:128] not in on_disk
        assert [r.embedding for r in rows] == [None, None]
        assert rows[1].sealed is None
        opened = descriptors.open(rows[0].sealed, "door", 100.0)
        assert opened.tobytes() == secret
        # A sealed descriptor copied to another face row (or read with another key) does not
        # open: the seal is bound to its camera and start time.
        with pytest.raises(SealError):
            descriptors.open(rows[0].sealed, "door", 200.0)
        with pytest.raises(SealError):
            FaceDescriptors(store, NodeKeys.load_or_create(tmp_path / "other")).open(
                rows[0].sealed, "door", 100.0)
    # The listener got each stored face with its id, the descriptor still in memory.
    assert [(face_id, t.start) for face_id, t in seen] == [(rows[0].id, 100.0),
                                                          (rows[1].id, 200.0)]
    assert seen[0][1].embedding == secret


def test_the_database_refuses_plaintext_descriptors(tmp_path: Path) -> None:
    with Store(tmp_path / "node.db") as store:
        def plaintext(conn: Connection) -> None:
            conn.execute(insert(schema.faces).values(
                camera="c", start=1.0, end=2.0, detections=1, box="[0,0,1,1]", quality=0.5,
                embedding=b"\0" * 512))

        with pytest.raises(Exception, match="plaintext descriptors are not stored"):
            store.write(plaintext)


def test_descriptors_stored_before_sealing_are_sealed_and_erased(
        tmp_path: Path, vectors: dict[str, list[F32]]) -> None:
    # A database of the release before sealing: migrations up to 0003, plaintext descriptors.
    path = tmp_path / "node.db"
    secret = vectors["john"][0].tobytes()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE schema_migrations (number INTEGER PRIMARY KEY, "
                   "name TEXT NOT NULL, applied_at REAL NOT NULL)")
        for number, name, sql in _migrations():
            if number <= 3:
                db.executescript(sql)
                db.execute("INSERT INTO schema_migrations VALUES (?, ?, 0)", (number, name))
        db.execute("INSERT INTO faces (camera, start, \"end\", detections, box, quality, "
                   "embedding) VALUES ('hall', 50.0, 52.0, 3, '[0,0,1,1]', 0.5, ?)", (secret,))
    db.close()
    assert secret in path.read_bytes() + (path.with_name("node.db-wal").read_bytes()
                                          if path.with_name("node.db-wal").exists() else b"")
    keys = NodeKeys.load_or_create(tmp_path / "keys")
    with Store(path) as store:
        descriptors = FaceDescriptors(store, keys)
        assert descriptors.seal_legacy() == 1
        assert descriptors.seal_legacy() == 0
        assert secret not in raw_bytes(store)
        hits = descriptors.search(vectors["john"][1], cameras={"hall"}, start=0, end=100)
        assert [h.start for h in hits] == [50.0]
    # Nor in the copy the store made before migrating (it keeps the rest of its rows).
    [backup] = tmp_path.glob("node.db.before-*.bak")
    assert secret not in backup.read_bytes()
    with sqlite3.connect(backup) as db:
        assert db.execute("SELECT camera, embedding FROM faces").fetchall() == [("hall", None)]
    db.close()


def add_faces(store: Store, descriptors: FaceDescriptors,
              faces: list[tuple[str, float, F32]]) -> list[int]:
    def write(conn: Connection) -> list[int]:
        return [int(conn.execute(insert(schema.faces).values(
            camera=camera, start=start, end=start + 2.0, detections=3, box="[0,0,1,1]",
            quality=0.5, sealed=descriptors.seal(vector.tobytes(), camera, start),
        ).returning(schema.faces.c.id)).scalar_one()) for camera, start, vector in faces]

    return store.write(write)


def test_search_sees_only_its_cameras_and_time_range(tmp_path: Path,
                                                     vectors: dict[str, list[F32]]) -> None:
    kim, john, obama = vectors["kim"], vectors["john"], vectors["obama"]
    with Store(tmp_path / "node.db") as store:
        descriptors = FaceDescriptors(store, NodeKeys.load_or_create(tmp_path / "keys"))
        ids = add_faces(store, descriptors, [
            ("hall", 100.0, kim[1]), ("hall", 300.0, kim[2]), ("yard", 150.0, kim[2]),
            ("hall", 120.0, john[1]), ("hall", 130.0, obama[0]),
        ])
        # Kim's first photo finds Kim in the hall within the range; not John, not Obama, not
        # the yard, not the hall after the range.
        hits = descriptors.search(kim[0], cameras={"hall"}, start=90, end=200)
        assert [h.face_id for h in hits] == [ids[0]]
        assert hits[0].camera == "hall"
        assert hits[0].distance < 0.6
        # A track overlapping the range's edge counts; several cameras are one search.
        hits = descriptors.search(kim[0], cameras={"hall", "yard"}, start=151.5, end=301)
        assert {h.face_id for h in hits} == {ids[1], ids[2]}
        assert descriptors.search(kim[0], cameras=set(), start=0, end=1000) == []
        # Several photos of one subject: each face once, with its best distance.
        both = descriptors.search(np.stack([kim[0], john[0]]), cameras={"hall"}, start=0,
                                  end=1000)
        assert sorted(h.face_id for h in both) == sorted([ids[0], ids[1], ids[3]])
        assert [h.distance for h in both] == sorted(h.distance for h in both)
        alone = descriptors.search(john[0], cameras={"hall"}, start=0, end=1000)
        mine = [h for h in both if h.face_id == ids[3]]
        assert [h.face_id for h in alone] == [h.face_id for h in mine]
        # The same distance, up to float32 rounding (a batch of queries sums in another order).
        assert [h.distance for h in alone] == pytest.approx([h.distance for h in mine],
                                                            abs=1e-5)
        # A looser threshold reaches other people, and k caps the count.
        loose = descriptors.search(kim[0], cameras={"hall"}, start=0, end=1000,
                                   max_distance=2.0, k=3)
        assert len(loose) == 3

        # The in-memory index follows the database: new faces appear, deleted ones vanish.
        late = add_faces(store, descriptors, [("hall", 400.0, obama[0])])
        gone = ids[0]
        store.write(lambda conn: conn.execute(
            schema.faces.delete().where(schema.faces.c.id == gone)))
        hits = descriptors.search(obama[0], cameras={"hall"}, start=0, end=1000)
        assert sorted(h.face_id for h in hits) == sorted([ids[4], late[0]])
        hits = descriptors.search(kim[0], cameras={"hall"}, start=0, end=1000)
        assert [h.face_id for h in hits] == [ids[1]]
        assert descriptors.warm() == 5


def test_faces_go_with_their_footage(tmp_path: Path, vectors: dict[str, list[F32]]) -> None:
    v = vectors["kim"][0]
    with Store(tmp_path / "node.db") as store:
        descriptors = FaceDescriptors(store, NodeKeys.load_or_create(tmp_path / "keys"))

        def segment(conn: Connection, camera: str, start: float, end: float) -> None:
            conn.execute(insert(schema.segments).values(
                camera=camera, start=start, end=end, duration=end - start, bytes=1,
                path=f"{camera}/{start}.mp4"))

        store.write(lambda conn: segment(conn, "hall", 1000.0, 1060.0))
        ids = add_faces(store, descriptors, [
            ("hall", 900.0, v),    # its segment was deleted by retention
            ("hall", 1010.0, v),   # its segment is there
            ("hall", 1070.0, v),   # in the segment being recorded: not yet indexed
            ("attic", 10.0, v),    # a camera with no footage at all, long ago
            ("attic", 4990.0, v),  # ... and just now
        ])
        assert descriptors.warm() == 5
        assert descriptors.forget_without_footage(now=5000.0) == 2
        with store.read() as conn:
            left = list(conn.execute(select(schema.faces.c.id).order_by(schema.faces.c.id))
                        .scalars())
        assert left == [ids[1], ids[2], ids[4]]
        assert descriptors.warm() == 3
        store.write(lambda conn: conn.execute(update(schema.faces).values(sealed=None)))
        assert descriptors.warm() == 0
