"""What the hub's pages and /metrics show, read from its tables: the fleet by group, a site,
the events across sites, the alarms. Plain queries, no writes."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from custodes.events.types import EventKind
from custodes.sitetime import SiteZone, ZoneSource, check_zone_name

DAY_MINUTES = 24 * 60
EVENTS_PAGE = 100


def zone_of(name: object) -> SiteZone:
    """The zone a site reports in its health (``timezone``, its node's zone); UTC when it
    reports none, or one this machine does not know (a site's word is not trusted blindly)."""
    if isinstance(name, str):
        try:
            return SiteZone(check_zone_name(name), ZoneSource.CONFIG)
        except ValueError:
            pass
    return SiteZone("UTC", ZoneSource.FALLBACK)


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
    timezone: str = "UTC"  # the zone the site reports (its node.timezone), checked


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
          name: str | None = None, now: float | None = None,
          groups: list[str] | None = None) -> list[SiteRow]:
    """Every site (or the one named), by group. The 24 h coverage is read from the hourly
    sums (migration 0002) for the whole hours in the window and from the minutes' sums
    (0003) for the part of an hour it starts with: the same figure as summing every minute,
    at ~25 + 30 index entries a site instead of 1440 JSON rows (the difference is what
    makes the overview of a year of the city fast: bench/hub_overview.py). ``groups``: only
    the sites of those (None: every group)."""
    now = time.time() if now is None else now
    first_minute = int(now // 60) - DAY_MINUTES
    first_hour = -(-first_minute // 60)  # the first hour wholly inside the window
    rows = conn.execute(
        "SELECT s.name, s.grp, s.last_heard, s.health, s.audit_verified_seq, s.audit_max_seq, "
        "s.chain_broken_at, "
        "(SELECT count(*) FROM alarms a WHERE a.site = s.name AND a.cleared_at IS NULL), "
        "h.seconds, h.camera_minutes, m.seconds, m.camera_minutes "
        "FROM sites s "
        "LEFT JOIN LATERAL (SELECT sum(ch.seconds) AS seconds, "
        " sum(ch.camera_minutes) AS camera_minutes FROM coverage_hourly ch "
        " WHERE ch.site = s.name AND ch.hour >= %(first_hour)s) h ON true "
        "LEFT JOIN LATERAL (SELECT sum(cm.seconds) AS seconds, "
        " sum(cm.camera_minutes) AS camera_minutes FROM coverage_minutes cm "
        " WHERE cm.site = s.name AND cm.minute >= %(first_minute)s "
        " AND cm.minute < %(first_hour)s * 60) m ON true "
        "WHERE (%(name)s::text IS NULL OR s.name = %(name)s) "
        "AND (%(groups)s::text[] IS NULL OR s.grp = ANY(%(groups)s)) ORDER BY s.grp, s.name",
        {"first_minute": first_minute, "first_hour": first_hour, "name": name,
         "groups": groups}).fetchall()
    out = []
    for (site, grp, heard, health, verified, held, broken, alarms, hour_seconds,
         hour_minutes, edge_seconds, edge_minutes) in rows:
        seconds = float(hour_seconds or 0) + float(edge_seconds or 0)
        camera_minutes = int(hour_minutes or 0) + int(edge_minutes or 0)
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
            coverage_24h=seconds / (60.0 * camera_minutes) if camera_minutes else None,
            retention_hours=max(kept.values()) if kept else None,
            retention_limit=max(limits.values()) if limits else None,
            disk_used=(disk["used"] / disk["total"]) if disk.get("total") else None,
            alarms=int(alarms), audit_verified=int(verified), audit_held=int(held),
            chain_broken_at=broken, profile=h.get("profile"),
            timezone=zone_of(h.get("timezone")).name,
        ))
    return out


def groups(rows: list[SiteRow]) -> list[Group]:
    by: dict[str, Group] = {}
    for row in rows:
        by.setdefault(row.group, Group(row.group)).sites.append(row)
    return list(by.values())


def alarms(conn: psycopg.Connection[Any], site: str | None = None,
           open_only: bool = False, limit: int = 500,
           groups: list[str] | None = None) -> list[dict[str, Any]]:
    """Newest first; ``groups``: only those of the sites of these groups (None: every one)."""
    rows = conn.execute(
        "SELECT a.id, a.site, s.grp, a.kind, a.raised_at, a.detail, a.cleared_at FROM alarms a "
        "LEFT JOIN sites s ON s.name = a.site WHERE (%(site)s::text IS NULL OR a.site = "
        "%(site)s) AND (NOT %(open)s OR a.cleared_at IS NULL) "
        "AND (%(groups)s::text[] IS NULL OR s.grp = ANY(%(groups)s)) "
        "ORDER BY a.raised_at DESC LIMIT %(limit)s",
        {"site": site, "open": open_only, "limit": limit, "groups": groups}).fetchall()
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
        # coverage_gaps is kept from coverage by a trigger (migration 0002): a site with few
        # gaps would otherwise have its whole history expanded to find 50.
        "gaps": rows("SELECT minute * 60, camera, seconds FROM coverage_gaps WHERE site = %s "
                     "ORDER BY minute DESC, camera LIMIT 50", ("minute", "camera", "seconds")),
        "events": rows("SELECT camera, kind, start_at, end_at FROM events WHERE site = %s "
                       "ORDER BY seq DESC LIMIT 50", ("camera", "kind", "start_at", "end_at")),
    }


