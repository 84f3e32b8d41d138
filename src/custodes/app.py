"""A recorder node: ordered start and stop of its parts, and the stop event they share.

Start order follows the data: database, repair of the index, the maintainer that indexes
segments, one capture supervisor per camera, the analysis processes and the event maintainer
(with MQTT), retention, then the web server. Stop runs in reverse, so that the segments ffmpeg
closes on its way out are still indexed.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from types import FrameType

from sqlalchemy import insert, select

from custodes.analytics.supervisor import AnalyticsSupervisor
from custodes.analytics.worker import WorkerSpec
from custodes.api.server import WebServer
from custodes.audit.log import SYSTEM, AuditLog
from custodes.auth.users import ensure_admin
from custodes.capture.supervisor import CaptureSupervisor, Health, State
from custodes.config import Config, RecordMode
from custodes.events.bus import EventBus
from custodes.events.maintainer import EventMaintainer
from custodes.events.mqtt import MqttPublisher
from custodes.faces.descriptors import FaceDescriptors
from custodes.faces.gallery import Gallery
from custodes.faces.watchlist import Watchlist
from custodes.keys import NodeKeys
from custodes.privacy.cases import Cases
from custodes.record.cleanup import Retention
from custodes.record.forget import forget_without_footage
from custodes.record.layout import Layout
from custodes.record.maintainer import Maintainer, ReconcileReport
from custodes.redaction.copies import RedactedCopies
from custodes.store import schema
from custodes.store.db import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CameraStatus:
    name: str
    site: str
    location: str
    purpose: str
    recording: bool
    health: Health | None


class Node:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.layout = Layout(config.storage.path)
        self.store = Store(self.layout.database)
        # Keys load (or are created) before anything else: a node that cannot sign its audit
        # log or seal biometric data must not start.
        self.keys = NodeKeys.load_or_create(config.key_dir)
        self.audit = AuditLog(self.store, self.keys)
        self.maintainer = Maintainer(self.store, self.layout)
        self.retention = Retention(self.store, self.layout, config, audit=self.audit)
        self.supervisors: dict[str, CaptureSupervisor] = {}
        self.bus = EventBus()
        self.analytics = AnalyticsSupervisor([
            WorkerSpec(name, cam.sub_url or cam.main_url, cam.analytics, self.layout.snapshots,
                       live=self.layout.live, zones=cam.privacy_zones)
            for name, cam in config.cameras.items()
            if cam.enabled and cam.analytics.enabled
        ], workers=config.analytics.workers, keyframes=config.analytics.main_stream == "keyframes",
            min_fps=config.analytics.min_fps)
        sites = {name: cam.site for name, cam in config.cameras.items()}
        # Biometric data: descriptors sealed at rest, searched only through a case; the
        # watchlist acts only in the police profile, inside an approved case.
        self.descriptors = FaceDescriptors(self.store, self.keys)
        self.cases = Cases(self.store, self.keys, self.audit, config.profile,
                           known_cameras=config.cameras, descriptors=self.descriptors)
        self.gallery = Gallery(self.store, self.keys, self.audit, config.profile)
        self.watchlist = Watchlist(self.cases, self.store, self.audit, self.bus, sites=sites)
        self.redacted_copies = RedactedCopies()
        self.events = EventMaintainer(
            self.store, self.bus, sites, self.analytics.queue,
            descriptors=self.descriptors, on_face=self.watchlist.on_face,
        )
        self.mqtt = MqttPublisher(config.mqtt, config.node.name) if config.mqtt else None
        self.stop_event = threading.Event()
        self.started_at = time.time()
        self.reconcile_report: ReconcileReport | None = None
        self.first_admin_password: str | None = None
        self._threads: list[threading.Thread] = []
        self.web: WebServer | None = None

    def start(self, *, web: bool = True) -> None:
        self.layout.create()
        applied = self.store.open()
        if applied:
            log.info("database ready (%s)", ", ".join(applied))
        self._audit_start()
        # No default credentials: the first start creates "admin" with a random password,
        # which the command line prints once.
        self.first_admin_password = ensure_admin(self.store, self.audit)
        self.reconcile_report = self.maintainer.reconcile()
        sealed = self.descriptors.seal_legacy()
        if sealed:
            log.info("sealed %d face descriptors stored in plaintext by an older version", sealed)
        self.maintainer.start()
        for name, cam in self.config.cameras.items():
            if not cam.enabled or cam.record.mode == RecordMode.OFF:
                continue
            sup = CaptureSupervisor(
                name,
                cam.main_url,
                self.layout.cache_dir(name),
                cam.record.segment_seconds,
                on_segment=self.maintainer.submit,
                on_state=self._record_state,
            )
            self.supervisors[name] = sup
            sup.start()
        self.events.start()
        if self.mqtt is not None:
            self.mqtt.attach(self.bus)
            self.mqtt.start()
        self.analytics.start()
        retention = threading.Thread(
            target=self.retention.run, args=(self.stop_event,), name="retention", daemon=True
        )
        retention.start()
        self._threads.append(retention)
        privacy = threading.Thread(target=self._privacy_upkeep, name="privacy-upkeep", daemon=True)
        privacy.start()
        self._threads.append(privacy)
        if web:
            self.web = WebServer(self)
            self.web.start()
        log.info("node %s started: %d cameras recording, %d analysed", self.config.node.name,
                 len(self.supervisors), len(self.analytics.specs))

    def stop(self) -> None:
        begun = time.monotonic()
        self.stop_event.set()
        # Analysis winds down while the recorders close their last segments: the two waits
        # overlap instead of adding up (the node must stop within 10 s).
        self.analytics.request_stop()
        for sup in self.supervisors.values():
            sup.request_stop()
        for sup in self.supervisors.values():
            sup.join()
        recorders = time.monotonic() - begun
        self.analytics.stop()
        analysis = time.monotonic() - begun
        self.events.stop()
        if self.mqtt is not None:
            self.mqtt.stop()
        self.maintainer.stop()
        for thread in self._threads:
            thread.join(timeout=10)
        if self.web is not None:
            self.web.stop()
        self.audit.record(SYSTEM, "node.stop", self.config.node.name)
        self.audit.checkpoint()
        self.store.close()
        # What a slow stop waited for, from the stop request: the recorders, then analysis.
        log.info("node %s stopped in %.1f s (recorders done at %.1f s, analysis at %.1f s)",
                 self.config.node.name, time.monotonic() - begun, recorders, analysis)

    def _audit_start(self) -> None:
        """Record the start, and what changed in the configuration since the last one: the
        file is the source of truth, so a change shows up here, at the start that applies it."""
        fingerprint = self.config.fingerprint()
        with self.store.read() as conn:
            last = conn.execute(
                select(schema.audit_log.c.detail).where(schema.audit_log.c.action == "node.start")
                .order_by(schema.audit_log.c.seq.desc()).limit(1)
            ).scalar()
        before: dict[str, str] = json.loads(last).get("config", {}) if last else {}
        if before and before != fingerprint:
            self.audit.record(SYSTEM, "config.change", self.config.node.name, detail={
                "changed": sorted(k for k in fingerprint.keys() & before.keys()
                                  if fingerprint[k] != before[k]),
                "added": sorted(fingerprint.keys() - before.keys()),
                "removed": sorted(before.keys() - fingerprint.keys()),
            })
        self.audit.record(SYSTEM, "node.start", self.config.node.name, detail={
            "profile": self.config.profile.value, "cameras": sorted(self.config.cameras),
            "config": fingerprint,
        })

    def _privacy_upkeep(self) -> None:
        """End what has expired: cases (and their holds), gallery entries, orphan descriptors."""
        interval = self.config.retention.interval_seconds
        tasks: dict[str, Callable[[], object]] = {
            "case expiry": self.cases.expire_due,
            "gallery expiry": self.gallery.purge_expired,
            "faces without footage": self.descriptors.forget_without_footage,
            "events without footage": lambda: forget_without_footage(self.store, self.layout),
            "redacted copies without footage": lambda: self.redacted_copies.prune(self),
        }
        while True:
            for name, task in tasks.items():
                try:
                    task()
                except Exception:  # one failing task must not stop the others, or the next run
                    log.exception("privacy upkeep: %s failed", name)
            if self.stop_event.wait(interval):
                return

    def run_until_signalled(self) -> None:
        """Block until SIGINT or SIGTERM, then stop in order."""
        def handle(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s, stopping", signal.Signals(signum).name)
            self.stop_event.set()

        signal.signal(signal.SIGINT, handle)
        signal.signal(signal.SIGTERM, handle)
        self.stop_event.wait()
        self.stop()

    def cameras(self) -> list[CameraStatus]:
        out = []
        for name, cam in self.config.cameras.items():
            sup = self.supervisors.get(name)
            out.append(CameraStatus(
                name=name, site=cam.site, location=cam.location.value, purpose=cam.purpose,
                recording=sup is not None, health=sup.health if sup else None,
            ))
        return out

    def _record_state(self, camera: str, state: State, reason: str) -> None:
        if self.mqtt is not None:
            self.mqtt.publish_camera_state(self.config.cameras[camera].site, camera, state,
                                           reason)
        values = {"camera": camera, "at": time.time(), "state": state.value, "reason": reason}
        future: Future[object] = self.store.submit(
            lambda conn: conn.execute(insert(schema.camera_states).values(values))
        )
        future.add_done_callback(_log_failure)


def _log_failure(future: Future[object]) -> None:
    if (exc := future.exception()) is not None:
        log.error("could not record a camera state change: %s", exc)
