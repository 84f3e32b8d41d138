"""The inspection pack: what a privacy inspector asks of a recorder, answered from the node.

On a complaint the agency wants to know: which profile the deployment runs and what it
forbids; where each camera looks and why; how long footage is kept and whether it really is
deleted on time; who was allowed to identify anyone, in which case, approved by whom; who
looked at what; and whether the log that says all this is intact. The pack answers each from
the database (not from documentation), adds the audit log of the period, and is signed like
an export, so plain ``openssl`` (or ``custodes export verify PACK``) checks it offline. The
report is there three times over: report.pdf and report.md for people, report.json for
machines, all signed.

Nothing biometric is in it: no descriptors, crops or pictures; cases appear by reference.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, func, select

from custodes.audit import report_text
from custodes.audit.actions import Action
from custodes.audit.anchor import AnchorFile
from custodes.audit.exchange import export_log
from custodes.audit.log import SYSTEM, AuditLog, Outcome
from custodes.audit.report_pdf import render_pdf
from custodes.audit.report_text import PDF_FILE, readable, to_markdown
from custodes.audit.verify import verify_store
from custodes.cameras.audit import summary as camera_risk
from custodes.config import Config
from custodes.keys import NodeKeys
from custodes.privacy import policy
from custodes.privacy.policy import allows, placement_problem
from custodes.record.cleanup import DeletionPass, retention_status
from custodes.record.layout import Layout
from custodes.record.manifest import FileEntry, iso, key_fingerprint, write_manifest
from custodes.signage.pack import add_to_pack
from custodes.sitetime import site_zone
from custodes.store import schema
from custodes.store.db import Store

FORMAT = "custodes-inspection/1"
AUDIT_FILE = report_text.AUDIT_FILE
# Refusals listed one by one (the counts are always complete).
MAX_LISTED = 200


def _json(text: str | None) -> Any:
    return json.loads(text) if text else None


def _profile(config: Config) -> dict[str, Any]:
    return {
        "profile": config.profile.value,
        "allows": {action.value: allows(config.profile, action) for action in policy.Action},
        "attribute_inference": "none (custodes has no emotion, age, gender or other attribute "
        "inference in any profile)",
        "audio": "never recorded (capture drops every audio stream)",
    }


def _cameras(config: Config) -> list[dict[str, Any]]:
    return [{
        "name": name,
        "site": cam.site,
        "location": cam.location.value,
        "purpose": cam.purpose,
        "placement": placement_problem(config.profile, cam.location.value) or "allowed",
        "enabled": cam.enabled,
        "record_mode": cam.record.mode.value,
        "retention_hours": config.retention_hours(name),
        "face_detection": cam.analytics.enabled and cam.analytics.faces.detect,
        "face_descriptors": cam.analytics.enabled and cam.analytics.faces.embeddings,
        "privacy_zones": len(cam.privacy_zones),
    } for name, cam in sorted(config.cameras.items())]


def _retention(conn: Connection, config: Config, now: float, since: float) -> dict[str, Any]:
    status = retention_status(conn, config, now, last_passes=0)
    held = {h.camera for h in status.holds}
    cameras = []
    for footage in status.cameras:
        age_hours = (now - footage.oldest) / 3600 if footage.oldest is not None else None
        # Footage older than its limit is a finding unless a hold explains it; one retention
        # interval of slack, since deletion runs periodically.
        slack = config.retention.interval_seconds / 3600
        over = age_hours is not None and age_hours > footage.retention_hours + slack
        cameras.append({
            "camera": footage.camera,
            "retention_hours": footage.retention_hours,
            "oldest": iso(footage.oldest) if footage.oldest else None,
            "oldest_age_hours": round(age_hours, 2) if age_hours is not None else None,
            "within_limit": not over or footage.camera in held or None in held,
            "segments": footage.segments,
            "bytes": footage.bytes,
        })
    passes = [DeletionPass.from_row(row) for row in conn.execute(
        select(schema.deletion_passes).where(schema.deletion_passes.c.at >= since)
        .order_by(schema.deletion_passes.c.at)
    )]
    by_trigger: dict[str, dict[str, int]] = {}
    for p in passes:
        totals = by_trigger.setdefault(p.trigger, {"passes": 0, "segments": 0, "bytes": 0})
        totals["passes"] += 1
        totals["segments"] += p.segments
        totals["bytes"] += p.bytes
    return {
        "default_hours": config.retention.default_hours,
        "ceiling_days": config.retention.ceiling_days,
        "cameras": cameras,
        "deletions_by_trigger": by_trigger,
        "holds_active": [{
            "id": h.id, "camera": h.camera or "all", "start": iso(h.start), "end": iso(h.end),
            "reason": h.reason, "by": h.created_by,
            "expires": iso(h.expires_at) if h.expires_at else None,
        } for h in status.holds],
    }


def _cases(conn: Connection, since: float) -> list[dict[str, Any]]:
    c = schema.cases.c
    searches = Counter(
        row.target for row in conn.execute(
            select(schema.audit_log.c.target).where(
                schema.audit_log.c.action == Action.FACE_SEARCH.value,
                schema.audit_log.c.outcome == Outcome.OK.value,
            )
        )
    )
    alerts: dict[int, int] = dict(conn.execute(
        select(schema.case_alerts.c.case_id, func.count()).group_by(schema.case_alerts.c.case_id)
    ).all())
    rows = conn.execute(
        select(schema.cases).where((c.opened_at >= since) | (c.status.in_(["pending", "approved"])))
        .order_by(c.id)
    )
    return [{
        "id": row.id, "reference": row.reference, "legal_basis": row.legal_basis,
        "purpose": row.purpose, "cameras": _json(row.cameras),
        "scope": [iso(row.scope_start), iso(row.scope_end)], "watchlist": bool(row.watchlist),
        "opened_by": row.opened_by, "opened_at": iso(row.opened_at), "status": row.status,
        "decided_by": row.decided_by, "decided_at": iso(row.decided_at) if row.decided_at else None,
        "expires_at": iso(row.expires_at), "closed_by": row.closed_by,
        "searches": searches.get(f"case {row.id}", 0),
        "alerts": alerts.get(row.id, 0),
    } for row in rows]


def _subject_access(conn: Connection, since: float) -> list[dict[str, Any]]:
    """Subject access requests recorded in the period or still open: who recorded and who
    decided each, how the identity was checked. By reference: the requester's name and photo
    stay on the node (the officer who holds the reference can name them to the inspector)."""
    r = schema.subject_access_requests.c
    rows = conn.execute(
        select(schema.subject_access_requests)
        .where((r.recorded_at >= since) | r.status.in_(["pending", "approved"]))
        .order_by(r.id)
    )
    return [{
        "id": row.id, "reference": row.reference, "camera": row.camera,
        "span": [iso(row.scope_start), iso(row.scope_end)],
        "identity_check": row.identity_check, "identity_checked_by": row.identity_checked_by,
        "identity_checked_at": iso(row.identity_checked_at),
        "recorded_by": row.recorded_by, "recorded_at": iso(row.recorded_at),
        "status": row.status, "decided_by": row.decided_by,
        "decided_at": iso(row.decided_at) if row.decided_at else None,
        "export": row.export_id,
    } for row in rows]


def _gallery(conn: Connection, now: float) -> dict[str, Any]:
    g = schema.gallery_people
    by_basis: dict[str, int] = dict(conn.execute(
        select(g.c.basis_kind, func.count()).group_by(g.c.basis_kind)
    ).all())
    expired = conn.execute(select(func.count()).where(g.c.expires_at <= now)).scalar_one()
    return {"people_by_basis": by_basis, "expired_not_yet_deleted": expired}


def _access(conn: Connection, since: float) -> dict[str, Any]:
    a = schema.audit_log
    counts: dict[str, dict[str, int]] = {}
    for action, outcome, n in conn.execute(
        select(a.c.action, a.c.outcome, func.count()).where(a.c.at >= since)
        .group_by(a.c.action, a.c.outcome).order_by(a.c.action)
    ):
        counts.setdefault(action, {})[outcome] = n
    refusals = [{
        "seq": row.seq, "at": iso(row.at), "actor": row.actor, "address": row.address,
        "action": row.action, "target": row.target, "reason": _json(row.detail).get("reason"),
    } for row in conn.execute(
        select(a).where(a.c.at >= since, a.c.outcome == Outcome.REFUSED.value)
        .order_by(a.c.seq.desc())
        .limit(MAX_LISTED)
    )]
    return {"by_action": counts, "refusals": refusals}


def _users(conn: Connection) -> list[dict[str, Any]]:
    u = schema.users
    return [{
        "name": row.name, "role": row.role, "cameras": _json(row.cameras) or "all",
        "disabled": bool(row.disabled), "created_at": iso(row.created_at),
    } for row in conn.execute(select(u).order_by(u.c.name))]


_PRIVILEGED = ("admin", "investigator", "approver")  # custodes.auth.grants.PRIVILEGED
_PROFILE_ACTIONS = (Action.PROFILE_PIN, Action.PROFILE_CHANGE, Action.BIOMETRIC_WIPE)


def _duties(conn: Connection, since: float) -> dict[str, Any]:
    """Separation of duties: the grants of powerful roles, and every sign that one person held
    two sides (which custodes refuses; found here, it means the database was edited)."""
    g, u, a = schema.user_grants, schema.users, schema.audit_log
    grants = [{
        "id": row.id, "kind": row.kind, "user": row.user_name, "role": row.role,
        "requested_by": row.requested_by, "requested_at": iso(row.requested_at),
        "status": row.status, "decided_by": row.decided_by,
        "decided_at": iso(row.decided_at) if row.decided_at else None,
    } for row in conn.execute(
        select(g).where((g.c.requested_at >= since) | (g.c.status == "pending"))
        .order_by(g.c.id))]
    flags = [f"grant {x['id']} ({x['kind']} {x['user']} as {x['role']}) asked by "
             f"{x['requested_by']} is waiting for a second administrator"
             for x in grants if x["status"] == "pending"]
    flags += [f"grant {x['id']} was confirmed by the administrator who asked for it"
              for x in grants if x["status"] == "confirmed"
              and x["decided_by"] == x["requested_by"]]
    confirmed = {(row.user_name, row.role) for row in conn.execute(
        select(g.c.user_name, g.c.role).where(g.c.status == "confirmed",
                                              g.c.kind.in_(["add", "role"])))}
    first_run = set(conn.execute(select(a.c.target).where(
        a.c.actor == SYSTEM, a.c.action == Action.USER_ADD.value)).scalars())
    for row in conn.execute(select(u).where(u.c.role.in_(_PRIVILEGED), u.c.disabled == 0)
                            .order_by(u.c.name)):
        if (row.name, row.role) not in confirmed and row.name not in first_run:
            flags.append(f"{row.name} holds the {row.role} role without a grant a second "
                         "administrator confirmed (given before grants existed, or written "
                         "into the database)")
    c = schema.cases.c
    flags += [f"case {row.id} was decided by the user who opened it ({row.opened_by})"
              for row in conn.execute(select(c.id, c.opened_by).where(
                  c.decided_by == c.opened_by))]
    p = schema.gallery_people.c
    pending_gallery = conn.execute(select(func.count()).where(p.approved_at.is_(None))
                                   ).scalar_one()
    flags += [f"gallery entry {row.id} was approved by the user who enrolled it"
              for row in conn.execute(select(p.id).where(p.approved_by == p.created_by))]
    pinned = conn.execute(select(schema.node_settings).where(
        schema.node_settings.c.key == "profile")).first()
    changes = [{
        "seq": row.seq, "at": iso(row.at), "by": row.actor, "action": row.action,
        "detail": _json(row.detail),
    } for row in conn.execute(select(a).where(
        a.c.at >= since, a.c.action.in_([action.value for action in _PROFILE_ACTIONS]))
        .order_by(a.c.seq))]
    return {
        "grants": grants, "flags": flags,
        "gallery_pending_approval": pending_gallery,
        "profile_pinned": None if pinned is None else {
            "profile": pinned.value, "since": iso(pinned.set_at), "by": pinned.set_by},
        "profile_events": changes,
    }


def inspection_facts(
    config: Config, store: Store, keys: NodeKeys, *, since: float, now: float | None = None
) -> dict[str, Any]:
    """Everything the report states, as plain data (the JSON of the pack)."""
    now = time.time() if now is None else now
    with store.read() as conn:
        facts = {
            "format": FORMAT,
            "node": config.node.name,
            "software": f"custodes {version('custodes')}",
            "generated_at": iso(now),
            "period": [iso(since), iso(now)],
            "timezone": site_timezone(config),
            "deployment": _profile(config),
            "cameras": _cameras(config),
            "retention": _retention(conn, config, now, since),
            "cases": _cases(conn, since),
            "subject_access": _subject_access(conn, since),
            "gallery": _gallery(conn, now),
            "access": _access(conn, since),
            "users": _users(conn),
            "separation_of_duties": _duties(conn, since),
            # The last fleet risk audit (custodes cameras audit), as it was kept on the node.
            "camera_risk": camera_risk(Layout(config.storage.path).root, config),
        }
    anchors = AnchorFile.in_folder(keys.folder)
    report = verify_store(store, keys.public_pem, anchors=anchors)
    latest = anchors.last()
    facts["audit_chain"] = {
        "ok": report.ok, "summary": report.summary(), "problems": [str(p) for p in report.problems],
        "public_key_fingerprint": key_fingerprint(keys.public_pem),
        # What the node signed last, kept outside the database: whoever holds this pack can
        # later hold the node's log against it (custodes audit verify --witness PACK).
        "anchor": None if latest is None else latest.to_json(),
    }
    return facts


def render_markdown(facts: dict[str, Any], *, folder: str = "the pack's folder") -> str:
    """The report for people: the same facts in plain words (custodes.audit.report_text)."""
    return to_markdown(readable(facts, folder=folder, max_listed=MAX_LISTED))


def site_timezone(config: Config) -> str:
    """The zone the report shows times in: the site's (custodes.sitetime), else UTC."""
    return site_zone(config.node.timezone).name


