"""The node's configuration: one YAML file, validated strictly.

Every model forbids unknown keys and documents each field, so a typo is an error that names
the key and its line rather than a setting silently ignored. Secrets (camera passwords) are
written as ``${ENV_VAR}`` and substituted from the environment at load time.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from custodes.privacy.policy import Action, Profile, allows, placement_problem
from custodes.sitetime import check_zone_name
from custodes.uplink.tls import check_ca_pem

# Names end up in file paths, URLs and MQTT topics: keep them to a safe alphabet.
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?B|%)?\s*$", re.IGNORECASE)
_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LocationType(StrEnum):
    """Where a camera looks; privacy profiles restrict which types a deployment may use."""

    CORRIDOR = "corridor"
    ENTRANCE = "entrance"
    EXTERIOR = "exterior"
    OFFICE = "office"
    CLASSROOM = "classroom"
    RECEPTION = "reception"
    PARKING = "parking"
    STAIRWELL = "stairwell"
    OTHER = "other"


class RecordMode(StrEnum):
    CONTINUOUS = "continuous"
    MOTION = "motion"  # recorded continuously; segments without motion are deleted early
    OFF = "off"


@dataclass(frozen=True)
class SizeLimit:
    """A disk amount given either in bytes or as a share of the filesystem."""

    value: float
    percent: bool

    def bytes_of(self, filesystem_total: int) -> int:
        return int(filesystem_total * self.value / 100) if self.percent else int(self.value)


def parse_size(text: str | int) -> SizeLimit:
    if isinstance(text, int):
        return SizeLimit(float(text), percent=False)
    m = _SIZE.match(text)
    if not m:
        raise ValueError(
            f"{text!r} is not a size: use bytes (500GB, 2TB, 1000000) or a share (80%)"
        )
    number, unit = float(m.group(1)), (m.group(2) or "B").upper()
    if unit == "%":
        if not 0 < number <= 100:
            raise ValueError(f"{text!r}: a share of the disk must be between 0 and 100%")
        return SizeLimit(number, percent=True)
    return SizeLimit(number * _UNITS[unit], percent=False)


def redact_url(url: str) -> str:
    """The URL with any password replaced, for logs and status pages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def _userinfo_problem(url: str) -> str | None:
    """Why the user name and password written in ``url`` would reach the camera wrong, if so.

    ffmpeg and Python end the host part at the first '/', '?' or '#' and take the user part
    up to its last '@': a password holding one of those, written as it is (or substituted from
    ``${ENV}``), gives the camera another user, password or host than meant. The message does
    not repeat the URL, whose password cannot be told apart from the rest.
    """
    fix = "give it in the camera's username and password fields instead"
    if any(c.isspace() for c in url):
        return f"the URL holds a space (a password with a space?): {fix}"
    if "#" in url:
        return f"the URL holds a '#', which ends the address there (a password with '#'?): {fix}"
    rest = url.partition("://")[2]
    end = len(rest) if not (ends := [i for i in map(rest.find, "/?") if i >= 0]) else min(ends)
    authority, after = rest[:end], rest[end:]
    if authority.count("@") > 1:
        return f"the URL holds more than one '@' before the host (a password with '@'?): {fix}"
    if "@" in after:
        return f"the URL holds an '@' after the host (a password with '/' or '?'?): {fix}"
    return None


def _check_stream_url(url: str) -> str:
    problem = _userinfo_problem(url)
    if problem:
        raise ValueError(problem)
    parts = urlsplit(url)
    if parts.scheme not in ("rtsp", "rtsps"):
        raise ValueError(f"{redact_url(url)!r} is not an rtsp:// or rtsps:// URL")
    if not parts.hostname:
        raise ValueError(f"{redact_url(url)!r} has no host")
    try:
        parts.port  # noqa: B018 - urlsplit validates the port lazily
    except ValueError as exc:
        raise ValueError(f"{redact_url(url)!r}: {exc}") from None
    return url


class RecordConfig(Strict):
    mode: RecordMode = Field(
        RecordMode.CONTINUOUS, description="continuous: record all the time; off: live only"
    )
    segment_seconds: int = Field(
        10, ge=2, le=600, description="Length of each recorded MP4 segment, in seconds"
    )
    retention_hours: float | None = Field(
        None,
        gt=0,
        description="Maximum age of this camera's footage; defaults to retention.default_hours",
    )


