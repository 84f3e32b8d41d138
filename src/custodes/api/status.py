"""What the node is doing right now: cameras, health, recordings, disk.

Pages poll this every few seconds, so it reads running totals: segment counts and bytes per
camera from ``segment_totals`` (kept by triggers with every change to the segment index), and
each camera's oldest and newest footage from the ends of its (camera, start) index. Nothing
here reads every segment row, however large the archive.

Reasons (a camera's, its analysis's) are masked again before they are shown: they are free
text from ffmpeg and OpenCV, which repeat camera URLs with their passwords.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, func, select

from custodes.masking import mask_credentials
from custodes.record.cleanup import DeletionPass
from custodes.record.holds import active_holds
from custodes.store import schema

if TYPE_CHECKING:
    from custodes.app import Node
    from custodes.auth.roles import Actor


@dataclass(frozen=True)
class Footage:
    segments: int
    bytes: int
    oldest: float | None
    newest: float | None


def footage(conn: Connection, camera: str) -> Footage:
    """One camera's recorded footage, from the running totals and two index look-ups."""
    seg, totals = schema.segments, schema.segment_totals
    row = conn.execute(select(totals.c.segments, totals.c.bytes)
                       .where(totals.c.camera == camera)).first()
    oldest = conn.execute(select(seg.c.start).where(seg.c.camera == camera)
                          .order_by(seg.c.start).limit(1)).scalar()
    # The end of the segment that starts last: segments of one camera follow each other.
    newest = conn.execute(select(seg.c.end).where(seg.c.camera == camera)
                          .order_by(seg.c.start.desc()).limit(1)).scalar()
    return Footage(row.segments if row else 0, int(row.bytes or 0) if row else 0,
                   oldest, newest)


def node_status(node: Node, actor: Actor | None = None) -> dict[str, Any]:
    """The node's state; with ``actor``, only the cameras they may see (and their totals)."""
    now = time.time()
    shown = [cam for cam in node.cameras() if actor is None or actor.sees_camera(cam.name)]
    d = schema.deletion_passes
    with node.store.read() as conn:
        per_camera = {cam.name: footage(conn, cam.name) for cam in shown}
        holds = active_holds(conn, now)
        passes = [DeletionPass.from_row(r) for r in conn.execute(
            select(d).order_by(d.c.at.desc(), d.c.id.desc()).limit(5))]
        quarantined = conn.execute(select(func.count()).select_from(schema.quarantine)).scalar()
    disk = shutil.disk_usage(node.layout.root)
    cameras = []
    for cam in shown:
        row = per_camera[cam.name]
        health = cam.health
        stats = node.events.stats.get(cam.name)
        cameras.append({
            "name": cam.name,
            "site": cam.site,
            "location": cam.location,
            "purpose": cam.purpose,
            "recording": cam.recording,
            "state": health.state.value if health else "disabled",
            "reason": mask_credentials(health.reason) if health else "",
            "since": health.since if health else None,
            "last_segment_at": health.last_segment_at if health else None,
            "restarts": health.restarts if health else 0,
            "retention_hours": node.config.retention_hours(cam.name),
            "segments": row.segments,
            "bytes": row.bytes,
            "oldest": row.oldest,
            "newest": row.newest,
            "analytics": None if stats is None else {
                "online": stats.online, "reason": mask_credentials(stats.reason),
                "fps": round(stats.fps, 2),
                "lag_p95": round(stats.lag_p95, 3), "dropped": stats.dropped,
                # The rate aimed at, and whether it is below the configured one because the
                # node cannot keep up (analysis is shed; recording never is).
                "analysis_fps": round(stats.analysis_fps, 2), "shed": stats.shed,
            },
        })
    return {
        "node": node.config.node.name,
        "now": now,
        "uptime": now - node.started_at,
        "cameras": cameras,
        "recordings": {
            "segments": sum(c["segments"] for c in cameras),
            "bytes": sum(c["bytes"] for c in cameras),
            "quarantined": quarantined,
        },
        "disk": {"total": disk.total, "used": disk.used, "free": disk.free},
        "holds": len(holds),
        "deletion_passes": [
            {"at": p.at, "trigger": p.trigger.value, "segments": p.segments, "bytes": p.bytes}
            for p in passes
        ],
        "database_bytes": node.store.file_size(),
    }
