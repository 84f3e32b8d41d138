"""Alarms the hub raises about a site: one open alarm per site and kind, cleared when the
cause is gone (a silent site heard again); the chain alarms are never cleared by the site."""

from __future__ import annotations

import logging
import time
from enum import StrEnum
from typing import Any

import psycopg

log = logging.getLogger(__name__)


class AlarmKind(StrEnum):
    CHAIN_BREAK = "chain_break"            # an entry that does not follow from the one before
    REWRITTEN = "rewritten"                # an entry number received again with another hash
    TRUNCATED = "truncated"                # the site's log now ends before what the hub holds
    BAD_SIGNATURE = "bad_signature"        # a checkpoint not signed by the registered key
    CHECKPOINT_MISMATCH = "checkpoint_mismatch"  # a signed hash that is not the entry's
    KEY_CHANGED = "key_changed"            # the site was enrolled again with another key
    SILENT = "silent"                      # nothing heard from the site for too long


def raise_alarm(conn: psycopg.Connection[Any], site: str, kind: AlarmKind, detail: str,
                at: float | None = None) -> bool:
    """Open an alarm unless one of that kind is open for the site; True when opened."""
    row = conn.execute(
        "SELECT id FROM alarms WHERE site = %s AND kind = %s AND cleared_at IS NULL",
        (site, kind.value)).fetchone()
    if row is not None:
        return False
    conn.execute("INSERT INTO alarms (site, kind, raised_at, detail) VALUES (%s, %s, %s, %s)",
                 (site, kind.value, time.time() if at is None else at, detail))
    log.warning("hub alarm: site %s: %s: %s", site, kind.value, detail)
    return True


def clear_alarm(conn: psycopg.Connection[Any], site: str, kind: AlarmKind) -> None:
    conn.execute("UPDATE alarms SET cleared_at = %s WHERE site = %s AND kind = %s AND "
                 "cleared_at IS NULL", (time.time(), site, kind.value))
