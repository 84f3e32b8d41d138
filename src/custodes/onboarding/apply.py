"""Apply a changed configuration's cameras to a running node, without a restart.

What each camera runs follows from its config: a recorder (one ffmpeg, custodes.capture)
while enabled and recording, a place in the analysis pool while enabled and analysed, a place
in the live picture process while enabled. A camera whose recorder inputs changed (URL,
credentials, segment length, enabled, record mode) gets its recorder restarted; added cameras
start, removed ones stop. The analysis pool and the live process are each one set of
processes for all cameras: when their camera list changes they are rebuilt (their other
cameras pause for the few seconds that takes; recording never does).

The node's other parts that hold the camera list (retention, cases, subject access, the
event names of sites) are pointed at the new one. Footage of a removed camera is kept and
deleted by retention under the default retention like any camera no longer configured.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from custodes.app import live_cameras
from custodes.config import CameraConfig, Config, RecordMode
from custodes.live.supervisor import LiveSupervisor
from custodes.privacy.cases import descriptor_gaps

if TYPE_CHECKING:
    from custodes.app import Node

log = logging.getLogger(__name__)


@dataclass
class Applied:
    """What changed in the running node."""

    started: list[str] = field(default_factory=list)  # recorders started
    stopped: list[str] = field(default_factory=list)  # recorders stopped
    restarted: list[str] = field(default_factory=list)  # recorders restarted with new inputs
    analytics_rebuilt: bool = False
    live_rebuilt: bool = False

    def to_json(self) -> dict[str, object]:
        return {"started": self.started, "stopped": self.stopped, "restarted": self.restarted,
                "analytics_rebuilt": self.analytics_rebuilt, "live_rebuilt": self.live_rebuilt}


class NodeStopping(RuntimeError):
    """The node is stopping: nothing is started any more."""


def _recorder(cam: CameraConfig | None) -> tuple[str, int] | None:
    """What a camera's recorder depends on; None when it records nothing."""
    if cam is None or not cam.enabled or cam.record.mode == RecordMode.OFF:
        return None
    return cam.main_source, cam.record.segment_seconds


def apply_config(node: Node, new: Config) -> Applied:
    """Make the running ``node`` run ``new``'s cameras; returns what it did.

    Only cameras are applied: the server, storage, profile and retention defaults of a running
    node stay as they started (a change to them takes a restart; the edit routes change only
    cameras)."""
    with node.reconfigure_lock:
        if node.stop_event.is_set():
            raise NodeStopping("the node is stopping: the change is in the file and applies "
                               "at the next start")
        old = node.config
        done = Applied()
        node.config = new
        _point_parts_at(node, new)
        if not node.running:  # workers not started (a command, a test): nothing to restart
            return done
        for name in sorted(set(old.cameras) | set(new.cameras)):
            before, after = _recorder(old.cameras.get(name)), _recorder(new.cameras.get(name))
            if before == after and (after is None or name in node.supervisors):
                continue
            sup = node.supervisors.pop(name, None)
            if sup is not None:
                sup.stop()
            cam = new.cameras.get(name)
            started = cam is not None and node.start_capture(name, cam)
            if sup is not None and started:
                done.restarted.append(name)
            elif started:
                done.started.append(name)
            elif sup is not None:
                done.stopped.append(name)
        pool = node.analytics_pool(new)
        if pool.specs != node.analytics.specs:
            # The event maintainer reads the pool's queue: the new pool feeds the same one.
            pool.queue = node.analytics.queue
            node.analytics.stop()
            node.analytics = pool
            pool.start()
            done.analytics_rebuilt = True
        cameras = live_cameras(new)
        if cameras != node.live.cameras:
            was_running = node.web is not None  # live pictures run with the web server only
            node.live.stop()
            node.live = LiveSupervisor(node.layout.live, cameras, threads=node.live.threads)
            if was_running:
                node.live.start()
            done.live_rebuilt = True
        log.info("cameras applied: %s", done.to_json())
        return done


def _point_parts_at(node: Node, config: Config) -> None:
    node.retention.config = config
    node.cases.known_cameras = frozenset(config.cameras)
    node.cases.descriptors_off = descriptor_gaps(config)
    node.subject_access.known_cameras = frozenset(config.cameras)
    sites = {name: cam.site for name, cam in config.cameras.items()}
    # Replaced in place: the event maintainer and the watchlist hold these dicts.
    for held in (node.events.sites, node.watchlist.sites):
        held.clear()
        held.update(sites)
