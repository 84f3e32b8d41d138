"""What happened on a camera: the events analytics produce and the rest of custodes consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class EventKind(StrEnum):
    MOTION = "motion"  # data: peak (share of the frame that moved, 0..1)
    # One per visit: data: tracks, detections, quality and box [x, y, w, h] of the best face
    FACE = "face"
    WATCHLIST = "watchlist"  # data: alert, case (ids) and status; never a picture or a vector
    # The capture supervisor's view of a camera: down (data: reason; ends when it is back)
    # and back (data: offline_for seconds, offline_event id). Metadata only.
    CAMERA_OFFLINE = "camera_offline"
    CAMERA_ONLINE = "camera_online"


@dataclass(frozen=True)
class Event:
    """One event. ``end`` is None while it lasts (a motion event is announced at its start).

    ``snapshot`` is the path of a redacted JPEG below the node's snapshot folder. Pictures never
    leave the node with an event: consumers outside it (MQTT) get the metadata only.
    """

    camera: str
    site: str
    kind: EventKind
    start: float  # UTC epoch seconds
    end: float | None = None
    data: dict[str, Any] = field(default_factory=dict)
    snapshot: str | None = None
    id: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The event as sent to subscribers outside the node: no picture, only facts."""
        return {
            "id": self.id, "camera": self.camera, "site": self.site, "kind": self.kind.value,
            "start": self.start, "end": self.end, "data": self.data,
            "has_snapshot": self.snapshot is not None,
        }
