"""MQTT publishing against a real Mosquitto broker, started per test on a free port."""

from __future__ import annotations

import json
import logging
import queue
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from conftest import require
from custodes.app import Node
from custodes.config import MqttConfig, parse_config
from custodes.events.bus import EventBus
from custodes.events.mqtt import MqttPublisher, mask_reason
from custodes.events.types import Event, EventKind
from custodes.sim import SimServer, prepare_clip

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
USER, PASSWORD = "custodes", "s3cret-pw"
EVENT_KEYS = {"id", "camera", "site", "kind", "start", "end", "data", "has_snapshot"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Broker:
    """A Mosquitto of our own; `stop` and `start` again keep its port, as a restart would."""

    def __init__(self, folder: Path, *, with_password: bool = False) -> None:
        self.host, self.port = "127.0.0.1", free_port()
        self.log = folder / "mosquitto.log"
        self.conf = folder / "mosquitto.conf"
        lines = [f"listener {self.port} {self.host}", "persistence false",
                 "log_dest stderr", "user root"]  # "user" only matters when run as root
        if with_password:
            passwords = folder / "passwords"
            subprocess.run([MOSQUITTO_PASSWD, "-c", "-b", str(passwords), USER, PASSWORD],
                           check=True, capture_output=True)
            lines += ["allow_anonymous false", f"password_file {passwords}"]
        else:
            lines += ["allow_anonymous true"]
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)],
                                         stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        self.stop()
        pytest.fail(f"mosquitto did not start:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=5)
            self.proc = None

    def config(self, **overrides: Any) -> MqttConfig:
        return MqttConfig(host=self.host, port=self.port, **overrides)


def run_broker(folder: Path, *, with_password: bool) -> Iterator[Broker]:
    require(Path(MOSQUITTO).is_file(), "the mosquitto broker (scripts/services installs it)")
    broker = Broker(folder, with_password=with_password)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    yield from run_broker(tmp_path, with_password=False)


@pytest.fixture
def auth_broker(tmp_path: Path) -> Iterator[Broker]:
    yield from run_broker(tmp_path, with_password=True)


class Listener:
    """A plain paho subscriber, as a building management system would be."""

    def __init__(self, broker: Broker, topic: str = "#", **credentials: str) -> None:
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.backlog: list[mqtt.MQTTMessage] = []  # received, not yet asked for
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        if credentials:
            self.client.username_pw_set(credentials["username"], credentials["password"])

        def on_connect(client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags,
                       reason: ReasonCode, properties: Properties | None) -> None:
            client.subscribe(topic, qos=1)

        def on_subscribe(client: mqtt.Client, userdata: Any, mid: int,
                         reasons: list[ReasonCode], properties: Properties | None) -> None:
            subscribed.set()

        def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
            self.messages.put(message)

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_message = on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert subscribed.wait(5), "test subscriber could not subscribe"

    def receive(self, topic: str, timeout: float = 5) -> mqtt.MQTTMessage:
        """The first message on `topic` not received yet; others stay for later calls."""
        deadline = time.monotonic() + timeout
        while True:
            for message in self.backlog:
                if message.topic == topic:
                    self.backlog.remove(message)
                    return message
            try:
                self.backlog.append(self.messages.get(timeout=max(0, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"nothing on {topic} within {timeout} s") from None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def listen() -> Iterator[Callable[..., Listener]]:
    listeners: list[Listener] = []

    def make(broker: Broker, topic: str = "#", **credentials: str) -> Listener:
        listeners.append(Listener(broker, topic, **credentials))
        return listeners[-1]

    yield make
    for listener in listeners:
        listener.close()


@pytest.fixture
def publisher_for() -> Iterator[Callable[..., MqttPublisher]]:
    publishers: list[MqttPublisher] = []

    def make(config: MqttConfig, node: str = "node1", **options: int) -> MqttPublisher:
        publishers.append(MqttPublisher(config, node, **options))
        publishers[-1].start()
        return publishers[-1]

    yield make
    for publisher in publishers:
        publisher.stop()


def face_event() -> Event:
    return Event(
        camera="cam1", site="hq", kind=EventKind.FACE, start=1_700_000_000.0, id=42,
        data={"track": 3, "detections": 5, "quality": 0.8, "box": [10, 20, 30, 40]},
        snapshot="/var/lib/custodes/snapshots/cam1/42.jpg",
    )


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_an_event_arrives_on_its_topic_as_metadata_only(
    broker: Broker, listen: Callable[..., Listener], publisher_for: Callable[..., MqttPublisher]
) -> None:
    listener = listen(broker)
    publisher = publisher_for(broker.config())
    assert publisher.wait_connected(5)
    publisher.publish_event(face_event())

    message = listener.receive("custodes/hq/cam1/face")
    assert message.qos == 1
    assert not message.retain
    payload = json.loads(message.payload)
    assert set(payload) == EVENT_KEYS
    assert payload["data"] == face_event().data
    assert payload["has_snapshot"] is True
    assert b"/var/lib" not in message.payload
    assert b".jpg" not in message.payload


def test_a_late_subscriber_gets_retained_camera_state_and_availability(
    broker: Broker, listen: Callable[..., Listener], publisher_for: Callable[..., MqttPublisher]
) -> None:
    early = listen(broker)
    publisher = publisher_for(broker.config(topic_prefix="city/cctv"), node="town-hall")
    assert publisher.wait_connected(5)
    publisher.publish_camera_state(
        "hq", "cam1", "offline",
        "ffmpeg: rtsp://admin:***@10.0.0.5:554/live: Connection refused (/var/cache/cam1)",
    )
    early.receive("city/cctv/hq/cam1/state")  # delivered, so retained at the broker

    late = listen(broker)
    state = late.receive("city/cctv/hq/cam1/state")
    assert state.retain
    payload = json.loads(state.payload)
    assert set(payload) == {"state", "reason", "since"}
    assert payload["state"] == "offline"
    assert payload["reason"] == "ffmpeg: <url>: Connection refused (<path>)"
    availability = late.receive("city/cctv/town-hall/availability")
    assert availability.retain
    assert availability.payload == b"online"


def test_a_clean_stop_announces_offline(
    broker: Broker, listen: Callable[..., Listener]
) -> None:
    publisher = MqttPublisher(broker.config(), "node1")
    publisher.start()
    assert publisher.wait_connected(5)
    publisher.stop()

    message = listen(broker).receive("custodes/node1/availability")
    assert message.retain
    assert message.payload == b"offline"


def test_events_on_the_bus_are_forwarded(
    broker: Broker, listen: Callable[..., Listener], publisher_for: Callable[..., MqttPublisher]
) -> None:
    bus = EventBus()
    listener = listen(broker)
    publisher = publisher_for(broker.config())
    publisher.attach(bus)
    bus.publish(face_event())

    message = listener.receive("custodes/hq/cam1/face")
    assert json.loads(message.payload)["id"] == 42


def test_watchlist_alerts_never_reach_the_broker(
    broker: Broker, listen: Callable[..., Listener], publisher_for: Callable[..., MqttPublisher]
) -> None:
    bus = EventBus()
    listener = listen(broker)
    publisher = publisher_for(broker.config())
    publisher.attach(bus)
    alert = Event(camera="cam1", site="hq", kind=EventKind.WATCHLIST, start=1_700_000_000.0,
                  id=41, data={"alert": 1, "case": 2, "status": "candidate"})
    bus.publish(alert)
    bus.publish(face_event())

    # Events are forwarded in order, so once the face event is in, the alert was skipped.
    listener.receive("custodes/hq/cam1/face")
    topics = [m.topic for m in listener.backlog]
    while not listener.messages.empty():
        topics.append(listener.messages.get().topic)
    assert "custodes/hq/cam1/watchlist" not in topics


def test_beyond_the_queue_bound_new_messages_are_dropped_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Nothing listens on this port: everything stays queued.
    publisher = MqttPublisher(MqttConfig(host="127.0.0.1", port=free_port()), "node1",
                              max_queued=3)
    try:
        for _ in range(5):
            publisher.publish_event(face_event())
        assert publisher.dropped == 2
        assert len([r for r in caplog.records if "queue full" in r.getMessage()]) == 1
    finally:
        publisher.stop()


def test_mask_reason() -> None:
    assert mask_reason("rtsp://u:p@cam/x, failed") == "<url>, failed"
    assert mask_reason("/dev/shm/a.ts: No space left, 4/5 done, I/O error") == (
        "<path>: No space left, 4/5 done, I/O error"
    )


def test_the_broker_publishes_the_will_when_the_node_dies(
    broker: Broker, listen: Callable[..., Listener]
) -> None:
    listener = listen(broker, "custodes/doomed/availability")
    script = textwrap.dedent(f"""
        import time
        from custodes.config import MqttConfig
        from custodes.events.mqtt import MqttPublisher
        publisher = MqttPublisher(MqttConfig(host="{broker.host}", port={broker.port}), "doomed")
        publisher.start()
        if publisher.wait_connected(10):
            print("ready", flush=True)
            time.sleep(60)
    """)
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE) as node:
        try:
            assert node.stdout is not None
            assert node.stdout.readline() == b"ready\n"
            assert listener.receive("custodes/doomed/availability").payload == b"online"
        finally:
            node.send_signal(signal.SIGKILL)  # no chance to say goodbye

    will = listener.receive("custodes/doomed/availability")
    assert will.payload == b"offline"
    late = listen(broker, "custodes/doomed/availability").receive("custodes/doomed/availability")
    assert late.retain
    assert late.payload == b"offline"


@pytest.mark.slow
def test_after_a_broker_restart_the_publisher_reconnects_and_logs_it_once(
    broker: Broker, listen: Callable[..., Listener],
    publisher_for: Callable[..., MqttPublisher], caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="custodes.events.mqtt")
    publisher = publisher_for(broker.config())
    assert publisher.wait_connected(5)

    broker.stop()
    assert wait_for(lambda: not publisher.connected, 5)
    publisher.publish_event(face_event())  # queued by paho meanwhile
    time.sleep(1.5)  # at least one reconnection attempt fails
    broker.start()
    # Subscribed well before the publisher's next attempt (backoff: 2 s after the failed one).
    listener = listen(broker)

    assert publisher.wait_connected(10)
    assert json.loads(listener.receive("custodes/hq/cam1/face").payload)["id"] == 42
    assert listener.receive("custodes/node1/availability").payload == b"online"
    publisher.publish_camera_state("hq", "cam1", "online")
    assert json.loads(listener.receive("custodes/hq/cam1/state").payload)["state"] == "online"

    ours = [r for r in caplog.records if r.name == "custodes.events.mqtt"]
    assert len([r for r in ours if r.levelno == logging.WARNING]) == 1
    assert "lost connection" in next(r for r in ours if r.levelno == logging.WARNING).message
    assert len([r for r in ours if "was unavailable" in r.getMessage()]) == 1


def test_a_wrong_password_is_reported_clearly_and_the_right_one_works(
    auth_broker: Broker, listen: Callable[..., Listener],
    publisher_for: Callable[..., MqttPublisher], caplog: pytest.LogCaptureFixture,
) -> None:
    wrong = publisher_for(auth_broker.config(username=USER, password="not-it"), node="wrong")
    assert wait_for(lambda: any(r.levelno == logging.ERROR for r in caplog.records), 5)
    assert not wrong.connected
    error = next(r for r in caplog.records if r.levelno == logging.ERROR)
    assert "refused" in error.getMessage()
    assert "Not authorized" in error.getMessage()
    assert "mqtt.password" in error.getMessage()
    assert all("not-it" not in r.getMessage() for r in caplog.records)

    listener = listen(auth_broker, username=USER, password=PASSWORD)
    right = publisher_for(auth_broker.config(username=USER, password=PASSWORD), node="right")
    assert right.wait_connected(5)
    right.publish_event(face_event())
    assert json.loads(listener.receive("custodes/hq/cam1/face").payload)["id"] == 42


@pytest.mark.slow
def test_a_recorder_node_publishes_what_its_cameras_see(
    broker: Broker, listen: Callable[..., Listener], shared_data: Path, tmp_path: Path
) -> None:
    """End to end: a simulated camera showing real people -> analysis -> events -> MQTT."""
    clip = prepare_clip(shared_data / "video/face_recognition_short_hamilton_clip.mp4",
                        tmp_path / "clips")
    listener = listen(broker, "custodes/#")
    with SimServer() as sim:
        url = sim.add_camera("stage", clip)
        config = parse_config(yaml.safe_dump({
            "node": {"name": "hall-node"},
            "sites": {"school": {"name": "School"}},
            "cameras": {"stage": {"site": "school", "location": "entrance",
                                  "purpose": "test", "main_url": url}},
            "storage": {"path": str(tmp_path / "var")},
            "server": {"port": 0},
            "mqtt": {"host": broker.host, "port": broker.port},
        }))
        node = Node(config)
        node.start(web=False)
        try:
            assert listener.receive("custodes/hall-node/availability", 10).payload == b"online"
            state = json.loads(listener.receive("custodes/school/stage/state", 30).payload)
            assert state["state"] in ("starting", "online")
            motion = json.loads(listener.receive("custodes/school/stage/motion", 60).payload)
            face = json.loads(listener.receive("custodes/school/stage/face", 60).payload)
        finally:
            node.stop()
    assert set(motion) == set(face) == EVENT_KEYS
    assert (face["camera"], face["site"], face["kind"]) == ("stage", "school", "face")
    assert set(face["data"]) == {"tracks", "detections", "quality", "box"}  # one per visit
    assert face["has_snapshot"] is True
    assert listener.receive("custodes/hall-node/availability", 10).payload == b"offline"