Point = tuple[Annotated[float, Field(ge=0, le=1)], Annotated[float, Field(ge=0, le=1)]]
Polygon = Annotated[list[Point], Field(min_length=3)]


class MotionConfig(Strict):
    enabled: bool = Field(True, description="Detect motion on this camera")
    threshold: int = Field(
        25, ge=1, le=255, description="Grey-level change that counts as a moving pixel"
    )
    min_area: float = Field(
        0.002, gt=0, le=1, description="Smallest moving area that counts, as a share of the frame"
    )
    masks: list[Polygon] = Field(
        default_factory=list,
        description="Areas ignored by motion detection (trees, clocks): polygons of (x, y) "
        "points in 0..1 frame coordinates",
    )
    end_after: float = Field(
        3.0, gt=0, le=60, description="Seconds without motion that end a motion event"
    )
    # A busy corridor moves all day: without a ceiling its one span would stay "ongoing"
    # until the scene went quiet, and an event nobody can review until it ends.
    max_span: float = Field(
        300.0, ge=10, le=3600,
        description="Longest motion event in seconds; motion going on past it continues as "
        "a new event",
    )


class FacesConfig(Strict):
    detect: bool = Field(
        True, description="Detect faces (always possible: redaction depends on it)"
    )
    embeddings: bool = Field(
        False,
        description="Compute a face descriptor per track (biometric data; off unless the "
        "deployment allows it)",
    )
    # 20: CenterFace finds faces from ~10 px, but a track of a face under ~20 px of the
    # analysed frame is mostly noise and can never be recognised; redaction ignores this setting
    # and blurs every face it finds, of any size.
    min_size: int = Field(
        20, ge=10, le=1000, description="Smallest face considered, in pixels of the analysed frame"
    )
    threshold: float = Field(
        0.5, ge=0.2, le=0.95,
        description="Least detector score (0..1) for a face to count in analytics; redaction "
        "uses its own, lower cut",
    )


class AnalyticsConfig(Strict):
    enabled: bool = Field(True, description="Analyse this camera (motion, faces)")
    fps: float = Field(5, gt=0, le=30, description="Frames analysed per second")
    width: int = Field(
        640, ge=160, le=1920,
        description="Analysis width when there is no sub stream (the main stream is scaled)",
    )
    motion: MotionConfig = Field(default_factory=MotionConfig)
    faces: FacesConfig = Field(default_factory=FacesConfig)


class AnalysisPoolConfig(Strict):
    """The node's analysis processes, shared by all cameras (each camera's `analytics` says
    what to analyse; this says with what)."""

    workers: int | None = Field(
        None, ge=1, le=256,
        description="Analysis processes, each analysing several cameras in turn; default: "
        "one per core and one more, fewer when memory is short",
    )
    main_stream: Literal["keyframes", "all"] = Field(
        "keyframes",
        description="How a camera without a sub stream is decoded for analysis: keyframes "
        "only (analysed at the keyframe rate, ~2 % of a core per 5 MP camera) or every frame "
        "(the configured rate, ~18 % of a core per 5 MP camera)",
    )
    min_fps: float = Field(
        0.2, gt=0, le=30,
        description="Least analysis rate per camera when the node is overloaded and "
        "analysis is shed (recording never is)",
    )


