"""The in-process event bus: analytics publish events, the rest of the node consumes them.

A slow consumer must never hold up analytics, so every subscription is a bounded queue that
drops its oldest events when full (and counts them), and publishing never blocks.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from types import TracebackType

from custodes.events.types import Event

log = logging.getLogger(__name__)


class Subscription:
    """One consumer's queue of events. Read it with `get` or iterate it; `close` it when done.

    Closing wakes any reader; events still queued are discarded.
    """

    def __init__(self, bus: EventBus, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.dropped = 0  # events lost because this subscriber fell behind
        self._bus = bus
        self._queue: deque[Event] = deque(maxlen=maxsize)
        self._ready = threading.Condition()
        self._closed = False
        self._overflowing = False

    def _offer(self, event: Event) -> None:
        with self._ready:
            if self._closed:
                return
            if len(self._queue) == self._queue.maxlen:
                self.dropped += 1
                # Once per episode: a consumer that stays behind would otherwise log per event.
                if not self._overflowing:
                    self._overflowing = True
                    log.warning("event subscriber is falling behind: dropping its oldest events "
                                "(%d dropped so far)", self.dropped)
            self._queue.append(event)  # the deque's maxlen pushes out the oldest
            self._ready.notify()

    def get(self, timeout: float | None = None) -> Event | None:
        """The next event; None after `timeout` seconds without one, or once closed."""
        with self._ready:
            if not self._ready.wait_for(lambda: self._queue or self._closed, timeout):
                return None
            if self._closed:
                return None
            event = self._queue.popleft()
            if not self._queue:
                self._overflowing = False  # caught up: the next overflow is news again
            return event

    def __iter__(self) -> Iterator[Event]:
        """Events as they come, until the subscription is closed."""
        while (event := self.get()) is not None:
            yield event

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._bus._remove(self)
        with self._ready:
            self._closed = True
            self._queue.clear()
            self._ready.notify_all()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class _Callback:
    def __init__(self, fn: Callable[[Event], None]) -> None:
        self.fn = fn
        self.failing = False  # log a broken consumer when it breaks, not on every event

    def __call__(self, event: Event) -> None:
        try:
            self.fn(event)
        except Exception:
            if not self.failing:
                log.exception("event callback %r failed (further failures not logged until "
                              "it succeeds again)", self.fn)
            self.failing = True
        else:
            self.failing = False


class EventBus:
    """Thread-safe publish/subscribe of `Event`s within one node."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscriptions: list[Subscription] = []
        self._callbacks: list[_Callback] = []

    def publish(self, event: Event) -> None:
        """Hand `event` to every subscriber. Never blocks on a slow one, never raises for one."""
        with self._lock:
            subscriptions = tuple(self._subscriptions)
            callbacks = tuple(self._callbacks)
        # Outside the lock, so that a callback may publish or subscribe in turn.
        for subscription in subscriptions:
            subscription._offer(event)
        for callback in callbacks:
            callback(event)

    def subscribe(self, maxsize: int = 1000) -> Subscription:
        """A queue of the events published from now on, holding at most `maxsize`."""
        subscription = Subscription(self, maxsize)
        with self._lock:
            self._subscriptions.append(subscription)
        return subscription

    def subscribe_callback(self, fn: Callable[[Event], None]) -> Callable[[], None]:
        """Call `fn(event)` in the publisher's thread for every event; returns the unsubscribe.

        For cheap consumers only (a counter, a hand-off): `fn` runs inside `publish`. What it
        raises is logged and goes no further.
        """
        callback = _Callback(fn)
        with self._lock:
            self._callbacks.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)

        return unsubscribe

    def _remove(self, subscription: Subscription) -> None:
        with self._lock:
            if subscription in self._subscriptions:
                self._subscriptions.remove(subscription)
