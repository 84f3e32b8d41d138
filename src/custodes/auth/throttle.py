"""Sign-in throttling: exponential lock-outs per account and per client address.

After ``free`` failures in a row a key (an account name or an address) is locked for ``base``
seconds, doubling with every further failure up to ``ceiling``. A success clears the
account's count (not the address's: one valid account must not reset an address that is
guessing others' passwords). Failures are forgotten after ``forget`` quiet seconds.

Counters live in memory: a restart clears them, which an attacker cannot trigger from the
network, and keeps sign-in from writing to the database on every failure.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Count:
    failures: int = 0
    last: float = 0.0
    locked_until: float = 0.0


class Throttle:
    def __init__(self, free: int, *, base: float = 30.0, ceiling: float = 3600.0,
                 forget: float = 3600.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.free = free
        self.base = base
        self.ceiling = ceiling
        self.forget = forget
        self.clock = clock
        self._counts: dict[str, _Count] = {}
        self._lock = threading.Lock()

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` may try again; 0 when it may now."""
        with self._lock:
            count = self._counts.get(key)
            return 0.0 if count is None else max(0.0, count.locked_until - self.clock())

    def failed(self, key: str) -> float:
        """Count a failure; return the lock-out it earns (0: none yet)."""
        now = self.clock()
        with self._lock:
            count = self._counts.setdefault(key, _Count())
            if now - count.last > self.forget and now >= count.locked_until:
                count.failures = 0
            count.failures += 1
            count.last = now
            over = count.failures - self.free
            if over < 0:
                return 0.0
            lock = min(self.ceiling, self.base * 2.0 ** over)
            count.locked_until = now + lock
            self._prune(now)
            return lock

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._counts.pop(key, None)

    def _prune(self, now: float) -> None:
        # Bound memory under a spray of made-up names: drop keys that are quiet and unlocked.
        if len(self._counts) > 10_000:
            for key in [k for k, c in self._counts.items()
                        if now - c.last > self.forget and now >= c.locked_until]:
                del self._counts[key]


@dataclass
class LoginThrottle:
    """The two throttles sign-in consults: a tighter one per account, a looser one per address
    (many people can share an address behind a NAT)."""

    accounts: Throttle
    addresses: Throttle

    @classmethod
    def default(cls) -> LoginThrottle:
        return cls(Throttle(5), Throttle(20))

    def retry_after(self, name: str, address: str) -> float:
        return max(self.accounts.retry_after(name), self.addresses.retry_after(address))

    def failed(self, name: str, address: str) -> float:
        return max(self.accounts.failed(name), self.addresses.failed(address))

    def succeeded(self, name: str) -> None:
        self.accounts.succeeded(name)
