"""What the node remembers having signed: an append-only file of anchors in its key folder.

The database holds the audit log and its signed checkpoints, but whoever can write the
database can also delete both from some point on: a log cut back to an earlier entry, with
its checkpoints gone, is a shorter log that verifies. The node therefore keeps its own copy of
every checkpoint it signs outside the database, in ``audit-anchors.jsonl`` beside its keys:

- one JSON line per anchor: ``seq``, ``hash``, ``at`` and the Ed25519 ``signature``, the very
  signature of the database checkpoint (``checkpoint_message``), so that an anchor proves by
  itself that the node signed entry ``seq`` with that hash at that time;
- the node only ever appends (``O_APPEND``, under ``flock`` since a command-line process may
  sign beside a running node), only an anchor newer than the last, and only after the
  database committed the checkpoint and was synced: an anchor never names an entry that a
  crash could still take away;
- before signing anything, the node checks that the log extends the last anchor
  (``custodes.audit.log``), and verification checks the log against every anchor.

What it cannot do: whoever can write the key folder can also read the signing key, and so
can rewrite this file and the database consistently. Against that only copies kept
elsewhere help: every export and inspection pack carries the latest anchor, and
``custodes audit verify --witness`` checks a log against the anchors of older copies.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ANCHOR_FILE = "audit-anchors.jsonl"
# The last anchor is read from the end of the file; a line is ~250 bytes.
_TAIL = 4096


class AnchorFileError(Exception):
    """An anchor file (or an anchor in an export) that cannot be read."""


def checkpoint_message(seq: int, hash_: str, at: float) -> bytes:
    """What a checkpoint's (and so an anchor's) signature covers."""
    return f"custodes-audit-checkpoint\n{seq}\n{hash_}\n{at!r}\n".encode()


@dataclass(frozen=True)
class Anchor:
    """The node's signature over the hash of entry ``seq``, kept outside the database."""

    seq: int
    hash: str
    at: float
    signature: bytes

    @property
    def message(self) -> bytes:
        return checkpoint_message(self.seq, self.hash, self.at)

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "hash": self.hash, "at": self.at,
                "signature": base64.b64encode(self.signature).decode("ascii")}

    @classmethod
    def from_json(cls, obj: Any) -> Anchor:
        """Parse one anchor; raises ``AnchorFileError`` for anything malformed."""
        try:
            seq, hash_, at = obj["seq"], obj["hash"], obj["at"]
            if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
                raise ValueError(f"seq {seq!r}")
            if not isinstance(hash_, str) or len(hash_) != 64:
                raise ValueError(f"hash {hash_!r}")
            if not isinstance(at, float | int) or isinstance(at, bool):
                raise ValueError(f"at {at!r}")
            signature = base64.b64decode(str(obj["signature"]), validate=True)
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise AnchorFileError(f"not an anchor ({exc})") from None
        return cls(seq, hash_, float(at), signature)


class AnchorFile:
    """``audit-anchors.jsonl`` in a key folder, or a copy of it taken off the node."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def in_folder(cls, key_folder: Path) -> AnchorFile:
        """The node's own anchor file, beside its keys."""
        return cls(key_folder / ANCHOR_FILE)

    def exists(self) -> bool:
        return self.path.exists()

    def read(self) -> list[Anchor]:
        """Every anchor, in file order; [] when there is no file."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as exc:
            raise AnchorFileError(f"{self.path}: cannot read ({exc})") from None
        return [self._parse(line, n) for n, line in enumerate(text.splitlines(), start=1)
                if line.strip()]

    def last(self) -> Anchor | None:
        """The newest anchor, read from the end of the file (it grows for years)."""
        try:
            with self.path.open("rb") as f:
                return _last_of(f.fileno(), self.path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise AnchorFileError(f"{self.path}: cannot read ({exc})") from None

    def append(self, anchor: Anchor) -> bool:
        """Append ``anchor`` unless the file already ends at or after its seq; fsync.

        Returns whether it was written. Two processes (the node and a command) sign the same
        log in turn, each after its own commit; the lock and the check keep the file in the
        order of the log even when the later one gets here first.
        """
        line = (json.dumps(anchor.to_json(), separators=(",", ":")) + "\n").encode()
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            last = _last_of(fd, self.path)
            if last is not None and last.seq >= anchor.seq:
                return False
            # One write of one line: O_APPEND places it at the end whatever else is open.
            os.write(fd, line)
            os.fsync(fd)
            return True
        finally:
            os.close(fd)  # releases the lock

    def _parse(self, line: str, number: int) -> Anchor:
        try:
            return Anchor.from_json(json.loads(line))
        except (ValueError, AnchorFileError) as exc:
            raise AnchorFileError(f"{self.path} line {number}: {exc}") from None


def _last_of(fd: int, path: Path) -> Anchor | None:
    size = os.fstat(fd).st_size
    if size == 0:
        return None
    start = max(0, size - _TAIL)
    tail = os.pread(fd, size - start, start).decode("utf-8", errors="replace")
    lines = [line for line in tail.splitlines() if line.strip()]
    if not lines:
        return None
    try:
        return Anchor.from_json(json.loads(lines[-1]))
    except (ValueError, AnchorFileError) as exc:
        raise AnchorFileError(f"{path}: the last line is not an anchor ({exc})") from None
