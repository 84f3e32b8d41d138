"""Sign-in throttling: exponential lock-outs per account-and-address and per address.

After ``free`` failures in a row a key is locked for ``base`` seconds, doubling with every
further failure up to ``ceiling``. Failures are forgotten after ``forget`` quiet seconds.

Sign-in consults two keys (``LoginThrottle``):

- the account *together with* the address it is tried from: guessing vera's password from one
  machine locks vera out on that machine only. Keyed on the account alone, anyone on the
  network could lock any account out (an administrator during an incident) by failing its
  password five times;
- the address alone, with a looser limit: one machine guessing many accounts' passwords.

A success clears the account-and-address count (not the address's: one valid account must not
reset an address that is guessing others' passwords).

The node keeps the counts in its database (``login_failures``), so a restart, which a crash
can cause, clears no lock-out. Times are wall-clock for the same reason (a monotonic clock
starts again with the process); a clock stepped by hand shortens or lengthens a lock-out, it
never lifts the count.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import Connection, and_, delete, select
from sqlalchemy.dialects.sqlite import insert

from custodes.store import schema
from custodes.store.db import Store

PRUNE_AT = 10_000  # counts kept before quiet, unlocked ones are dropped (a spray of names)


@dataclass
class Count:
    failures: int = 0
    last: float = 0.0
    locked_until: float = 0.0


class Counts(Protocol):
    """Where a throttle keeps its counts: memory, or the node's database."""

    def get(self, key: str) -> Count | None: ...

    def put(self, key: str, count: Count, *, prune_before: float) -> None: ...

    def drop(self, key: str) -> None: ...


class MemoryCounts:
    def __init__(self) -> None:
        self._counts: dict[str, Count] = {}

    def get(self, key: str) -> Count | None:
        count = self._counts.get(key)
        return None if count is None else Count(count.failures, count.last, count.locked_until)

    def put(self, key: str, count: Count, *, prune_before: float) -> None:
        self._counts[key] = count
        if len(self._counts) > PRUNE_AT:
            for stale in [k for k, c in self._counts.items()
                          if c.last < prune_before and c.locked_until <= count.last]:
                del self._counts[stale]

    def drop(self, key: str) -> None:
        self._counts.pop(key, None)


class StoredCounts:
    """Counts in ``login_failures`` under one scope; every change is one write transaction."""

    def __init__(self, store: Store, scope: str) -> None:
        self.store = store
        self.scope = scope

    def get(self, key: str) -> Count | None:
        t = schema.login_failures
        with self.store.read() as conn:
            row = conn.execute(
                select(t.c.failures, t.c.last, t.c.locked_until)
                .where(t.c.scope == self.scope, t.c.key == key)
            ).first()
        return None if row is None else Count(row.failures, row.last, row.locked_until)

    def put(self, key: str, count: Count, *, prune_before: float) -> None:
        t = schema.login_failures
        values = {"failures": count.failures, "last": count.last,
                  "locked_until": count.locked_until}

        def put(conn: Connection) -> None:
            conn.execute(insert(t).values(scope=self.scope, key=key, **values)
                         .on_conflict_do_update(index_elements=[t.c.scope, t.c.key],
                                                set_=values))
            # Bound the table under a spray of made-up names: quiet, unlocked counts go.
            conn.execute(delete(t).where(and_(t.c.last < prune_before,
                                              t.c.locked_until <= count.last)))

        self.store.write(put)

    def drop(self, key: str) -> None:
        t = schema.login_failures
        self.store.write(lambda conn: conn.execute(
            delete(t).where(t.c.scope == self.scope, t.c.key == key)))


class Throttle:
    def __init__(self, free: int, *, base: float = 30.0, ceiling: float = 3600.0,
                 forget: float = 3600.0, clock: Callable[[], float] = time.time,
                 counts: Counts | None = None) -> None:
        self.free = free
        self.base = base
        self.ceiling = ceiling
        self.forget = forget
        self.clock = clock
        self.counts: Counts = counts if counts is not None else MemoryCounts()
        # Read-modify-write of one count: two failures at once must both count.
        self._lock = threading.Lock()

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` may try again; 0 when it may now."""
        count = self.counts.get(key)
        return 0.0 if count is None else max(0.0, count.locked_until - self.clock())

    def failed(self, key: str) -> float:
        """Count a failure; return the lock-out it earns (0: none yet)."""
        now = self.clock()
        with self._lock:
            count = self.counts.get(key) or Count()
            if now - count.last > self.forget and now >= count.locked_until:
                count.failures = 0
            count.failures += 1
            count.last = now
            over = count.failures - self.free
            lock = 0.0 if over < 0 else min(self.ceiling, self.base * 2.0 ** over)
            if lock:
                count.locked_until = now + lock
            self.counts.put(key, count, prune_before=now - self.forget)
            return lock

    def succeeded(self, key: str) -> None:
        with self._lock:
            self.counts.drop(key)


def account_key(name: str, address: str) -> str:
    """The key of one account tried from one address (JSON: no separator to smuggle in)."""
    return json.dumps([name, address])


@dataclass
class LoginThrottle:
    """The two throttles sign-in consults: a tight one per account and address, a looser one
    per address (many people can share an address behind a NAT)."""

    accounts: Throttle  # keyed by account_key(name, address)
    addresses: Throttle

    @classmethod
    def default(cls) -> LoginThrottle:
        """Counts in memory (tests, tools); the node uses ``stored``."""
        return cls(Throttle(5), Throttle(20))

    @classmethod
    def stored(cls, store: Store) -> LoginThrottle:
        """Counts in the node's database: a restart lifts no lock-out."""
        return cls(Throttle(5, counts=StoredCounts(store, "account")),
                   Throttle(20, counts=StoredCounts(store, "address")))

    def retry_after(self, name: str, address: str) -> float:
        return max(self.accounts.retry_after(account_key(name, address)),
                   self.addresses.retry_after(address))

    def failed(self, name: str, address: str) -> float:
        return max(self.accounts.failed(account_key(name, address)),
                   self.addresses.failed(address))

    def succeeded(self, name: str, address: str) -> None:
        self.accounts.succeeded(account_key(name, address))