@dataclass(frozen=True)
class InspectionPack:
    folder: Path
    facts: dict[str, Any]


def write_pack(
    config: Config, store: Store, keys: NodeKeys, audit: AuditLog, out: Path, *,
    actor: str, since: float, now: float | None = None,
) -> InspectionPack:
    """Write the signed pack into the new folder ``out`` (built beside it, then renamed).

    Raises ``SigningRefused`` (leaving nothing) when the log does not extend what the node
    signed before.
    """
    if out.exists():
        raise FileExistsError(f"{out} exists already; choose another name")
    now = time.time() if now is None else now
    audit.record(actor, Action.INSPECTION_REPORT, config.node.name,
                 detail={"since": since, "until": now})
    work = out.with_name(f".{out.name}.partial")
    work.mkdir(parents=True)
    try:
        export_log(audit, work / AUDIT_FILE, actor=actor, node=config.node.name, since=since)
        facts = inspection_facts(config, store, keys, since=since, now=now)
        (work / "report.json").write_text(json.dumps(facts, indent=2, ensure_ascii=False) + "\n")
        report = readable(facts, folder=out.name, max_listed=MAX_LISTED)
        (work / "report.md").write_text(to_markdown(report))
        (work / PDF_FILE).write_bytes(render_pdf(report))
        names = [PDF_FILE, "report.md", "report.json", AUDIT_FILE]
        # The signs, the notice, each camera's redacted view, sound and retention achieved.
        names += add_to_pack(work, config, store, now)
        write_manifest(work, {
            "format": FORMAT, "node": config.node.name, "created_at": iso(now),
            "created_by": actor, "period": facts["period"],
            "files": [FileEntry.of(work, n).__dict__ for n in names],
            "public_key_fingerprint": key_fingerprint(keys.public_pem),
            "audit_anchor": facts["audit_chain"]["anchor"],
        }, keys)
        os.replace(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return InspectionPack(out, facts)
