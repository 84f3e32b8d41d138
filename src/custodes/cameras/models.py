"""What a camera probe learns, as plain typed values (JSON-ready with `as_json`).

The web UI, the CLI and the risk audit all read these; nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import unquote


class StreamRole(StrEnum):
    MAIN = "main"  # the recording stream (highest resolution profile)
    SUB = "sub"  # the low-resolution stream for analysis and live view


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class FindingCode(StrEnum):
    UNREACHABLE = "unreachable"  # nothing answered at the address
    AUTH_FAILED = "auth_failed"  # the camera refused the credentials given
    NO_CREDENTIALS = "no_credentials"  # a probe without credentials could not read the device
    PROTOCOL_ERROR = "protocol_error"  # it answered, but not as ONVIF/RTSP should
    ONVIF_WITHOUT_AUTH = "onvif_without_auth"  # device information readable anonymously
    USERS_LISTED_ANONYMOUSLY = "users_listed_anonymously"  # GetUsers answered without auth
    RTSP_WITHOUT_AUTH = "rtsp_without_auth"  # the stream plays without credentials
    RTSP_BASIC_AUTH = "rtsp_basic_auth"  # password sent base64 in clear over RTSP
    CLOCK_DRIFT = "clock_drift"  # camera clock off: segment times and evidence drift too
    CLEARTEXT_PROTOCOL = "cleartext_protocol"  # HTTP on, HTTPS off: ONVIF login in clear
    KNOWN_EXPLOITED = "known_exploited"  # CISA KEV entry matches vendor, model and firmware
    CHECK_FIRMWARE = "check_firmware"  # KEV entry for this vendor/model; firmware not decidable
    FCC_COVERED = "fcc_covered"  # vendor on the FCC Covered List (video surveillance)


@dataclass(frozen=True, slots=True)
class Finding:
    code: FindingCode
    severity: Severity
    message: str
    reference: str | None = None  # CVE id or source URL


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    manufacturer: str
    model: str
    firmware: str
    serial: str
    hardware_id: str = ""


@dataclass(frozen=True, slots=True)
class StreamInfo:
    role: StreamRole
    profile: str  # ONVIF profile token
    uri: str  # as the camera reports it, without credentials
    codec: str | None = None  # "H264", "H265", ... from the encoder configuration
    width: int | None = None
    height: int | None = None
    fps: float | None = None


@dataclass(frozen=True, slots=True)
class ClockInfo:
    camera_utc: float  # epoch seconds the camera reported
    drift_s: float  # camera minus this host; positive: the camera is ahead
    ntp: bool | None = None  # DateTimeType == NTP, when reported


@dataclass(frozen=True, slots=True)
class ProtocolInfo:
    name: str  # HTTP, HTTPS, RTSP as ONVIF names them
    enabled: bool
    ports: tuple[int, ...] = ()


@dataclass(slots=True)
class CameraProbe:
    """Everything one probe learnt about one camera; `error` says why it learnt little."""

    url: str  # the address probed, credentials removed
    reachable: bool = False
    authenticated: bool = False  # the credentials given were accepted
    device: DeviceInfo | None = None
    streams: list[StreamInfo] = field(default_factory=list)
    clock: ClockInfo | None = None
    protocols: list[ProtocolInfo] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    error: str | None = None

    def stream(self, role: StreamRole) -> StreamInfo | None:
        return next((s for s in self.streams if s.role is role), None)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class DiscoveredDevice:
    """One WS-Discovery ProbeMatch: where a device says its ONVIF service is."""

    endpoint: str  # the device's stable id (EndpointReference address, a urn:uuid)
    xaddrs: tuple[str, ...]  # ONVIF device service URLs
    scopes: tuple[str, ...]  # onvif://www.onvif.org/name/..., hardware/..., location/...
    address: str  # the IP the answer came from

    @property
    def name(self) -> str | None:
        return _scope(self.scopes, "name")

    @property
    def hardware(self) -> str | None:
        return _scope(self.scopes, "hardware")

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "name": self.name, "hardware": self.hardware}


def _scope(scopes: tuple[str, ...], kind: str) -> str | None:
    prefix = f"onvif://www.onvif.org/{kind}/"
    for scope in scopes:
        if scope.startswith(prefix):
            return unquote(scope.removeprefix(prefix))
    return None
