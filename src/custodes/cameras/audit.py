"""The fleet risk audit: every configured camera probed and checked against the risk data.

The result is kept as JSON in the node's storage folder (`risk-audit.json`), so the system page
and the inspection pack show the last audit and when it ran, without probing cameras on every
page view.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from custodes.cameras.models import CameraProbe, Finding, FindingCode, Severity
from custodes.cameras.probe import DEFAULT_DRIFT_THRESHOLD_S, probe
from custodes.cameras.risk import RiskData, assess
from custodes.cameras.rtsp import check_rtsp
from custodes.config import CameraConfig, Config, redact_url

RESULT_NAME = "risk-audit.json"
_SEVERITY_ORDER = {Severity.CRITICAL: 0, Severity.WARNING: 1, Severity.INFO: 2}


@dataclass(slots=True)
class CameraAudit:
    camera: str
    onvif_url: str
    stream_url: str  # redacted
    result: CameraProbe  # what the ONVIF probe learnt
    findings: list[Finding] = field(default_factory=list)

    @property
    def worst(self) -> Severity | None:
        return min((f.severity for f in self.findings), key=_SEVERITY_ORDER.__getitem__,
                   default=None)


@dataclass(slots=True)
class FleetAudit:
    at: float
    risk_data_version: str
    drift_threshold_s: float
    cameras: list[CameraAudit]

    def counts(self) -> dict[str, int]:
        counts = {s.value: 0 for s in Severity}
        for camera in self.cameras:
            for finding in camera.findings:
                counts[finding.severity.value] += 1
        return counts

    def as_json(self) -> dict[str, Any]:
        return {
            "at": self.at, "risk_data_version": self.risk_data_version,
            "drift_threshold_s": self.drift_threshold_s, "counts": self.counts(),
            "cameras": [
                {"camera": c.camera, "onvif_url": c.onvif_url, "stream_url": c.stream_url,
                 "worst": c.worst, "findings": [asdict(f) for f in c.findings],
                 "device": None if c.result.device is None else asdict(c.result.device),
                 "clock": None if c.result.clock is None else asdict(c.result.clock),
                 "error": c.result.error}
                for c in self.cameras
            ],
        }


def onvif_url_of(camera: CameraConfig) -> str:
    if camera.onvif_url is not None:
        return camera.onvif_url
    host = urlsplit(camera.main_url).hostname or ""
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}/onvif/device_service"


async def audit_camera(
    name: str, camera: CameraConfig, data: RiskData, *, timeout: float,
    drift_threshold_s: float,
) -> CameraAudit:
    password = None if camera.password is None else camera.password.get_secret_value()
    onvif = onvif_url_of(camera)
    result = await probe(onvif, camera.username, password, timeout=timeout,
                         drift_threshold_s=drift_threshold_s)
    findings = list(result.findings)
    if not result.reachable:
        # Say so instead of pretending the camera passed the identity checks.
        findings = [Finding(
            FindingCode.UNREACHABLE, Severity.INFO,
            f"ONVIF not reachable at {onvif} ({result.error}); vendor, model, firmware and "
            "clock not checked" + ("" if camera.onvif_url else " (set onvif_url)"))]
    stream = await check_rtsp(camera.main_source, timeout=timeout)
    if stream.open_without_credentials and not any(
            f.code is FindingCode.RTSP_WITHOUT_AUTH for f in findings):
        findings.append(Finding(
            FindingCode.RTSP_WITHOUT_AUTH, Severity.CRITICAL,
            f"RTSP {redact_url(camera.main_url)} plays without credentials: anyone on the "
            "network sees it"))
    elif stream.schemes == ["basic"] and not any(
            f.code is FindingCode.RTSP_BASIC_AUTH for f in findings):
        findings.append(Finding(
            FindingCode.RTSP_BASIC_AUTH, Severity.WARNING,
            "RTSP asks for Basic authentication only: the password crosses the network in "
            "clear (base64); switch the camera to Digest"))
    elif not stream.reachable:
        findings.append(Finding(FindingCode.UNREACHABLE, Severity.WARNING,
                                f"RTSP {redact_url(camera.main_url)}: {stream.error}"))
    if result.device is not None:
        findings += assess(result.device, data)
    findings.sort(key=lambda f: _SEVERITY_ORDER[f.severity])
    return CameraAudit(name, onvif, redact_url(camera.main_url), result, findings)


async def audit_fleet(
    config: Config, data: RiskData, *, timeout: float = 15.0,
    drift_threshold_s: float = DEFAULT_DRIFT_THRESHOLD_S, concurrency: int = 8,
) -> FleetAudit:
    """Every configured camera, `concurrency` at a time."""
    gate = asyncio.Semaphore(concurrency)

    async def one(name: str, camera: CameraConfig) -> CameraAudit:
        async with gate:
            return await audit_camera(name, camera, data, timeout=timeout,
                                      drift_threshold_s=drift_threshold_s)

    cameras = await asyncio.gather(*(one(n, c) for n, c in config.cameras.items()))
    return FleetAudit(time.time(), data.version, drift_threshold_s, list(cameras))


def save(storage: Path, audit: FleetAudit) -> Path:
    storage.mkdir(parents=True, exist_ok=True)
    target = storage / RESULT_NAME
    fd, tmp = tempfile.mkstemp(dir=storage, prefix=".risk-audit-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(audit.as_json(), f, indent=1)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def last(storage: Path) -> dict[str, Any] | None:
    """The last saved audit, or None if none ran (or its file is unreadable: said in it)."""
    path = storage / RESULT_NAME
    if not path.is_file():
        return None
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return {"error": f"{path}: unreadable ({exc})"}
    return loaded if isinstance(loaded, dict) else {"error": f"{path}: not an audit result"}


def summary(storage: Path, config: Config) -> dict[str, Any]:
    """The last audit for the system page and the inspection pack: when, with which data, and
    each configured camera's findings (cameras added since the audit say so)."""
    from custodes.cameras.risk import RiskDataError, load  # noqa: PLC0415 - avoid a cycle

    try:
        data = load(storage)
        risk_data: dict[str, Any] = {
            "version": data.version,
            "sources": [{"title": s.title, "url": s.url, "taken": str(s.taken)}
                        for s in data.sources]}
    except (RiskDataError, OSError) as exc:
        risk_data = {"version": None, "error": str(exc)}
    saved = last(storage)
    if saved is None or "error" in saved:
        return {"ran": False, "at": None, "risk_data": risk_data,
                "note": (saved or {}).get("error")
                or "No fleet risk audit has run: custodes cameras audit --config FILE",
                "counts": {}, "cameras": []}
    audited = {c["camera"]: c for c in saved.get("cameras", [])}
    cameras = []
    for name in config.cameras:
        entry = audited.get(name)
        cameras.append({
            "camera": name,
            "audited": entry is not None,
            "worst": None if entry is None else entry.get("worst"),
            "device": None if entry is None else entry.get("device"),
            "findings": [] if entry is None else entry.get("findings", []),
        })
    return {"ran": True, "at": saved.get("at"), "risk_data": risk_data,
            "audit_risk_data_version": saved.get("risk_data_version"),
            "counts": saved.get("counts", {}), "cameras": cameras, "note": None}