class CameraConfig(Strict):
    site: Name = Field(description="Id of the site (from `sites`) where the camera is installed")
    location: LocationType = Field(description="What kind of place the camera looks at")
    purpose: str = Field(
        min_length=3, max_length=500, description="Why this camera exists (shown to inspectors)"
    )
    main_url: str = Field(
        description="RTSP URL of the main (recording) stream; without credentials when "
        "username and password are given"
    )
    sub_url: str | None = Field(None, description="RTSP URL of the low-resolution sub stream")
    onvif_url: str | None = Field(
        None, description="ONVIF device service (http://HOST[:PORT]/onvif/device_service), "
        "for probes and the fleet risk audit; default: port 80 of the main_url host"
    )
    username: str | None = Field(
        None, min_length=1, description="User name at the camera (put in both URLs, encoded)"
    )
    password: SecretStr | None = Field(
        None, min_length=1,
        description="Password at the camera (use ${ENV_VAR}); any character may appear in it",
    )
    enabled: bool = Field(True, description="Set false to keep a camera configured but idle")
    record: RecordConfig = Field(default_factory=RecordConfig)
    analytics: AnalyticsConfig = Field(default_factory=AnalyticsConfig)
    privacy_zones: list[Polygon] = Field(
        default_factory=list,
        description="Areas always blurred in every picture that leaves the node: polygons of "
        "[x, y] points in 0..1 of the frame width and height",
    )

    @field_validator("main_url", "sub_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return None if v is None else _check_stream_url(v)

    @field_validator("onvif_url")
    @classmethod
    def _onvif(cls, v: str | None) -> str | None:
        if v is not None:
            parts = urlsplit(v)
            if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
                raise ValueError("give http(s)://HOST[:PORT]/onvif/device_service, without "
                                 "credentials (they go in username and password)")
        return v

    @field_validator("username", "password", mode="before")
    @classmethod
    def _text(cls, v: object) -> object:
        # YAML reads `password: 0123` as the number 83: refuse rather than guess.
        if v is not None and not isinstance(v, str):
            raise ValueError("write it in quotes ('0123'): YAML read it as a number or yes/no")
        return v

    @field_validator("username")
    @classmethod
    def _one_place(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None:
            return v
        with_userinfo = [
            key for key in ("main_url", "sub_url")
            if info.data.get(key) and "@" in urlsplit(info.data[key]).netloc
        ]
        if with_userinfo:
            raise ValueError(
                f"{' and '.join(with_userinfo)} carr{'ies' if len(with_userinfo) == 1 else 'y'} "
                "a user name or password too: give the credentials in one place, not both"
            )
        return v

    @field_validator("password")
    @classmethod
    def _with_user(cls, v: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        # A username that failed its own check is reported there, not again here.
        if v is not None and "username" in info.data and info.data["username"] is None:
            raise ValueError("a password needs a username (the username field)")
        return v

    def _with_credentials(self, url: str) -> str:
        if self.username is None:
            return url
        userinfo = quote(self.username, safe="")
        if self.password is not None:
            userinfo += ":" + quote(self.password.get_secret_value(), safe="")
        scheme, sep, rest = url.partition("://")
        return f"{scheme}{sep}{userinfo}@{rest}"

    @property
    def main_source(self) -> str:
        """The main stream URL that ffmpeg opens: the credentials in it, percent-encoded."""
        return self._with_credentials(self.main_url)

    @property
    def sub_source(self) -> str | None:
        """The sub stream URL that ffmpeg opens, if the camera has one."""
        return None if self.sub_url is None else self._with_credentials(self.sub_url)

    @property
    def light_source(self) -> str:
        """The sub stream if the camera has one, else the main stream (analysis, live)."""
        return self.sub_source or self.main_source


class SiteConfig(Strict):
    name: str = Field(min_length=1, max_length=200, description="Human-readable site name")
    address: str | None = Field(None, max_length=500, description="Postal address, for reports")


class StorageConfig(Strict):
    path: Path = Field(Path("var"), description="Folder for recordings, cache and the database")
    quota: str | int | None = Field(
        None, description="Most disk the recordings may use: bytes (500GB) or share (80%)"
    )
    min_free: str | int = Field(
        "5%", description="Free space below which the emergency deletion pass runs"
    )

    @field_validator("quota", "min_free")
    @classmethod
    def _size(cls, v: str | int | None) -> str | int | None:
        if v is not None:
            parse_size(v)
        return v

    @property
    def quota_limit(self) -> SizeLimit | None:
        return None if self.quota is None else parse_size(self.quota)

    @property
    def min_free_limit(self) -> SizeLimit:
        return parse_size(self.min_free)


class RetentionConfig(Strict):
    default_hours: float = Field(72, gt=0, description="Default maximum age of footage")
    ceiling_days: float = Field(
        30, gt=0, le=365, description="No camera may keep footage longer, except under a hold"
    )
    interval_seconds: float = Field(
        60, ge=1, le=3600, description="How often the retention pass runs"
    )


class ServerConfig(Strict):
    host: str = Field("127.0.0.1", description="Address the web server listens on")
    port: int = Field(8080, ge=0, le=65535, description="Port of the web server (0: any free)")
    allow_networks: list[str] = Field(
        default_factory=lambda: ["127.0.0.0/8", "::1/128"],
        description="Client networks (CIDR) allowed to reach the web server; others get 403",
    )
    tls_cert: Path | None = Field(
        None, description="PEM certificate for HTTPS (with tls_key); session cookies become Secure"
    )
    tls_key: Path | None = Field(None, description="PEM private key for HTTPS (with tls_cert)")
    session_hours: float = Field(
        12, gt=0, le=24 * 30, description="Hours a sign-in lasts before signing in again"
    )

    @field_validator("allow_networks")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        for net in v:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(f"{net!r} is not a network: use CIDR, e.g. 10.0.0.0/8") from None
        return v

    @model_validator(mode="after")
    def _tls_pair(self) -> ServerConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both or neither")
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


class MqttConfig(Strict):
    host: str = Field(description="MQTT broker host")
    port: int = Field(1883, ge=1, le=65535, description="MQTT broker port")
    username: str | None = Field(None, description="User name at the broker")
    password: str | None = Field(None, description="Password at the broker (use ${ENV_VAR})")
    topic_prefix: str = Field(
        "custodes", pattern=r"^[A-Za-z0-9_/-]+$", description="First level of every topic"
    )


class UplinkConfig(Strict):
    site: Name = Field(description="This site's name at the hub, as `custodes hub add-site` "
                       "enrolled it; also its NATS user name")
    urls: list[str] = Field(min_length=1, description="The hub's NATS servers, nats://host:port")
    password: SecretStr = Field(description="The site's NATS credential (use ${ENV_VAR})")
    health_seconds: float = Field(5, ge=0.5, le=3600,
                                  description="How often the node's health is published")
    batch: int = Field(500, ge=1, le=10000,
                       description="Messages published before waiting for their acks")
    ca: str | None = Field(None, description="The hub's CA certificate (PEM), as `custodes "
                           "hub add-site` prints it: TLS, and only a hub it signed is accepted")
    ca_file: Path | None = Field(None, description="The same CA from a file (e.g. an existing "
                                 "NATS cluster's)")
    tls_hostname: str | None = Field(None, description="The name the hub's certificate must "
                                     "carry (default: each URL's host)")
    tls_first: bool = Field(True, description="Start TLS before the server speaks (the hub's "
                            "embedded server does; a cluster needs tls { handshake_first: "
                            "true }), so that no impostor gets the password in clear")

    @field_validator("urls")
    @classmethod
    def _nats_urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if urlsplit(url).scheme not in ("nats", "tls"):
                raise ValueError(f"{url!r}: a NATS URL starts with nats:// or tls://")
        return urls

    @field_validator("ca")
    @classmethod
    def _ca_pem(cls, ca: str | None) -> str | None:
        if ca is not None:
            check_ca_pem(ca)
        return ca

    @model_validator(mode="after")
    def _one_ca(self) -> UplinkConfig:
        if self.ca is not None and self.ca_file is not None:
            raise ValueError("give the hub's CA as ca or as ca_file, not both")
        return self


class LegalConfig(Strict):
    """The legal record of the system, printed on the signs (`custodes signage`) and in the
    inspection pack. Optional at load for every profile: a recorder must not stop recording
    because its paperwork is late; its absence is what the signs and the pack report."""

    controller: str = Field(min_length=2, max_length=200,
                            description="Who is responsible (the controller), as on the sign")
    controller_address: str | None = Field(None, max_length=300,
                                           description="The controller's postal address")
    contact: str = Field(min_length=3, max_length=200,
                         description="The data-protection officer or contact: name and e-mail "
                         "or telephone")
    legal_basis: str = Field(min_length=3, max_length=500,
                             description="The legal basis of the recording (law and article)")
    dpia_reference: str = Field(min_length=1, max_length=200,
                                description="Reference of the data-protection impact assessment")
    decision_reference: str = Field(min_length=1, max_length=200,
                                    description="Reference of the written decision to install "
                                    "and run the system")
    notice_url: str = Field(max_length=500, description="Where the second-layer notice is "
                            "published (http or https URL): the sign's QR code leads there")

    @field_validator("controller", "contact", "legal_basis", "dpia_reference",
                     "decision_reference")
    @classmethod
    def _said(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be blank")
        return v.strip()

    @field_validator("notice_url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{v!r} is not an http:// or https:// URL")
        return v


class NodeConfig(Strict):
    name: Name = Field("custodes", description="Name of this recorder node")
    timezone: str | None = Field(
        None,
        description="The site's time zone, an IANA name (Europe/Oslo): every time the pages, "
        "exports and reports show is in it (storage stays UTC); default: the machine's zone, "
        "else UTC",
    )

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        return None if v is None else check_zone_name(v)


class SecurityConfig(Strict):
    key_dir: Path | None = Field(
        None,
        description="Folder of the node's signing key and biometric encryption key (mode "
        "0700); default: `keys` beside the storage folder, never inside the database",
    )


class Config(Strict):
    profile: Profile = Field(
        Profile.SCHOOL,
        description="Deployment profile: school (no identification at all), municipal (face "
        "search inside an approved case) or police (also live watchlist alerts in a case); "
        "a deployment that declares none gets the strictest",
    )
    node: NodeConfig = Field(default_factory=NodeConfig)
    sites: dict[Name, SiteConfig] = Field(description="Sites this node records, by id")
    cameras: dict[Name, CameraConfig] = Field(description="Cameras, by name")
    storage: StorageConfig = Field(default_factory=StorageConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    mqtt: MqttConfig | None = Field(None, description="Publish events to an MQTT broker")
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    analytics: AnalysisPoolConfig = Field(default_factory=AnalysisPoolConfig)
    legal: LegalConfig | None = Field(
        None, description="Controller, contact, legal basis, DPIA and decision references: "
        "the signs and the inspection pack print them")
    uplink: UplinkConfig | None = Field(
        None, description="Report to a hub (`custodes hub add-site` prints this section)")

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        ceiling_hours = self.retention.ceiling_days * 24
        if self.retention.default_hours > ceiling_hours:
            raise ValueError(
                f"retention.default_hours: {self.retention.default_hours:g} h exceeds the "
                f"ceiling of {self.retention.ceiling_days:g} days"
            )
        for name, cam in self.cameras.items():
            if cam.site not in self.sites:
                raise ValueError(f"cameras.{name}.site: unknown site {cam.site!r}")
            problem = placement_problem(self.profile, cam.location.value)
            if problem:
                raise ValueError(f"cameras.{name}.location: {problem}")
            if cam.analytics.faces.embeddings and not allows(self.profile, Action.EMBED):
                raise ValueError(
                    f"cameras.{name}.analytics.faces.embeddings: the {self.profile.value} "
                    "profile computes no face descriptors (faces are detected only to blur)"
                )
            if cam.record.mode == RecordMode.MOTION and not (
                cam.analytics.enabled and cam.analytics.motion.enabled
            ):
                raise ValueError(
                    f"cameras.{name}.record.mode: motion-only recording needs motion detection "
                    "(analytics.enabled and analytics.motion.enabled)"
                )
            hours = cam.record.retention_hours
            if hours is not None and hours > ceiling_hours:
                raise ValueError(
                    f"cameras.{name}.record.retention_hours: {hours:g} h exceeds the ceiling of "
                    f"{self.retention.ceiling_days:g} days; keep footage longer only with a hold"
                )
        return self

    def retention_hours(self, camera: str) -> float:
        return self.cameras[camera].record.retention_hours or self.retention.default_hours

    def resolve_paths(self, base: Path) -> Config:
        """The same config with relative paths (storage, keys, TLS) made relative to ``base``."""

        def resolved(path: Path | None) -> Path | None:
            return path if path is None or path.is_absolute() else (base / path).resolve()

        return self.model_copy(update={
            "storage": self.storage.model_copy(update={"path": resolved(self.storage.path)}),
            "security": self.security.model_copy(
                update={"key_dir": resolved(self.security.key_dir)}
            ),
            "server": self.server.model_copy(update={
                "tls_cert": resolved(self.server.tls_cert),
                "tls_key": resolved(self.server.tls_key),
            }),
            "uplink": self.uplink and self.uplink.model_copy(
                update={"ca_file": resolved(self.uplink.ca_file)}),
        })

    def fingerprint(self) -> dict[str, str]:
        """A short digest per section and per camera, secrets left out, so the audit log can
        say what changed between two starts without holding the configuration itself."""
        data = self.model_dump(mode="json")
        cameras = data.pop("cameras")
        if data.get("mqtt"):
            data["mqtt"]["password"] = None
        if data.get("uplink") is None:
            data.pop("uplink", None)  # configs without one keep their digest
        if data.get("legal") is None:
            data.pop("legal", None)  # configs without one keep their digest
        for cam in cameras.values():
            for key in ("main_url", "sub_url"):
                if cam[key]:
                    cam[key] = redact_url(cam[key])
            # Absent when unset, so that configs written before these fields keep their digest
            # (a set password dumps as asterisks: SecretStr).
            for key in ("username", "password"):
                if cam[key] is None:
                    del cam[key]
        sections = dict(data)
        sections.update({f"cameras.{name}": cam for name, cam in cameras.items()})
        return {
            key: hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]
            for key, value in sections.items()
        }

    @property
    def key_dir(self) -> Path:
        """Where the node's keys live: outside the database, by default beside the storage."""
        return self.security.key_dir or self.storage.path.parent / f"{self.storage.path.name}-keys"


# ---------------------------------------------------------------------------------------------
# Loading with line numbers


@dataclass(frozen=True)
class ConfigIssue:
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.key}: {self.message}" if self.key else f"{where}{self.message}"


class ConfigError(Exception):
    def __init__(self, source: str, issues: list[ConfigIssue]) -> None:
        self.source = source
        self.issues = issues
        super().__init__("\n".join([f"{source}: invalid configuration", *map(str, issues)]))


def _plain(node: yaml.Node, lines: dict[tuple[str | int, ...], int], path: tuple[str | int, ...],
           env: dict[str, str], issues: list[ConfigIssue]) -> Any:
    """Convert a composed YAML node to Python values, noting the line of every key."""
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = yaml.safe_load(yaml.serialize(key_node))
            if key in out:
                issues.append(ConfigIssue(key_node.start_mark.line + 1, _dotted((*path, key)),
                                          "duplicate key"))
            out[key] = _plain(value_node, lines, (*path, key), env, issues)
            lines[(*path, key)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_plain(v, lines, (*path, i), env, issues) for i, v in enumerate(node.value)]
    value = yaml.safe_load(yaml.serialize(node))
    if isinstance(value, str) and "${" in value:
        def substitute(m: re.Match[str]) -> str:
            if m.group(1) not in env:
                issues.append(ConfigIssue(node.start_mark.line + 1, _dotted(path),
                                          f"environment variable {m.group(1)} is not set"))
                return ""
            return env[m.group(1)]
        value = _ENV_REF.sub(substitute, value)
    return value


def _dotted(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


Lines = dict[tuple[str | int, ...], int]


def _nearest_line(lines: Lines, loc: tuple[str | int, ...]) -> int | None:
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


def _real_loc(data: Any, loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """Keep the parts of a pydantic error location that are keys of the document.

    pydantic inserts union members and validator names ("str", "function-after[...]")
    into locations; walking the data tells real keys from those tags.
    """
    out: list[str | int] = []
    current = data
    for part in loc:
        if isinstance(current, dict):
            out.append(part)
            current = current.get(part)
        elif isinstance(current, list) and isinstance(part, int):
            out.append(part)
            current = current[part] if part < len(current) else None
    return tuple(out)


def _issues_from(
    exc: ValidationError, data: Any, lines: dict[tuple[str | int, ...], int]
) -> Iterator[ConfigIssue]:
    for err in exc.errors():
        loc = _real_loc(data, tuple(err["loc"]))
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        elif err["type"] == "missing":
            message = "required key is missing"
        # Cross-field checks name their key at the start of the message ("cameras.x.site: ...").
        key, sep, rest = message.partition(": ")
        if not loc and sep and re.fullmatch(r"[a-z_]+(\.[a-z0-9_-]+)+", key):
            loc, message = tuple(key.split(".")), rest
        yield ConfigIssue(_nearest_line(lines, loc), _dotted(loc), message)


def parse_config(text: str, source: str = "<config>", env: dict[str, str] | None = None) -> Config:
    """Parse and validate YAML text; raise ConfigError listing every problem with its line."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [ConfigIssue(line, "", f"YAML syntax: {problem}")]) from None
    if root is None:
        raise ConfigError(source, [ConfigIssue(None, "", "the file is empty")])
    lines: dict[tuple[str | int, ...], int] = {}
    issues: list[ConfigIssue] = []
    data = _plain(root, lines, (), dict(os.environ) if env is None else env, issues)
    if not isinstance(data, dict):
        raise ConfigError(source, [ConfigIssue(1, "", "the top level must be a mapping")])
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        issues.extend(_issues_from(exc, data, lines))
        raise ConfigError(source, issues) from None
    if issues:
        raise ConfigError(source, issues)
    return config


def load_config(path: Path, env: dict[str, str] | None = None) -> Config:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        issue = ConfigIssue(None, "", f"cannot read: {exc.strerror}")
        raise ConfigError(str(path), [issue]) from None
    return parse_config(text, str(path), env).resolve_paths(path.parent)

