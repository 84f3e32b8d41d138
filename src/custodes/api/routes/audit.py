"""The audit log for those who hold audit.view: search it, verify it, take it away.

Reading pages of the log is not itself recorded (it would grow with every page turned);
verifying and exporting are.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse
from sqlalchemy import func, select
from starlette.background import BackgroundTask

from custodes.api.deps import get_node, require
from custodes.audit.actions import Action
from custodes.audit.exchange import export_log
from custodes.audit.log import Entry, Outcome, SigningRefused
from custodes.audit.verify import verify_store
from custodes.auth.roles import Actor, Permission
from custodes.store import schema

router = APIRouter(prefix="/api/audit", tags=["audit"])

Auditor = Annotated[Actor, Depends(require(Permission.AUDIT_VIEW))]
Time = Annotated[float | None, Query(ge=0, le=1e11, description="Unix time")]


def _entry(e: Entry) -> dict[str, Any]:
    return {"seq": e.seq, "at": e.at, "actor": e.actor, "address": e.address,
            "action": e.action, "target": e.target, "outcome": e.outcome, "detail": e.detail,
            "hash": e.hash}


@router.get("")
def list_entries(
    request: Request,
    _actor: Auditor,
    *,
    actor: Annotated[str | None, Query(max_length=200, description="Exact actor")] = None,
    action: Annotated[str | None, Query(max_length=200, description="Action, or a prefix "
                                        "ending in '.' (e.g. 'user.')")] = None,
    outcome: Outcome | None = None,
    since: Time = None,
    until: Time = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> dict[str, Any]:
    """Entries newest first, filtered; ``total`` counts all that match."""
    log = schema.audit_log
    conds = []
    if actor is not None:
        conds.append(log.c.actor == actor)
    if action is not None:
        if action.endswith("."):
            conds.append(log.c.action.startswith(action, autoescape=True))
        else:
            conds.append(log.c.action == action)
    if outcome is not None:
        conds.append(log.c.outcome == outcome.value)
    if since is not None:
        conds.append(log.c.at >= since)
    if until is not None:
        conds.append(log.c.at < until)
    with get_node(request).store.read() as conn:
        total = conn.execute(select(func.count()).select_from(log).where(*conds)).scalar_one()
        rows = conn.execute(select(log).where(*conds).order_by(log.c.seq.desc())
                            .limit(limit).offset(offset))
        entries = [_entry(Entry.from_row(r)) for r in rows]
    return {"total": total, "offset": offset, "entries": entries}


@router.get("/verify")
def verify(request: Request, actor: Auditor) -> dict[str, Any]:
    """Check the whole chain and its signed checkpoints against the node's public key."""
    node = get_node(request)
    node.audit.record(actor.name, Action.AUDIT_VERIFY, "", address=actor.address)
    report = verify_store(node.store, node.keys.public_pem, anchors=node.audit.anchors)
    return {
        "ok": report.ok, "summary": report.summary(), "entries": report.entries,
        "checkpoints": report.checkpoints, "first_seq": report.first_seq,
        "last_seq": report.last_seq, "signed_through": report.signed_through,
        "unsigned": report.unsigned,
        "problems": [{"seq": p.seq, "kind": p.kind.value, "message": p.message}
                     for p in report.problems],
        "notes": report.notes,
        "public_key": node.keys.public_pem.decode(),
    }


@router.get("/export", response_class=FileResponse)
def export(request: Request, actor: Auditor, since: Time = None,
           until: Time = None) -> FileResponse:
    """The log (or the entries in [since, until)) as a signed JSONL file to verify offline
    with ``custodes audit verify``."""
    node = get_node(request)
    folder = Path(tempfile.mkdtemp(prefix="custodes-audit-"))
    name = f"audit-{node.config.node.name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.jsonl"
    try:
        export_log(node.audit, folder / name, actor=actor.name, node=node.config.node.name,
                   since=since, until=until)
    except LookupError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise HTTPException(404, str(exc)) from None
    except SigningRefused as exc:
        # The log does not extend what the node signed before: no signed copy of it leaves.
        shutil.rmtree(folder, ignore_errors=True)
        raise HTTPException(409, str(exc)) from None
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return FileResponse(folder / name, media_type="application/jsonl", filename=name,
                        background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True))
