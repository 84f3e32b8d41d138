"""What a site sends its hub: subjects, message ids and the message envelope.

Both ends import this module, so the node and the hub cannot disagree on a name.

- Subject: ``custodes.site.<site>.<stream>``. A site's NATS user may publish only under
  ``custodes.site.<site>.>``: the subject, not the body, says which site spoke.
- Message id (JetStream's ``Nats-Msg-Id``, which the server uses to drop a duplicate):
  ``<site>/<stream>/<seq>``; for audit entries and checkpoints the id also carries the start of
  the hash, so that a rewritten entry sent under an old number is not dropped as a duplicate
  by the server but reaches the witness, which flags it.
- Body: JSON ``{"seq": n, "body": {...}}``; the hub's tables are unique on (site, stream, seq).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

SUBJECT_PREFIX = "custodes.site"
STREAM_NAME = "CUSTODES_FLEET"  # the JetStream stream that holds every site's messages


class Stream(StrEnum):
    """Each kind of thing a site reports, in the order a pass of the uplink publishes them."""

    AUDIT = "audit"
    CHECKPOINT = "checkpoint"
    CONFIG = "config"
    CAMERA_STATE = "camera_state"
    COVERAGE = "coverage"
    EVENT = "event"
    DELETION = "deletion"
    HOLD = "hold"
    HEALTH = "health"


def subject(site: str, stream: Stream) -> str:
    return f"{SUBJECT_PREFIX}.{site}.{stream.value}"


def site_subjects(site: str) -> str:
    """Everything ``site`` may publish on."""
    return f"{SUBJECT_PREFIX}.{site}.>"


def inbox_prefix(site: str) -> str:
    """Where the server's acks to ``site`` go: a site may read its own acks and no one else's."""
    return f"_INBOX.{site}"


class WireError(ValueError):
    """A message that does not parse: the hub refuses it (and says so) rather than guess."""


@dataclass(frozen=True)
class Message:
    site: str
    stream: Stream
    seq: int
    body: dict[str, Any]

    @property
    def msg_id(self) -> str:
        base = f"{self.site}/{self.stream.value}/{self.seq}"
        if self.stream in (Stream.AUDIT, Stream.CHECKPOINT):
            return f"{base}/{str(self.body.get('hash', ''))[:16]}"
        return base

    @property
    def subject(self) -> str:
        return subject(self.site, self.stream)

    def encode(self) -> bytes:
        return json.dumps({"seq": self.seq, "body": self.body}, sort_keys=True,
                          separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    @classmethod
    def decode(cls, subject_: str, data: bytes) -> Message:
        """Parse a message received on ``subject_``; the site is the subject's, never the
        body's. Raises WireError."""
        parts = subject_.split(".")
        if len(parts) != 4 or ".".join(parts[:2]) != SUBJECT_PREFIX:
            raise WireError(f"not a site subject: {subject_!r}")
        try:
            stream = Stream(parts[3])
        except ValueError:
            raise WireError(f"unknown stream {parts[3]!r} on {subject_!r}") from None
        try:
            obj = json.loads(data)
            seq, body = obj["seq"], obj["body"]
        except (ValueError, KeyError, TypeError) as exc:
            raise WireError(f"not a message ({exc})") from None
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise WireError(f"bad sequence number {seq!r}")
        if not isinstance(body, dict):
            raise WireError("the body is not an object")
        return cls(parts[2], stream, seq, body)