@dataclass(frozen=True)
class EventFilter:
    """What the events page asks for; None: any. Times are UTC epoch seconds, ``end``
    excluded. ``before``: the (start, site, seq) of the last event of the previous page.
    ``groups``: the user's scope (hub/scope.py), None: every group; no other field widens it."""

    groups: list[str] | None = None
    group: str | None = None
    site: str | None = None
    camera: str | None = None
    kind: EventKind | None = None
    start: float | None = None
    end: float | None = None
    before: tuple[float, str, int] | None = None


@dataclass(frozen=True)
class EventRow:
    site: str
    group: str
    seq: int
    camera: str
    kind: str
    start_at: float
    end_at: float | None
    timezone: str  # the site's, for showing its times

    @property
    def key(self) -> str:
        """Where the next page starts: ``before`` of the following request."""
        return f"{self.start_at!r}:{self.site}:{self.seq}"


def events(conn: psycopg.Connection[Any], f: EventFilter,
           limit: int = EVENTS_PAGE) -> list[EventRow]:
    """Events across sites, newest first, ``limit`` at most. Only the conditions asked for
    are in the query (no ``x IS NULL OR``), so that each can use its index (migration 0002)
    whatever plan the server caches."""
    where: list[sql.Composable] = []
    args: dict[str, Any] = {"limit": limit}
    for column, key, value in (("s.grp", "grp", f.group), ("e.site", "site", f.site),
                               ("e.camera", "camera", f.camera),
                               ("e.kind", "kind", None if f.kind is None else f.kind.value)):
        if value is not None:
            where.append(sql.SQL("{} = {}").format(sql.SQL(column), sql.Placeholder(key)))
            args[key] = value
    if f.groups is not None:
        where.append(sql.SQL("s.grp = ANY(%(groups)s)"))
        args["groups"] = f.groups
    if f.start is not None:
        where.append(sql.SQL("e.start_at >= %(start)s"))
        args["start"] = f.start
    if f.end is not None:
        where.append(sql.SQL("e.start_at < %(end)s"))
        args["end"] = f.end
    if f.before is not None and f.before[1] == f.site:
        # One site: the comparison its index (site, start_at, seq) can seek to.
        where.append(sql.SQL("(e.start_at, e.seq) < (%(b_at)s, %(b_seq)s)"))
        args.update(b_at=f.before[0], b_seq=f.before[2])
    elif f.before is not None:
        where.append(sql.SQL("(e.start_at, e.site, e.seq) < (%(b_at)s, %(b_site)s, %(b_seq)s)"))
        args.update(b_at=f.before[0], b_site=f.before[1], b_seq=f.before[2])
    query = sql.SQL(
        "SELECT e.site, s.grp, e.seq, e.camera, e.kind, e.start_at, e.end_at, "
        "s.health->>'timezone' FROM events e JOIN sites s ON s.name = e.site {} "
        "ORDER BY e.start_at DESC, e.site DESC, e.seq DESC LIMIT %(limit)s").format(
            sql.SQL("WHERE ") + sql.SQL(" AND ").join(where) if where else sql.SQL(""))
    return [EventRow(str(r[0]), str(r[1]), int(r[2]), str(r[3]), str(r[4]), float(r[5]),
                     None if r[6] is None else float(r[6]), zone_of(r[7]).name)
            for r in conn.execute(query, args)]


