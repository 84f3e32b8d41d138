"""What the inspection pack adds for the signs and the legal record.

- the signs and the second-layer notice, made from the config as `custodes signage` makes them
  (or, without a `legal` section, the keys that are missing: the pack is made anyway);
- per camera, a redacted picture of what it sees (its newest recorded segment's first frame,
  faces blurred, privacy zones obscured and outlined with their number), so the inspector sees
  where it looks and what is hidden;
- per camera, whether its recording carries sound (read from that segment: no audio stream
  means none was recorded) and the retention actually achieved (age of the oldest footage kept
  against the retention configured; a hold may keep footage longer, and says so).

All of it goes into ``signage.json`` and the files beside it; the pack's manifest signs them.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import numpy.typing as npt
from sqlalchemy import select

from custodes.config import Config
from custodes.record.cleanup import retention_status
from custodes.record.layout import Layout
from custodes.redaction.blur import encode_jpeg, redact_snapshot
from custodes.redaction.detect import NODE_SETTINGS
from custodes.signage import NOTICE_HTML, NOTICE_PDF, sign_name
from custodes.signage.facts import LEGAL_KEYS, MissingLegalRecord, notice_of
from custodes.signage.notice import notice_html, notice_pdf
from custodes.signage.sign import sign_pdf
from custodes.store import schema
from custodes.store.db import Store
from custodes.vision.faces import FaceDetector

log = logging.getLogger(__name__)

SIGNAGE_FILE = "signage.json"
SNAPSHOT_WIDTH = 640
ZONE_COLOUR = (255, 210, 0)  # RGB: the signs' yellow


@functools.cache
def _detector() -> FaceDetector:
    return NODE_SETTINGS.detector()


def add_to_pack(folder: Path, config: Config, store: Store, now: float) -> list[str]:
    """Write this module's files into the pack's ``folder``; their names, for the manifest."""
    names: list[str] = []
    record: dict[str, Any] = {}
    try:
        notice = notice_of(config)
    except MissingLegalRecord as exc:
        record["legal"] = {"missing": list(LEGAL_KEYS), "reason": str(exc)}
    else:
        record["legal"] = notice.legal.model_dump(mode="json")
        for site in notice.sites:
            (folder / sign_name(site.site)).write_bytes(sign_pdf(notice, site))
            names.append(sign_name(site.site))
        (folder / NOTICE_PDF).write_bytes(notice_pdf(notice))
        (folder / NOTICE_HTML).write_text(notice_html(notice), encoding="utf-8")
        names += [NOTICE_PDF, NOTICE_HTML]
    record["cameras"] = _cameras(folder, config, store, now, names)
    (folder / SIGNAGE_FILE).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    return [*names, SIGNAGE_FILE]


def _cameras(folder: Path, config: Config, store: Store, now: float,
             names: list[str]) -> dict[str, Any]:
    layout = Layout(config.storage.path)
    with store.read() as conn:
        status = retention_status(conn, config, now, last_passes=0)
    holds = {h.camera for h in status.holds}
    newest = _newest(store)
    out: dict[str, Any] = {}
    for footage in status.cameras:
        name = footage.camera
        cam = config.cameras.get(name)
        kept = None if footage.oldest is None else (now - footage.oldest) / 3600
        slack = (config.retention.interval_seconds + (cam.record.segment_seconds if cam else 0)
                 ) / 3600
        entry: dict[str, Any] = {
            "configured": footage.configured,
            "retention_hours": footage.retention_hours,
            "oldest_kept_hours": None if kept is None else round(kept, 2),
            "retention_achieved": None if kept is None
            else kept <= footage.retention_hours + slack,
            "under_hold": name in holds or None in holds,
        }
        path = newest.get(name)
        if path is not None and cam is not None:
            entry.update(_view(folder, name, layout.recordings / path,
                               [list(z) for z in cam.privacy_zones], names))
        elif cam is not None:
            entry["snapshot"] = None
            entry["snapshot_missing"] = "no footage recorded"
        out[name] = entry
    return out


def _newest(store: Store) -> dict[str, str]:
    seg = schema.segments
    found: dict[str, tuple[float, str]] = {}
    with store.read() as conn:
        for camera, end, path in conn.execute(select(seg.c.camera, seg.c.end, seg.c.path)):
            if camera not in found or end > found[camera][0]:
                found[camera] = (end, path)
    return {camera: path for camera, (_, path) in found.items()}


def _view(folder: Path, camera: str, segment: Path, zones: list[list[tuple[float, float]]],
          names: list[str]) -> dict[str, Any]:
    """The redacted field-of-view picture of ``camera`` and whether its footage has sound."""
    try:
        with av.open(str(segment)) as container:
            audio = len(container.streams.audio) > 0
            frame = next(container.decode(video=0))
            image = np.asarray(frame.to_ndarray(format="rgb24"), dtype=np.uint8)
    except (av.FFmpegError, StopIteration, OSError) as exc:
        log.warning("no field-of-view picture of %s: %s", camera, exc)
        return {"snapshot": None, "snapshot_missing": f"its newest segment is unreadable: {exc}"}
    height, width = image.shape[:2]
    if width > SNAPSHOT_WIDTH:
        image = np.asarray(cv2.resize(image, (SNAPSHOT_WIDTH, round(height * SNAPSHOT_WIDTH
                                                                    / width)),
                                      interpolation=cv2.INTER_AREA), dtype=np.uint8)
    picture = _outlined(redact_snapshot(image, _detector(), zones=zones), zones)
    name = f"view-{camera}.jpg"
    (folder / name).write_bytes(encode_jpeg(picture))
    names.append(name)
    return {"snapshot": name, "privacy_zones": len(zones), "audio_recorded": audio}


def _outlined(image: npt.NDArray[np.uint8],
              zones: list[list[tuple[float, float]]]) -> npt.NDArray[np.uint8]:
    out = image.copy()
    h, w = out.shape[:2]
    for number, zone in enumerate(zones, 1):
        points = np.array([[round(x * (w - 1)), round(y * (h - 1))] for x, y in zone], np.int32)
        cv2.polylines(out, [points], isClosed=True, color=ZONE_COLOUR, thickness=2)
        x, y = points.min(axis=0)
        cv2.putText(out, f"zone {number}", (int(x) + 4, int(y) + 16), cv2.FONT_HERSHEY_SIMPLEX,
                    0.5, ZONE_COLOUR, 1, cv2.LINE_AA)
    return out
