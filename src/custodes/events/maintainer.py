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

import functools
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from sqlalchemy import Connection, insert, select, update

from custodes.analytics.motion import SpanEnd
from custodes.analytics.worker import (
    FaceTrack,
    Message,
    MotionEnded,
    MotionStarted,
    Stats,
    VisitEnded,
)
from custodes.capture.supervisor import State
from custodes.events.bus import EventBus
from custodes.events.mqtt import mask_reason
from custodes.events.types import Event, EventKind
from custodes.faces.descriptors import FaceDescriptors
from custodes.masking import mask_credentials
from custodes.store import schema
from custodes.store.db import Store

log = logging.getLogger(__name__)

DRAIN_MAX = 10_000  # messages stored at stop, at most


@dataclass
class _OpenVisit:
    event_id: int
    quality: float
    data: dict[str, Any]
    snapshot: str | None


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
        self._visits: dict[tuple[str, int], _OpenVisit] = {}  # (camera, visit key) -> event
        self._offline: dict[str, tuple[int, float]] = {}  # camera -> (event id, since)
        self._states = threading.Lock()  # capture threads report states side by side
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="event-maintainer", daemon=True)

    def start(self) -> None:
        closed = self.close_open()
        if closed:
            log.info("closed %d events the last run left open", closed)
        self._thread.start()

    def close_open(self, now: float | None = None) -> int:
        """End every event a previous run left open (stopped without ending them, or killed):
        no event stays "ongoing" for ever. Its real end is unknown: a motion span or visit
        ends where it started, a camera outage when the node came back; the data says so."""
        now = time.time() if now is None else now
        # Not the events this maintainer opened: a recorder may report its camera offline
        # before the maintainer starts. Under the lock, so that none is opened meanwhile.
        with self._states:
            mine = [event_id for event_id, _ in self._offline.values()]
            mine += [*self._open.values(), *(v.event_id for v in self._visits.values())]
            return self.store.write(functools.partial(self._close_rows, mine, now))

    @staticmethod
    def _close_rows(mine: list[int], now: float, conn: Connection) -> int:
        ev = schema.events
        rows = conn.execute(select(ev.c.id, ev.c.kind, ev.c.start, ev.c.data)
                            .where(ev.c.end.is_(None), ev.c.id.not_in(mine))).all()
        for row in rows:
            data = json.loads(row.data)
            data["ended"] = SpanEnd.RESTART.value
            end = max(now, row.start) if row.kind == EventKind.CAMERA_OFFLINE else row.start
            conn.execute(update(ev).where(ev.c.id == row.id)
                         .values(end=end, data=json.dumps(data)))
        return len(rows)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        # The analysis processes' last messages (spans and visits they ended as they
        # stopped) are stored, not left for the next start to close as unknown.
        for _ in range(DRAIN_MAX):
            try:
                message = self.source.get(timeout=0.2)
            except (queue.Empty, EOFError, OSError):
                break
            try:
                self.handle(message)
            except Exception:
                log.exception("could not store %s", type(message).__name__)

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
        elif isinstance(message, VisitEnded):
            self._visit_ended(message)
        else:
            self._face(message)

    def _publish(self, camera: str, kind: EventKind, start: float, **fields: Any) -> None:
        self.bus.publish(Event(camera, self.sites.get(camera, ""), kind, start, **fields))

    def _close_orphans(self, camera: str, kind: EventKind, at: float) -> None:
        """A camera has one motion span and one visit open at a time: one still open when
        a new one of its kind starts lost its end with an analysis process that crashed and
        was restarted. It ends where the new one starts, marked ``ended: lost``."""
        if kind == EventKind.MOTION:
            orphans = [self._open.pop(k) for k in [k for k in self._open if k[0] == camera]]
        else:
            orphans = [self._visits.pop(k).event_id
                       for k in [k for k in self._visits if k[0] == camera]]
        if not orphans:
            return
        ev = schema.events

        def write(conn: Connection) -> None:
            for event_id, start, data in conn.execute(
                    select(ev.c.id, ev.c.start, ev.c.data).where(ev.c.id.in_(orphans))).all():
                ended = {**json.loads(data), "ended": SpanEnd.LOST.value}
                conn.execute(update(ev).where(ev.c.id == event_id)
                             .values(end=max(start, at), data=json.dumps(ended)))

        self.store.write(write)
        log.warning("%s: closed %d events whose analysis ended without closing them",
                    camera, len(orphans))

    def _motion_started(self, m: MotionStarted) -> None:
        self._close_orphans(m.camera, EventKind.MOTION, m.start)
        data = {"continues": True} if m.continues else {}

        def write(conn: Connection) -> int:
            return int(conn.execute(
                insert(schema.events).values(camera=m.camera, kind=EventKind.MOTION.value,
                                             start=m.start, end=None, data=json.dumps(data),
                                             snapshot=None)
                .returning(schema.events.c.id)
            ).scalar_one())

        event_id = self.store.write(write)
        self._open[(m.camera, m.key)] = event_id
        self._publish(m.camera, EventKind.MOTION, m.start, id=event_id)

    def _motion_ended(self, m: MotionEnded) -> None:
        data: dict[str, Any] = {"peak": round(m.peak, 4), "ended": m.ended.value}
        if m.ended == SpanEnd.CEILING:
            data["continued"] = True  # the motion went on in the next event
        if m.snapshot is None and m.no_snapshot:
            data["no_snapshot"] = m.no_snapshot
        event_id = self._open.pop((m.camera, m.key), None)

        def write(conn: Connection) -> int:
            conn.execute(insert(schema.motion).values(camera=m.camera, start=m.start,
                                                      end=m.end, peak=m.peak))
            values = {"end": m.end, "data": json.dumps(data), "snapshot": m.snapshot}
            if event_id is not None:
                started = conn.execute(select(schema.events.c.data)
                                       .where(schema.events.c.id == event_id)).scalar()
                if started and json.loads(started).get("continues"):
                    data["continues"] = True
                    values["data"] = json.dumps(data)
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
        """A face track: a row of its own (faces), and its visit's event opened or grown."""
        data: dict[str, Any] = {"tracks": 1, "detections": f.detections,
                                "quality": round(f.quality, 4), "box": list(f.box)}
        if f.snapshot is None and f.no_snapshot:
            data["no_snapshot"] = f.no_snapshot
        sealed = self._seal(f)
        key = (f.camera, f.visit)
        visit = self._visits.get(key) if f.visit else None
        opened = visit is None
        if f.visit and opened:
            self._close_orphans(f.camera, EventKind.FACE, f.start)

        def write(conn: Connection) -> tuple[int, int]:
            ev = schema.events
            if visit is None:
                # A visit's event is open (no end) until its VisitEnded; a track on its own
                # (visit 0) is its whole event.
                event_id = int(conn.execute(
                    insert(ev).values(camera=f.camera, kind=EventKind.FACE.value,
                                      start=f.start, end=None if f.visit else f.end,
                                      data=json.dumps(data), snapshot=f.snapshot)
                    .returning(ev.c.id)
                ).scalar_one())
            else:
                event_id = visit.event_id
                grown = visit.data
                grown["tracks"] += 1
                grown["detections"] += f.detections
                if f.quality > visit.quality:
                    visit.quality = f.quality
                    grown["quality"], grown["box"] = round(f.quality, 4), list(f.box)
                values: dict[str, Any] = {}
                if visit.snapshot is None and f.snapshot is not None:
                    visit.snapshot = values["snapshot"] = f.snapshot
                    grown.pop("no_snapshot", None)
                values["data"] = json.dumps(grown)
                conn.execute(update(ev).where(ev.c.id == event_id).values(values))
                start = conn.execute(select(ev.c.start).where(ev.c.id == event_id)).scalar()
                if start is not None and f.start < start:
                    conn.execute(update(ev).where(ev.c.id == event_id).values(start=f.start))
            face_id = int(conn.execute(insert(schema.faces).values(
                camera=f.camera, start=f.start, end=f.end, detections=f.detections,
                box=json.dumps(list(f.box)), quality=f.quality, embedding=None, sealed=sealed,
                event_id=event_id,
            ).returning(schema.faces.c.id)).scalar_one())
            return event_id, face_id

        event_id, face_id = self.store.write(write)
        if f.visit and opened:
            self._visits[key] = _OpenVisit(event_id, f.quality, data, f.snapshot)
        if opened:
            # Announced once, when someone is first seen; again when the visit ends.
            self._publish(f.camera, EventKind.FACE, f.start,
                          end=None if f.visit else f.end, data=data,
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

    def _visit_ended(self, v: VisitEnded) -> None:
        visit = self._visits.pop((v.camera, v.visit), None)
        if visit is None:
            return  # its event was closed at this node's start (the visit began before it)
        data = {**visit.data, "tracks": v.tracks, "detections": v.detections}
        ev = schema.events

        def write(conn: Connection) -> None:
            conn.execute(update(ev).where(ev.c.id == visit.event_id)
                         .values(start=v.start, end=v.end, data=json.dumps(data)))

        self.store.write(write)
        self._publish(v.camera, EventKind.FACE, v.start, end=v.end, data=data,
                      snapshot=visit.snapshot, id=visit.event_id)

    # -- camera states, from the capture supervisors ------------------------------------------

    def camera_state(self, camera: str, state: State, reason: str,
                     at: float | None = None) -> None:
        """A camera's capture state changed: an alert when it goes offline, ended (with an
        event of its own) when it is back; ended too when the node stops recording it.

        Called from the camera's capture thread. The reason was masked of credentials by the
        supervisor; paths and URLs go too, since the event also leaves the node over MQTT.
        """
        at = time.time() if at is None else at
        try:
            self._camera_state(camera, state, reason, at)
        except Exception:
            # The capture thread calling must go on recording whatever happens here.
            log.exception("could not record camera %s going %s as an event", camera, state)

    def _camera_state(self, camera: str, state: State, reason: str, at: float) -> None:
        ev = schema.events
        with self._states:
            down = self._offline.get(camera)
            if state == State.OFFLINE and down is None:
                data = {"reason": mask_reason(mask_credentials(reason))}

                def opened(conn: Connection) -> int:
                    return int(conn.execute(
                        insert(ev).values(camera=camera, kind=EventKind.CAMERA_OFFLINE.value,
                                          start=at, end=None, data=json.dumps(data),
                                          snapshot=None).returning(ev.c.id)
                    ).scalar_one())

                event_id = self.store.write(opened)
                self._offline[camera] = (event_id, at)
                self._publish(camera, EventKind.CAMERA_OFFLINE, at, data=data, id=event_id)
            elif state in {State.ONLINE, State.STOPPED} and down is not None:
                del self._offline[camera]
                self._camera_back(camera, state, at, *down)

    def _camera_back(self, camera: str, state: State, at: float, down_id: int,
                     since: float) -> None:
        ev = schema.events
        back = {"offline_for": round(at - since, 1), "offline_event": down_id}

        def write(conn: Connection) -> tuple[dict[str, Any], int | None]:
            row = conn.execute(select(ev.c.data).where(ev.c.id == down_id)).scalar()
            data = json.loads(row) if row else {}
            if state == State.STOPPED:
                data["ended"] = SpanEnd.STOP.value  # recording stopped while it was down
            conn.execute(update(ev).where(ev.c.id == down_id)
                         .values(end=at, data=json.dumps(data)))
            if state == State.STOPPED:
                return data, None
            back_id = int(conn.execute(
                insert(ev).values(camera=camera, kind=EventKind.CAMERA_ONLINE.value, start=at,
                                  end=at, data=json.dumps(back), snapshot=None)
                .returning(ev.c.id)
            ).scalar_one())
            return data, back_id

        data, back_id = self.store.write(write)
        self._publish(camera, EventKind.CAMERA_OFFLINE, since, end=at, data=data, id=down_id)
        if back_id is not None:
            self._publish(camera, EventKind.CAMERA_ONLINE, at, end=at, data=back, id=back_id)
