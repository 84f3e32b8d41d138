"""What the node is doing right now: cameras, health, recordings, disk."""

from __future__ import annotations

import shutil
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from custodes.record.cleanup import retention_status
from custodes.store import schema

if TYPE_CHECKING:
    from custodes.app import Node
    from custodes.auth.roles import Actor


def node_status(node: Node, actor: Actor | None = None) -> dict[str, Any]:
    """The node's state; with ``actor``, only the cameras they may see (and their totals)."""
    now = time.time()
    with node.store.read() as conn:
        retention = retention_status(conn, node.config, now, last_passes=5)
        quarantined = conn.execute(select(func.count()).select_from(schema.quarantine)).scalar()
    per_camera = {footage.camera: footage for footage in retention.cameras}
    disk = shutil.disk_usage(node.layout.root)
    cameras = []
    for cam in node.cameras():
        if actor is not None and not actor.sees_camera(cam.name):
            continue
        row = per_camera.get(cam.name)
        health = cam.health
        stats = node.events.stats.get(cam.name)
        cameras.append({
            "name": cam.name,
            "site": cam.site,
            "location": cam.location,
            "purpose": cam.purpose,
            "recording": cam.recording,
            "state": health.state.value if health else "disabled",
            "reason": health.reason if health else "",
            "since": health.since if health else None,
            "last_segment_at": health.last_segment_at if health else None,
            "restarts": health.restarts if health else 0,
            "retention_hours": row.retention_hours if row else None,
            "segments": row.segments if row else 0,
            "bytes": int(row.bytes or 0) if row else 0,
            "oldest": row.oldest if row else None,
            "newest": row.newest if row else None,
            "analytics": None if stats is None else {
                "online": stats.online, "reason": stats.reason, "fps": round(stats.fps, 2),
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
        "holds": len(retention.holds),
        "deletion_passes": [
            {"at": p.at, "trigger": p.trigger.value, "segments": p.segments, "bytes": p.bytes}
            for p in retention.passes
        ],
        "database_bytes": node.store.file_size(),
    }
