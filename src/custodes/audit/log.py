"""Writing the audit log: one function for every entry, chained by hashes, signed at intervals.

Entries are written on the database's single writer thread, so sequence numbers and the chain
are consistent without locks, and ``record`` returns only once the entry is committed: an access
is on record before it is granted.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, func, insert, select

from custodes.keys import NodeKeys
from custodes.store import schema
from custodes.store.db import Store

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


@dataclass(frozen=True)
class Checkpoint:
    """The node's signature over the hash of entry ``seq``, and so over the chain up to it."""

    seq: int
    hash: str
    at: float
    signature: bytes

    @property
    def message(self) -> bytes:
        return checkpoint_message(self.seq, self.hash, self.at)

    @classmethod
    def from_row(cls, row: Any) -> Checkpoint:
        m = row._mapping if hasattr(row, "_mapping") else row
        return cls(seq=m["seq"], hash=m["hash"], at=m["at"], signature=bytes(m["signature"]))


def checkpoint_message(seq: int, hash_: str, at: float) -> bytes:
    """What a checkpoint's signature covers."""
    return f"custodes-audit-checkpoint\n{seq}\n{hash_}\n{at!r}\n".encode()


class AuditLog:
    """Append entries; sign a checkpoint every ``checkpoint_every`` entries (and on demand)."""

    def __init__(
        self, store: Store, keys: NodeKeys, checkpoint_every: int = CHECKPOINT_EVERY
    ) -> None:
        self.store = store
        self.keys = keys
        self.checkpoint_every = checkpoint_every

    def record(
        self,
        actor: str,
        action: str,
        target: str = "",
        *,
        outcome: Outcome | str = Outcome.OK,
        detail: dict[str, Any] | None = None,
        address: str | None = None,
    ) -> int:
        """Append one entry and return its sequence number, once committed."""
        at = time.time()
        # Hash the detail as it will read back from the database: through JSON, integer keys
        # become strings and sort differently (9 < 10, but "10" < "9"), which would make an
        # untouched entry look modified.
        body = json.loads(json.dumps(detail or {}, ensure_ascii=False))

        def append(conn: Connection) -> int:
            last = conn.execute(
                select(schema.audit_log.c.seq, schema.audit_log.c.hash)
                .order_by(schema.audit_log.c.seq.desc()).limit(1)
            ).first()
            seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
            entry = Entry(seq, at, actor, address, action, target, str(outcome), body, prev)
            entry = Entry(**{**entry.__dict__, "hash": entry.computed_hash()})
            conn.execute(insert(schema.audit_log).values(**entry.as_row()))
            if seq % self.checkpoint_every == 0:
                self._sign(conn, seq, entry.hash)
            return seq

        return self.store.write(append)

    def checkpoint(self) -> int | None:
        """Sign the current head of the chain (at shutdown, and before an export)."""

        def sign_head(conn: Connection) -> int | None:
            head = conn.execute(
                select(schema.audit_log.c.seq, schema.audit_log.c.hash)
                .order_by(schema.audit_log.c.seq.desc()).limit(1)
            ).first()
            if head is None:
                return None
            signed = conn.execute(select(func.max(schema.audit_checkpoints.c.seq))).scalar()
            if signed != head[0]:
                self._sign(conn, head[0], head[1])
            return int(head[0])

        return self.store.write(sign_head)

    def _sign(self, conn: Connection, seq: int, hash_: str) -> None:
        at = time.time()
        signature = self.keys.sign(checkpoint_message(seq, hash_, at))
        conn.execute(insert(schema.audit_checkpoints).values(
            seq=seq, hash=hash_, at=at, signature=signature
        ))