def event_choices(conn: psycopg.Connection[Any],
                  groups: list[str] | None = None) -> dict[str, Any]:
    """The filters' options: groups and their sites, with each site's zone (of ``groups``
    only, when given)."""
    rows = conn.execute("SELECT grp, name, health->>'timezone' FROM sites WHERE "
                        "(%s::text[] IS NULL OR grp = ANY(%s)) ORDER BY grp, name",
                        (groups, groups)).fetchall()
    by_group: dict[str, list[str]] = {}
    zones: dict[str, str] = {}
    for grp, name, zone in rows:
        by_group.setdefault(str(grp), []).append(str(name))
        zones[str(name)] = zone_of(zone).name
    return {"groups": by_group, "zones": zones}


def site_cameras(conn: psycopg.Connection[Any], site: str) -> list[str]:
    """The cameras a site reported last (its health, else its latest configuration)."""
    row = conn.execute(
        "SELECT s.health->'cameras', (SELECT c.cameras FROM configs c WHERE c.site = s.name "
        "ORDER BY c.seq DESC LIMIT 1) FROM sites s WHERE s.name = %s", (site,)).fetchone()
    if row is None:
        return []
    health, config = row
    names = set(health) if isinstance(health, dict) else set()
    if isinstance(config, list):
        names |= {str(c) for c in config}
    return sorted(str(n) for n in names)


def metrics(conn: psycopg.Connection[Any], silent_after: float,
            groups: list[str] | None = None) -> dict[str, float]:
    """The gauges of /metrics, of ``groups`` only when given. Counts come from site_counts
    (migration 0003), kept by triggers: counting a year of events and audit entries at each
    scrape took seconds. Rejected messages name no trusted site: shown to unlimited users."""
    rows = sites(conn, silent_after, groups=groups)
    counted = conn.execute(
        "SELECT COALESCE(sum(c.events), 0), COALESCE(sum(c.audit_entries), 0), "
        "(SELECT count(*) FROM alarms a JOIN sites t ON t.name = a.site "
        " WHERE a.cleared_at IS NULL AND (%(g)s::text[] IS NULL OR t.grp = ANY(%(g)s))) "
        "FROM site_counts c JOIN sites s ON s.name = c.site "
        "WHERE %(g)s::text[] IS NULL OR s.grp = ANY(%(g)s)", {"g": groups}).fetchone()
    events_n, audit_n, open_alarms = counted if counted is not None else (0, 0, 0)
    out = {
        "custodes_hub_sites": float(len(rows)),
        "custodes_hub_sites_online": float(sum(r.online for r in rows)),
        "custodes_hub_cameras": float(sum(r.cameras for r in rows)),
        "custodes_hub_cameras_down": float(sum(r.down for r in rows)),
        "custodes_hub_backlog_messages": float(sum(r.backlog for r in rows)),
        "custodes_hub_chains_broken": float(sum(r.chain_broken_at is not None for r in rows)),
        "custodes_hub_audit_entries": float(audit_n),
        "custodes_hub_events": float(events_n),
        "custodes_hub_open_alarms": float(open_alarms),
    }
    if groups is None:
        row = conn.execute("SELECT count(*) FROM rejected").fetchone()
        out["custodes_hub_rejected_messages"] = float(row[0]) if row else 0.0
    return out
