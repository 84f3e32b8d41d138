"""The audit log as a file an inspector can take away and verify offline.

One JSON object per line (JSONL), so that the file reads in any text tool and a damaged line
does not hide the others:

- a header: format, node, the node's public key, when and by whom it was exported, the range
  asked for, and where the excerpt's chain starts (``first_seq``, ``first_prev_hash``) and ends
  (``last_seq``, ``last_hash``), signed with the node's key. An excerpt's ends are otherwise
  unprotected: without the signed header, entries cut from the front or the back of the file,
  or appended to it, would go unnoticed;
- one line per entry, in order, each followed by the checkpoint that signs it, if any.

Verification needs only the file; it should be given the node's public key from another
source (the node's ``signing.pub``, as handed to the inspector), since whoever could alter the
file could also replace the key embedded in it.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, func, select

from custodes.audit.actions import Action
from custodes.audit.anchor import Anchor, AnchorFile, AnchorFileError
from custodes.audit.log import CHECKPOINT_EVERY, AuditLog, Checkpoint, Entry, SigningRefused
from custodes.audit.verify import Kind, Problem, VerifyReport, entries_text, verify_entries
from custodes.keys import KeyFileError, verify_signature
from custodes.record.manifest import key_fingerprint
from custodes.store import schema

FORMAT = "custodes-audit-log/1"
_HEADER_CONTEXT = b"custodes-audit-export\n"
_HEADER_KEYS = frozenset({
    "public_key", "first_seq", "first_prev_hash", "last_seq", "last_hash", "signature",
})


class LogFileError(Exception):
    """An exported log that cannot be read at all (not JSONL, no header, unknown format)."""


@dataclass(frozen=True)
class LogExport:
    path: Path
    first_seq: int
    last_seq: int
    checkpoints: int


@dataclass(frozen=True)
class AuditFile:
    header: dict[str, Any]
    entries: list[Entry]
    checkpoints: list[Checkpoint]

    @property
    def public_pem(self) -> bytes:
        return str(self.header.get("public_key", "")).encode()


def export_log(
    audit: AuditLog,
    path: Path,
    *,
    actor: str,
    node: str = "",
    since: float | None = None,
    until: float | None = None,
) -> LogExport:
    """Write the entries whose time is in [since, until) to ``path``, signed; see the module doc.

    The export is itself an access to the log and is recorded first; then the head of the
    chain is signed, so that a full export ends on a checkpoint. Raises ``FileExistsError``
    rather than overwrite, ``LookupError`` when the range holds no entry, and
    ``SigningRefused`` when the log does not extend what the node signed before: the node
    signs no export of a log that was cut back or rewritten.
    """
    if path.exists():
        raise FileExistsError(f"{path} exists already; choose another name")
    audit.record(actor, Action.AUDIT_EXPORT, path.name, detail={"since": since, "until": until})
    anchor = audit.checkpoint("export")
    with audit.store.read() as conn:
        span = _seq_span(conn, since, until)
        if span is None:
            raise LookupError("no audit entries in the range asked for")
        first, last = span
        entries = [Entry.from_row(row) for row in conn.execute(
            select(schema.audit_log).where(schema.audit_log.c.seq.between(first, last))
            .order_by(schema.audit_log.c.seq)
        )]
        checkpoints = [Checkpoint.from_row(row) for row in conn.execute(
            select(schema.audit_checkpoints)
            .where(schema.audit_checkpoints.c.seq.between(first, last))
            .order_by(schema.audit_checkpoints.c.seq, schema.audit_checkpoints.c.id)
        )]
    if anchor is not None and any(e.seq == anchor.seq and e.hash != anchor.hash
                                  for e in entries):
        # Changed between the signature and this read: only someone with the file does that.
        raise SigningRefused(anchor.seq, f"entry {anchor.seq} changed after it was signed")
    header: dict[str, Any] = {
        "type": "header",
        "format": FORMAT,
        "node": node,
        "public_key": audit.keys.public_pem.decode(),
        "exported_at": time.time(),
        "exported_by": actor,
        "since": since,
        "until": until,
        "first_seq": entries[0].seq,
        "first_prev_hash": entries[0].prev_hash,
        "last_seq": entries[-1].seq,
        "last_hash": entries[-1].hash,
        "checkpoint_every": audit.checkpoint_every,
        "anchor": None if anchor is None else anchor.to_json(),
    }
    header["signature"] = _b64(audit.keys.sign(_header_message(header)))

    signs: dict[int, list[Checkpoint]] = {}
    for cp in checkpoints:
        signs.setdefault(cp.seq, []).append(cp)
    lines = [_line(header)]
    for entry in entries:
        lines.append(_line({"type": "entry", **entry.__dict__}))
        lines.extend(_line({"type": "checkpoint", "seq": cp.seq, "hash": cp.hash, "at": cp.at,
                            "signature": _b64(cp.signature)}) for cp in signs.get(entry.seq, []))
    # Written beside and renamed: a half-written file never carries the final name.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        tmp.write_text("".join(lines), encoding="utf-8")
        tmp.rename(path)
    finally:
        tmp.unlink(missing_ok=True)
    return LogExport(path, entries[0].seq, entries[-1].seq, len(checkpoints))


def read_log(path: Path) -> AuditFile:
    """Parse an exported log; raises ``LogFileError`` when it is not one at all."""
    header: dict[str, Any] | None = None
    entries: list[Entry] = []
    checkpoints: list[Checkpoint] = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LogFileError(f"{path}: cannot read ({exc})") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            kind = obj.pop("type")
            if kind == "header" and header is None and number == 1:
                header = obj
            elif kind == "entry":
                entries.append(Entry(**obj))
            elif kind == "checkpoint":
                checkpoints.append(Checkpoint(seq=obj["seq"], hash=obj["hash"], at=obj["at"],
                                              signature=base64.b64decode(obj["signature"])))
            else:
                raise LogFileError(f"{path} line {number}: unexpected {kind!r} line")
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise LogFileError(f"{path} line {number}: not an audit log line ({exc})") from None
    if header is None:
        raise LogFileError(f"{path}: no header line; not an exported custodes audit log")
    if header.get("format") != FORMAT:
        raise LogFileError(f"{path}: format {header.get('format')!r}, expected {FORMAT!r}")
    missing = _HEADER_KEYS - header.keys()
    if missing:
        raise LogFileError(f"{path}: the header lacks {', '.join(sorted(missing))}")
    return AuditFile(header, entries, checkpoints)


def verify_file(
    path: Path, public_pem: bytes | None = None, witnesses: Sequence[tuple[str, Anchor]] = ()
) -> VerifyReport:
    """Verify an exported log with ``public_pem`` (recommended) or the key embedded in it.

    ``witnesses``: anchors from other copies (older exports, packs, the node's anchor file);
    those signed before this export was made must be in it.
    """
    log = read_log(path)
    header = log.header
    problems: list[Problem] = []
    notes: list[str] = []
    embedded = _fingerprint_or_none(log.public_pem)
    if public_pem is None:
        if embedded is None:
            raise LogFileError(f"{path}: the embedded public key is unusable; supply the key")
        key = log.public_pem
        notes.append("verified with the public key embedded in the file: this shows that the "
                     "file is consistent, not who signed it; supply the node's own key to "
                     "know that")
    else:
        supplied = _fingerprint_or_none(public_pem)
        if supplied is None:
            raise LogFileError("the key supplied is not an Ed25519 public key (PEM)")
        key = public_pem
        if embedded != supplied:
            problems.append(Problem(None, Kind.BAD_SIGNATURE,
                                    f"wrong key: the file's public key ({embedded}) is not the "
                                    f"key supplied ({supplied})"))

    body = {k: v for k, v in header.items() if k != "signature"}
    try:
        signature = base64.b64decode(str(header.get("signature", "")), validate=True)
    except ValueError:
        signature = b""
    if not verify_signature(key, _header_message({"type": "header", **body}), signature):
        problems.append(Problem(None, Kind.BAD_SIGNATURE,
                                "the header's signature does not verify: the range, key or "
                                "ends of the export were altered, or it was signed by another "
                                "key"))
    first_seq, last_seq = int(header["first_seq"]), int(header["last_seq"])
    anchors = _anchors_for(path, header, witnesses, last_seq, notes)
    report = verify_entries(
        log.entries, log.checkpoints, key, first_seq=first_seq,
        first_prev=str(header["first_prev_hash"]),
        checkpoint_every=header.get("checkpoint_every", CHECKPOINT_EVERY),
        anchors=anchors, reaches_anchors=header.get("until") is None,
    )
    problems.extend(_end_problems(log.entries, last_seq, str(header["last_hash"])))
    return replace(report, problems=problems + report.problems, notes=notes + report.notes)


def header_anchor(header: dict[str, Any]) -> Anchor | None:
    """The anchor an export's header carries (None in files made before anchors)."""
    raw = header.get("anchor")
    return None if raw is None else Anchor.from_json(raw)


def _anchors_for(
    path: Path,
    header: dict[str, Any],
    witnesses: Sequence[tuple[str, Anchor]],
    last_seq: int,
    notes: list[str],
) -> list[tuple[str, Anchor]]:
    try:
        own = header_anchor(header)
    except AnchorFileError as exc:
        raise LogFileError(f"{path}: the header's anchor is unreadable ({exc})") from None
    anchors = [] if own is None else [("the export's header", own)]
    exported_at = float(header.get("exported_at") or 0)
    later = [a for _, a in witnesses if a.seq > last_seq and a.at > exported_at]
    if later:
        notes.append(f"{len(later)} witness anchors were signed after this export was made "
                     "and are not expected in it")
    return anchors + [(w, a) for w, a in witnesses if not (a.seq > last_seq
                                                           and a.at > exported_at)]


def _end_problems(entries: list[Entry], last_seq: int, last_hash: str) -> list[Problem]:
    """The signed header vouches for the last entry as a checkpoint would."""
    extra = sorted(e.seq for e in entries if e.seq > last_seq)
    if extra:
        return [Problem(extra[0], Kind.INSERTED,
                        f"{entries_text(extra[0], extra[-1])}: appended (the signed header "
                        f"ends the export at entry {last_seq})")]
    last = [e for e in entries if e.seq == last_seq]
    if not last:
        end = max((e.seq for e in entries), default=0)
        return [Problem(end + 1, Kind.TRUNCATED,
                        f"{entries_text(end + 1, last_seq)}: deleted from the end of the file (the "
                        f"signed header ends the export at entry {last_seq})")]
    if last[0].hash != last_hash:
        return [Problem(last_seq, Kind.REWRITTEN,
                        f"entry {last_seq}: its hash is not the one in the signed header: the "
                        "chain up to it was rewritten")]
    return []


def _fingerprint_or_none(public_pem: bytes) -> str | None:
    try:
        return key_fingerprint(public_pem)
    except (ValueError, KeyFileError):
        return None


def _seq_span(conn: Connection, since: float | None, until: float | None) -> tuple[int, int] | None:
    """First and last seq of the entries in [since, until).

    The span is contiguous in seq even if the clock stepped back within it: an excerpt with a
    hole in it could not be verified.
    """
    query = select(func.min(schema.audit_log.c.seq), func.max(schema.audit_log.c.seq))
    if since is not None:
        query = query.where(schema.audit_log.c.at >= since)
    if until is not None:
        query = query.where(schema.audit_log.c.at < until)
    first, last = conn.execute(query).one()
    return None if first is None else (int(first), int(last))


def _header_message(header: dict[str, Any]) -> bytes:
    body = {k: v for k, v in header.items() if k != "signature"}
    return _HEADER_CONTEXT + json.dumps(body, sort_keys=True, separators=(",", ":"),
                                        ensure_ascii=False).encode()


def _line(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")




def witness_anchors(path: Path) -> list[tuple[str, Anchor]]:
    """The signed (seq, hash) pairs a copy kept elsewhere vouches for, to hold a log against.

    ``path`` is an exported log (its header's anchor and its checkpoints), an export folder
    or inspection pack (the manifest's ``audit_anchor``, and the pack's log), or a copy of a
    node's anchor file. Raises ``LogFileError`` when it is none of these.
    """
    if path.is_dir():
        found: list[tuple[str, Anchor]] = []
        manifest = path / "manifest.json"
        try:
            raw = json.loads(manifest.read_text(encoding="utf-8")).get("audit_anchor")
            if raw is not None:
                found.append((f"{manifest}", Anchor.from_json(raw)))
        except (OSError, ValueError, AttributeError, AnchorFileError) as exc:
            raise LogFileError(f"{manifest}: no readable anchor ({exc})") from None
        for log_file in sorted(path.glob("*.jsonl")):
            found.extend(witness_anchors(log_file))
        return found
    try:
        first = path.read_text(encoding="utf-8").split("\n", 1)[0]
        is_export = json.loads(first).get("type") == "header"
    except (OSError, UnicodeDecodeError, ValueError, AttributeError) as exc:
        raise LogFileError(f"{path}: cannot read ({exc})") from None
    if not is_export:
        try:
            return [(str(path), a) for a in AnchorFile(path).read()]
        except AnchorFileError as exc:
            raise LogFileError(str(exc)) from None
    log = read_log(path)
    try:
        own = header_anchor(log.header)
    except AnchorFileError as exc:
        raise LogFileError(f"{path}: the header's anchor is unreadable ({exc})") from None
    return ([] if own is None else [(f"{path} (header)", own)]) + [
        (str(path), Anchor(cp.seq, cp.hash, cp.at, cp.signature)) for cp in log.checkpoints
    ]
