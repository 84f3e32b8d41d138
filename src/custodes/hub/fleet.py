"""What the hub's pages and /metrics show, read from its tables: the fleet by group, a site,
the alarms. Plain queries, no writes."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import psycopg

DAY_MINUTES = 24 * 60


@dataclass(frozen=True)
class SiteRow:
    name: str
    group: str
    last_heard: float | None
    online: bool
    cameras: int
    recording: int
    down: int
    backlog: int
    coverage_24h: float | None  # fraction of camera-minutes recorded, of those reported
    retention_hours: float | None  # the oldest footage kept, any camera
    retention_limit: float | None  # the profile's (config's) limit, the largest camera's
    disk_used: float | None  # fraction
    alarms: int
    audit_verified: int
    audit_held: int
    chain_broken_at: int | None
    profile: str | None


@dataclass
class Group:
    name: str
    sites: list[SiteRow] = field(default_factory=list)

    @property
    def cameras(self) -> int:
        return sum(s.cameras for s in self.sites)

    @property
    def down(self) -> int:
        return sum(s.down for s in self.sites)

    @property
    def alarms(self) -> int:
        return sum(s.alarms for s in self.sites)


def sites(conn: psycopg.Connection[Any], silent_after: float,
          name: str | None = None) -> list[SiteRow]:
    now = time.time()
    first_minute = int(now // 60) - DAY_MINUTES
    rows = conn.execute(
        "SELECT s.name, s.grp, s.last_heard, s.health, s.audit_verified_seq, s.audit_max_seq, "
        "s.chain_broken_at, "
        "(SELECT count(*) FROM alarms a WHERE a.site = s.name AND a.cleared_at IS NULL), "
        "(SELECT sum(v::numeric) FROM coverage c, jsonb_each_text(c.cameras) AS e(k, v) "
        " WHERE c.site = s.name AND c.seq >= %s), "
        "(SELECT sum((SELECT count(*) FROM jsonb_object_keys(c.cameras))) FROM coverage c "
        " WHERE c.site = s.name AND c.seq >= %s) "
        "FROM sites s WHERE (%s::text IS NULL OR s.name = %s) ORDER BY s.grp, s.name",
        (first_minute, first_minute, name, name)).fetchall()
    out = []
    for (site, grp, heard, health, verified, held, broken, alarms, seconds,
         camera_minutes) in rows:
        h: dict[str, Any] = health or {}
        cams: dict[str, Any] = h.get("cameras") or {}
        recording = sum(1 for c in cams.values() if c.get("recording")
                        and c.get("state") == "online")
        kept = h.get("retention_hours") or {}
        limits = h.get("retention_limit_hours") or {}
        disk = h.get("disk") or {}
        out.append(SiteRow(
            name=site, group=grp, last_heard=heard,
            online=heard is not None and now - heard <= silent_after,
            cameras=len(cams), recording=recording, down=len(cams) - recording,
            backlog=sum(int(v) for v in (h.get("backlog") or {}).values()),
            coverage_24h=(float(seconds) / (60.0 * float(camera_minutes))
                          if seconds is not None and camera_minutes else None),
            retention_hours=max(kept.values()) if kept else None,
            retention_limit=max(limits.values()) if limits else None,
            disk_used=(disk["used"] / disk["total"]) if disk.get("total") else None,
            alarms=int(alarms), audit_verified=int(verified), audit_held=int(held),
            chain_broken_at=broken, profile=h.get("profile"),
        ))
    return out


def groups(rows: list[SiteRow]) -> list[Group]:
    by: dict[str, Group] = {}
    for row in rows:
        by.setdefault(row.group, Group(row.group)).sites.append(row)
    return list(by.values())


def alarms(conn: psycopg.Connection[Any], site: str | None = None,
           open_only: bool = False, limit: int = 500) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT a.id, a.site, s.grp, a.kind, a.raised_at, a.detail, a.cleared_at FROM alarms a "
        "LEFT JOIN sites s ON s.name = a.site WHERE (%s::text IS NULL OR a.site = %s) "
        "AND (NOT %s OR a.cleared_at IS NULL) ORDER BY a.raised_at DESC LIMIT %s",
        (site, site, open_only, limit)).fetchall()
    keys = ("id", "site", "group", "kind", "raised_at", "detail", "cleared_at")
    return [dict(zip(keys, r, strict=True)) for r in rows]


def site_detail(conn: psycopg.Connection[Any], site: str) -> dict[str, Any]:
    """The lists on a site's page: camera states, deletions, holds, config changes."""
    def rows(sql: Any, keys: tuple[str, ...]) -> list[dict[str, Any]]:
        return [dict(zip(keys, r, strict=True)) for r in conn.execute(sql, (site,))]

    return {
        "states": rows("SELECT camera, at, state, reason FROM camera_states WHERE site = %s "
                       "ORDER BY seq DESC LIMIT 50", ("camera", "at", "state", "reason")),
        "deletions": rows("SELECT at, trigger, segments, bytes FROM deletion_passes WHERE "
                          "site = %s ORDER BY seq DESC LIMIT 50",
                          ("at", "trigger", "segments", "bytes")),
        "holds": rows("SELECT camera, start_at, end_at, reason, created_by FROM holds WHERE "
                      "site = %s ORDER BY seq DESC LIMIT 50",
                      ("camera", "start_at", "end_at", "reason", "created_by")),
        "configs": rows("SELECT at, profile, digest FROM configs WHERE site = %s "
                        "ORDER BY seq DESC LIMIT 20", ("at", "profile", "digest")),
        "gaps": rows("SELECT c.seq * 60, e.key, e.value::numeric FROM coverage c, "
                     "jsonb_each_text(c.cameras) e WHERE c.site = %s AND e.value::numeric < 55 "
                     "ORDER BY c.seq DESC LIMIT 50", ("minute", "camera", "seconds")),
        "events": rows("SELECT camera, kind, start_at, end_at FROM events WHERE site = %s "
                       "ORDER BY seq DESC LIMIT 50", ("camera", "kind", "start_at", "end_at")),
    }


def metrics(conn: psycopg.Connection[Any], silent_after: float) -> dict[str, float]:
    rows = sites(conn, silent_after)
    counts = {str(r[0]): float(r[1]) for r in conn.execute(
        "SELECT 'audit_entries', count(*) FROM audit_entries UNION ALL "
        "SELECT 'events', count(*) FROM events UNION ALL "
        "SELECT 'rejected', count(*) FROM rejected UNION ALL "
        "SELECT 'open_alarms', count(*) FROM alarms WHERE cleared_at IS NULL")}
    return {
        "custodes_hub_sites": float(len(rows)),
        "custodes_hub_sites_online": float(sum(r.online for r in rows)),
        "custodes_hub_cameras": float(sum(r.cameras for r in rows)),
        "custodes_hub_cameras_down": float(sum(r.down for r in rows)),
        "custodes_hub_backlog_messages": float(sum(r.backlog for r in rows)),
        "custodes_hub_chains_broken": float(sum(r.chain_broken_at is not None for r in rows)),
        "custodes_hub_audit_entries": counts.get("audit_entries", 0.0),
        "custodes_hub_events": counts.get("events", 0.0),
        "custodes_hub_rejected_messages": counts.get("rejected", 0.0),
        "custodes_hub_open_alarms": counts.get("open_alarms", 0.0),
    }
