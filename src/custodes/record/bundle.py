"""An export as evidence: a folder with the video, a signed manifest, and an audit entry.

```
<out_dir>/
  <camera>_<from>_<to>.mp4   the footage (redacted when a transform is given)
  manifest.json              what, when, who, which case, which redaction, file hashes
  manifest.sig               the node's Ed25519 signature of manifest.json
  signing.pub                the node's public key (convenience; see custodes.record.manifest)
```

The folder is built hidden beside ``out_dir`` and renamed into place only when complete, and
only after the export is on record in the audit log: a bundle never exists without its audit
entry. An export that fails is on record too, with outcome "failed".

Who may export what (role, camera scope, case, whether unredacted) is the caller's decision:
this module makes the bundle it is asked for and records who asked.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from custodes.audit.actions import Action
from custodes.audit.log import AuditLog, Outcome, SigningRefused
from custodes.auth.roles import Actor
from custodes.keys import NodeKeys
from custodes.media import MediaError, probe
from custodes.privacy.case_log import CASE_LOG_FILE, case_record
from custodes.record.layout import Layout
from custodes.record.manifest import FileEntry, build_manifest, iso, write_manifest
from custodes.record.playback import ExportError, Span, export_range
from custodes.store.db import Store

# Makes the final video from the exported one (e.g. blurs faces) and describes what it did;
# the description goes into the manifest as "redaction".
Transform = Callable[[Path, Path], dict[str, Any]]


@dataclass(frozen=True)
class ExportBundle:
    folder: Path
    video: Path
    manifest: dict[str, Any]
    duration: float  # of the video in the bundle, probed
    gaps: list[Span]  # holes in the recording left out of the video (allow_gaps only)
    audit_seq: int  # the audit entry that records this export


def create_export(  # noqa: PLR0917 - reads as the request: what, from, to, into
    store: Store,
    layout: Layout,
    keys: NodeKeys,
    audit: AuditLog,
    camera: str,
    start: float,
    end: float,
    out_dir: Path,
    *,
    actor: Actor,
    case: str | None = None,
    transform: Transform | None = None,
    allow_gaps: bool = False,
    node: str = "custodes",
) -> ExportBundle:
    """Export ``camera`` over [start, end) to the new folder ``out_dir``; see the module doc.

    Raises ``ExportError`` (after recording the failure) when the export cannot be made;
    an exception from ``transform`` is recorded and passed on as it is.
    """
    request: dict[str, Any] = {"from": start, "to": end, "case": case, "folder": str(out_dir),
                               "role": str(actor.role)}
    try:
        return _create(store, layout, keys, audit, camera, start, end, out_dir, actor=actor,
                       case=case, transform=transform, allow_gaps=allow_gaps, node=node,
                       request=request)
    except Exception as exc:
        audit.record(actor.name, Action.EXPORT, camera, outcome=Outcome.FAILED,
                     detail={**request, "error": str(exc)}, address=actor.address)
        raise


def _create(  # noqa: PLR0917
    store: Store,
    layout: Layout,
    keys: NodeKeys,
    audit: AuditLog,
    camera: str,
    start: float,
    end: float,
    out_dir: Path,
    *,
    actor: Actor,
    case: str | None,
    transform: Transform | None,
    allow_gaps: bool,
    node: str,
    request: dict[str, Any],
) -> ExportBundle:
    if out_dir.exists():
        raise ExportError(f"{out_dir} exists already; choose another name")
    if not out_dir.parent.is_dir():
        raise ExportError(f"the folder {out_dir.parent} does not exist")
    work = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.partial")
    video_name = f"{camera}_{_stamp(start)}_{_stamp(end)}.mp4"
    work.mkdir()
    try:
        if transform is None:
            result = export_range(store, layout, camera, start, end, work / video_name,
                                  allow_gaps=allow_gaps)
            redaction: dict[str, Any] = {"applied": False}
        else:
            # The unredacted footage goes beside the bundle, never into it.
            source = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.source.mp4")
            try:
                result = export_range(store, layout, camera, start, end, source,
                                      allow_gaps=allow_gaps)
                redaction = {"applied": True, **transform(source, work / video_name)}
            finally:
                source.unlink(missing_ok=True)
        try:
            duration = probe(work / video_name).duration
        except MediaError as exc:
            raise ExportError(f"the exported video cannot be read back: {exc}") from None
        files = [FileEntry.of(work, video_name)]
        if case is not None and str(case).isdigit():
            # Evidence in a case carries the case's legal record and use log (who searched,
            # what, and who verified each result), signed with the video.
            with store.read() as conn:
                record = case_record(conn, int(case))
            if record is not None:
                (work / CASE_LOG_FILE).write_text(json.dumps(record, indent=2) + "\n")
                files.append(FileEntry.of(work, CASE_LOG_FILE))
        manifest = build_manifest(
            node=node, camera=camera, start=start, end=end, created_by=actor.name,
            files=files, public_pem=keys.public_pem, case=case, redaction=redaction,
            created_at=time.time(),
        )
        # Gaps belong in the evidence: the video plays straight across them.
        manifest["gaps"] = [{"start": iso(g.start), "end": iso(g.end)} for g in result.gaps]
        try:
            anchor = audit.checkpoint("export")
        except SigningRefused as exc:
            raise ExportError(str(exc)) from None
        # The log as the node last signed it: whoever holds the export can hold the node's
        # log against it later (custodes audit verify --witness FOLDER).
        manifest["audit_anchor"] = None if anchor is None else anchor.to_json()
        data = write_manifest(work, manifest, keys)
        seq = audit.record(actor.name, Action.EXPORT, camera, detail={
            **request, "redaction": redaction, "files": manifest["files"],
            "manifest_sha256": hashlib.sha256(data).hexdigest(), "gaps": manifest["gaps"],
        }, address=actor.address)
        if out_dir.exists():  # appeared while we worked; rename would replace an empty one
            raise ExportError(f"{out_dir} exists already; choose another name")
        work.rename(out_dir)
    finally:
        if work.exists():
            shutil.rmtree(work)
    return ExportBundle(out_dir, out_dir / video_name, manifest, duration, result.gaps, seq)


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y%m%dT%H%M%SZ")
