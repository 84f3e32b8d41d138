"""The in-process event bus: fan-out, bounded queues, isolation of consumers."""

from __future__ import annotations

import logging
import threading

import pytest

from custodes.events.bus import EventBus
from custodes.events.types import Event, EventKind


def event(n: int, camera: str = "cam1") -> Event:
    return Event(camera=camera, site="hq", kind=EventKind.MOTION, start=float(n), id=n)


def test_every_subscriber_gets_every_event_in_order() -> None:
    bus = EventBus()
    subscriptions = [bus.subscribe() for _ in range(3)]
    for n in range(5):
        bus.publish(event(n))
    for subscription in subscriptions:
        assert [subscription.get(timeout=1) for _ in range(5)] == [event(n) for n in range(5)]
        assert subscription.get(timeout=0.01) is None
        assert subscription.dropped == 0


def test_a_full_queue_drops_its_oldest_events_and_counts_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = EventBus()
    slow = bus.subscribe(maxsize=3)
    fast = bus.subscribe()
    for n in range(10):
        bus.publish(event(n))

    assert [slow.get(timeout=1) for _ in range(3)] == [event(7), event(8), event(9)]
    assert slow.dropped == 7
    assert fast.dropped == 0
    overflow = [r for r in caplog.records if r.name == "custodes.events.bus"]
    assert len(overflow) == 1, "one overflow episode is logged once"

    # Having caught up, a new overflow is a new episode.
    for n in range(5):
        bus.publish(event(n))
    assert slow.dropped == 9
    assert len([r for r in caplog.records if r.name == "custodes.events.bus"]) == 2


def test_a_raising_callback_neither_reaches_the_publisher_nor_other_consumers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = EventBus()
    seen: list[Event] = []

    def broken(_: Event) -> None:
        raise RuntimeError("consumer bug")

    bus.subscribe_callback(broken)
    unsubscribe = bus.subscribe_callback(seen.append)
    subscription = bus.subscribe()
    bus.publish(event(1))
    bus.publish(event(2))

    assert seen == [event(1), event(2)]
    assert subscription.get(timeout=1) == event(1)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, "a consumer failing on every event is logged once"
    assert errors[0].exc_info is not None

    unsubscribe()
    bus.publish(event(3))
    assert seen == [event(1), event(2)]


def test_close_wakes_a_waiting_reader_and_stops_delivery() -> None:
    bus = EventBus()
    subscription = bus.subscribe()
    received: list[Event] = []
    reader = threading.Thread(target=lambda: received.extend(subscription))
    reader.start()
    bus.publish(event(1))
    subscription.close()
    reader.join(timeout=2)

    assert not reader.is_alive()
    assert received in ([], [event(1)])  # closing may overtake the reader
    bus.publish(event(2))
    assert subscription.get(timeout=0.01) is None


def test_publishing_from_many_threads_loses_nothing() -> None:
    bus = EventBus()
    subscription = bus.subscribe(maxsize=10_000)
    counted: list[int] = []
    bus.subscribe_callback(lambda e: counted.append(1))
    threads_n, per_thread = 8, 500

    def publisher(t: int) -> None:
        for n in range(per_thread):
            bus.publish(event(t * per_thread + n, camera=f"cam{t}"))

    threads = [threading.Thread(target=publisher, args=(t,)) for t in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    received = list(iter(lambda: subscription.get(timeout=0.01), None))
    assert len(received) == threads_n * per_thread
    assert len(counted) == threads_n * per_thread
    assert subscription.dropped == 0
    for t in range(threads_n):  # each publisher's events stay in its order
        mine = [e.id for e in received if e.camera == f"cam{t}"]
        assert mine == list(range(t * per_thread, (t + 1) * per_thread))
