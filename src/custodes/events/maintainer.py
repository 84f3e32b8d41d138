"""The event maintainer: analysis messages become rows, and events on the bus.

It is the one consumer of the analysis processes' queue: it stores motion spans, events and
face tracks through the store's writer, keeps each camera's latest analysis statistics for
the status page, and publishes every event on the node's bus (from where MQTT forwards it).

A face track's descriptor is biometric data: it is stored only sealed (``descriptors``); without
a FaceDescriptors to seal it, the descriptor is dropped, never stored in plaintext. ``on_face``
receives each stored face track (with its descriptor, in memory) after its row is committed,
e.g. for a live watchlist.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

from sqlalchemy import Connection, insert, update

from custodes.analytics.worker import FaceTrack, Message, MotionEnded, MotionStarted, Stats
from custodes.events.bus import EventBus
from custodes.events.types import Event, EventKind
from custodes.faces.descriptors import FaceDescriptors
from custodes.masking import mask_credentials
from custodes.store import schema
from custodes.store.db import Store

log = logging.getLogger(__name__)


class MessageSource(Protocol):
    def get(self, block: bool = True, timeout: float | None = None) -> Message: ...


class EventMaintainer:
    def __init__(self, store: Store, bus: EventBus, sites: dict[str, str],
                 source: MessageSource, *, descriptors: FaceDescriptors | None = None,
                 on_face: Callable[[int, FaceTrack], None] | None = None) -> None:
        self.store = store
        self.descriptors = descriptors
        self.on_face = on_face
        self._warned_unsealed = False
        self.bus = bus
        self.sites = sites  # camera -> site
        self.source = source
        self.stats: dict[str, Stats] = {}
        self._open: dict[tuple[str, int], int] = {}  # (camera, span key) -> event id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="event-maintainer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                message = self.source.get(timeout=0.5)
            except queue.Empty:
                continue
            except (EOFError, OSError):
                return  # the queue was closed at shutdown
            try:
                self.handle(message)
            except Exception:
                log.exception("could not store %s", type(message).__name__)

    def handle(self, message: Message) -> None:
        if isinstance(message, Stats):
            # Masked where it is made too; here again because this is where it is kept.
            self.stats[message.camera] = replace(message,
                                                 reason=mask_credentials(message.reason))
        elif isinstance(message, MotionStarted):
            self._motion_started(message)
        elif isinstance(message, MotionEnded):
            self._motion_ended(message)
        else:
            self._face(message)

    def _publish(self, camera: str, kind: EventKind, start: float, **fields: Any) -> None:
        self.bus.publish(Event(camera, self.sites.get(camera, ""), kind, start, **fields))

    def _motion_started(self, m: MotionStarted) -> None:
        def write(conn: Connection) -> int:
            return int(conn.execute(
                insert(schema.events).values(camera=m.camera, kind=EventKind.MOTION.value,
                                             start=m.start, end=None, data="{}", snapshot=None)
                .returning(schema.events.c.id)
            ).scalar_one())

        event_id = self.store.write(write)
        self._open[(m.camera, m.key)] = event_id
        self._publish(m.camera, EventKind.MOTION, m.start, id=event_id)

    def _motion_ended(self, m: MotionEnded) -> None:
        data = {"peak": round(m.peak, 4)}
        event_id = self._open.pop((m.camera, m.key), None)

        def write(conn: Connection) -> int:
            conn.execute(insert(schema.motion).values(camera=m.camera, start=m.start,
                                                      end=m.end, peak=m.peak))
            values = {"end": m.end, "data": json.dumps(data), "snapshot": m.snapshot}
            if event_id is not None:
                conn.execute(update(schema.events).where(schema.events.c.id == event_id)
                             .values(values))
                return event_id
            # The start was lost (node restarted mid-span): record the whole span now.
            return int(conn.execute(
                insert(schema.events).values(camera=m.camera, kind=EventKind.MOTION.value,
                                             start=m.start, **values)
                .returning(schema.events.c.id)
            ).scalar_one())

        stored = self.store.write(write)
        self._publish(m.camera, EventKind.MOTION, m.start, end=m.end, data=data,
                      snapshot=m.snapshot, id=stored)

    def _face(self, f: FaceTrack) -> None:
        data = {"detections": f.detections, "quality": round(f.quality, 4), "box": list(f.box)}
        sealed = self._seal(f)

        def write(conn: Connection) -> tuple[int, int]:
            event_id = int(conn.execute(
                insert(schema.events).values(camera=f.camera, kind=EventKind.FACE.value,
                                             start=f.start, end=f.end, data=json.dumps(data),
                                             snapshot=f.snapshot)
                .returning(schema.events.c.id)
            ).scalar_one())
            face_id = int(conn.execute(insert(schema.faces).values(
                camera=f.camera, start=f.start, end=f.end, detections=f.detections,
                box=json.dumps(list(f.box)), quality=f.quality, embedding=None, sealed=sealed,
                event_id=event_id,
            ).returning(schema.faces.c.id)).scalar_one())
            return event_id, face_id

        event_id, face_id = self.store.write(write)
        self._publish(f.camera, EventKind.FACE, f.start, end=f.end, data=data,
                      snapshot=f.snapshot, id=event_id)
        if self.on_face is not None:
            try:
                self.on_face(face_id, f)
            except Exception:
                # The row is stored and the event out; a failing listener must not undo that.
                log.exception("face listener failed on face %d", face_id)

    def _seal(self, f: FaceTrack) -> bytes | None:
        if f.embedding is None:
            return None
        if self.descriptors is None:
            if not self._warned_unsealed:
                log.warning("face descriptors arrive but nothing can seal them: not stored")
                self._warned_unsealed = True
            return None
        return self.descriptors.seal(f.embedding, f.camera, f.start)
