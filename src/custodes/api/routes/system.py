"""How the node is doing: health (anyone), status and Prometheus metrics (status.view),
retention and the configuration as it runs (system.view).

Per-camera figures are limited to the cameras the caller may see. Prometheus scrapes with an
API token of a user holding status.view (``Authorization: Bearer cst_...``); the text format is
written here by hand, which is all it takes and adds no dependency.
"""

from __future__ import annotations

import shutil
import time
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import PlainTextResponse
from sqlalchemy import func, select, text

from custodes.api.deps import get_node, public, require
from custodes.api.status import node_status
from custodes.auth.roles import Actor, Permission
from custodes.capture.supervisor import State
from custodes.config import redact_url
from custodes.record.cleanup import CameraDeletion, Trigger, retention_status
from custodes.store import schema

if TYPE_CHECKING:
    from custodes.app import Node

router = APIRouter(tags=["system"])

StatusViewer = Annotated[Actor, Depends(require(Permission.STATUS_VIEW))]
SystemViewer = Annotated[Actor, Depends(require(Permission.SYSTEM_VIEW))]

BITRATE_WINDOW = 300.0  # seconds of recent segments the bitrate is averaged over


@router.get("/api/health", dependencies=[Depends(public)])
def health(request: Request) -> dict[str, str]:
    """Whether the server answers and its database reads; no details (anyone may ask)."""
    with get_node(request).store.read() as conn:
        conn.execute(text("SELECT 1"))
    return {"status": "ok"}


@router.get("/api/status")
def status(request: Request, actor: StatusViewer) -> dict[str, Any]:
    """Cameras with their health and recordings, and disk use."""
    return node_status(get_node(request), actor)


@router.get("/api/system/retention")
def retention(request: Request, actor: SystemViewer,
              passes: Annotated[int, Query(ge=0, le=1000)] = 20) -> dict[str, Any]:
    """Footage kept per camera against its retention, active holds, the latest deletion
    passes (proof of deletion): of the caller's cameras only. A hold's reason names its case
    and a pass's details what was recorded where, so a user limited to some cameras sees
    neither for the others (a hold on every camera only when they see every camera)."""
    node = get_node(request)
    with node.store.read() as conn:
        status = retention_status(conn, node.config, time.time(), last_passes=passes)
    everything = actor.cameras is None

    def shown(camera: str | None) -> bool:
        return everything if camera is None else actor.sees_camera(camera)

    def deleted(details: dict[str, CameraDeletion]) -> dict[str, dict[str, Any]]:
        return {cam: d.to_json() for cam, d in details.items() if shown(cam)}

    return {
        "default_hours": node.config.retention.default_hours,
        "ceiling_days": node.config.retention.ceiling_days,
        "cameras": [
            {"camera": c.camera, "configured": c.configured, "retention_hours": c.retention_hours,
             "oldest": c.oldest, "newest": c.newest, "segments": c.segments,
             "bytes": int(c.bytes or 0)}
            for c in status.cameras if actor.sees_camera(c.camera)
        ],
        "holds": [
            {"id": h.id, "camera": h.camera, "start": h.start, "end": h.end, "reason": h.reason,
             "created_at": h.created_at, "created_by": h.created_by, "expires_at": h.expires_at}
            for h in status.holds if shown(h.camera)
        ],
        "passes": [
            # Totals of the cameras shown, not of the pass: they would tell the others apart.
            {"id": p.id, "at": p.at, "trigger": p.trigger.value,
             "segments": p.segments if everything
             else sum(d.segments for c, d in p.details.items() if shown(c)),
             "bytes": p.bytes if everything
             else sum(d.bytes for c, d in p.details.items() if shown(c)),
             "cameras": deleted(p.details)}
            for p in status.passes if everything or any(map(shown, p.details))
        ],
    }


@router.get("/api/system/config")
def config_view(request: Request, actor: SystemViewer) -> dict[str, Any]:
    """The configuration the node runs with, read-only, camera passwords hidden."""
    cfg = get_node(request).config
    cameras = {}
    for name, cam in cfg.cameras.items():
        if not actor.sees_camera(name):
            continue
        cameras[name] = {
            **cam.model_dump(mode="json", exclude={"main_url", "sub_url"}),
            "main_url": redact_url(cam.main_url),
            "sub_url": None if cam.sub_url is None else redact_url(cam.sub_url),
            "retention_hours": cfg.retention_hours(name),
        }
    return {
        "profile": cfg.profile.value,
        "node": cfg.node.model_dump(mode="json"),
        "sites": {k: v.model_dump(mode="json") for k, v in cfg.sites.items()},
        "cameras": cameras,
        "retention": cfg.retention.model_dump(mode="json"),
        "storage": {"quota": cfg.storage.quota, "min_free": cfg.storage.min_free},
        "server": {"host": cfg.server.host, "port": cfg.server.port,
                   "allow_networks": cfg.server.allow_networks, "tls": cfg.server.tls,
                   "session_hours": cfg.server.session_hours},
        "mqtt": None if cfg.mqtt is None else {"host": cfg.mqtt.host, "port": cfg.mqtt.port},
    }


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(request: Request, actor: StatusViewer) -> PlainTextResponse:
    """Prometheus metrics (text format 0.0.4)."""
    try:
        body = prometheus_text(get_node(request), actor)
    except OSError as exc:  # the storage folder vanished: say so rather than fail opaquely
        raise HTTPException(503, f"storage is not readable: {exc.strerror}") from None
    return PlainTextResponse(body, media_type="text/plain; version=0.0.4; charset=utf-8")


