"""The inspection pack for a privacy inspector: one signed zip, made on request.

custodes.audit.report.write_pack writes the pack (report, facts, the period's audit log, a
signed manifest) and records the request in the audit log; this route makes it in a
temporary folder under the storage's cache, zips it, and removes both once sent. Unzipped,
the folder verifies with plain ``openssl`` (the report prints the commands) or ``custodes
export verify``, like any export. The page that links here is custodes.web.inspection.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Final

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from custodes.api.deps import get_node, require
from custodes.audit.log import SigningRefused
from custodes.audit.report import write_pack
from custodes.auth.roles import Actor, Permission

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/inspection", tags=["inspection"])

Inspector = Annotated[Actor, Depends(require(Permission.AUDIT_VIEW))]
MAX_DAYS: Final = 366


@router.get("/pack", response_class=FileResponse,
            responses={200: {"content": {"application/zip": {}}}})
def pack(
    request: Request,
    actor: Inspector,
    days: Annotated[int, Query(ge=1, le=MAX_DAYS, description="The period: this many days "
                               "back from now")] = 30,
) -> FileResponse:
    """The signed inspection pack of the last ``days`` days, as a zip (audited)."""
    node = get_node(request)
    now = time.time()
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"inspection-{node.config.node.name}-{stamp}"
    node.layout.cache.mkdir(parents=True, exist_ok=True)
    # A hidden name: no camera is called that, so capture never takes it for its own.
    work = Path(tempfile.mkdtemp(prefix=".inspection-", dir=node.layout.cache))
    try:
        made = write_pack(node.config, node.store, node.keys, node.audit, work / name,
                          actor=actor.name, since=now - days * 86400.0, now=now)
        archive = work / f"{name}.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(made.folder.iterdir()):
                zf.write(path, f"{name}/{path.name}")
        shutil.rmtree(made.folder)
    except SigningRefused as exc:
        # The log does not extend what the node signed before: no signed pack of it leaves.
        shutil.rmtree(work, ignore_errors=True)
        raise HTTPException(409, str(exc)) from None
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    log.info("inspection pack of %d days for %s", days, actor.name)
    return FileResponse(archive, media_type="application/zip", filename=f"{name}.zip",
                        background=BackgroundTask(shutil.rmtree, work, ignore_errors=True))
