"""Events, motion spans and snapshots go when the footage they describe goes."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import Connection, insert, select

from custodes.record.forget import NO_FOOTAGE_GRACE, forget_without_footage
from custodes.record.layout import Layout
from custodes.store import schema
from custodes.store.db import Store

NOW = 1_800_000_000.0


def test_records_without_footage_are_deleted_with_their_snapshots(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.create()
    events = {  # name: (camera, start, end)
        "before-kept-footage": ("door", NOW - 900, NOW - 890),
        "in-kept-footage": ("door", NOW - 595, NOW - 590),
        "being-recorded": ("door", NOW - 5, None),
        "still-open-across-footage": ("door", NOW - 900, None),
        "no-footage-old": ("yard", NOW - NO_FOOTAGE_GRACE - 10, NOW - NO_FOOTAGE_GRACE - 5),
        "no-footage-recent": ("yard", NOW - 60, NOW - 50),
    }
    for name in events:
        (layout.snapshots / f"{name}.jpg").write_bytes(b"jpeg")

    def fill(conn: Connection) -> None:
        conn.execute(insert(schema.segments), [
            {"camera": "door", "start": NOW - 600, "end": NOW - 590, "duration": 10.0,
             "bytes": 1, "path": "door/a.mp4"},
            {"camera": "door", "start": NOW - 20, "end": NOW - 10, "duration": 10.0,
             "bytes": 1, "path": "door/b.mp4"},
        ])
        for name, (camera, start, end) in events.items():
            conn.execute(insert(schema.events).values(
                camera=camera, kind="motion", start=start, end=end, data=json.dumps({}),
                snapshot=f"{name}.jpg"))
            conn.execute(insert(schema.motion).values(
                camera=camera, start=start, end=end if end is not None else start, peak=0.1))

    with Store(layout.database) as store:
        store.write(fill)
        deleted = forget_without_footage(store, layout, now=NOW)
        with store.read() as conn:
            left = {row.snapshot for row in conn.execute(select(schema.events.c.snapshot))}
            motion = sorted(conn.execute(select(schema.motion.c.start)).scalars())

    kept = {"in-kept-footage", "being-recorded", "still-open-across-footage",
            "no-footage-recent"}
    assert left == {f"{name}.jpg" for name in kept}
    assert {p.stem for p in layout.snapshots.glob("*.jpg")} == kept
    # Motion spans have an end; the one that started long ago and is still open in events
    # ended at its start here, so it goes with the footage before the kept segment.
    assert motion == sorted([NOW - 595, NOW - 5, NOW - 60])
    assert deleted == 2 + 3