# -- Prometheus text ---------------------------------------------------------------------------

def _label(value: str) -> str:
    return value.replace("\\", r"\\").replace('"', r"\"").replace("\n", r"\n")


def _number(value: float) -> str:
    # Exact integers for byte counts (``:g`` would round 1234567890123 to 1.23457e+12).
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


class _Metrics:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_: str,
               samples: list[tuple[dict[str, str], float]]) -> None:
        self.lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
        for labels, value in samples:
            inner = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            number = _number(value)
            self.lines.append(f"{name}{{{inner}}} {number}" if inner else f"{name} {number}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def prometheus_text(node: Node, actor: Actor) -> str:
    now = time.time()
    seg = schema.segments
    with node.store.read() as conn:
        newest = {row[0]: row[1] for row in conn.execute(
            select(seg.c.camera, func.max(seg.c.end)).group_by(seg.c.camera)
        )}
        recent = {row[0]: (row[1], row[2]) for row in conn.execute(
            select(seg.c.camera, func.sum(seg.c.bytes), func.sum(seg.c.duration))
            .where(seg.c.end > now - BITRATE_WINDOW).group_by(seg.c.camera)
        )}
        stored = {row[0]: (row[1], row[2]) for row in conn.execute(
            select(seg.c.camera, func.count(), func.sum(seg.c.bytes)).group_by(seg.c.camera)
        )}
        dp = schema.deletion_passes
        deleted = {row[0]: (row[1], row[2]) for row in conn.execute(
            select(dp.c.trigger, func.sum(dp.c.segments), func.sum(dp.c.bytes))
            .group_by(dp.c.trigger)
        )}
    disk = shutil.disk_usage(node.layout.root)
    cameras = [c for c in node.cameras() if actor.sees_camera(c.name)]
    m = _Metrics()
    m.family("custodes_up", "gauge", "1 while the node serves", [({}, 1)])
    m.family("custodes_camera_online", "gauge", "1 when the camera's stream is being recorded",
             [({"camera": c.name}, float(c.health is not None and c.health.state == State.ONLINE))
              for c in cameras])
    m.family("custodes_camera_restarts_total", "counter", "Recorder restarts for the camera",
             [({"camera": c.name}, c.health.restarts if c.health else 0) for c in cameras])
    m.family("custodes_camera_stream_fps", "gauge",
             "Frames per second the camera sends on the analysed stream",
             [({"camera": c.name}, node.events.stats[c.name].stream_fps)
              for c in cameras if c.name in node.events.stats])
    m.family("custodes_camera_analysed_fps", "gauge", "Frames analysed per second",
             [({"camera": c.name}, node.events.stats[c.name].fps)
              for c in cameras if c.name in node.events.stats])
    m.family("custodes_camera_analysis_target_fps", "gauge",
             "Frames per second the analysis aims at: the configured rate unless shed",
             [({"camera": c.name}, node.events.stats[c.name].analysis_fps)
              for c in cameras if c.name in node.events.stats])
    m.family("custodes_camera_analysis_shed", "gauge",
             "1 while the camera's analysis rate is lowered because the node cannot keep up",
             [({"camera": c.name}, float(node.events.stats[c.name].shed))
              for c in cameras if c.name in node.events.stats])
    m.family("custodes_camera_segment_lag_seconds", "gauge",
             "Seconds since the end of the camera's newest recorded segment",
             [({"camera": c.name}, round(now - newest[c.name], 3))
              for c in cameras if newest.get(c.name) is not None])
    m.family("custodes_camera_bitrate_bps", "gauge",
             f"Recorded bits per second over the last {BITRATE_WINDOW:g} s",
             [({"camera": c.name}, round(8 * recent[c.name][0] / recent[c.name][1]))
              for c in cameras if c.name in recent and recent[c.name][1]])
    m.family("custodes_camera_recorded_segments", "gauge", "Segments kept for the camera",
             [({"camera": c.name}, stored.get(c.name, (0, 0))[0]) for c in cameras])
    m.family("custodes_camera_recorded_bytes", "gauge", "Bytes of footage kept for the camera",
             [({"camera": c.name}, stored.get(c.name, (0, 0))[1] or 0) for c in cameras])
    m.family("custodes_disk_total_bytes", "gauge", "Size of the storage filesystem",
             [({}, disk.total)])
    m.family("custodes_disk_used_bytes", "gauge", "Used bytes on the storage filesystem",
             [({}, disk.used)])
    m.family("custodes_disk_free_bytes", "gauge", "Free bytes on the storage filesystem",
             [({}, disk.free)])
    m.family("custodes_database_bytes", "gauge", "Size of the database and its WAL",
             [({}, node.store.file_size())])
    m.family("custodes_retention_deleted_segments_total", "counter",
             "Segments deleted by retention, by trigger",
             [({"trigger": t.value}, deleted.get(t.value, (0, 0))[0] or 0) for t in Trigger])
    m.family("custodes_retention_deleted_bytes_total", "counter",
             "Bytes deleted by retention, by trigger",
             [({"trigger": t.value}, deleted.get(t.value, (0, 0))[1] or 0) for t in Trigger])
    return m.text()
