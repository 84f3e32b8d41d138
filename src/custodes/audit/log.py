"""Writing the audit log: one function for every entry, chained by hashes, signed at intervals.

Entries are written on the database's single writer thread, so sequence numbers and the chain
are consistent without locks, and ``record`` returns only once the entry is committed: an access
is on record before it is granted.

Signing is one path (``AuditLog._sign_head``) for every occasion: periodic, at start and stop,
before an export or a report. It signs only a log that extends the last anchor the node kept
in its key folder (``custodes.audit.anchor``); otherwise it records the refusal, and
``checkpoint`` raises ``SigningRefused``. The node never puts its signature on a log that was
cut back or rewritten in the database.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from itertools import pairwise
from typing import Any

from sqlalchemy import Connection, insert, select

from custodes.audit.actions import Action
from custodes.audit.anchor import Anchor, AnchorFile, AnchorFileError, checkpoint_message
from custodes.keys import NodeKeys, verify_signature
from custodes.store import schema
from custodes.store.db import Store

log = logging.getLogger(__name__)

GENESIS = "0" * 64
# A signed checkpoint every this many entries; verification expects one at each multiple, so
# that deleting the checkpoints before rewriting the chain is noticed too.
CHECKPOINT_EVERY = 100
SYSTEM = "system"
ANONYMOUS = "anonymous"


class Outcome(StrEnum):
    OK = "ok"
    REFUSED = "refused"
    FAILED = "failed"


@dataclass(frozen=True)
class Entry:
    seq: int
    at: float
    actor: str
    address: str | None
    action: str
    target: str
    outcome: str
    detail: dict[str, Any] = field(default_factory=dict)
    prev_hash: str = GENESIS
    hash: str = ""

    def computed_hash(self) -> str:
        """SHA-256 of every field but ``hash``, in a canonical JSON form."""
        body = json.dumps(
            [self.seq, repr(self.at), self.actor, self.address, self.action, self.target,
             self.outcome, self.detail, self.prev_hash],
            sort_keys=True, separators=(",", ":"), ensure_ascii=False,
        )
        return hashlib.sha256(body.encode("utf-8")).hexdigest()

    def as_row(self) -> dict[str, Any]:
        row = {k: getattr(self, k) for k in (
            "seq", "at", "actor", "address", "action", "target", "outcome", "prev_hash", "hash"
        )}
        row["detail"] = json.dumps(self.detail, sort_keys=True, ensure_ascii=False)
        return row

    @classmethod
    def from_row(cls, row: Any) -> Entry:
        m = row._mapping if hasattr(row, "_mapping") else row
        return cls(
            seq=m["seq"], at=m["at"], actor=m["actor"], address=m["address"],
            action=m["action"], target=m["target"], outcome=m["outcome"],
            detail=json.loads(m["detail"]), prev_hash=m["prev_hash"], hash=m["hash"],
        )


class Checkpoint(Anchor):
    """The node's signature over the hash of entry ``seq``, and so over the chain up to it,
    as the database keeps it: the very signature its anchor carries outside the database."""

    @classmethod
    def from_row(cls, row: Any) -> Checkpoint:
        m = row._mapping if hasattr(row, "_mapping") else row
        return cls(seq=m["seq"], hash=m["hash"], at=m["at"], signature=bytes(m["signature"]))


class SigningRefused(RuntimeError):
    """The node will not sign a log that does not extend what it signed before.

    Raised after the refusal itself is on record (``audit.sign``, outcome refused).
    """

    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(f"the node refuses to sign the audit log at entry {seq}: {reason}")
        self.seq = seq
        self.reason = reason


@dataclass(frozen=True)
class _Refusal:
    seq: int
    reason: str


class AuditLog:
    """Append entries; sign a checkpoint every ``checkpoint_every`` entries (and on demand).

    Every signature over the chain goes through ``_sign_head``, which first checks that the
    log extends the last anchor in the key folder (``custodes.audit.anchor``) and refuses
    otherwise: a log cut back or rewritten in the database is never signed by the node.
    """

    def __init__(
        self, store: Store, keys: NodeKeys, checkpoint_every: int = CHECKPOINT_EVERY
    ) -> None:
        self.store = store
        self.keys = keys
        self.checkpoint_every = checkpoint_every
        self.anchors = AnchorFile.in_folder(keys.folder)

    def record(
        self,
        actor: str,
        action: Action,
        target: str = "",
        *,
        outcome: Outcome = Outcome.OK,
        detail: dict[str, Any] | None = None,
        address: str | None = None,
    ) -> int:
        """Append one entry and return its sequence number, once committed."""
        at = time.time()
        # Hash the detail as it will read back from the database: through JSON, integer keys
        # become strings and sort differently (9 < 10, but "10" < "9"), which would make an
        # untouched entry look modified.
        body = json.loads(json.dumps(detail or {}, ensure_ascii=False))

        def append(conn: Connection) -> tuple[int, Anchor | _Refusal | None]:
            entry = _append(conn, Entry(0, at, actor, address, str(action), target,
                                        str(outcome), body))
            signed = None
            if entry.seq % self.checkpoint_every == 0:
                signed = self._sign_head(conn, entry.seq, entry.hash, "periodic")
            return entry.seq, signed

        seq, signed = self.store.write(append)
        if isinstance(signed, Anchor):
            try:
                self._keep(signed)
            except OSError as exc:
                log.error("audit log: cannot write %s: %s", self.anchors.path, exc)
        elif isinstance(signed, _Refusal):
            # The entry itself is on record: refusing to sign must not refuse the access it
            # records (the refusal is in the log too, and every later signature is refused).
            log.error("audit log: refused to sign a periodic checkpoint at entry %d: %s",
                      signed.seq, signed.reason)
        return seq

    def record_refusal(
        self,
        actor: str,
        action: Action,
        target: str,
        reason: str | None,
        *,
        detail: dict[str, Any] | None = None,
        address: str | None = None,
    ) -> int:
        """Record that ``actor`` was refused ``action``: outcome refused, ``reason`` in the detail.

        Every refusal is written through here, before it is answered (an HTTP error, a
        ``Refused``). A refusal whose detail says it all (the permission a role lacks) passes
        no reason.
        """
        body = dict(detail or {})
        if reason is not None:
            body["reason"] = reason
        return self.record(actor, action, target, outcome=Outcome.REFUSED, detail=body,
                           address=address)

    def checkpoint(self, occasion: str = "on demand") -> Anchor | None:
        """Sign the current head of the chain (at start and stop, before every export).

        Returns the latest anchor (None for an empty log); raises ``SigningRefused`` when the
        log does not extend it.
        """

        def sign_head(conn: Connection) -> Anchor | _Refusal | None:
            head = _head(conn)
            try:
                last = self.anchors.last()
            except AnchorFileError:
                last = None  # _sign_head meets the same error, and refuses on record
            if (head is not None and last is not None and (last.seq, last.hash) == head
                    and verify_signature(self.keys.public_pem, last.message, last.signature)):
                return last  # signed already (and by this node: a line forged into the file
                # would otherwise pass for its signature)
            if head is None and last is None:
                return None
            # An empty log with anchors: everything the node signed was deleted; refused.
            seq, hash_ = head if head is not None else (0, GENESIS)
            return self._sign_head(conn, seq, hash_, occasion)

        signed = self.store.write(sign_head)
        if isinstance(signed, _Refusal):
            log.error("audit log: refused to sign at entry %d (%s): %s", signed.seq, occasion,
                      signed.reason)
            raise SigningRefused(signed.seq, signed.reason)
        if signed is not None:
            try:
                self._keep(signed)
            except OSError as exc:
                # Signed in the database, but not remembered outside it: no export may rest
                # on a signature the node could not keep.
                raise SigningRefused(signed.seq, f"cannot write {self.anchors.path}: "
                                                 f"{exc.strerror}") from None
        return signed

    # -- signing: one path for every occasion -------------------------------------------------

    def _sign_head(
        self, conn: Connection, seq: int, hash_: str, occasion: str
    ) -> Anchor | _Refusal:
        """Sign entry ``seq`` (the head) if the log extends the last anchor; else record why not.

        Runs in the writer's transaction, so the head cannot move while it is checked.
        """
        try:
            reason = self._extension_problem(conn, seq, hash_)
        except AnchorFileError as exc:
            reason = f"the anchor file cannot be read: {exc}"
        if reason is not None:
            _append(conn, Entry(0, time.time(), SYSTEM, None, Action.AUDIT_SIGN.value,
                                f"entry {seq}", Outcome.REFUSED.value,
                                {"reason": reason, "occasion": occasion}))
            return _Refusal(seq, reason)
        at = time.time()
        signature = self.keys.sign(checkpoint_message(seq, hash_, at))
        conn.execute(insert(schema.audit_checkpoints).values(
            seq=seq, hash=hash_, at=at, signature=signature
        ))
        return Anchor(seq, hash_, at, signature)

    def _keep(self, anchor: Anchor) -> None:
        """Append ``anchor`` to the key folder, once its checkpoint is durable in the database.

        The database syncs its log lazily (WAL, synchronous=NORMAL); an anchor must never
        survive a power cut that its entry does not, or the node would refuse forever after.
        The committed entries are in the WAL file (a checkpoint that moved them into the
        database file synced it), so the WAL is what is synced here.

        Never the database file itself: closing any descriptor of it drops every POSIX lock
        this process holds on it, SQLite's included. A command run beside the node (custodes
        user add) then finds no other connection, checkpoints and deletes the WAL and shared
        memory under the node, whose next query fails with "disk I/O error". SQLite locks the
        database and -shm files, never the WAL, so opening and closing the WAL is harmless.
        """
        try:
            fd = os.open(self.store.path.with_name(self.store.path.name + "-wal"), os.O_RDONLY)
        except FileNotFoundError:
            pass  # no WAL: everything committed was checkpointed into the database, synced
        else:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self.anchors.append(anchor)

    def _extension_problem(self, conn: Connection, seq: int, hash_: str) -> str | None:
        """Why the chain ending at entry ``seq`` does not extend the last anchor, or None."""
        last = self.anchors.last()
        if last is None:
            return self._adoption_problem(conn, seq) if seq else None
        if not verify_signature(self.keys.public_pem, last.message, last.signature):
            return (f"the last anchor (entry {last.seq}) in {self.anchors.path} does not carry "
                    "this node's signature: the anchor file was altered")
        signed = _when(last.at)
        if seq < last.seq:
            return (f"the log ends at entry {seq}, but the node signed entry {last.seq} at "
                    f"{signed}: {_span(seq + 1, last.seq)} were deleted")
        rows = conn.execute(
            select(schema.audit_log).where(schema.audit_log.c.seq.between(last.seq, seq))
            .order_by(schema.audit_log.c.seq)
        ).all()
        entries = [Entry.from_row(row) for row in rows]
        if not entries or entries[0].seq != last.seq:
            return (f"entry {last.seq}, which the node signed at {signed}, is missing from the "
                    "log")
        if entries[0].hash != last.hash:
            return (f"entry {last.seq} is not the one the node signed at {signed} (its hash "
                    "differs): the log up to it was rewritten")
        return _walk(entries, seq, hash_)

    def _adoption_problem(self, conn: Connection, seq: int) -> str | None:
        """No anchor file: anchor the log only if it verifies against its own checkpoints.

        This is the first signature of a new node, or of a log written before anchors
        existed. A missing file is otherwise the work of someone who can read the key too,
        whom the node cannot stop; a log that does not verify is refused all the same.
        """
        checkpoints = [Checkpoint.from_row(row) for row in conn.execute(
            select(schema.audit_checkpoints).order_by(schema.audit_checkpoints.c.seq)
        )]
        if not checkpoints:
            log.info("audit log: starting the anchor file %s at entry %d", self.anchors.path,
                     seq)
            return None
        entries = [Entry.from_row(row) for row in conn.execute(
            select(schema.audit_log).where(schema.audit_log.c.seq <= seq)
            .order_by(schema.audit_log.c.seq)
        )]
        problem = _walk([Entry(0, 0.0, "", None, "", "", "", hash=GENESIS), *entries], seq, None)
        if problem is not None:
            return f"no anchor file, and the log does not verify: {problem}"
        by_seq = {e.seq: e.hash for e in entries}
        for cp in checkpoints:
            if not verify_signature(self.keys.public_pem, cp.message, cp.signature):
                return f"no anchor file, and the checkpoint at entry {cp.seq} is not signed"
            if by_seq.get(cp.seq) != cp.hash:
                return (f"no anchor file, and the checkpoint at entry {cp.seq} does not match "
                        "the log")
        log.warning("audit log: no anchor file; starting %s at entry %d after checking the log "
                    "against its %d checkpoints", self.anchors.path, seq, len(checkpoints))
        return None


def _append(conn: Connection, draft: Entry) -> Entry:
    """Insert ``draft`` as the next entry: its seq, prev_hash and hash filled in."""
    last = _head(conn)
    seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
    entry = replace(draft, seq=seq, prev_hash=prev)
    entry = replace(entry, hash=entry.computed_hash())
    conn.execute(insert(schema.audit_log).values(**entry.as_row()))
    return entry


def _head(conn: Connection) -> tuple[int, str] | None:
    row = conn.execute(
        select(schema.audit_log.c.seq, schema.audit_log.c.hash)
        .order_by(schema.audit_log.c.seq.desc()).limit(1)
    ).first()
    return None if row is None else (int(row[0]), str(row[1]))


def _walk(entries: list[Entry], seq: int, hash_: str | None) -> str | None:
    """Whether ``entries`` (the first one trusted) chain without a gap to entry ``seq``."""
    for before, after in pairwise(entries):
        if after.seq != before.seq + 1:
            return f"{_span(before.seq + 1, after.seq - 1)} missing after entry {before.seq}"
        if after.prev_hash != before.hash or after.computed_hash() != after.hash:
            return f"entry {after.seq} does not follow from entry {before.seq} in the chain"
    end = entries[-1]
    if end.seq != seq or (hash_ is not None and end.hash != hash_):
        return f"the chain does not reach entry {seq}"
    return None


def _span(first: int, last: int) -> str:
    return f"entry {first}" if first == last else f"entries {first}..{last}"


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
