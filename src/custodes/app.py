"""A recorder node: ordered start and stop of its parts, and the stop event they share.

Start order follows the data: database, repair of the index, the maintainer that indexes
segments, one capture supervisor per camera, the analysis processes and the event maintainer
(with MQTT), the live picture process, retention, then the web server. Stop runs in reverse,
so that the segments ffmpeg closes on its way out are still indexed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from sqlalchemy import insert, select

from custodes.analytics.supervisor import AnalyticsSupervisor
from custodes.analytics.worker import WorkerSpec
from custodes.api.server import WebServer
from custodes.audit.actions import Action
from custodes.audit.log import SYSTEM, SigningRefused
from custodes.auth.users import ensure_admin
from custodes.capture.supervisor import CaptureSupervisor, Health, State
from custodes.config import CameraConfig, Config, RecordMode
from custodes.data import NodeData
from custodes.events.bus import EventBus
from custodes.events.maintainer import EventMaintainer
from custodes.events.mqtt import MqttPublisher
from custodes.faces.descriptors import FaceDescriptors
from custodes.faces.gallery import Gallery
from custodes.faces.watchlist import Watchlist
from custodes.live.service import LiveCamera
from custodes.live.stream import LiveStreams, camera_streams
from custodes.live.supervisor import LiveSupervisor
from custodes.privacy import exports as export_rules
from custodes.privacy.cases import Cases, descriptor_gaps
from custodes.privacy.pinning import ProfileMismatch, check_profile, pin_profile, wipe_for
from custodes.privacy.subject_access import SubjectAccess
from custodes.record.cleanup import Retention
from custodes.record.export_jobs import ExportJobs
from custodes.record.forget import forget_without_footage
from custodes.record.layout import DATA_UMASK
from custodes.record.maintainer import Maintainer, ReconcileReport
from custodes.redaction.copies import RedactedCopies
from custodes.redaction.video import warm as warm_redaction
from custodes.sitetime import site_zone
from custodes.store import schema
from custodes.uplink.worker import Uplink

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CameraStatus:
    name: str
    site: str
    location: str
    purpose: str
    recording: bool
    health: Health | None


def live_cameras(config: Config) -> list[LiveCamera]:
    """Live pictures for every enabled camera, analysed or not: a viewer may watch any."""
    return [LiveCamera(name, cam.light_source, tuple(cam.privacy_zones))
            for name, cam in config.cameras.items() if cam.enabled]


class Node:
    def __init__(self, config: Config, config_path: Path | None = None) -> None:
        self.config = config
        # The file the config was loaded from: the web UI writes camera changes back to it
        # (custodes.config_edit); None when the node was built from text (tests, demo).
        self.config_path = config_path
        # Held while cameras are added, changed or removed at run time (custodes.onboarding).
        self.reconfigure_lock = threading.Lock()
        self.running = False  # set once start() has started the workers
        # Keys load (or are created) before anything else: a node that cannot sign its audit
        # log or seal biometric data must not start.
        self.data = NodeData.of(config)
        self.layout, self.store = self.data.layout, self.data.store
        self.keys, self.audit = self.data.keys, self.data.audit
        self.maintainer = Maintainer(self.store, self.layout)
        self.retention = Retention(self.store, self.layout, config, audit=self.audit)
        self.supervisors: dict[str, CaptureSupervisor] = {}
        self.bus = EventBus()
        self.analytics = self.analytics_pool(config)
        self.live = LiveSupervisor(self.layout.live, live_cameras(config))
        # Live video by stream copy, for roles allowed originals; started by its first viewer.
        self.live_streams = LiveStreams(lambda: camera_streams(self.config))
        sites = {name: cam.site for name, cam in config.cameras.items()}
        # Biometric data: descriptors sealed at rest, searched only through a case; the
        # watchlist acts only in the police profile, inside an approved case.
        self.descriptors = FaceDescriptors(self.store, self.keys)
        self.cases = Cases(self.store, self.keys, self.audit, config.profile,
                           known_cameras=config.cameras, descriptors=self.descriptors,
                           descriptors_off=descriptor_gaps(config))
        self.gallery = Gallery(self.store, self.keys, self.audit, config.profile)
        self.subject_access = SubjectAccess(self.store, self.keys, self.audit, config.profile,
                                            known_cameras=config.cameras)
        self.watchlist = Watchlist(self.cases, self.store, self.audit, self.bus, sites=sites)
        self.redacted_copies = RedactedCopies()
        # Signed exports made in the background, for the exports and subject access routes.
        self.exports = ExportJobs(self.store, self.layout, self.keys, self.audit,
                                  node=config.node.name, zone=site_zone(config.node.timezone))
        self.events = EventMaintainer(
            self.store, self.bus, sites, self.analytics.queue,
            descriptors=self.descriptors, on_face=self.watchlist.on_face,
        )
        self.mqtt = MqttPublisher(config.mqtt, config.node.name) if config.mqtt else None
        # Reports to a hub when configured: the database is the outbox, recording never waits.
        self.uplink = Uplink(self.store, config.uplink, sorted(config.cameras),
                             health=self._uplink_health,
                             # a minute's coverage is final once its segments are indexed
                             coverage_lag=2.0 * max((c.record.segment_seconds
                                                     for c in config.cameras.values()),
                                                    default=60) + 30,
                             ) if config.uplink else None
        self.stop_event = threading.Event()
        self.started_at = time.time()
        self.reconcile_report: ReconcileReport | None = None
        self.first_admin_password: str | None = None
        self._threads: list[threading.Thread] = []
        self.web: WebServer | None = None

    def prepare(self) -> None:
        """What a start does before any worker runs: storage with safe modes, the database,
        the pinned profile (and what it does not allow wiped), the first administrator.
        Raises ProfileMismatch (the store closed again) when the config names another
        profile than the one this storage is pinned to."""
        # Before anything is written, and inherited by the ffmpeg processes started later: no
        # footage, picture, export or database is readable by other accounts on the machine.
        os.umask(DATA_UMASK)
        self.layout.create()
        applied = self.store.open()
        if applied:
            log.info("database ready (%s)", ", ".join(applied))
        self.layout.restrict_modes()
        try:
            # Pinned before the start is recorded: a refused start leaves the refusal, not a
            # node.start under a profile that never ran.
            pin_profile(self.store, self.audit, self.config.profile)
        except ProfileMismatch:
            self.store.close()
            raise
        self._audit_start()
        try:
            # Signed at once: a log cut back while the node was down is refused (and the
            # refusal recorded) now, not at the next export.
            self.audit.checkpoint("start")
        except SigningRefused as exc:
            log.error("%s", exc)
        # A profile keeps only the biometric data it allows: a storage that ran under a wider
        # one (or a database copied in) loses the rest here, with a deletion record.
        wiped = wipe_for(self.store, self.audit, self.config.profile,
                         reason="not allowed by the profile at start")
        if any(wiped.values()):
            log.warning("deleted biometric data the %s profile does not allow: %s",
                        self.config.profile.value, wiped)
        # No default credentials: the first start creates "admin" with a random password,
        # which the command line prints once.
        self.first_admin_password = ensure_admin(self.store, self.audit)
        # Exports the last run was making when it stopped (or was killed) are failed, with
        # their half-made files deleted, before anyone can ask for a new one.
        interrupted = self.exports.recover()
        if interrupted:
            log.warning("%d exports were cut short by the last stop: %s", len(interrupted),
                        ", ".join(f"{r.id} {r.state.value}" for r in interrupted))

    def start(self, *, web: bool = True) -> None:
        self.prepare()
        self.reconcile_report = self.maintainer.reconcile()
        sealed = self.descriptors.seal_legacy()
        if sealed:
            log.info("sealed %d face descriptors stored in plaintext by an older version", sealed)
        self.maintainer.start()
        for name, cam in self.config.cameras.items():
            self.start_capture(name, cam)
        self.events.start()
        if self.mqtt is not None:
            self.mqtt.attach(self.bus)
            self.mqtt.start()
        self.analytics.start()
        if web:  # live pictures are asked for through the web server only
            self.live.start()
        retention = threading.Thread(
            target=self.retention.run, args=(self.stop_event,), name="retention", daemon=True
        )
        retention.start()
        self._threads.append(retention)
        privacy = threading.Thread(target=self._privacy_upkeep, name="privacy-upkeep", daemon=True)
        privacy.start()
        self._threads.append(privacy)
        if self.uplink is not None:
            self.uplink.start()
        if web:
            # Viewers of redacted video should not wait for the detector to load.
            threading.Thread(target=warm_redaction, name="redaction-warm", daemon=True).start()
            self.web = WebServer(self)
            self.web.start()
        self.running = True
        log.info("node %s started: %d cameras recording, %d analysed", self.config.node.name,
                 len(self.supervisors), len(self.analytics.specs))

    def analytics_pool(self, config: Config) -> AnalyticsSupervisor:
        """The analysis pool for the enabled, analysed cameras of ``config``."""
        return AnalyticsSupervisor([
            WorkerSpec(name, cam.light_source, cam.analytics, self.layout.snapshots,
                       zones=cam.privacy_zones)
            for name, cam in config.cameras.items()
            if cam.enabled and cam.analytics.enabled
        ], workers=config.analytics.workers, keyframes=config.analytics.main_stream == "keyframes",
            min_fps=config.analytics.min_fps)

    def start_capture(self, name: str, cam: CameraConfig) -> bool:
        """Start recording ``cam`` unless it is disabled or set not to record."""
        if not cam.enabled or cam.record.mode == RecordMode.OFF:
            return False
        sup = CaptureSupervisor(
            name,
            cam.main_source,
            self.layout.cache_dir(name),
            cam.record.segment_seconds,
            on_segment=self.maintainer.submit,
            on_state=self._record_state,
        )
        self.supervisors[name] = sup
        sup.start()
        return True

    def stop(self) -> None:
        begun = time.monotonic()
        with self.reconfigure_lock:  # a camera change under way finishes first; none follows
            self.stop_event.set()
        # Analysis winds down while the recorders close their last segments: the two waits
        # overlap instead of adding up (the node must stop within 10 s).
        self.analytics.request_stop()
        self.live.request_stop()
        for sup in self.supervisors.values():
            sup.request_stop()
        for sup in self.supervisors.values():
            sup.join()
        recorders = time.monotonic() - begun
        self.analytics.stop()
        self.live.stop()
        self.live_streams.stop()
        analysis = time.monotonic() - begun
        self.events.stop()
        if self.mqtt is not None:
            self.mqtt.stop()
        self.maintainer.stop()
        for thread in self._threads:
            thread.join(timeout=10)
        if self.web is not None:
            self.web.stop()
        # After the web server: no new export can be asked for. Queued exports fail now.
        self.exports.stop()
        self.redacted_copies.stop()  # nobody can be watching one now
        self.audit.record(SYSTEM, Action.NODE_STOP, self.config.node.name)
        try:
            self.audit.checkpoint("stop")
        except SigningRefused as exc:
            # The refusal is in the log and the stop goes on: footage is already safe on disk.
            log.error("%s", exc)
        if self.uplink is not None:
            self.uplink.stop()  # what it had not sent goes at the next start
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
                select(schema.audit_log.c.detail)
                .where(schema.audit_log.c.action == Action.NODE_START.value)
                .order_by(schema.audit_log.c.seq.desc()).limit(1)
            ).scalar()
        before: dict[str, str] = json.loads(last).get("config", {}) if last else {}
        if before and before != fingerprint:
            self.audit.record(SYSTEM, Action.CONFIG_CHANGE, self.config.node.name, detail={
                "changed": sorted(k for k in fingerprint.keys() & before.keys()
                                  if fingerprint[k] != before[k]),
                "added": sorted(fingerprint.keys() - before.keys()),
                "removed": sorted(before.keys() - fingerprint.keys()),
            })
        self.audit.record(SYSTEM, Action.NODE_START, self.config.node.name, detail={
            "profile": self.config.profile.value, "cameras": sorted(self.config.cameras),
            "config": fingerprint,
        })

    def _privacy_upkeep(self) -> None:
        """End what has expired: cases (and their holds), gallery entries, orphan descriptors."""
        interval = self.config.retention.interval_seconds
        tasks: dict[str, Callable[[], object]] = {
            "profile pin": self._check_profile_pin,
            "case expiry": self.cases.expire_due,
            "gallery expiry": self.gallery.purge_expired,
            "faces without footage": self.descriptors.forget_without_footage,
            "events without footage": lambda: forget_without_footage(self.store, self.layout),
            "redacted copies without footage": lambda: self.redacted_copies.prune(self),
            "subject access expiry": self.subject_access.expire_due,
            # Exports are copies of footage: none outlives its case or the retention ceiling.
            "exports past their case or retention": lambda: export_rules.prune(
                self.store, self.audit, self.layout.root / "exports",
                ceiling_days=self.config.retention.ceiling_days, profile=self.config.profile),
        }
        while True:
            for name, task in tasks.items():
                try:
                    task()
                except Exception:  # one failing task must not stop the others, or the next run
                    log.exception("privacy upkeep: %s failed", name)
            if self.stop_event.wait(interval):
                return

    def _check_profile_pin(self) -> None:
        """Stop when `custodes profile set` pinned another profile under the running node: its
        parts hold the old profile, and must not go on allowing what the new one forbids."""
        try:
            check_profile(self.store, self.config.profile)
        except ProfileMismatch as exc:
            log.error("stopping: %s", exc)
            self.stop_event.set()

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

    def _uplink_health(self) -> dict[str, object]:
        """What the hub shows of this node between its durable reports."""
        try:
            disk = shutil.disk_usage(self.layout.root)
            disk_json: dict[str, int] | None = {"total": disk.total, "used": disk.used,
                                                "free": disk.free}
        except OSError:
            disk_json = None
        return {
            "node": self.config.node.name, "profile": self.config.profile.value,
            # The hub shows this site's times in its zone, as the node's pages do.
            "timezone": site_zone(self.config.node.timezone).name,
            "started_at": self.started_at, "disk": disk_json,
            "retention_limit_hours": {name: self.config.retention_hours(name)
                                      for name in self.config.cameras},
            "cameras": {c.name: {"recording": c.recording,
                                 "state": c.health.state.value if c.health else "off"}
                        for c in self.cameras()},
        }

    def _record_state(self, camera: str, state: State, reason: str) -> None:
        self.events.camera_state(camera, state, reason)  # offline alerts, and back online
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
