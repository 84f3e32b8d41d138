"""Events and camera states to an MQTT broker, for building management and alarm systems.

Topics, below ``mqtt.topic_prefix``:

- ``<prefix>/<site>/<camera>/<kind>``: each event as JSON (`Event.to_json`), QoS 1, not retained;
- ``<prefix>/<site>/<camera>/state``: retained ``{"state", "reason", "since"}``, where state is
  the capture state (starting, online, offline, stopped); it is meaningful only while
  the node is available;
- ``<prefix>/<node>/availability``: retained ``online``; ``offline`` on a clean stop, and
  published by the broker itself (Last Will) when the node's connection dies.

Only metadata leaves the node: no picture, snapshot path, face embedding or camera URL. Reasons
are free text from ffmpeg, so URLs and absolute paths in them are masked.

The connection is kept by paho's network thread, which reconnects after 1, 2, 4 ... 60 s.
While the broker is unreachable, messages wait in paho's queue, up to `max_queued`; beyond that
new messages are dropped (counted in `dropped`, logged once per outage), so a long outage
loses the newest events, never memory. Camera states are kept apart and re-sent on every
connection, so the retained states are right even after a broker restart that lost them.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from custodes.config import MqttConfig
from custodes.events.bus import EventBus, Subscription
from custodes.events.types import Event, EventKind

log = logging.getLogger(__name__)

# A watchlist candidate names a person of interest in a police case: it is shown only inside
# the node, to people in the case, and is never pushed to a broker other devices read.
NOT_PUBLISHED = frozenset({EventKind.WATCHLIST})

QOS = 1  # at least once: a lost alarm is worse than a duplicate
KEEPALIVE = 30  # seconds; the broker declares the node dead (and sends the will) after 1.5x
MAX_QUEUED = 1000  # messages held while disconnected
RECONNECT_MIN, RECONNECT_MAX = 1, 60  # seconds, doubling in between
_AUTH = (0x86, 0x87)  # CONNACK: bad user name or password, not authorized

# ffmpeg error text can carry the camera URL (credentials, address) and local paths.
# Either ends before trailing punctuation, which belongs to the sentence around it.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]*[^\s'\":,;.)]")
_PATH = re.compile(r"(?<![\w.])/[^\s'\"]*[^\s'\":,;.)]")


_paho = logging.getLogger(f"{__name__}.paho")


def _paho_log(client: mqtt.Client, userdata: Any, level: int, message: str) -> None:
    # Debug only: paho logs an error on every failed reconnection attempt, and outages are
    # reported once, by this module.
    _paho.debug("%s", message)


def mask_reason(reason: str) -> str:
    """`reason` without URLs and absolute paths, which must not leave the node."""
    return _PATH.sub("<path>", _URL.sub("<url>", reason))


class MqttPublisher:
    """Publishes to one broker from a background network thread; every method is thread-safe."""

    def __init__(self, config: MqttConfig, node_name: str, *, max_queued: int = MAX_QUEUED,
                 keepalive: int = KEEPALIVE) -> None:
        self.prefix = config.topic_prefix.rstrip("/")
        self.availability_topic = f"{self.prefix}/{node_name}/availability"
        self.dropped = 0  # messages lost because paho's queue was full
        self._where = f"{config.host}:{config.port}"
        self._host, self._port, self._keepalive = config.host, config.port, keepalive
        self._states: dict[str, bytes] = {}  # retained state payloads by topic, re-sent on connect
        self._lock = threading.Lock()  # orders state updates against their re-sending
        self._connected = threading.Event()
        self._problem: str | None = None  # what was logged about the current outage
        self._down_since: float | None = None
        self._dropping = False  # whether the current queue overflow was logged
        self._stopping = False
        self._forwarders: list[tuple[Subscription, threading.Thread]] = []

        # One client id per node: a second process with the same node name takes the session
        # over, which shows in the logs as the first one flapping.
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"custodes-{node_name}")
        if config.username is not None:
            client.username_pw_set(config.username, config.password)
        client.will_set(self.availability_topic, "offline", qos=QOS, retain=True)
        client.reconnect_delay_set(RECONNECT_MIN, RECONNECT_MAX)
        client.max_queued_messages_set(max_queued)
        client.on_log = _paho_log
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        self._client = client

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background: a broker that is down now is retried, start never fails."""
        self._client.connect_async(self._host, self._port, keepalive=self._keepalive)
        self._client.loop_start()

    def stop(self, timeout: float = 5.0) -> None:
        """Announce ``offline``, disconnect cleanly (so the broker drops the will), stop."""
        for subscription, thread in self._forwarders:
            subscription.close()
            thread.join(timeout)
        self._forwarders.clear()
        self._stopping = True
        if self._connected.is_set():
            info = self._client.publish(self.availability_topic, "offline", qos=QOS, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (ValueError, RuntimeError) as exc:
                log.warning("could not announce offline to MQTT broker %s: %s", self._where, exc)
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    # -- what is published --------------------------------------------------------------------

    def publish_event(self, event: Event) -> None:
        """`event` as JSON metadata on ``<prefix>/<site>/<camera>/<kind>``, not retained."""
        topic = f"{self.prefix}/{event.site}/{event.camera}/{event.kind.value}"
        self._publish(topic, json.dumps(event.to_json()).encode(), retain=False)

    def publish_camera_state(self, site: str, camera: str, state: str, reason: str = "") -> None:
        """The camera's capture state, retained, with `reason` masked (see `mask_reason`)."""
        topic = f"{self.prefix}/{site}/{camera}/state"
        payload = json.dumps(
            {"state": str(state), "reason": mask_reason(reason), "since": time.time()}
        ).encode()
        with self._lock:
            self._states[topic] = payload
            self._publish(topic, payload, retain=True)

    def attach(self, bus: EventBus, maxsize: int = 1000) -> None:
        """Forward every event published on `bus` from now until `stop`.

        From a thread of its own, so that analytics never wait on the network: if this thread
        falls behind, the bus drops its oldest events.
        """
        subscription = bus.subscribe(maxsize)
        thread = threading.Thread(target=self._forward, args=(subscription,),
                                  name="mqtt-forward", daemon=True)
        self._forwarders.append((subscription, thread))
        thread.start()

    def _forward(self, subscription: Subscription) -> None:
        for event in subscription:
            if event.kind in NOT_PUBLISHED:
                continue
            try:
                self.publish_event(event)
            except Exception:  # one unserializable event must not end the forwarding
                log.exception("could not publish event %s to MQTT", event.id)

    def _publish(self, topic: str, payload: bytes, *, retain: bool) -> None:
        info = self._client.publish(topic, payload, qos=QOS, retain=retain)
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            self.dropped += 1
            if not self._dropping:
                self._dropping = True
                log.warning("MQTT queue full (%d messages) while broker %s is unreachable: "
                            "dropping new messages", self._client.max_queued_messages, self._where)

    # -- paho callbacks, in its network thread ------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags,
                    reason: ReasonCode, properties: Properties | None) -> None:
        if reason.is_failure:
            # paho keeps retrying with backoff, which only helps once the operator fixes it.
            hint = " (check mqtt.username and mqtt.password)" if reason.value in _AUTH else ""
            self._report(f"refused {reason}", logging.ERROR,
                         "MQTT broker %s refused the connection: %s%s; retrying",
                         self._where, reason, hint)
            return
        self._connected.set()
        if self._down_since is None:
            log.info("connected to MQTT broker %s", self._where)
        else:
            log.info("connected to MQTT broker %s (was unavailable for %.0f s)", self._where,
                     time.monotonic() - self._down_since)
        self._problem = None
        self._down_since = None
        self._dropping = False
        # The will may have set "offline", and a broker without persistence forgets retained
        # messages when it restarts.
        client.publish(self.availability_topic, "online", qos=QOS, retain=True)
        with self._lock:
            for topic, payload in self._states.items():
                client.publish(topic, payload, qos=QOS, retain=True)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._report("network", logging.WARNING,
                     "cannot reach MQTT broker %s; retrying", self._where)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags,
                       reason: ReasonCode, properties: Properties | None) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        if self._stopping or not was_connected:
            return  # a refused connection was reported by _on_connect already
        self._report("network", logging.WARNING,
                     "lost connection to MQTT broker %s (%s); retrying, up to %d messages "
                     "are queued", self._where, reason, self._client.max_queued_messages)

    def _report(self, problem: str, level: int, message: str, *args: object) -> None:
        # Logged once per outage however many retries fail, and again only if the cause changes.
        if self._down_since is None:
            self._down_since = time.monotonic()
        if problem != self._problem:
            self._problem = problem
            log.log(level, message, *args)
